"""Fleet-wide limits past this machine: the escrow protocol at N = 100 and 1,000 members, in
the seeded simulator (``src/rainbridge/counters/escrow_sim.py``: every member's real
``EscrowNode``, a virtual clock, a lossless LAN of 0.5-2 ms one-way delays).

    .venv/bin/python bench/escrow_scale.py [--quick] [--sizes 100,1000]
                                          [--workloads uniform,skewed] [--seconds 12]
                                          [--cold-keys 20] [--memory-keys 10000] [--out FILE]

Per run: one hot key (limit 20 × N per window, offered at 2× the limit: 4 requests per
member per second, spread evenly or 80 % on one member) and ``--cold-keys`` cold keys
(limit 1,000 per window, offered 10 requests/s each, far from their limits). It reports:

- messages and bytes (escrow frames as ``escrow_wire`` encodes them, without the
  cluster's own framing) per member per second, by type, split into **grant** traffic
  (Ask Grant Deny Reclaim Return Prepare Promise Accept Accepted) and **sync** traffic
  (UsageDelta FullState SyncRequest SyncReply);
- the hot key's **owner**: messages it handled per second (mean and busiest second), and
  the Python CPU time they took (the simulator does not model CPU: this is measured
  around the owner's ``EscrowNode.handle``);
- **limit → last refusal**: when the hot key's window reaches its limit, every member
  gets one probe request at that instant; the time until the last probe is refused (and
  the organic requests' verdict latency after the limit);
- **exactness**: overshoot (must be 0) and under-admission per window wholly inside the
  run;
- **memory per member** for ``--memory-keys`` live keys: tracemalloc around one
  ``EscrowNode`` holding an allowance, a usage map and (where it is an acceptor) a ledger
  for every key.

Prints a summary and writes JSON (default ``bench/results/escrow_scale.json``).
Pure Python: N = 1,000 takes about a minute to set up (every member draws every limit's
acceptor group) and ~3 s of wall time per simulated second, so the default simulates 12 s
(one 10 s window and 2 s of the next); ``--quick`` uses 5 s windows and 6 s. The whole
default run takes ~5 minutes on the 2-core VM; each run is cut at 10 minutes of wall time
(and says so in ``cut_short``).
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import statistics
import sys
import time
import tracemalloc
from collections import Counter
from pathlib import Path
from random import Random

from rainbridge.counters import rendezvous
from rainbridge.counters.escrow import EscrowConfig, EscrowNode, Limit
from rainbridge.counters.escrow_messages import FullState, Grant, UsageDelta
from rainbridge.counters.escrow_sim import START_MS, EscrowSim
from rainbridge.counters.escrow_wire import encode

BENCH = Path(__file__).resolve().parent
DEFAULT_OUT = BENCH / "results" / "escrow_scale.json"
GRANT_TYPES = ("Ask", "Grant", "Deny", "Reclaim", "Return", "Prepare", "Promise", "Accept", "Accepted")
SYNC_TYPES = ("UsageDelta", "FullState", "SyncRequest", "SyncReply")
HOT_PER_MEMBER = 20  # the hot key's limit per window, per member of the fleet
COLD_LIMIT = 1000
COLD_RATE = 10.0  # requests/s offered to each cold key
WALL_BUDGET_S = 600.0
WARMUP_S = 1.0  # a run stops early (and says so) past this much wall time


def lid_of(name: str, window: str) -> str:
    """A limit id as long as the gateway's (``scope/id/metric/duration``)."""
    return f"virtual_key/{name}/requests/{window}"


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


class OwnerMeter:
    """Times and counts the messages one member handles (wraps its ``handle``)."""

    def __init__(self, sim: EscrowSim, name: str) -> None:
        self.sim = sim
        self.cpu_s = 0.0
        self.handled = 0
        self.per_second: Counter[int] = Counter()
        node = sim.members[name].node
        inner = node.handle

        def handle(message, sender, now):
            t = time.perf_counter()
            inner(message, sender, now)
            self.cpu_s += time.perf_counter() - t
            self.handled += 1
            self.per_second[int(sim.now)] += 1

        node.handle = handle  # type: ignore[method-assign]


