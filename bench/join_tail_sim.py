"""Join tail in the deterministic simulator (issue 16: p99 ≤ 10 gossip rounds at N = 10,
≤ 14 at 30 % loss).

    .venv/bin/python bench/join_tail_sim.py [--sizes 10,50] [--loss 0,30] [--seeds 10]
                                            [--joins 20] [--out FILE]

Per size N and loss level, ``--seeds`` clusters of N − 1 members (``lan`` profile, the
production ``Membership`` state machine in ``cluster/sim.py``: virtual clock, 0.5–2 ms
links, each packet and TCP segment lost with the given probability; a lost segment costs
a 1 s retransmission) form; then ``--joins`` newcomers join one after another, each through
a random member, and the clock runs until every other member sees the newcomer alive
(checked every ``STEP_S``, a quarter round; "sees" = alive or suspect in its view). Rounds = seconds / gossip interval (0.2 s),
counted as the real-process bench counts them, from the first member seeing the newcomer
to the last; also from the join call (which adds the join's push-pull: at 30 % loss a lost
TCP segment costs a 1 s retransmission, 5 rounds, so that figure cannot meet 14 rounds).
The cluster grows by one per join (N − 1 … N + joins − 2 members), as in a scale-up.
Writes JSON (default ``bench/results/join_tail_sim.json``) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from random import Random

from rainbridge.cluster import merge
from rainbridge.cluster.config import MembershipConfig
from rainbridge.cluster.messages import NodeState
from rainbridge.cluster.sim import LinkProfile, SimNetwork

BENCH = Path(__file__).resolve().parent
DEFAULT_OUT = BENCH / "results" / "join_tail_sim.json"
STEP_S = 0.05
FORM_BOUND_S = 300.0
JOIN_BOUND_S = 120.0
TARGETS = {0: 10, 30: 14}  # p99 rounds at N = 10, by loss %


KNOWN = (NodeState.ALIVE, NodeState.SUSPECT)  # "seen": the member is in the view, not gone


def _first_and_all(net: SimNetwork, joiner: str, others: list[str]) -> tuple[bool, bool]:
    members = [net.nodes[o].membership.member(joiner) for o in others]
    seen = [m is not None and m.state in KNOWN for m in members]
    return any(seen), all(seen)


def _formed(net: SimNetwork, names: list[str]) -> bool:
    return all(_first_and_all(net, n, names)[1] for n in names)


def run_case(n: int, loss: float, seed: int, joins: int) -> list[tuple[float, float]]:
    """(seconds from the join call, seconds from the first member seeing the newcomer)
    until every member sees it, per join; inf when not within ``JOIN_BOUND_S``."""
    config = MembershipConfig.lan()
    net = SimNetwork(seed, config, link=LinkProfile(loss=loss))
    names = net.cluster(n - 1)
    end = net.now + FORM_BOUND_S
    while not _formed(net, names) and net.now < end:
        net.run_for(1.0)
    if not _formed(net, names):
        raise RuntimeError(f"N={n} loss={loss} seed={seed}: the cluster did not form")
    net.run_for(5.0)  # settle: push-pulls and broadcasts of the formation are done
    pick = Random(seed * 7919 + n)
    out = []
    for j in range(joins):
        joiner = f"j{j}"
        net.add_node(joiner)
        net.join(joiner, [pick.choice(names)])
        start, first = net.now, None
        while net.now - start < JOIN_BOUND_S:
            some, every = _first_and_all(net, joiner, names)
            if some and first is None:
                first = net.now
            if every:
                break
            net.run_for(STEP_S)
        else:
            out.append((float("inf"), float("inf")))
            names.append(joiner)
            continue
        out.append((net.now - start, net.now - (first if first is not None else start)))
        names.append(joiner)
    return out


def pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(p / 100 * len(s) + 0.5) - 1))]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="10,50")
    p.add_argument("--loss", default="0,30")
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--joins", type=int, default=20)
    p.add_argument("--join-transmit-factor", type=int, default=merge.JOIN_TRANSMIT_FACTOR,
                   help="× the transmit limit for news of a join (1: memberlist's limit)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args()
    merge.JOIN_TRANSMIT_FACTOR = args.join_transmit_factor  # read at each join
    interval = MembershipConfig.lan().gossip_interval
    rows = []
    for n in (int(x) for x in args.sizes.split(",")):
        for loss_pct in (int(x) for x in args.loss.split(",")):
            t0 = time.monotonic()
            pairs: list[tuple[float, float]] = []
            for seed in range(args.seeds):
                pairs += run_case(n, loss_pct / 100, seed, args.joins)
            called = [a / interval for a, _ in pairs]
            rounds = [b / interval for _, b in pairs]
            row = {
                "n": n, "loss_pct": loss_pct, "joins": len(pairs),
                "timeouts": sum(1 for r in rounds if r == float("inf")),
                "p50_rounds": round(statistics.median(rounds), 2),
                "p99_rounds": round(pct(rounds, 99), 2),
                "max_rounds": round(max(rounds), 2),
                "over_10_rounds": sum(1 for r in rounds if r > 10),
                "from_join_call_p50_rounds": round(statistics.median(called), 2),
                "from_join_call_p99_rounds": round(pct(called, 99), 2),
                "target_p99_rounds": TARGETS.get(loss_pct) if n == 10 else None,
                "wall_s": round(time.monotonic() - t0, 1),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    head = (f"{'N':>3} {'loss':>5} {'joins':>6} {'p50 r':>6} {'p99 r':>6} {'max r':>6} "
            f"{'>10 r':>6} {'call p50/p99':>13} target")
    lines = [head] + [
        f"{r['n']:>3} {r['loss_pct']:>4}% {r['joins']:>6} {r['p50_rounds']:>6.1f} "
        f"{r['p99_rounds']:>6.1f} {r['max_rounds']:>6.1f} {r['over_10_rounds']:>6} "
        f"{r['from_join_call_p50_rounds']:>6.1f}/{r['from_join_call_p99_rounds']:<6.1f} "
        + (f"p99 <= {r['target_p99_rounds']}: "
           + ("PASS" if r["p99_rounds"] <= r["target_p99_rounds"] else "FAIL")
           if r["target_p99_rounds"] else "")
        for r in rows]
    text = "\n".join(lines)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"settings": {k: str(v) for k, v in vars(args).items()},
                                    "gossip_interval_s": interval, "rows": rows,
                                    "table": text}, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
