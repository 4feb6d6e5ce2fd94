"""The measurements: per cluster size (form, idle cost, join / leave / crash trials, joins at
30 % loss) and the soak (false suspicions and deaths under loss and under pauses).

Definitions (the same for rainbridge members and Serf agents):

- join: from the first base member reporting the newcomer (its contact, which merged it in
  the join push-pull) to the last base member doing so — pure dissemination;
- leave: from SIGINT to the leaving member until every base member reports it left;
- crash: from SIGKILL until every base member reports it failed;
- rounds: seconds / the profile's gossip interval, rounded up;
- false death: a "failed" event about a member that is alive (in the soak, any);
- false suspicion: a failed probe of a live member (rainbridge's ``probe_failures``; Serf's
  "Suspect X has failed, no acks received", logged once per failed probe).
"""

from __future__ import annotations

import asyncio
import math
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from cluster.fleet import CLK_TCK, Fleet, Member
from cluster.netns import Firewall

GOSSIP_INTERVAL = {"lan": 0.2, "local": 0.1, "wan": 0.5}
JOIN_TIMEOUT_S = 30.0
LEAVE_TIMEOUT_S = 20.0
CRASH_TIMEOUT_S = 60.0
SETTLE_S = 5.0  # after forming: the join push-pulls and their gossip die down
NETS = {"rainbridge": 10, "serf": 20}  # 127.<net>.x.y
SOAK_NET0 = 30  # soak clusters on 127.30.x.y, 127.31.x.y, ...
# soak variants: label -> (implementation, rainbridge config overrides)
SOAK_VARIANTS = {"rainbridge": ("rainbridge", {}),
                 "rainbridge-r0": ("rainbridge", {"ping_retransmits": 0}),  # memberlist's probe
                 "serf": ("serf", {})}
PAUSE_EVERY_S, PAUSE_FOR_S = 30.0, 2.0


@dataclass
class Settings:
    sizes: list[int]
    impls: list[str]
    trials: int
    crash_trials: dict[int, int]
    lan_up_to: int
    idle_s: float
    loss_join_n: int
    loss_join_trials: int
    loss_join_percent: int
    soak_n: int
    soak_s: float
    soak_loss_percents: list[int]
    soak_impls: list[str]
    logs: Path