class MemoizedOwner:
    """``rendezvous.owner`` is a pure function of (key, live set), and ``EscrowNode``
    recomputes it for every limit on every tick: O(limits × members) hashes per tick, which
    makes N = 1,000 with a few dozen limits take hours in the simulator. Inside this context
    the study memoizes it (same answers, so the same simulation); ``tick_cost`` measures
    what the unmemoized recomputation costs a real member."""

    def __init__(self) -> None:
        self.cache: dict[tuple[str, frozenset[str]], str | None] = {}
        self.inner = rendezvous.owner

    def __enter__(self) -> MemoizedOwner:
        def owner(key, members):
            if not isinstance(members, frozenset):
                return self.inner(key, members)
            k = (key, members)
            hit = self.cache.get(k, self)
            if hit is self:
                if len(self.cache) > 200_000:
                    self.cache.clear()
                hit = self.cache[k] = self.inner(key, members)
            return hit

        rendezvous.owner = owner  # type: ignore[assignment]
        return self

    def __exit__(self, *exc: object) -> None:
        rendezvous.owner = self.inner  # type: ignore[assignment]


def tick_cost(n: int, keys: int) -> dict:
    """CPU of one ``EscrowNode.tick`` with ``keys`` limits and ``n`` live members, as the
    code stands (no memoization): ``_refresh`` asks ``rendezvous.owner`` for every limit."""
    names = [f"n{i}" for i in range(n)]
    limits = [Limit(lid_of(f"vk-{i:05d}", "1m"), 1000, "1m") for i in range(keys)]
    now = START_MS + 1000
    node = EscrowNode("n0", 1, limits, names, Random(0), now)
    node.take_outgoing()
    t = time.perf_counter()
    node.tick(now + 1)
    seconds = time.perf_counter() - t
    return {"n": n, "keys": keys, "tick_ms": round(1000 * seconds, 2),
            "us_per_key_member": round(1e6 * seconds / (n * keys), 3)}


