"""One rate limit for a fleet of real processes: exactness, coordination latency, sync bytes,
counter-view staleness, and what cluster mode costs far from limits.

    .venv/bin/python bench/cluster_limits.py [--quick] [--sizes 3,10] [--spreads uniform,skewed]
                                             [--limit 600] [--seconds 30] [--tp-runs 5]
                                             [--dsn postgresql://postgres@127.0.0.1:5432/test]
                                             [--out bench/results/cluster_limits.json]

For each fleet size N: N ``rainbridge serve`` processes (one worker each, so N cluster
members) on 127.0.0.101… in cluster mode, on a fresh PostgreSQL database (created here and
dropped at the end) and one fake provider. Per spread (``uniform``: round robin over the
members; ``skewed``: 80 % to the first member), a virtual key of its own allows ``--limit``
requests per day; requests arrive open loop at an even pace, 2 × the limit over
``--seconds``. Measured:

- admitted / limit: overshoot and under-admission in % of the limit;
- latency of admitted requests far from the limit (the first half) and near it (from 80 %
  of the limit on), and of the refusals: the difference is what coordination adds;
- grant and sync bytes/s per member (``fleet_counters.stats`` in /api/cluster/status:
  escrow frames sent) and all cluster bytes/s per member (``rainbridge_cluster_bytes`` on
  /metrics: membership gossip and escrow together);
- staleness of the counter view: every member's ``fleet_counters.usage`` is polled every
  ``--poll-ms``; the k-th admission (by the time its 200 arrived) is in a member's view at
  the first sample where that member's fleet count is ≥ k; staleness = the time until it
  is in every member's view (the admitting member's included). Sampling adds up to one
  poll interval; taking the response time as the admission time removes the request's own
  latency (ms).

Then throughput of one governed gateway with cluster mode off vs on (a member of a
three-process fleet, the other two idle; a virtual key with a limit far away), driven side
by side at the same time (as features.py does: the ratio cancels the shared machine's
drift), ``--tp-runs`` runs, median ratio. Load by ``wrk`` when installed, else
``bench/httpload.py``.

Prints the results beside the targets and writes JSON. ``--quick`` (N = 3 only, limit 100,
8 s, one 3 s throughput run) checks that it works in ~40 s; the full run takes ~3 minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import asyncpg

import httpload
import procs
import wrkload
from rainbridge.counters.fleet import FLEET_CONFIG

BENCH = Path(__file__).resolve().parent
DEFAULT_OUT = BENCH / "results" / "cluster_limits.json"
DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"
TOKEN = "cluster-limits-bench-admin-token"
ESCROW_GOSSIP_S = FLEET_CONFIG.gossip_ms / 1000  # the escrow's push-pull interval
TIMING = {"timeout_seconds": 4, "success_threshold": 1, "failure_threshold": 10}
FAR_KEY = "sk-rb-far-" + "0" * 26
TARGETS = {
    "overshoot_pct": ("requests overshoot", "= 0 %"),
    "under_pct": ("under-admission", "≤ 2 % of the limit"),
    "staleness": ("staleness p99", f"≤ 3 gossip intervals ({3 * ESCROW_GOSSIP_S:g} s)"),
    "tp_cost": ("cluster mode throughput cost far from limits", "≤ 10 %"),
}
QUOTES = (
    "naive per-replica counters admit up to N × the limit (N replicas × workers)",
    "Kong's cluster strategy is exact only when it syncs on every request",
    "Cloudflare's published average rate error: 6 %",
)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def key_value(name: str) -> str:
    return f"sk-rb-{name}-".ljust(36, "0")


# ------------------------------------------------------------------ PostgreSQL


def with_db(dsn: str, name: str) -> str:
    base, _, query = dsn.partition("?")
    base = base.rsplit("/", 1)[0]
    return f"{base}/{name}" + (f"?{query}" if query else "")


async def _admin(dsn: str, sql: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


class Database:
    """A fresh database for one fleet, dropped on exit."""

    def __init__(self, dsn: str) -> None:
        self.admin = dsn
        self.name = f"rb_bench_{uuid.uuid4().hex[:12]}"
        self.dsn = with_db(dsn, self.name)

    def __enter__(self) -> Database:
        asyncio.run(_admin(self.admin, f'CREATE DATABASE "{self.name}"'))
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run(_admin(self.admin, f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))


# ------------------------------------------------------------------ the fleet


def fleet_config(mock_url: str, dsn: str, hosts: list[str], ports: list[int], index: int,
                 keys: dict[str, int]) -> str:
    provider = {"keys": [{"name": "bench", "value": "sk-bench", "models": ["*"], "weight": 1}],
                "network_config": {"base_url": mock_url}}
    vks = [{"id": f"vk-{name}", "name": name, "value": key_value(name),
            "rate_limit": {"request_max_limit": limit, "request_reset_duration": "1d"}}
           for name, limit in keys.items()]
    vks.append({"id": "vk-far", "name": "far", "value": FAR_KEY,
                "rate_limit": {"request_max_limit": 10**9, "request_reset_duration": "1d"}})
    cfg: dict = {
        "providers": {"openai": provider},
        "config_store": {"enabled": True, "type": "postgres", "config": {"dsn": dsn}},
        "governance": {"virtual_keys": vks},
    }
    if hosts:
        cfg["cluster_config"] = {
            "enabled": True, "node_name": f"m{index}",
            "peers": [f"{h}:{p}" for h, p in zip(hosts, ports, strict=True)],
            "gossip": {"port": ports[index], "profile": "lan", "config": TIMING},
        }
    return json.dumps(cfg, indent=2)


def start_fleet(ps: procs.Procs, n: int, mock_url: str, dsn: str, keys: dict[str, int],
                first_host: int = 101, tag: str = "m") -> list[procs.Proc]:
    hosts = [f"127.0.0.{first_host + i}" for i in range(n)]
    ports = [procs.free_port(h) for h in hosts]
    env = {"RAINBRIDGE_ADMIN_TOKEN": TOKEN}
    members = [
        ps.start_gateway(mock_url, "uvicorn", host=hosts[i], name=f"{tag}{i}",
                         config_json=fleet_config(mock_url, dsn, hosts, ports, i, keys),
                         env=env, start_timeout_s=60)
        for i in range(n)
    ]
    deadline = time.monotonic() + 60 + 3 * n
    while time.monotonic() < deadline:
        ps.check_alive()
        if all(_alive_seen(m.url) == n and procs.http_ok(m.url + "/health/ready") for m in members):
            return members
        time.sleep(0.2)
    raise procs.StartError(f"the fleet of {n} did not form and sync in time")


def status(url: str) -> dict:
    req = urllib.request.Request(url + "/api/cluster/status",
                                 headers={"authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        return json.loads(resp.read())


def _alive_seen(url: str) -> int:
    try:
        return sum(1 for m in status(url)["members"] if m["state"] == "alive")
    except (OSError, ValueError, KeyError):
        return -1


_BYTES = re.compile(r'^rainbridge_cluster_bytes(?:_total)?\{([^}]*)\}\s+([0-9.eE+]+)', re.M)


def cluster_bytes_out(url: str) -> float:
    """Every byte this member's cluster transport sent (UDP + TCP), from /metrics."""
    with urllib.request.urlopen(url + "/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return sum(float(v) for labels, v in _BYTES.findall(text) if 'direction="out"' in labels)


def escrow_bytes(url: str) -> dict[str, float]:
    stats = status(url).get("fleet_counters", {}).get("stats", {})
    return {k: float(stats.get(k, 0)) for k in ("grant_bytes_out", "sync_bytes_out", "bytes_in")}


def snapshot_bytes(members: list[procs.Proc]) -> list[dict[str, float]]:
    return [{**escrow_bytes(m.url), "cluster_bytes_out": cluster_bytes_out(m.url)} for m in members]


# ------------------------------------------------------------------ one limit under load


def skip_window_edge(seconds: float) -> None:
    """The daily window must not turn during a run (at most ``seconds`` + 10 of waiting)."""
    left = 86_400 - time.time() % 86_400
    if left < seconds + 10:
        log(f"waiting {left + 1:.0f} s for the daily window to turn")
        time.sleep(left + 1)


async def run_limit(members: list[procs.Proc], key: str, vk_id: str, limit: int, spread: str,
                    seconds: float, poll_s: float) -> dict:
    """Open-loop load at 2 × ``limit`` over ``seconds`` while every member's view is polled."""
    n = len(members)
    clients = [httpload.Client(m.url, key) for m in members]
    total = 2 * limit
    if spread == "skewed":
        others = list(range(1, n))
        targets = [0 if i % 10 < 8 else others[i % len(others)] for i in range(total)]
    else:
        targets = [i % n for i in range(total)]
    results: list[tuple[int, int, float, float, int]] = []  # (index, member, sent, done, status)
    samples: list[list[tuple[float, int]]] = [[] for _ in members]
    t0 = time.perf_counter()
    loop_done = asyncio.Event()

    async def one(i: int) -> None:
        await asyncio.sleep(max(0.0, t0 + i * seconds / total - time.perf_counter()))
        sent = time.perf_counter()
        code, latency, _ = await clients[targets[i]].chat()
        results.append((i, targets[i], sent, sent + latency, code))

    def view(url: str) -> int:
        body = status(url).get("fleet_counters", {})
        return sum(u["fleet"] for u in body.get("usage", ()) if f"/{vk_id}/requests/" in u["limit"])

    async def poll(j: int) -> None:
        loop = asyncio.get_running_loop()
        while True:
            t = time.perf_counter()
            try:
                value = await loop.run_in_executor(pool, view, members[j].url)
                samples[j].append((t, value))
            except (OSError, ValueError):
                pass
            if loop_done.is_set() and samples[j] and samples[j][-1][1] >= admitted_so_far():
                return
            if time.perf_counter() - t0 > seconds + 10 * ESCROW_GOSSIP_S:
                return
            await asyncio.sleep(max(0.0, poll_s - (time.perf_counter() - t)))

    def admitted_so_far() -> int:
        return sum(1 for r in results if r[4] == 200)

    pool = ThreadPoolExecutor(max_workers=n)  # one poller thread per member: no queueing
    pollers = [asyncio.create_task(poll(j)) for j in range(n)]
    await asyncio.gather(*(one(i) for i in range(total)))
    loop_done.set()
    await asyncio.gather(*pollers)
    pool.shutdown()
    for c in clients:
        c.close()

    codes: dict[str, int] = {}
    for r in results:
        codes[str(r[4])] = codes.get(str(r[4]), 0) + 1
    admitted = codes.get("200", 0)
    far = [r[3] - r[2] for r in results if r[4] == 200 and r[0] < limit // 2]
    near = [r[3] - r[2] for r in results if r[4] == 200 and r[0] >= 0.8 * limit]
    refused = [r[3] - r[2] for r in results if r[4] == 429]
    stale, unseen = staleness([r[3] for r in results if r[4] == 200], samples)
    ms = lambda v: round(1000 * v, 2)  # noqa: E731
    pct = httpload.percentile
    return {
        "n": n, "spread": spread, "limit": limit, "offered": total, "seconds": seconds,
        "statuses": codes, "admitted": admitted,
        "overshoot_pct": 100 * max(0, admitted - limit) / limit,
        "under_pct": 100 * max(0, limit - admitted) / limit,
        "far_p50_ms": ms(pct(far, 0.5)), "far_p99_ms": ms(pct(far, 0.99)),
        "near_p50_ms": ms(pct(near, 0.5)), "near_p99_ms": ms(pct(near, 0.99)), "near_count": len(near),
        "refused_p50_ms": ms(pct(refused, 0.5)), "refused_p99_ms": ms(pct(refused, 0.99)),
        "added_p50_ms": ms(pct(near, 0.5) - pct(far, 0.5)) if near and far else None,
        "added_p99_ms": ms(pct(near, 0.99) - pct(far, 0.99)) if near and far else None,
        "staleness_p50_s": round(pct(stale, 0.5), 3) if stale else None,
        "staleness_p99_s": round(pct(stale, 0.99), 3) if stale else None,
        "staleness_max_s": round(max(stale), 3) if stale else None,
        "staleness_unseen": unseen,
        "slowest_admitted": [  # (request index, member, ms): where a long tail comes from
            (r[0], r[1], ms(r[3] - r[2]))
            for r in sorted((r for r in results if r[4] == 200), key=lambda r: r[2] - r[3])[:5]
        ],
        "poll_s": poll_s,
        "samples_per_member": round(statistics.mean(len(s) for s in samples), 1),
    }


def staleness(admitted_at: list[float], samples: list[list[tuple[float, int]]]) -> tuple[list[float], int]:
    """Per admission (the k-th by time): until every member's sampled fleet count is ≥ k.
    Returns the staleness of those every view reached, and how many no view reached before
    polling stopped."""
    times = sorted(admitted_at)
    out, unseen = [], 0
    for k, at in enumerate(times, 1):
        seen = []
        for series in samples:
            first = next((t for t, v in series if v >= k), None)
            if first is None:
                break
            seen.append(first)
        if len(seen) < len(samples):
            unseen += 1
            continue
        out.append(max(0.0, max(seen) - at))
    return out, unseen


def measure_fleet(n: int, spreads: list[str], limit: int, seconds: float, poll_s: float,
                  dsn: str, workdir: Path) -> list[dict]:
    keys = {spread: limit for spread in spreads}
    runs = []
    with Database(dsn) as db, procs.Procs(workdir) as ps:
        mock = ps.start_mock()
        log(f"N={n}: starting {n} members")
        t = time.monotonic()
        members = start_fleet(ps, n, mock.url, db.dsn, keys)
        log(f"N={n}: formed and synced in {time.monotonic() - t:.1f} s")
        for spread in spreads:
            skip_window_edge(seconds + 15)
            before, t_before = snapshot_bytes(members), time.perf_counter()
            result = asyncio.run(run_limit(members, key_value(spread), f"vk-{spread}", limit,
                                           spread, seconds, poll_s))
            after, elapsed = snapshot_bytes(members), time.perf_counter() - t_before
            ps.check_alive()
            per = {k: statistics.mean((a[k] - b[k]) / elapsed for a, b in zip(after, before, strict=True))
                   for k in after[0]}
            result["bytes_per_member_s"] = {k: round(v) for k, v in per.items()}
            result["bytes_window_s"] = round(elapsed, 1)
            log(f"N={n} {spread}: admitted {result['admitted']}/{limit}, "
                f"statuses {result['statuses']}, staleness p99 {result['staleness_p99_s']} s")
            runs.append(result)
    return runs


# ------------------------------------------------------------------ throughput on vs off


def drive(url: str, key: str, connections: int, duration_s: float, workdir: Path) -> subprocess.Popen:
    if shutil.which("wrk"):
        script = wrkload.write_script(workdir, key=key, name=f"chat-{uuid.uuid4().hex[:6]}.lua")
        argv = ["wrk", "-t1", f"-c{connections}", f"-d{duration_s:g}s", "--latency", "-s",
                str(script), url + httpload.CHAT_PATH]
    else:
        argv = [sys.executable, str(BENCH / "httpload.py"), url, "--key", key,
                "--connections", str(connections), "--duration", f"{duration_s:g}"]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def collect(p: subprocess.Popen, duration_s: float) -> dict:
    out, err = p.communicate(timeout=duration_s + 60)
    line = next((x for x in out.splitlines() if x.startswith(("BENCH ", "{"))), None)
    if line is None:
        raise RuntimeError(f"load generator gave no result: {err.strip()[-500:]}")
    if line.startswith("BENCH "):
        raw = json.loads(line[6:])
        secs = raw["duration_us"] / 1e6
        return {"requests": raw["requests"], "rps": raw["requests"] / secs if secs else 0.0,
                "p50_ms": raw["p50_us"] / 1000, "p99_ms": raw["p99_us"] / 1000,
                "non_2xx": raw["status"],
                "socket_errors": raw["connect"] + raw["read"] + raw["write"] + raw["timeout"]}
    return json.loads(line)


def measure_throughput(runs: int, duration_s: float, connections: int, dsn: str, workdir: Path) -> dict:
    with Database(dsn) as db_off, Database(dsn) as db_on, procs.Procs(workdir) as ps:
        mock_off, mock_on = ps.start_mock(), ps.start_mock()
        off = ps.start_gateway(mock_off.url, "uvicorn", host="127.0.0.121", name="tp-off",
                               config_json=fleet_config(mock_off.url, db_off.dsn, [], [], 0, {}),
                               env={"RAINBRIDGE_ADMIN_TOKEN": TOKEN})
        on = start_fleet(ps, 3, mock_on.url, db_on.dsn, {}, first_host=122, tag="tp-on")[0]
        for target in (off, on):  # warm-up: connections, caches, the first grants
            collect(drive(target.url, FAR_KEY, connections, 1.0, workdir), 1.0)
        pairs = []
        for i in range(runs):
            order = [(off, "off"), (on, "on")] if i % 2 == 0 else [(on, "on"), (off, "off")]
            started = {name: drive(t.url, FAR_KEY, connections, duration_s, workdir) for t, name in order}
            got = {name: collect(p, duration_s) for name, p in started.items()}
            ps.check_alive()
            got["ratio"] = got["on"]["rps"] / got["off"]["rps"] if got["off"]["rps"] else 0.0
            log(f"throughput run {i + 1}/{runs}: off {got['off']['rps']:.0f} req/s, "
                f"on {got['on']['rps']:.0f} req/s (on/off {got['ratio']:.3f})")
            pairs.append(got)
    ratio = statistics.median(p["ratio"] for p in pairs)
    return {
        "runs": pairs, "connections": connections, "duration_s": duration_s,
        "load_generator": "wrk" if shutil.which("wrk") else "bench/httpload.py",
        "off_rps": statistics.median(p["off"]["rps"] for p in pairs),
        "on_rps": statistics.median(p["on"]["rps"] for p in pairs),
        "ratio": ratio, "cost_pct": 100 * (1 - ratio),
        "ratio_min": min(p["ratio"] for p in pairs), "ratio_max": max(p["ratio"] for p in pairs),
        "non_2xx": sum(p[k]["non_2xx"] for p in pairs for k in ("on", "off")),
    }


# ------------------------------------------------------------------ report


def render(runs: list[dict], tp: dict | None) -> str:
    out = ["fleet-wide request limit, real processes (2 × the limit offered, open loop)", ""]
    out.append(f"{'N':>3} {'spread':<8} {'admitted':>9} {'over %':>6} {'under %':>7} "
               f"{'far p50/p99 ms':>15} {'near p50/p99 ms':>16} {'429 p50/p99 ms':>15} "
               f"{'grant B/s':>9} {'sync B/s':>8} {'cluster B/s':>11} {'stale p50/p99 s':>16}")
    for r in runs:
        b = r["bytes_per_member_s"]
        out.append(
            f"{r['n']:>3} {r['spread']:<8} {r['admitted']:>4}/{r['limit']:<4} {r['overshoot_pct']:>6.1f} "
            f"{r['under_pct']:>7.1f} {r['far_p50_ms']:>7.1f}/{r['far_p99_ms']:<7.1f} "
            f"{r['near_p50_ms']:>8.1f}/{r['near_p99_ms']:<7.1f} {r['refused_p50_ms']:>7.1f}/{r['refused_p99_ms']:<7.1f} "
            f"{b['grant_bytes_out']:>9} {b['sync_bytes_out']:>8} {b['cluster_bytes_out']:>11} "
            f"{r['staleness_p50_s']}/{r['staleness_p99_s']}".rstrip())
    if tp:
        out += ["", f"one governed gateway far from limits ({tp['load_generator']}, c={tp['connections']}, "
                f"{len(tp['runs'])} side-by-side runs of {tp['duration_s']:g} s): cluster off "
                f"{tp['off_rps']:.0f} req/s, on {tp['on_rps']:.0f} req/s; median on/off "
                f"{tp['ratio']:.3f} [{tp['ratio_min']:.3f}..{tp['ratio_max']:.3f}] "
                f"(cost {tp['cost_pct']:.1f} %)"]
    out += ["", "targets"]
    for check in targets(runs, tp):
        out.append(f"  {'ok  ' if check['ok'] else 'MISS'} {check['name']}: {check['value']} "
                   f"(target {check['target']})")
    out += ["", "for comparison"] + [f"  {q}" for q in QUOTES]
    return "\n".join(out)


def targets(runs: list[dict], tp: dict | None) -> list[dict]:
    checks = []
    if runs:
        over = max(r["overshoot_pct"] for r in runs)
        under = max(r["under_pct"] for r in runs)
        stale = [r["staleness_p99_s"] for r in runs if r["staleness_p99_s"] is not None]
        checks += [
            {"name": TARGETS["overshoot_pct"][0], "target": TARGETS["overshoot_pct"][1],
             "value": f"worst {over:.1f} %", "ok": over == 0},
            {"name": TARGETS["under_pct"][0], "target": TARGETS["under_pct"][1],
             "value": f"worst {under:.1f} %", "ok": under <= 2},
            {"name": TARGETS["staleness"][0], "target": TARGETS["staleness"][1],
             "value": f"worst {max(stale) if stale else '-'} s",
             "ok": bool(stale) and max(stale) <= 3 * ESCROW_GOSSIP_S
             and all(r["staleness_unseen"] == 0 for r in runs)},
        ]
    if tp:
        checks.append({"name": TARGETS["tp_cost"][0], "target": TARGETS["tp_cost"][1],
                       "value": f"{tp['cost_pct']:.1f} %", "ok": tp["cost_pct"] <= 10})
    return checks


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="check it works: N = 3, limit 100 over 8 s, one 3 s throughput run")
    p.add_argument("--sizes", default=None, help="fleet sizes (3,10; quick 3)")
    p.add_argument("--spreads", default="uniform,skewed")
    p.add_argument("--limit", type=int, default=None, help="requests per window (600; quick 100)")
    p.add_argument("--seconds", type=float, default=None, help="load duration (30; quick 8)")
    p.add_argument("--poll-ms", type=float, default=100.0, help="counter-view polling interval")
    p.add_argument("--tp-runs", type=int, default=None, help="throughput runs (5; quick 1; 0 = skip)")
    p.add_argument("--tp-duration", type=float, default=None, help="seconds per run (5; quick 3)")
    p.add_argument("--tp-connections", type=int, default=32)
    p.add_argument("--dsn", default=os.environ.get("RAINBRIDGE_TEST_POSTGRES_DSN", DEFAULT_DSN))
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    return p.parse_args(argv)


def main() -> int:
    args = parse_args(sys.argv[1:])
    q = args.quick
    sizes = [int(x) for x in (args.sizes or ("3" if q else "3,10")).split(",")]
    limit = args.limit or (100 if q else 600)
    seconds = args.seconds or (8.0 if q else 30.0)
    tp_runs = args.tp_runs if args.tp_runs is not None else (1 if q else 5)
    tp_duration = args.tp_duration or (3.0 if q else 5.0)
    spreads = [s for s in args.spreads.split(",") if s]
    workdir = Path(tempfile.mkdtemp(prefix="rb-cluster-limits-"))
    machine = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(), "python": platform.python_version(),
        "platform": platform.platform(), "load_avg_start": os.getloadavg(),
    }
    log(f"cluster limits bench; process logs in {workdir}")
    started = time.monotonic()
    runs: list[dict] = []
    try:
        for n in sizes:
            runs += measure_fleet(n, spreads, limit, seconds, args.poll_ms / 1000, args.dsn, workdir)
        tp = measure_throughput(tp_runs, tp_duration, args.tp_connections, args.dsn, workdir) if tp_runs else None
    except (procs.StartError, RuntimeError, OSError) as exc:
        print(f"cluster limits bench failed: {exc}", file=sys.stderr)
        return 1
    machine["load_avg_end"] = os.getloadavg()
    machine["wall_s"] = round(time.monotonic() - started, 1)
    text = render(runs, tp)
    print()
    print(text)
    settings = {"sizes": sizes, "spreads": spreads, "limit": limit, "seconds": seconds,
                "poll_ms": args.poll_ms, "tp_runs": tp_runs, "tp_duration": tp_duration,
                "tp_connections": args.tp_connections, "quick": q, "window": "1d",
                "escrow_gossip_s": ESCROW_GOSSIP_S}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(
        {"machine": machine, "settings": settings, "runs": runs, "throughput": tp,
         "targets": targets(runs, tp), "quotes": QUOTES, "table": text}, indent=2) + "\n")
    log(f"wrote {args.out} ({machine['wall_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
