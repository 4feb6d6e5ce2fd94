"""Instructions per request, counted by callgrind: a cost that does not move with the machine.

    .venv/bin/python bench/instructions.py [--requests 1000] [--variants plain,governance]
                                           [--out bench/results/instructions.json]
    .venv/bin/python bench/instructions.py --cluster [--dsn ...]   # cluster mode off vs on

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
import os
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
IDLE_S = 10.0  # ``--cluster``: how long the idle work per second is counted


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


def callgrind(out_file: Path) -> list[str]:
    return ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out_file}", "--dump-instr=no", "--compress-strings=no"]


LOGGED = "SELECT coalesce(sum(row_count), 0) FROM request_log_pages"  # requests written (schema 3: in pages)


def logged_rows(log: str, app: Path) -> int:
    """Rows in the variant's request log (read from outside: no work for the gateway)."""
    if log == "sqlite":
        path = app / "logs.db"
        if not path.exists():
            return 0
        with sqlite3.connect(path, timeout=30) as conn:
            return conn.execute(LOGGED).fetchone()[0]
    return pgdb.fetchval(log, LOGGED)


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
    gw = ps.start_gateway(mock_url, "uvicorn", config_json=features.config(mock_url, gov, log, app, metrics), name=f"gateway-{name}",
                          wrapper=callgrind(out_file), start_timeout_s=START_UNDER_VALGRIND_S, env=env)
    return count(gw, features.VK if gov else "sk-bench", out_file, requests, warmup,
                 settled=lambda n: wait_logged(log, app, n))


def count(gw: procs.Proc, key: str, out_file: Path, requests: int, warmup: int, idle_s: float = 0.0,
          settled=lambda n: None) -> dict:
    """Instructions per request of the gateway running under callgrind (after ``warmup``).
    ``settled(n)`` waits until the work of the first ``n`` requests is done (the log writer's
    rows), so the warm-up's is not counted and the measured requests' is.
    With ``idle_s``: also what the process does idle per second (timers: store polls and
    flushes, gossip), measured over that long without requests, and the requests' count net
    of it (``net_per_request``: the busy machine changes how long the requests take, and with
    it the idle work counted among them)."""
    send(gw.url, key, warmup)
    settled(warmup)
    zero(gw, out_file)
    started = time.monotonic()
    send(gw.url, key, requests)
    seconds = time.monotonic() - started
    settled(warmup + requests)
    total = dump_total(gw.pid, out_file)
    out = {"requests": requests, "instructions": total, "per_request": total / requests, "seconds_under_valgrind": seconds}
    if idle_s:
        zero(gw, out_file)
        started = time.monotonic()
        time.sleep(idle_s)
        idle = dump_total(gw.pid, out_file) / (time.monotonic() - started)
        out |= {"idle_per_second": idle, "net_per_request": (total - idle * seconds) / requests}
    return out


def zero(gw: procs.Proc, out_file: Path) -> None:
    subprocess.run(["callgrind_control", "-z", str(gw.pid)], check=True, capture_output=True, timeout=120)
    for old in out_file.parent.glob(out_file.name + "*"):
        old.unlink()


def measure_cluster(ps: procs.Procs, work: Path, requests: int, warmup: int, dsn: str) -> dict:
    """A governed request (a key far from its limit) with cluster mode off, then on: the
    gateway of ``cluster_limits.py``'s throughput comparison (PostgreSQL store both times; on:
    one member of a fleet of three, the other two idle). Per request counts what the member
    did meanwhile too (gossip, escrow ticks), at callgrind's pace: ~50 × longer per request."""
    import cluster_limits as cl

    results = {}
    env = {"RAINBRIDGE_ADMIN_TOKEN": cl.TOKEN}
    with cl.Database(dsn) as db_off, cl.Database(dsn) as db_on:
        mock = ps.start_mock()
        out_file = work / "callgrind-cluster-off.out"
        off = ps.start_gateway(mock.url, "uvicorn", host="127.0.0.131", name="cluster-off", env=env,
                               config_json=cl.fleet_config(mock.url, db_off.dsn, [], [], 0, {}),
                               wrapper=callgrind(out_file), start_timeout_s=START_UNDER_VALGRIND_S)
        results["cluster-off"] = count(off, cl.FAR_KEY, out_file, requests, warmup, IDLE_S)
        print(f"{'cluster-off':<12}{results['cluster-off']['per_request']:>12,.0f} instructions/request", flush=True)
        hosts = [f"127.0.0.{132 + i}" for i in range(3)]
        ports = [procs.free_port(h) for h in hosts]
        out_file = work / "callgrind-cluster-on.out"
        members = [ps.start_gateway(mock.url, "uvicorn", host=hosts[i], name=f"cluster-on{i}", env=env,
                                    config_json=cl.fleet_config(mock.url, db_on.dsn, hosts, ports, i, {}),
                                    wrapper=callgrind(out_file) if i == 0 else None,
                                    start_timeout_s=START_UNDER_VALGRIND_S)
                   for i in range(3)]
        deadline = time.monotonic() + START_UNDER_VALGRIND_S
        while not all(cl._alive_seen(m.url) == 3 and procs.http_ok(m.url + "/health/ready") for m in members):
            ps.check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError("the fleet of three did not form and sync in time")
            time.sleep(0.5)
        results["cluster-on"] = count(members[0], cl.FAR_KEY, out_file, requests, warmup, IDLE_S)
        print(f"{'cluster-on':<12}{results['cluster-on']['per_request']:>12,.0f} instructions/request", flush=True)
    on, off = results["cluster-on"], results["cluster-off"]
    on["vs_cluster_off"] = on["per_request"] / off["per_request"] - 1
    on["net_vs_cluster_off"] = on["net_per_request"] / off["net_per_request"] - 1
    for name, r in results.items():
        print(f"{name:<12}{r['net_per_request']:>12,.0f} net of idle work ({r['idle_per_second']:,.0f} per idle second)")
    print(f"{'cluster-on':<12}{on['vs_cluster_off']:>+12.1%} vs cluster-off, {on['net_vs_cluster_off']:+.1%} net of idle work")
    return results


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
    parser.add_argument("--cluster", action="store_true",
                        help="instead: a governed request with cluster mode off vs on (needs PostgreSQL; "
                             "writes bench/results/instructions-cluster.json unless --out)")
    parser.add_argument("--dsn", default=os.environ.get("RAINBRIDGE_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test"))
    args = parser.parse_args()
    if not shutil.which("valgrind") or not shutil.which("callgrind_control"):
        parser.error("needs valgrind (apt-get install valgrind)")
    if args.cluster:
        out = args.out if args.out != BENCH / "results" / "instructions.json" else BENCH / "results" / "instructions-cluster.json"
        with tempfile.TemporaryDirectory(prefix="rainbridge-instructions-") as tmp, procs.Procs(Path(tmp)) as ps:
            results = measure_cluster(ps, Path(tmp), args.requests, args.warmup, args.dsn)
            ps.check_alive()
            if args.keep:
                args.keep.mkdir(parents=True, exist_ok=True)
                for dump in Path(tmp).glob("callgrind-cluster-*.out*"):
                    shutil.copy(dump, args.keep / dump.name)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"date": datetime.datetime.now(datetime.UTC).isoformat(), "results": results}, indent=1))
        print(f"results: {out}")
        return 0
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
