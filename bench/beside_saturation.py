"""What work beside a saturated gateway costs the gateway's own CPU per request.

    .venv/bin/python bench/beside_saturation.py [--runs 10] [--beside writer|busy] [--dir /dev/shm] [--wal-autocheckpoint N]

A plain gateway (no logging) at wrk c=32, each run measured twice, alone and with another
process beside it (the order alternating): ``writer`` — ``log_pages_writer.py`` writing the
request log's pages to SQLite at ``--rate`` entries a second (what a logging gateway's
writer does at saturation, ~50 ms of CPU a second at 14,000); ``busy`` — ``cpu_burst.py``,
a pure-Python busy loop of the same CPU (12 ms every 0.25 s) that touches no memory and does
no I/O. The gateway's CPU (its process, user + system) per request, alone and beside, and
the median of the pairs' differences. If ``busy`` costs as much as ``writer``, what the
write costs the rest of the machine is its CPU time, not its memory or I/O traffic.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import features
import procs
import wrkload

BENCH = Path(__file__).resolve().parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--beside", choices=("writer", "busy"), default="writer")
    parser.add_argument("--rate", type=int, default=14000, help="the writer's entries a second")
    parser.add_argument("--dir", help="where the writer's SQLite file goes (e.g. /dev/shm: no disk I/O)")
    parser.add_argument("--wal-autocheckpoint", type=int, help="the writer's WAL checkpoint interval in pages")
    parser.add_argument("--out", type=Path, default=BENCH / "results" / "beside_saturation.json")
    args = parser.parse_args()
    side_s = str(args.seconds + 4)
    if args.beside == "writer":
        command = [str(BENCH / "log_pages_writer.py"), "--rate", str(args.rate), "--seconds", side_s]
        if args.dir:
            command += ["--dir", args.dir]
        if args.wal_autocheckpoint is not None:
            command += ["--wal-autocheckpoint", str(args.wal_autocheckpoint)]
    else:
        command = [str(BENCH / "cpu_burst.py"), "--burst-ms", "12", "--every", "0.25", "--seconds", side_s]
    env = {**os.environ, "PYTHONPATH": str(BENCH.parent / "src")}
    results: dict[str, list[dict]] = {"alone": [], "beside": []}
    with tempfile.TemporaryDirectory(prefix="rainbridge-beside-") as tmp, procs.Procs(Path(tmp)) as ps:
        work = Path(tmp)
        mock = ps.start_mock()
        gateway = ps.start_gateway(mock.url, "uvicorn", config_json=features.config(mock.url, False, None, work), name="plain")
        script = wrkload.write_script(work, "sk-bench")
        url = gateway.url + "/v1/chat/completions"
        wrkload.run_wrk(url, script, 64, 1)  # warm up
        for run in range(args.runs):
            for mode in ("alone", "beside") if run % 2 == 0 else ("beside", "alone"):
                side = subprocess.Popen([sys.executable, *command], env=env) if mode == "beside" else None
                try:
                    if side is not None:
                        time.sleep(1.0)  # its start-up (imports, the migration) done
                    procs.wait_idle([gateway.pid])
                    before = procs.cpu_seconds([gateway.pid])
                    out = wrkload.run_wrk(url, script, 32, args.seconds)
                    cpu = procs.cpu_seconds([gateway.pid]) - before
                finally:
                    if side is not None:
                        side.terminate()
                        side.wait(10)
                us = cpu / max(out["requests"], 1) * 1e6
                results[mode].append({"rps": out["rps"], "cpu_us_per_request": us})
                print(f"run {run + 1}: {mode:<6} {out['rps']:>7.0f} req/s  {us:5.1f} us of gateway CPU a request", flush=True)
        ps.check_alive()
    alone = [r["cpu_us_per_request"] for r in results["alone"]]
    beside = [r["cpu_us_per_request"] for r in results["beside"]]
    diffs = [b - a for a, b in zip(alone, beside, strict=True)]
    summary = {"alone_us": statistics.median(alone), "beside_us": statistics.median(beside),
               "paired_diff_us": statistics.median(diffs), "paired_diff_range_us": [min(diffs), max(diffs)]}
    print(f"gateway CPU a request: alone {summary['alone_us']:.1f} us, beside {args.beside} {summary['beside_us']:.1f} us; "
          f"paired difference {summary['paired_diff_us']:+.1f} us [{min(diffs):+.1f}..{max(diffs):+.1f}]")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"date": datetime.datetime.now(datetime.UTC).isoformat(), "beside": args.beside, "dir": args.dir,
                                    "wal_autocheckpoint": args.wal_autocheckpoint,
                                    "rate": args.rate, "runs": args.runs, "seconds": args.seconds,
                                    "summary": summary, "raw": results}, indent=1))
    print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
