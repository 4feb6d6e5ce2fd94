"""Instructions per request, counted by callgrind: a cost that does not move with the machine.

    .venv/bin/python bench/instructions.py [--requests 1000] [--variants plain,governance]
                                           [--out bench/results/instructions.json]

Timing runs on a shared 2-core VM drift by ±25 % from one run to the next, which hides a
5 % change. Here each gateway variant of ``features.py`` runs under
``valgrind --tool=callgrind``; after a warm-up the counters are zeroed, a fixed number of
identical non-streaming chat requests is sent over one keep-alive connection, and the
instructions executed by the gateway process (all threads) are divided by the count (with
request logging, the count is taken once the writer has written every measured request's
row, and the warm-up's before the counters are zeroed). The
same code and input give the same number to within a fraction of a percent, so a change's
cost can be read off directly. It is not time: cache misses and syscalls weigh differently,
so the throughput targets are still judged by ``features.py``.
"""

from __future__ import annotations

import argparse
import datetime
import http.client
import json
import re
import shutil
import sqlite3
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import features
import pgdb
import procs
import wrkload

BENCH = Path(__file__).resolve().parent
START_UNDER_VALGRIND_S = 300.0


def send(url: str, key: str, count: int) -> None:
    """``count`` chat requests, one at a time on one connection; each must answer 200."""
    parts = urlsplit(url)
    body = json.dumps(wrkload.CHAT_BODY).encode()
    headers = {"content-type": "application/json", "authorization": f"Bearer {key}"}
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    try:
        for _ in range(count):
            conn.request("POST", "/v1/chat/completions", body, headers)
            resp = conn.getresponse()
            resp.read()
            if resp.status != 200:
                raise RuntimeError(f"request answered {resp.status}")
    finally:
        conn.close()


def dump_total(pid: int, out_file: Path) -> int:
    """Ask callgrind to write its counters now; the total of instructions in that dump."""
    subprocess.run(["callgrind_control", "-d", str(pid)], check=True, capture_output=True, timeout=120)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        dumps = sorted(out_file.parent.glob(out_file.name + "*"), key=lambda p: p.stat().st_mtime)
        for dump in reversed(dumps):
            match = re.search(r"^(?:summary|totals): (\d+)", dump.read_text(errors="replace"), re.M)
            if match:
                return int(match.group(1))
        time.sleep(0.2)
    raise RuntimeError("callgrind wrote no dump")


def logged_rows(log: str, app: Path) -> int:
    """Rows in the variant's request log (read from outside: no work for the gateway)."""
    if log == "sqlite":
        path = app / "logs.db"
        if not path.exists():
            return 0
        with sqlite3.connect(path, timeout=30) as conn:
            return conn.execute("SELECT count(*) FROM request_logs").fetchone()[0]
    return pgdb.fetchval(log, "SELECT count(*) FROM request_logs")


def wait_logged(log: str | None, app: Path, count: int, timeout_s: float = 300.0) -> None:
    """Until the writer has written ``count`` rows: every measured request's row is written
    inside the measured window, and none of the warm-up's."""
    if log is None:
        return
    deadline = time.monotonic() + timeout_s
    while logged_rows(log, app) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the request log has {logged_rows(log, app)} rows, expected {count}")
        time.sleep(0.5)


def measure(ps: procs.Procs, mock_url: str, work: Path, name: str, requests: int, warmup: int, log: str | None,
            env: dict[str, str] | None = None) -> dict:
    """``log``: the variant's logs store (``features.logs_store``)."""
    gov, _, metrics = features.VARIANTS[name]
    app = work / f"gateway-{name}"
    app.mkdir()
    out_file = work / f"callgrind-{name}.out"
    wrapper = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out_file}", "--dump-instr=no", "--compress-strings=no"]
    gw = ps.start_gateway(mock_url, "uvicorn", config_json=features.config(mock_url, gov, log, app, metrics), name=f"gateway-{name}",
                          wrapper=wrapper, start_timeout_s=START_UNDER_VALGRIND_S, env=env)
    key = features.VK if gov else "sk-bench"
    send(gw.url, key, warmup)
    wait_logged(log, app, warmup)
    subprocess.run(["callgrind_control", "-z", str(gw.pid)], check=True, capture_output=True, timeout=120)
    for old in out_file.parent.glob(out_file.name + "*"):
        old.unlink()
    started = time.monotonic()
    send(gw.url, key, requests)
    seconds = time.monotonic() - started
    wait_logged(log, app, warmup + requests)
    total = dump_total(gw.pid, out_file)
    return {"requests": requests, "instructions": total, "per_request": total / requests, "seconds_under_valgrind": seconds}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--variants", default="plain,governance", help="comma-separated subset of " + ", ".join(features.VARIANTS))
    parser.add_argument("--out", type=Path, default=BENCH / "results" / "instructions.json")
    parser.add_argument("--pg-dsn", default=features.PG_DSN, help="PostgreSQL server for logging-pg (a database is created per run)")
    parser.add_argument("--log-flush-seconds", type=float, help="the log writer's gathering interval "
                        "(RAINBRIDGE_LOG_FLUSH_SECONDS): under valgrind requests are ~50x slower, so the default "
                        "0.25 s gathers ~50x fewer rows per batch than at full speed")
    parser.add_argument("--keep", type=Path, help="copy the callgrind dumps here (read them with callgrind_annotate)")
    args = parser.parse_args()
    if not shutil.which("valgrind") or not shutil.which("callgrind_control"):
        parser.error("needs valgrind (apt-get install valgrind)")
    names = args.variants.split(",")
    unknown = [n for n in names if n not in features.VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(features.VARIANTS)}")
    results = {}
    env = {"RAINBRIDGE_LOG_FLUSH_SECONDS": str(args.log_flush_seconds)} if args.log_flush_seconds else None
    databases = {name: features.logs_store(features.VARIANTS[name][1], name, args.pg_dsn) for name in names}
    with tempfile.TemporaryDirectory(prefix="rainbridge-instructions-") as tmp, procs.Procs(Path(tmp)) as ps:
        work = Path(tmp)
        mock = ps.start_mock()
        for name in names:
            results[name] = measure(ps, mock.url, work, name, args.requests, args.warmup, databases[name], env)
            if args.keep:
                args.keep.mkdir(parents=True, exist_ok=True)
                for dump in work.glob(f"callgrind-{name}.out*"):
                    shutil.copy(dump, args.keep / dump.name)
            print(f"{name:<12}{results[name]['per_request']:>12,.0f} instructions/request", flush=True)
        ps.check_alive()
    for name, store in databases.items():  # (the gateways are stopped: no connection left)
        if features.VARIANTS[name][1] == features.PG:
            pgdb.drop(store)
    if "plain" in results:
        base = results["plain"]["per_request"]
        for name, r in results.items():
            r["vs_plain"] = r["per_request"] / base - 1
            print(f"{name:<12}{r['vs_plain']:>+12.1%} vs plain")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"date": datetime.datetime.now(datetime.UTC).isoformat(), "requests": args.requests,
                                    "log_flush_seconds": args.log_flush_seconds, "results": results}, indent=1))
    print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