def percentile(values: list[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return None
    xs = sorted(values)
    pos = q * (len(xs) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def summarize(seconds: list[float], interval: float) -> dict:
    rounds = [math.ceil(s / interval - 1e-9) for s in seconds]
    return {
        "n": len(seconds),
        "p50_s": percentile(seconds, 0.5),
        "p99_s": percentile(seconds, 0.99),
        "max_s": max(seconds) if seconds else None,
        "p50_rounds": percentile(rounds, 0.5),
        "p99_rounds": percentile(rounds, 0.99),
        "samples_s": [round(s, 4) for s in seconds],
    }


class Cluster:
    """A fleet plus its base members (the observers of every trial)."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.base: list[Member] = []

    async def form(self, n: int, stagger: float = 0.1) -> float:
        """Start ``n`` members joining the first; seconds until all see all."""
        t0 = time.monotonic()
        seed = None
        for i in range(n):
            ip = self.fleet.ip(0, i + 1)
            self.base.append(await self.fleet.spawn(f"{self.fleet.kind[:2]}{i}", ip, seed))
            if seed is None:
                await self.fleet.wait_ready(self.base)
                seed = ip
            await asyncio.sleep(stagger)
        await self.fleet.wait_ready(self.base)
        names = [m.name for m in self.base]
        deadline = time.monotonic() + 60 + n
        while not all(("join", x) in m.seen for m in self.base for x in names):
            if time.monotonic() > deadline:
                missing = {m.name: [x for x in names if ("join", x) not in m.seen]
                           for m in self.base}
                raise RuntimeError(f"{self.fleet.kind} cluster of {n} did not form: {missing}")
            await asyncio.sleep(0.1)
        return time.monotonic() - t0

    def seed_for(self, k: int) -> str:
        return self.base[k % len(self.base)].ip  # spread the contacts

    async def join(self, name: str, ip: str, k: int) -> tuple[Member, float | None]:
        newcomer = await self.fleet.spawn(name, ip, self.seed_for(k))
        seen = await self.fleet.wait_seen(("join",), name, self.base, JOIN_TIMEOUT_S)
        if seen is None:
            return newcomer, None
        times = [t for _, t in seen.values()]
        return newcomer, max(times) - min(times)

    async def leave(self, m: Member) -> tuple[float | None, int]:
        """SIGINT (graceful leave); (seconds until all see it left, how many saw it failed)."""
        t0 = time.monotonic()
        m.signal(signal.SIGINT)
        seen = await self.fleet.wait_seen(("left", "failed"), m.name, self.base, LEAVE_TIMEOUT_S)
        await self.fleet.stop(m, signal.SIGKILL, timeout=LEAVE_TIMEOUT_S)
        if seen is None:
            return None, 0
        failed = sum(1 for k, _ in seen.values() if k == "failed")
        return (None if failed else max(t for _, t in seen.values()) - t0), failed

    async def crash(self, m: Member) -> float | None:
        t0 = time.monotonic()
        m.signal(signal.SIGKILL)
        seen = await self.fleet.wait_seen(("failed",), m.name, self.base, CRASH_TIMEOUT_S)
        await self.fleet.stop(m)
        return None if seen is None else max(t for _, t in seen.values()) - t0

    def cpu_ticks(self) -> list[int]:
        return [m.cpu_ticks() for m in self.base]


async def idle_cost(clusters: list[Cluster], fw: Firewall, seconds: float) -> list[dict]:
    """CPU % and bytes/s sent per member over one quiet window, for all clusters at once
    (per process and per address, so they do not mix). Bytes per member: what left the
    members' addresses plus the cluster's unbound TCP (Serf's dials from 127.0.0.1, which
    no address can be credited with), divided by N; the max counts addresses only."""
    ips = [m.ip for c in clusters for m in c.base]
    fw.count(ips, [c.fleet.cidr for c in clusters])
    await asyncio.sleep(SETTLE_S)
    ticks0, bytes0, t0 = [c.cpu_ticks() for c in clusters], fw.sent_bytes(), time.monotonic()
    await asyncio.sleep(seconds)
    ticks1, bytes1, t1 = [c.cpu_ticks() for c in clusters], fw.sent_bytes(), time.monotonic()
    span = t1 - t0
    out = []
    for c, a, b in zip(clusters, ticks0, ticks1, strict=True):
        cpu = [(y - x) / CLK_TCK / span * 100 for x, y in zip(a, b, strict=True)]
        sent = [(bytes1.get(m.ip, 0) - bytes0.get(m.ip, 0)) / span for m in c.base]
        key = f"unbound {c.fleet.cidr}"
        unbound = (bytes1.get(key, 0) - bytes0.get(key, 0)) / span
        out.append({
            "seconds": round(span, 2),
            "cpu_pct_per_member": sum(cpu) / len(cpu),
            "cpu_pct_max": max(cpu),
            "bytes_per_s_per_member": (sum(sent) + unbound) / len(sent),
            "bytes_per_s_bound_per_member": sum(sent) / len(sent),
            "bytes_per_s_unbound": unbound,
            "bytes_per_s_max": max(sent),
        })
    return out


async def join_leave_trials(c: Cluster, s: Settings, out: dict) -> None:
    problems = out["problems"]
    for k in range(s.trials):
        m, joined = await c.join(f"j{k}", c.fleet.ip(1, k + 1), k)
        if joined is None:
            problems["join_timeouts"] += 1
            await c.fleet.stop(m)
            continue
        out["joins"].append(joined)
        left, failed = await c.leave(m)
        if left is not None:
            out["leaves"].append(left)
        elif failed:
            problems["leave_seen_as_failure"] += 1
        else:
            problems["leave_timeouts"] += 1
        await asyncio.sleep(0.2)


async def crash_trials(c: Cluster, s: Settings, count: int, out: dict) -> None:
    problems = out["problems"]
    for k in range(count):
        m, joined = await c.join(f"c{k}", c.fleet.ip(2, k + 1), k + s.trials)
        if joined is None:
            problems["join_timeouts"] += 1
            await c.fleet.stop(m)
            continue
        out["joins"].append(joined)
        await asyncio.sleep(0.5)  # let the join's gossip finish before the crash
        detected = await c.crash(m)
        if detected is None:
            problems["crash_timeouts"] += 1
        else:
            out["crashes"].append(detected)


async def run_size(n: int, s: Settings, fw: Firewall, log, order: list[str]) -> list[dict]:
    """One cluster size, every implementation: formed one after the other, idle cost and
    crash trials side by side (they wait on protocol timers, not on the CPU), join/leave
    trials and lossy joins one implementation at a time."""
    profile = "lan" if n <= s.lan_up_to else "local"
    interval = GOSSIP_INTERVAL[profile]
    clusters = {kind: Cluster(Fleet(kind, profile, NETS[kind], s.logs)) for kind in order}
    outs = {kind: {"kind": kind, "n": n, "profile": profile, "gossip_interval_s": interval,
                   "joins": [], "leaves": [], "crashes": [],
                   "problems": {"join_timeouts": 0, "leave_timeouts": 0,
                                "leave_seen_as_failure": 0, "crash_timeouts": 0}}
            for kind in order}
    try:
        for kind, c in clusters.items():
            outs[kind]["form_s"] = round(await c.form(n), 2)
            log(f"  {kind} N={n} ({profile}): formed in {outs[kind]['form_s']} s")
        started = time.monotonic()
        log(f"  N={n}: idle cost over {s.idle_s:g} s...")
        for kind, idle in zip(order, await idle_cost(list(clusters.values()), fw, s.idle_s),
                              strict=True):
            outs[kind]["idle"] = idle
        for kind, c in clusters.items():
            log(f"  {kind} N={n}: {s.trials} join+leave trials...")
            await join_leave_trials(c, s, outs[kind])
        count = s.crash_trials.get(n, 0)
        log(f"  N={n}: {count} crash trials, implementations side by side...")
        await asyncio.gather(*(crash_trials(c, s, count, outs[k]) for k, c in clusters.items()))
        ended = time.monotonic()
        for kind, c in clusters.items():
            names = {m.name for m in c.base}
            o = outs[kind]
            o["false_deaths_during_trials"] = sum(c.fleet.deaths(started, ended, names).values())
            o["join"] = summarize(o.pop("joins"), interval)
            o["leave"] = summarize(o.pop("leaves"), interval)
            o["crash"] = summarize(o.pop("crashes"), interval)
        if n == s.loss_join_n and s.loss_join_trials:
            for kind, c in clusters.items():
                log(f"  {kind} N={n}: {s.loss_join_trials} joins at {s.loss_join_percent} % loss...")
                outs[kind]["lossy_join"] = await lossy_joins(c, fw, s, interval)
    finally:
        for c in clusters.values():
            await c.fleet.close()
    return [outs[kind] for kind in order]


async def lossy_joins(c: Cluster, fw: Firewall, s: Settings, interval: float) -> dict:
    fw.set_loss(c.fleet.cidr, s.loss_join_percent)
    joins: list[float] = []
    timeouts = 0
    try:
        await asyncio.sleep(2.0)
        for k in range(s.loss_join_trials):
            m, joined = await c.join(f"l{k}", c.fleet.ip(3, k + 1), k)
            if joined is None:
                timeouts += 1
            else:
                joins.append(joined)
            await c.leave(m)  # not measured: under loss some see it fail instead
            await asyncio.sleep(0.2)
    finally:
        fw.set_loss(c.fleet.cidr, 0)
    return {"loss_percent": s.loss_join_percent, "join_timeouts": timeouts,
            **summarize(joins, interval)}


async def soak(s: Settings, fw: Firewall, log) -> dict:
    """Clusters of ``soak_n`` side by side for ``soak_s``: per variant in ``soak_impls``, one
    at each of ``soak_loss_percents`` % loss and one with a member paused 2 s every 30 s."""
    clusters: dict[tuple[str, str], Cluster] = {}
    loss_of: dict[tuple[str, str], int] = {}
    results: dict = {}
    try:
        conditions = [f"loss{p}" for p in s.soak_loss_percents] + ["pause"]
        keys = [(v, c) for v in s.soak_impls for c in conditions
                if SOAK_VARIANTS[v][0] in s.impls]
        for i, (variant, condition) in enumerate(keys):
            kind, overrides = SOAK_VARIANTS[variant]
            fleet = Fleet(kind, "lan", SOAK_NET0 + i, s.logs / f"soak-{variant}-{condition}",
                          overrides)
            c = Cluster(fleet)
            c.fleet.logs.mkdir(parents=True, exist_ok=True)
            clusters[(variant, condition)] = c
            await c.form(s.soak_n)
            if condition.startswith("loss"):
                loss_of[(variant, condition)] = int(condition[4:])
        for key, pct in loss_of.items():
            if pct:
                fw.set_loss(clusters[key].fleet.cidr, pct)
        await asyncio.sleep(2.0)
        before = {key: await c.fleet.probe_failures(c.base) for key, c in clusters.items()}
        dropped0 = {key: fw.dropped(c.fleet.cidr) for key, c in clusters.items()}
        start = time.monotonic()
        log(f"  soak: {len(clusters)} clusters of {s.soak_n} for {s.soak_s:.0f} s...")
        paused = [c.base[3] for (_, cond), c in clusters.items() if cond == "pause"]
        pauses = 0
        next_pause = start + 10.0
        while time.monotonic() < start + s.soak_s:
            if time.monotonic() >= next_pause and time.monotonic() + PAUSE_FOR_S < start + s.soak_s:
                for m in paused:
                    m.signal(signal.SIGSTOP)
                await asyncio.sleep(PAUSE_FOR_S)
                for m in paused:
                    m.signal(signal.SIGCONT)
                pauses += 1
                next_pause += PAUSE_EVERY_S
            await asyncio.sleep(0.2)
        end = time.monotonic()
        hours = (end - start) / 3600
        for key, c in clusters.items():
            variant, condition = key
            failed_probes = await c.fleet.probe_failures(c.base) - before[key]
            dropped = fw.dropped(c.fleet.cidr) - dropped0[key]
            deaths = c.fleet.deaths(start, end)
            member_hours = s.soak_n * hours
            results[f"{variant}.{condition}"] = {
                "kind": variant,
                "loss_percent": loss_of.get(key),
                "condition": (f"{loss_of[key]} % loss" if key in loss_of
                              else f"1 member paused {PAUSE_FOR_S:g} s every {PAUSE_EVERY_S:g} s"),
                "n": s.soak_n,
                "seconds": round(end - start, 1),
                "pauses": pauses if condition == "pause" else 0,
                "packets_dropped": dropped,
                "false_suspicions": failed_probes,
                "false_deaths": sum(deaths.values()),
                "false_deaths_detail": sorted(f"{o} saw {x} fail" for (o, x) in deaths),
                "false_suspicions_per_member_hour": failed_probes / member_hours,
                "false_deaths_per_member_hour": sum(deaths.values()) / member_hours,
            }
    finally:
        for c in clusters.values():
            fw.set_loss(c.fleet.cidr, 0)
            await c.fleet.close()
    return results
