"""Spend CPU in bursts, nothing else: what any work beside the request path costs a c=1 request here.

    .venv/bin/python bench/cpu_burst.py --burst-ms 1 --every 0.25 --seconds 60 &
    .venv/bin/python bench/log_c1.py --variants plain --runs 6

A pure-Python busy loop (no memory traffic, no I/O, no database) for ``--burst-ms`` every
``--every`` seconds, for ``--seconds``: the control for ``log_c1.py --beside`` (is it the
database write, or just CPU time taken on the other core, that moves plain's p99?).
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--burst-ms", type=float, default=1.0)
    parser.add_argument("--every", type=float, default=0.25, help="seconds between bursts")
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    deadline = time.monotonic() + args.seconds
    while time.monotonic() < deadline:
        until = time.perf_counter() + args.burst_ms / 1000
        while time.perf_counter() < until:
            pass
        time.sleep(args.every)


if __name__ == "__main__":
    main()
