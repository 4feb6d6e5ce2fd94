"""Bulk scale-ups in the seeded simulator: fleet-wide limits stay exact while members join in
batches (``counters/escrow_sim.py``'s ``scale_up_scenario``: 2-6 members under 4x load, loss
up to 20 %, ±2 s skew; two batches of joiners and a crashed minority of the first members).

    .venv/bin/python bench/escrow_scaleup.py [--seeds 60] [--out FILE]

Every join is a roster epoch (``counters/epochs.py``): members move to it, refuse the older
epochs' ballots, and act as acceptors only after merging a sealed majority of the previous
group's ledgers. This prints, per (acceptor group size, final fleet size), the runs with a
window over its limit, the worst overshoot, and the under-admission (how far admissions
fell short of min(limit, requests offered), mean and worst run: the price of the
hand-overs), and writes JSON (default ``bench/results/escrow_scaleup.json``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from rainbridge.counters.escrow import Limit
from rainbridge.counters.escrow_sim import scale_up_scenario

LIMITS = [Limit("vk_a:requests:10s", 50, "10s"), Limit("vk_b:requests:10s", 7, "10s")]
CASES = [(15, 15), (15, 40), (5, 15)]  # (acceptors, fleet at most)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=60)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "escrow_scaleup.json"))
    args = ap.parse_args()
    rows = []
    for acceptors, fleet in CASES:
        started = time.perf_counter()
        bad, worst = 0, 0.0
        under: list[float] = []
        for seed in range(args.seeds):
            sim = scale_up_scenario(seed, LIMITS, acceptors=acceptors, fleet=fleet)
            over = sim.violations()
            if over:
                bad += 1
                worst = max(worst, max(100 * (v / sim.limits[k[0]].limit - 1) for k, v in over.items()))
            under.append(sim.summary(0, 40)["under_admission_pct"])
        row = {"acceptors": acceptors, "fleet_max": fleet, "runs": args.seeds, "runs_over_limit": bad,
               "worst_overshoot_pct": round(worst, 1),
               "under_admission_mean_pct": round(sum(under) / len(under), 2),
               "under_admission_worst_pct": round(max(under), 1),
               "seconds": round(time.perf_counter() - started, 1)}
        rows.append(row)
        print(f"acceptors {acceptors:>2}, fleet up to {fleet:>2}: {bad:>2} of {args.seeds} runs over a limit, "
              f"worst +{worst:.1f} %; under-admission mean {row['under_admission_mean_pct']} %, "
              f"worst run {row['under_admission_worst_pct']} %  ({row['seconds']} s)")
    Path(args.out).write_text(json.dumps({"cases": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
