"""Does a request wait for the request log? c=1 latency, logging off and on, alternated.

    .venv/bin/python bench/log_c1.py [--runs 8] [--seconds 3] [--variants plain,logging,logging-pg]
    .venv/bin/python bench/log_c1.py --variants plain --beside 5000   # plain, a page writer beside it
    .venv/bin/python bench/log_c1.py --before /tmp/old/src            # each logging variant also as the code in that tree

The c=1 half of ``features.py`` alone: one gateway per variant (``features.VARIANTS``), each
run measures every variant in turn with one wrk connection for ``--seconds``, after the
gateway has gone idle (``procs.wait_idle``: what an earlier run left the writer to do is not
counted against this one). Prints and saves the median p50/p99 per variant. ``--beside
RATE``: a separate process writes pages to SQLite at RATE entries a second meanwhile
(``log_pages_writer.py``): what the database write costs the machine's other work.
``--before SRC``: every variant but plain also runs from another source tree (a checkout of
the commit before a change), named ``NAME@before``, in the same alternation: a before/after
on the same minutes of a machine whose c=1 p99 drifts by 2-4x within an hour. Each run's
p99 is also taken against the same run's plain (``p99_over_plain_ms``, median of the pairs).
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
from pathlib import Path

import features
import pgdb
import procs
import wrkload

BENCH = Path(__file__).resolve().parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--variants", default="plain,logging,logging-pg")
    parser.add_argument("--pg-dsn", default=features.PG_DSN)
    parser.add_argument("--beside", type=int, default=0, help="a page writer process at this many entries a second")
    parser.add_argument("--out", type=Path, default=BENCH / "results" / "log_c1.json")
    parser.add_argument("--before", type=Path, help="a source tree to run every variant but plain from as well (NAME@before)")
    args = parser.parse_args()
    beside = None
    if args.beside:
        env = {**os.environ, "PYTHONPATH": str(BENCH.parent / "src")}
        beside = subprocess.Popen([sys.executable, str(BENCH / "log_pages_writer.py"), "--rate", str(args.beside),
                                   "--seconds", str(args.runs * len(args.variants.split(",")) * (args.seconds + 3) + 30)], env=env)
    names = args.variants.split(",")
    sources = {name: None for name in names}
    if args.before is not None:
        sources.update({f"{name}@before": args.before for name in names if name != "plain"})
        names = list(sources)
    runs: dict[str, list[dict]] = {name: [] for name in names}
    databases = []
    with tempfile.TemporaryDirectory(prefix="rainbridge-log-c1-") as tmp, procs.Procs(Path(tmp)) as ps:
        work = Path(tmp)
        mock = ps.start_mock()
        gateways, scripts = {}, {}
        for name in names:
            gov, log, metrics = features.VARIANTS[name.split("@")[0]]
            app = work / f"gateway-{name}"
            app.mkdir()
            store = features.logs_store(log, name.replace("@", "_"), args.pg_dsn)
            if log == features.PG:
                databases.append(store)
            gateways[name] = ps.start_gateway(mock.url, "uvicorn", config_json=features.config(mock.url, gov, store, app, metrics),
                                              name=f"gateway-{name.replace('@', '-')}",
                                              env={"PYTHONPATH": str(sources[name])} if sources[name] else None)
            scripts[name] = wrkload.write_script(work, features.VK if gov else "sk-bench", f"{name.replace('@', '-')}.lua")
            wrkload.run_wrk(gateways[name].url + "/v1/chat/completions", scripts[name], 1, 1)  # warm up
        for run in range(args.runs):
            for name in names[run % len(names):] + names[:run % len(names)]:
                procs.wait_idle([gateways[name].pid])
                out = wrkload.run_wrk(gateways[name].url + "/v1/chat/completions", scripts[name], 1, args.seconds)
                runs[name].append(out)
                print(f"run {run + 1}: {name:<18} {out['rps']:>7.0f} req/s  p50 {out['p50_ms']:.3f}  p99 {out['p99_ms']:.3f} ms", flush=True)
        ps.check_alive()
        ps.close()
        for dsn in databases:
            pgdb.drop(dsn)
    if beside is not None:
        beside.terminate()
        beside.wait(10)
    summary = {name: {"p50_ms": statistics.median(r["p50_ms"] for r in rs), "p99_ms": statistics.median(r["p99_ms"] for r in rs),
                      "p99_range_ms": [min(r["p99_ms"] for r in rs), max(r["p99_ms"] for r in rs)]} for name, rs in runs.items()}
    if "plain" in runs:
        for name, rs in runs.items():
            summary[name]["p99_over_plain_ms"] = statistics.median(r["p99_ms"] - p["p99_ms"] for r, p in zip(rs, runs["plain"], strict=True))
    for name, s in summary.items():
        over = f"  over plain {s['p99_over_plain_ms']:+.3f} ms" if "p99_over_plain_ms" in s else ""
        print(f"{name:<18} p50 {s['p50_ms']:.3f} ms  p99 {s['p99_ms']:.3f} ms [{s['p99_range_ms'][0]:.3f}..{s['p99_range_ms'][1]:.3f}]{over}")
    args.out.write_text(json.dumps({"date": datetime.datetime.now(datetime.UTC).isoformat(), "seconds": args.seconds,
                                    "writer_beside_rate": args.beside, "before": str(args.before) if args.before else None,
                                    "summary": summary, "runs": runs}, indent=1))
    print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