def run_one(n: int, workload: str, seconds: float, window: str, cold_keys: int, seed: int) -> dict:
    win_s = int(window[:-1])
    hot = Limit(lid_of("vk-hot", window), HOT_PER_MEMBER * n, window)
    colds = [Limit(lid_of(f"vk-cold-{i:04d}", window), COLD_LIMIT, window) for i in range(cold_keys)]
    sizes: dict[str, int] = {}

    def sizer(message) -> int:
        size = len(encode(f"n{n - 1}", message))
        kind = type(message).__name__
        if size > sizes.get(kind, 0):
            sizes[kind] = size
        return size

    t0 = time.perf_counter()
    sim = EscrowSim(n, [hot, *colds], seed=seed, trace=True, sizer=sizer)
    # (construct and run inside MemoizedOwner: see there)
    setup_s = time.perf_counter() - t0
    owner = sim.owner_of(hot.lid)
    meter = OwnerMeter(sim, owner)
    hot_member = sim.names[1] if sim.names[1] != owner else sim.names[2]
    share = 0.8 if workload == "skewed" else 0.0
    sim.load(hot.lid, 2 * hot.limit / win_s, 0, seconds, hot=hot_member, hot_share=share)
    rng = Random(seed)
    for lim in colds:  # each cold key is used by a handful of members
        users = rng.sample(sim.names, min(n, 5))
        sim.load(lim.lid, COLD_RATE, 0, seconds, targets=users)
    probes: dict[tuple[str, int], float] = {}

    def on_reached(lid: str, ws: int) -> None:
        if lid != hot.lid:
            return
        probes[(lid, ws)] = sim.now
        for name in sim.names:
            sim.at(sim.now, lambda name=name: sim.request(name, lid))

    sim.on_reached = on_reached
    t0 = time.perf_counter()
    simulated = 0.0
    step = 0.5
    warm: tuple[Counter, Counter, Counter, float, int, int] | None = None
    while simulated < seconds + 0.5:  # half a second after the load stops: answers land
        simulated = min(seconds + 0.5, simulated + step)
        sim.run_until(simulated)
        if warm is None and simulated >= WARMUP_S:
            warm = (Counter(sim.messages), Counter(sim.bytes), Counter(sim.delivered),
                    meter.cpu_s, meter.handled, sim.members[owner].node.stats["sent"])
        if time.perf_counter() - t0 > WALL_BUDGET_S:
            break
    wall_s = time.perf_counter() - t0
    measured = min(simulated, seconds)
    assert warm is not None
    # Rates are measured after the warm-up: the simulator starts members one by one, and
    # each prepares for every limit it owns in the partial view it had (a start-up burst).
    rated = measured - WARMUP_S
    per_member_s = n * rated
    msgs = {k: v / per_member_s for k, v in sorted((sim.messages - warm[0]).items())}
    byts = {k: v / per_member_s for k, v in sorted((sim.bytes - warm[1]).items())}
    delivered = sim.delivered - warm[2]
    hot_windows = sim.window_starts(hot.lid, 0, measured)
    exact = []
    for ws in hot_windows:
        admitted = sim.admitted[(hot.lid, ws)]
        offered = admitted + sim.refused[(hot.lid, ws)]
        exact.append({
            "window": ws - START_MS, "limit": hot.limit, "offered": offered, "admitted": admitted,
            "overshoot": max(0, admitted - hot.limit),
            "under_admission_pct": 100 * max(0, min(hot.limit, offered) - admitted) / hot.limit,
            "reached_at_s": (sim.reached[(hot.lid, ws)] * 1000 + START_MS - ws) / 1000
            if (hot.lid, ws) in sim.reached else None,
        })
    cold_short = cold_offered = 0
    for lim in colds:
        for ws in sim.window_starts(lim.lid, 0, measured):
            got = sim.admitted[(lim.lid, ws)]
            offered = got + sim.refused[(lim.lid, ws)]
            cold_offered += offered
            cold_short += max(0, min(lim.limit, offered) - got)

    refusal = []
    verdicts = sim.verdicts or []
    for (lid, ws), at in probes.items():
        after = [(a, b, ok) for a, b, _m, v_lid, v_ws, ok in verdicts if v_lid == lid and v_ws == ws and a >= at]
        probe = [b - at for a, b, ok in after if a == at]
        organic = [b - a for a, b, ok in after if a > at]
        refusal.append({
            "window": ws - START_MS,
            "probes": len(probe),
            "probes_admitted": sum(1 for a, b, ok in after if a == at and ok),
            "last_member_refused_ms": 1000 * max(probe) if probe else None,
            "median_member_refused_ms": 1000 * statistics.median(probe) if probe else None,
            "organic_after_limit": len(organic),
            "organic_admitted_after_limit": sum(1 for a, b, ok in after if a > at and ok),
            "organic_verdict_p50_ms": 1000 * pct(organic, 0.5) if organic else None,
            "organic_verdict_p99_ms": 1000 * pct(organic, 0.99) if organic else None,
        })
    admitted_hot = [b - a for a, b, _m, lid, _ws, ok in verdicts if lid == hot.lid and ok]
    waited = [w for w in admitted_hot if w > 0]
    owner_in = {t: c / rated for (to, t, _lid), c in _by_type(delivered, owner).items()}
    owner_hot_in = sum(c for (to, _t, lid), c in delivered.items() if to == owner and lid == hot.lid)
    busiest = max((c for sec, c in meter.per_second.items() if sec >= WARMUP_S), default=0)
    owner_cpu, owner_handled = meter.cpu_s - warm[3], meter.handled - warm[4]
    return {
        "n": n, "workload": workload, "window": window, "simulated_s": measured,
        "setup_wall_s": round(setup_s, 1), "wall_s": round(wall_s, 1),
        "cut_short": simulated < seconds + 0.5,
        "hot_limit": hot.limit, "hot_offered_per_s": 2 * hot.limit / win_s,
        "cold_keys": cold_keys,
        "messages_per_member_s": msgs,
        "bytes_per_member_s": byts,
        "grant_messages_per_member_s": sum(msgs.get(t, 0) for t in GRANT_TYPES),
        "sync_messages_per_member_s": sum(msgs.get(t, 0) for t in SYNC_TYPES),
        "grant_bytes_per_member_s": sum(byts.get(t, 0) for t in GRANT_TYPES),
        "sync_bytes_per_member_s": sum(byts.get(t, 0) for t in SYNC_TYPES),
        "largest_frame_bytes": sizes,
        "owner": {
            "name": owner,
            "messages_in_per_s": sum(owner_in.values()),
            "messages_in_per_s_by_type": owner_in,
            "hot_key_messages_in_per_s": owner_hot_in / rated,
            "busiest_second_messages": busiest,
            "cpu_us_per_message": 1e6 * owner_cpu / max(1, owner_handled),
            "cpu_share": owner_cpu / rated,
            "sent_per_s": (sim.members[owner].node.stats["sent"] - warm[5]) / rated,
        },
        "hot_windows": exact,
        "overshoot": sum(w["overshoot"] for w in exact) + sum(
            max(0, v - sim.limits[k[0]].limit) for k, v in sim.admitted.items()),
        "cold_under_admission_pct": 100 * cold_short / max(1, cold_offered),
        "limit_to_refusal": refusal,
        # Admitted hot-key requests that waited for a grant, and the wait of all admitted.
        "hot_admitted_waited_pct": 100 * len(waited) / max(1, len(admitted_hot)),
        "hot_admitted_wait_p50_ms": 1000 * pct(admitted_hot, 0.5) if admitted_hot else None,
        "hot_admitted_wait_p99_ms": 1000 * pct(admitted_hot, 0.99) if admitted_hot else None,
        "hot_admitted_wait_max_ms": 1000 * max(admitted_hot) if admitted_hot else None,
    }


