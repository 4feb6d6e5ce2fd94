"""What the features cost: the same gateway with governance off/on and request logging off/on.

    .venv/bin/python bench/features.py [--runs 10] [--duration 3] [--out bench/results/features.json]

Governance on: every request carries a virtual key with a budget and both rate limits, all far
from exhausted, under a team with its own budget (the full admission and settlement path).
Metrics on: Bifrost's request metrics (the telemetry plugin; off in every other variant).
Logging on: every request is written to the SQLite logs store (content included);
``logging-pg`` (not in the default set: it needs a PostgreSQL server, ``--pg-dsn``) to a
PostgreSQL logs store. wrk at 32
connections, the variants interleaved run by run (many short runs: the machine drifts);
medians of req/s and gateway CPU per 1,000 requests, each variant's loss against plain in the
same run (paired), and p50/p99 latency with one client at a time (does a request wait for
the feature?).

Side by side: on a shared VM the machine's speed can change by half between two 3-second
runs, so each run also drives plain and one variant at the same time (two wrk processes,
each gateway with its own fake provider, the start order alternating): both see the same
machine, and the ratio of their req/s is the ratio of their CPU cost per request. A second
plain gateway ("control") runs the same way: its "loss" is the method's own error, and a
run whose control is off by more than 3 % says so (its figures are noise). Targets:
governance costs < 10 % of throughput (side-by-side paired median); metrics cost ≤ 3 %;
logging (either store) costs ≤ 5 % and adds nothing to the c=1 p99 (issue 17).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import tempfile
import threading
from pathlib import Path

import pgdb
import procs
import wrkload

BENCH = Path(__file__).resolve().parent
VK = "sk-rb-bench-" + "0" * 24
PG = "postgres"
PG_DSN = os.environ.get("RAINBRIDGE_BENCH_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")


def config(upstream: str, governance: bool, logging: str | None, app_dir: Path, metrics: bool = False) -> str:
    """``logging``: None (off), "sqlite" (a file in the app dir) or a PostgreSQL DSN."""
    cfg: dict = {"providers": {"openai": {"keys": [{"name": "bench", "value": "sk-bench", "models": ["*"]}], "network_config": {"base_url": upstream}}}}
    if not metrics:  # Bifrost's telemetry plugin is on by default: off unless measured
        cfg["plugins"] = [{"name": "telemetry", "enabled": False}]
    if governance:
        cfg["governance"] = {
            "teams": [{"name": "bench-team", "budget": {"max_limit": 1e9, "reset_duration": "1M"}}],
            "virtual_keys": [{
                "name": "bench", "value": VK, "team_id": "bench-team",
                "budget": {"max_limit": 1e9, "reset_duration": "1d"},
                "rate_limit": {"request_max_limit": 10**9, "request_reset_duration": "1m", "token_max_limit": 10**12, "token_reset_duration": "1h"},
            }],
        }
    if logging:
        cfg["client"] = {"enable_logging": True}
        if logging == "sqlite":
            cfg["logs_store"] = {"enabled": True, "type": "sqlite", "config": {"path": str(app_dir / "logs.db")}}
        else:
            cfg["logs_store"] = {"enabled": True, "type": "postgres", "config": {"dsn": logging}}
    return json.dumps(cfg)


# name -> (governance, logs store, request metrics); PG: a database of its own per gateway
VARIANTS = {"plain": (False, None, False), "governance": (True, None, False), "logging": (False, "sqlite", False),
            "both": (True, "sqlite", False), "metrics": (False, None, True), "governance+metrics": (True, None, True),
            "logging-pg": (False, PG, False)}
DEFAULT_VARIANTS = "plain,governance,logging,both,metrics,governance+metrics"


def logs_store(kind: str | None, name: str, pg_dsn: str) -> str | None:
    """The ``logging`` argument of ``config`` for a variant: PostgreSQL gets a fresh database."""
    if kind != PG:
        return kind
    return pgdb.create(pg_dsn, f"rainbridge_bench_{name.replace('-', '_')}_{os.getpid()}")  # runs side by side


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--variants", default=DEFAULT_VARIANTS, help="comma-separated subset of " + ", ".join(VARIANTS))
    parser.add_argument("--out", type=Path, default=BENCH / "results" / "features.json")
    parser.add_argument("--pg-dsn", default=PG_DSN, help="PostgreSQL server for logging-pg (a database is created per run)")
    args = parser.parse_args()
    variants = {name: VARIANTS[name] for name in args.variants.split(",")}
    if "plain" not in variants:
        parser.error("--variants must include plain (the baseline)")
    with tempfile.TemporaryDirectory(prefix="rainbridge-features-") as tmp, procs.Procs(Path(tmp)) as ps:
        work = Path(tmp)
        mock = ps.start_mock()
        other_mock = ps.start_mock()  # the side-by-side partner's own fake provider
        gateways = {}
        scripts = {}
        databases = []
        for name, (gov, log, metrics) in {**variants, "control": VARIANTS["plain"]}.items():
            app = work / f"gateway-{name}"
            app.mkdir()
            upstream = mock.url if name == "plain" else other_mock.url
            store = logs_store(log, name, args.pg_dsn)
            if log == PG:
                databases.append(store)
            gateways[name] = ps.start_gateway(upstream, "uvicorn", config_json=config(upstream, gov, store, app, metrics), name=f"gateway-{name}")
            scripts[name] = wrkload.write_script(work, VK if gov else "sk-bench", f"{name}.lua")
        for name, gw in gateways.items():  # warm up
            wrkload.run_wrk(gw.url + "/v1/chat/completions", scripts[name], 64, 1)
        results: dict[str, list[dict]] = {name: [] for name in variants}
        latency: dict[str, list[dict]] = {name: [] for name in variants}
        side_by_side: dict[str, list[float]] = {name: [] for name in [*variants, "control"] if name != "plain"}
        names = list(variants)
        for run in range(args.runs):
            for name in side_by_side:
                pair = ["plain", name] if run % 2 == 0 else [name, "plain"]
                out = _together({n: (gateways[n].url + "/v1/chat/completions", scripts[n]) for n in pair}, args.connections, args.duration)
                side_by_side[name].append(1 - out[name]["rps"] / out["plain"]["rps"])
                print(f"run {run + 1}: side by side {name:<10} {out[name]['rps']:>7.0f} vs plain {out['plain']['rps']:>7.0f} req/s  "
                      f"loss {side_by_side[name][-1]:+.1%}", flush=True)
            for name in names[run % len(names):] + names[: run % len(names)]:
                gw = gateways[name]
                before = procs.cpu_seconds([gw.pid])
                out = wrkload.run_wrk(gw.url + "/v1/chat/completions", scripts[name], args.connections, args.duration)
                cpu = procs.cpu_seconds([gw.pid]) - before
                out["cpu_ms_per_1k"] = cpu * 1000 / max(out["requests"], 1) * 1000
                results[name].append(out)
                # One client at a time: does the feature make a request wait? (Once the
                # saturation run's leftovers, a log writer's backlog say, are done.)
                procs.wait_idle([gw.pid])
                one = wrkload.run_wrk(gw.url + "/v1/chat/completions", scripts[name], 1, max(2, round(args.duration / 2)))
                latency[name].append(one)
                print(f"run {run + 1}: {name:<10} {out['rps']:>9.0f} req/s  {out['cpu_ms_per_1k']:6.1f} CPU ms/1k  "
                      f"c=1 p50 {one['p50_ms']:.3f} p99 {one['p99_ms']:.3f} ms  non-2xx {out['non_2xx'] + one['non_2xx']}", flush=True)
        ps.check_alive()
        ps.close()
        for dsn in databases:
            pgdb.drop(dsn)
    summary = {}
    for name, runs in results.items():
        summary[name] = {
            "rps": statistics.median(r["rps"] for r in runs),
            "cpu_ms_per_1k": statistics.median(r["cpu_ms_per_1k"] for r in runs),
            "non_2xx": max(r["non_2xx"] for r in runs),
            "c1_p50_ms": statistics.median(r["p50_ms"] for r in latency[name]),
            "c1_p99_ms": statistics.median(r["p99_ms"] for r in latency[name]),
        }
    base = summary["plain"]
    print(f"\n{'variant':<12}{'req/s c=32':>11}{'vs plain':>10}{'paired loss [min..max]':>25}{'side by side [min..max]':>25}"
          f"{'CPU ms/1k':>11}{'vs plain':>10}"
          f"{'p50 c=1':>10}{'p99 c=1':>10}{'errors':>8}")
    for name, s in summary.items():
        s["throughput_loss"] = 1 - s["rps"] / base["rps"]
        # The same run's plain gateway as the baseline: drift of the machine between runs
        # (±15 % here) hits both sides of each pair alike.
        paired = [1 - r["rps"] / p["rps"] for r, p in zip(results[name], results["plain"], strict=True)]
        s["paired_loss"] = statistics.median(paired)
        s["paired_loss_range"] = [min(paired), max(paired)]
        s["cpu_increase"] = s["cpu_ms_per_1k"] / base["cpu_ms_per_1k"] - 1
        together = side_by_side.get(name, [0.0])
        s["side_by_side_loss"] = statistics.median(together)
        s["side_by_side_range"] = [min(together), max(together)]
        span = f"{s['paired_loss']:.1%} [{min(paired):.1%}..{max(paired):.1%}]"
        span2 = f"{s['side_by_side_loss']:.1%} [{min(together):.1%}..{max(together):.1%}]"
        print(f"{name:<12}{s['rps']:>11.0f}{-s['throughput_loss']:>+10.1%}{span:>25}{span2:>25}{s['cpu_ms_per_1k']:>11.1f}"
              f"{s['cpu_increase']:>+10.1%}{s['c1_p50_ms']:>9.3f}ms{s['c1_p99_ms']:>8.3f}ms{s['non_2xx']:>8}")
    control = side_by_side["control"]
    summary["control"] = {"side_by_side_loss": statistics.median(control), "side_by_side_range": [min(control), max(control)]}
    print(f"{'control':<12}{'':>11}{'':>10}{'':>25}{statistics.median(control):>9.1%} [{min(control):.1%}..{max(control):.1%}]"
          "   (plain against plain: the method's error)")
    verdict = {}
    # Two identical gateways side by side differ only by the machine: when the control's
    # median is off by more than 3 %, no loss figure of this run can be trusted.
    verdict["measurement trustworthy: control within 3% of plain"] = abs(summary["control"]["side_by_side_loss"]) < 0.03
    if "governance" in summary:
        verdict["governance throughput loss < 10% (side-by-side median)"] = summary["governance"]["side_by_side_loss"] < 0.10
    for name in ("metrics", "governance+metrics"):
        if name in summary:
            verdict[f"{name}: throughput loss <= 3% (side-by-side median)"] = summary[name]["side_by_side_loss"] <= 0.03
    for name in ("logging", "logging-pg"):
        if name in summary:
            verdict[f"{name}: c=1 p99 within 0.1 ms of plain"] = summary[name]["c1_p99_ms"] - base["c1_p99_ms"] < 0.1
            verdict[f"{name}: throughput loss <= 5% (side-by-side median)"] = summary[name]["side_by_side_loss"] <= 0.05
    for check, ok in verdict.items():
        print(f"{check:<40} {'PASS' if ok else 'MISS'}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "date": datetime.datetime.now(datetime.UTC).isoformat(), "runs": args.runs, "duration_s": args.duration,
        "connections": args.connections, "summary": summary, "checks": verdict, "raw": results, "raw_c1": latency,
        "raw_side_by_side": side_by_side,
    }, indent=1))
    print(f"results: {args.out}")
    return 0


def _together(targets: dict[str, tuple[str, Path]], connections: int, duration_s: float) -> dict[str, dict]:
    """wrk against each (url, script) at the same time, started in the given order."""
    out: dict[str, dict] = {}
    failed: list[BaseException] = []

    def drive(name: str) -> None:
        try:
            url, script = targets[name]
            out[name] = wrkload.run_wrk(url, script, connections, duration_s)
        except BaseException as exc:  # re-raised below, in the caller's thread
            failed.append(exc)

    threads = [threading.Thread(target=drive, args=(name,)) for name in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failed:
        raise failed[0]
    return out


if __name__ == "__main__":
    raise SystemExit(main())
