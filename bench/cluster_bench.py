"""Cluster membership benchmark: rainbridge members and Serf agents, side by side, in one run.

    .venv/bin/python bench/cluster_bench.py [--quick] [--sizes 5,10,25,50] [--trials 20]
                                            [--soak 600] [--impls rainbridge,serf] [--out FILE]

For each cluster size N, first with rainbridge members (``bench/cluster/member.py``, one
process each) and then with the same number of Serf agents (Debian's ``serf``, HashiCorp
memberlist), on the same timings (the ``lan`` profile up to N = 10, ``local`` above, where
50 processes share the machine's cores): time to form, idle CPU and bytes/s per member,
join / graceful leave / crash trials (seconds and gossip rounds until every member saw it),
and joins at 30 % packet loss at one size. Then a soak: four clusters of 10 side by side —
rainbridge and Serf, each at 10 % loss (``--soak-loss 0,5,10``: one cluster per level) and
each with one member paused 2 s every 30 s — counting false suspicions and false deaths per
member-hour.

Runs as root inside a network namespace of its own (loopback only; nftables there drops
packets and counts bytes), which it creates, and removes at the end, also on an error or
Ctrl-C, with every process it started. Prints the table and the targets, and writes JSON
(default ``bench/results/cluster.json``). See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from cluster import netns, report, trials  # noqa: E402

DEFAULT_OUT = BENCH / "results" / "cluster.json"


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="smoke run: N = 5, 10; 5 trials, 3 crashes, 2-minute soak (~8 min)")
    p.add_argument("--sizes", default=None, help="cluster sizes (default 5,10,25,50)")
    p.add_argument("--impls", default="rainbridge,serf")
    p.add_argument("--trials", type=int, default=None, help="join+leave trials per size (20)")
    p.add_argument("--crash-trials", default=None,
                   help="crash trials per size, e.g. 5:10,10:20,25:10,50:10 (default)")
    p.add_argument("--lan-up-to", type=int, default=10,
                   help="largest N run with the lan profile; larger ones use local")
    p.add_argument("--idle", type=float, default=None,
                   help="idle cost window, s (60: two push-pull intervals of the lan profile)")
    p.add_argument("--loss-join-n", type=int, default=None,
                   help="size for the joins at 30 %% loss (50; quick: 10; 0 = skip)")
    p.add_argument("--loss-join-trials", type=int, default=None)
    p.add_argument("--soak", type=float, default=None, help="soak duration, s (600; 0 = skip)")
    p.add_argument("--soak-n", type=int, default=10)
    p.add_argument("--soak-loss", default="10", help="loss %% of the soak clusters, e.g. 0,5,10")
    p.add_argument("--soak-impls", default="rainbridge,serf",
                   help="soak variants: rainbridge, serf, rainbridge-r0 (memberlist's probe: "
                        "no re-sent pings)")
    p.add_argument("--soak-only", action="store_true", help="skip the per-size trials")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--netns", default=None, help=argparse.SUPPRESS)  # set when re-executed
    return p.parse_args(argv)


def settings_from(args: argparse.Namespace, logs: Path) -> trials.Settings:
    quick = args.quick
    sizes = [int(x) for x in (args.sizes or ("5,10" if quick else "5,10,25,50")).split(",")]
    if args.soak_only:
        sizes = []
    if args.crash_trials:
        crash = {int(k): int(v) for k, v in (x.split(":") for x in args.crash_trials.split(","))}
    else:
        crash = {n: (3 if quick else (20 if n == report.CRASH_TARGET_N else 10)) for n in sizes}
    loss_n = args.loss_join_n if args.loss_join_n is not None else (10 if quick else 50)
    return trials.Settings(
        sizes=sizes,
        impls=[x for x in args.impls.split(",") if x],
        trials=args.trials if args.trials is not None else (5 if quick else 20),
        crash_trials=crash,
        lan_up_to=args.lan_up_to,
        idle_s=args.idle if args.idle is not None else (5.0 if quick else 60.0),
        loss_join_n=loss_n,
        loss_join_trials=(args.loss_join_trials if args.loss_join_trials is not None
                          else (5 if quick else 20)),
        loss_join_percent=30,
        soak_n=args.soak_n,
        soak_s=args.soak if args.soak is not None else (120.0 if quick else 600.0),
        soak_loss_percents=[int(x) for x in args.soak_loss.split(",") if x],
        soak_impls=[x for x in args.soak_impls.split(",") if x in trials.SOAK_VARIANTS],
        logs=logs,
    )


def machine_info() -> dict:
    serf = subprocess.run(["serf", "version"], capture_output=True, text=True, timeout=10)
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "serf": serf.stdout.splitlines()[0] if serf.returncode == 0 else None,
        "load_avg_start": os.getloadavg(),
    }


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


async def run(s: trials.Settings) -> dict:
    fw = netns.Firewall()
    sizes: list[dict] = []
    for i, n in enumerate(s.sizes):
        # alternate which implementation goes first, so drift hits both alike
        order = s.impls if i % 2 == 0 else list(reversed(s.impls))
        t0 = time.monotonic()
        sizes += await trials.run_size(n, s, fw, log, order)
        log(f"  N={n}: done in {time.monotonic() - t0:.0f} s")
    soak = await trials.soak(s, fw, log) if s.soak_s > 0 else {}
    return {"sizes": sizes, "soak": soak}


def render(machine: dict, s: trials.Settings, results: dict, checks: list[dict]) -> str:
    out = [
        f"rainbridge cluster bench  {machine['date']}  {machine['cpu_count']} CPUs  "
        f"Python {machine['python']}  {machine['serf'] or 'no serf'}  "
        f"load avg at start {machine['load_avg_start'][0]:.2f}",
        f"profiles: lan for N <= {s.lan_up_to}, local above (the same preset on both sides); "
        f"rounds = seconds / gossip interval (lan 0.2 s, local 0.1 s); idle cost over "
        f"{s.idle_s:g} s",
        "",
        report.table(results["sizes"]),
    ]
    lossy = report.lossy_table(results["sizes"])
    if lossy:
        out += ["", "joins under packet loss (nftables, every packet, UDP and TCP)", lossy]
    soak = report.soak_table(results["soak"])
    if soak:
        out += ["", "soak (false suspicion = failed probe of a live member)", soak]
    out += ["", report.targets_table(checks)]
    return "\n".join(out)


def main_inside(args: argparse.Namespace) -> int:
    logs = Path(tempfile.mkdtemp(prefix="rb-cluster-bench-"))
    s = settings_from(args, logs)
    if "serf" in s.impls and shutil.which("serf") is None:
        print("`serf` is not installed (apt-get install serf): measuring rainbridge alone")
        s.impls = [x for x in s.impls if x != "serf"]
    machine = machine_info()
    log(f"cluster bench in namespace {args.netns}; process logs in {logs}")
    started = time.monotonic()
    loop = asyncio.new_event_loop()
    main = loop.create_task(run(s))
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, main.cancel)  # the fleets' finally blocks stop everyone
    try:
        results = loop.run_until_complete(main)
    except asyncio.CancelledError:
        print("interrupted: every process stopped", file=sys.stderr)
        return 130
    except (RuntimeError, OSError) as exc:
        print(f"cluster bench failed: {exc}", file=sys.stderr)
        return 1
    finally:
        with contextlib.suppress(RuntimeError):
            loop.close()
    machine["load_avg_end"] = os.getloadavg()
    machine["wall_s"] = round(time.monotonic() - started, 1)
    checks = report.targets(results["sizes"], results["soak"])
    text = render(machine, s, results, checks)
    print()
    print(text)
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(s).items()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(
        {"machine": machine, "settings": settings, **results, "targets": checks, "table": text},
        indent=2,
    ) + "\n")
    log(f"wrote {args.out} ({machine['wall_s']:.0f} s)")
    return 0


def main() -> int:
    args = parse_args(sys.argv[1:])
    if args.netns:
        return main_inside(args)
    reason = netns.unavailable()
    if reason:
        print(f"cluster bench: {reason}", file=sys.stderr)
        return 2
    return netns.run_inside([sys.executable, str(Path(__file__).resolve()), *sys.argv[1:]])


if __name__ == "__main__":
    sys.exit(main())