def _by_type(delivered: Counter, to: str) -> Counter:
    out: Counter = Counter()
    for (dest, kind, _lid), count in delivered.items():
        if dest == to:
            out[(dest, kind, None)] += count
    return out


# ------------------------------------------------------------------ memory


def memory_per_member(n: int, keys: int, users: int, seed: int = 0) -> dict:
    """Bytes one member holds for ``keys`` live keys, each used this window by ``users``
    members (this one included): its allowance, the key's usage map (``users`` entries,
    as push-pull spreads it), and, for the keys whose acceptor group it is in (about
    ``acceptors / n`` of them), the ledger (``users`` granted and returned entries).
    The limit definitions and acceptor groups are counted too. Measured with tracemalloc
    around building that state through the node's own message handlers."""
    config = EscrowConfig()
    now = START_MS + 1000
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    names = [f"n{i}" for i in range(n)]
    limits = [Limit(lid_of(f"vk-{i:05d}", "1m"), 1_000_000, "1m") for i in range(keys)]
    others = [f"{name}:1" for name in names[1:users]]
    node = EscrowNode("n0", 1, limits, names, Random(seed), now, config)
    defs = tracemalloc.get_traced_memory()[0] - base
    acceptor_keys = 0
    for lim in limits:
        ws = node.window(lim.lid, now)[0]
        node.admit(lim.lid, now, 0)  # allowance (waits for a grant)
        node.handle(Grant(lim.lid, ws, node.me, 100), "n1", now)
        usage = tuple((m, 7) for m in others)
        node.handle(FullState(((lim.lid, ws, usage),), True), "n1", now)
        if node.name in node.acceptors[lim.lid]:
            acceptor_keys += 1
            led = node.acceptor.ledger(lim.lid, ws)
            for m in (node.me, *others):
                led.granted[m] = 100
                led.returned[m] = 3
        node.take_outgoing()
        node.take_results()
    node.handle(UsageDelta(limits[0].lid, ws, node.me, 1), "n1", now)
    total = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    del node
    return {
        "n": n, "keys": keys, "users_per_key": users, "acceptor_keys": acceptor_keys,
        "bytes_total": total, "bytes_limits_and_groups": defs,
        "bytes_per_key": total / keys, "mib_total": total / 2**20,
    }


# ------------------------------------------------------------------ report


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}ms"


def render(runs: list[dict], memory: list[dict], ticks: list[dict]) -> str:
    out = ["escrow scale study (simulator: lossless LAN, 0.5-2 ms one-way; no CPU model)", ""]
    head = (f"{'N':>5} {'load':<8} {'sim s':>5} {'wall s':>6} {'grant msg':>9} {'sync msg':>8} "
            f"{'grant B':>8} {'sync B':>9} {'owner msg/s':>11} {'busiest s':>9} {'owner cpu':>9} "
            f"{'last refuse':>11} {'over':>4} {'under %':>7} {'waited %':>8} {'wait p99':>8}")
    out += ["per member per second (messages, bytes) after a 1 s warm-up; owner = the hot key's owner; "
            "waited = admitted hot-key requests that waited for a grant", head]
    for r in runs:
        ref = r["limit_to_refusal"][0] if r["limit_to_refusal"] else {}
        under = max((w["under_admission_pct"] for w in r["hot_windows"]), default=None)
        last = ref.get("last_member_refused_ms")
        out.append(
            f"{r['n']:>5} {r['workload']:<8} {r['simulated_s']:>5.1f} {r['wall_s']:>6.0f} "
            f"{r['grant_messages_per_member_s']:>9.2f} {r['sync_messages_per_member_s']:>8.2f} "
            f"{r['grant_bytes_per_member_s']:>8.0f} {r['sync_bytes_per_member_s']:>9.0f} "
            f"{r['owner']['messages_in_per_s']:>11.0f} {r['owner']['busiest_second_messages']:>9} "
            f"{100 * r['owner']['cpu_share']:>8.1f}% "
            f"{(f'{last:.1f} ms' if last is not None else '-'):>11} {r['overshoot']:>4} "
            f"{(f'{under:.2f}' if under is not None else '-'):>7} {r['hot_admitted_waited_pct']:>8.2f} {_ms(r['hot_admitted_wait_p99_ms']):>8}"
        )
    out += ["", "largest frame (bytes) by type, per run:"]
    for r in runs:
        out.append(f"  N={r['n']} {r['workload']}: " + ", ".join(
            f"{k} {v}" for k, v in sorted(r["largest_frame_bytes"].items())))
    out += ["", "memory per member (tracemalloc, one EscrowNode):"]
    for m in memory:
        out.append(
            f"  N={m['n']:>4}, {m['keys']} keys × {m['users_per_key']:>3} members using each: "
            f"{m['mib_total']:.1f} MiB ({m['bytes_per_key']:.0f} B/key; acceptor of "
            f"{m['acceptor_keys']} keys) → {m['mib_scaled']:.1f} MiB for {m['scaled_to_keys']} keys")
    out += ["", "CPU of one EscrowNode.tick (ownership recomputed for every limit, no memo):"]
    for t in ticks:
        out.append(f"  N={t['n']:>4}, {t['keys']:>5} keys: {t['tick_ms']:.1f} ms per tick "
                   f"({t['us_per_key_member']:.2f} µs per key × member)")
    return "\n".join(out)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="5 s windows, 6 s simulated, 1,000 keys")
    p.add_argument("--sizes", default="100,1000")
    p.add_argument("--workloads", default="uniform,skewed")
    p.add_argument("--seconds", type=float, default=None, help="simulated seconds (12; quick 6)")
    p.add_argument("--window", default=None, help="the limits' window (10s; quick 5s)")
    p.add_argument("--cold-keys", type=int, default=20)
    p.add_argument("--memory-keys", type=int, default=None, help="live keys (10000; quick 1000)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    return p.parse_args(argv)


def main() -> int:
    args = parse_args(sys.argv[1:])
    seconds = args.seconds or (6.0 if args.quick else 12.0)
    window = args.window or ("5s" if args.quick else "10s")
    mem_keys = args.memory_keys or (1000 if args.quick else 10_000)
    sizes = [int(x) for x in args.sizes.split(",")]
    started = time.monotonic()
    runs = []
    for n in sizes:
        for workload in args.workloads.split(","):
            print(f"[{time.strftime('%H:%M:%S')}] N={n} {workload}: {seconds:g} s simulated", flush=True)
            with MemoizedOwner():
                runs.append(run_one(n, workload, seconds, window, args.cold_keys, args.seed))
            print(f"  done in {runs[-1]['wall_s']:.0f} s", flush=True)
    memory = []
    for n in sizes:
        # Per key the state does not depend on how many keys there are; building 10k keys'
        # acceptor groups over 1,000 members costs 10M hashes, so large N measures fewer
        # keys and scales the bytes per key to --memory-keys.
        keys = mem_keys if n <= 100 else max(100, mem_keys // 5)
        for users in [u for u in (1, 10, 100) if u <= n and (n <= 100 or u > 1)]:
            print(f"[{time.strftime('%H:%M:%S')}] memory: N={n}, {keys} keys, "
                  f"{users} users each", flush=True)
            m = memory_per_member(n, keys, users)
            m["scaled_to_keys"] = mem_keys
            m["mib_scaled"] = m["bytes_per_key"] * mem_keys / 2**20
            memory.append(m)
    ticks = []
    for n, keys in ((100, 1000), (100, 10_000), (1000, 1000)):
        print(f"[{time.strftime('%H:%M:%S')}] tick cost: N={n}, {keys} keys", flush=True)
        ticks.append(tick_cost(n, keys))
    text = render(runs, memory, ticks)
    print()
    print(text)
    machine = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(), "python": platform.python_version(),
        "load_avg": os.getloadavg(), "wall_s": round(time.monotonic() - started, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(
        {"machine": machine, "settings": {**vars(args), "out": str(args.out), "seconds": seconds,
                                          "window": window, "memory_keys": mem_keys},
         "runs": runs, "memory": memory, "tick_cost": ticks, "table": text},
        indent=2, default=str) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
