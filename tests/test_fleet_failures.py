"""Fleet-wide limits when replicas fail, with real processes and a real PostgreSQL.

Three ``rainbridge serve`` replicas, each with **one worker** (so a replica is one cluster
member, and the member that owns a limit is a process the test can signal), on their own
loopback addresses; a virtual key with an hourly request limit; paced load from a thread
pool (``fleet_support.Load``). The rules checked (see ``counters/escrow.py`` and the README):

- Owner crash: no request beyond the limit, ever; grants stall until failure detection
  moves ownership to a survivor, then admissions resume.
- SIGKILL: the store keeps everything but what the killed replica admitted since its last
  flush; SIGTERM: the store keeps everything (final flush before the leave).
- Rolling restart: nothing beyond the limit, nothing lost, nothing counted twice, and the
  fleet's usage never reads zero once requests were admitted.

Gossip timing (Bifrost's ``gossip.config``): ``timeout_seconds`` 2, ``failure_threshold`` 3,
so probes every 0.4 s and a suspicion of 1.2 s (confirmed) to 7.2 s (unconfirmed) with three
members: a crash is detected within ``DETECTION_S`` (derived below).
"""

from __future__ import annotations

import math
import signal
import threading
import time
from collections import Counter

import pytest

from fleet_support import (
    VK_ID,
    Load,
    Replica,
    fleet_config,
    last_flush,
    skip_window_edge,
    stored_total,
    wait_formed,
)
from support import eventually, free_port

HOSTS = ["127.0.0.71", "127.0.0.72", "127.0.0.73"]
LID = f"vk/{VK_ID}/requests/1h"  # the key's fleet limit id (governance's Check.lid)
TIMING = {"timeout_seconds": 2, "success_threshold": 1, "failure_threshold": 3}
# cluster.config.from_bifrost_gossip: probe interval T / (F + 2), suspicion multiplier F;
# a suspicion lasts F · max(1, log10 N) · interval (confirmed) up to 6× that (unconfirmed).
PROBE_S = TIMING["timeout_seconds"] / (TIMING["failure_threshold"] + 2)
SUSPICION_MAX_S = TIMING["failure_threshold"] * max(1.0, math.log10(len(HOSTS))) * PROBE_S * 6
# A survivor probes the dead member within two intervals (round robin over two others),
# suspects it, and declares it dead at the latest when the unconfirmed suspicion ends; one
# more second for the news to reach the other survivor and the new owner's Prepare round.
DETECTION_S = 2 * PROBE_S + SUSPICION_MAX_S + 1.0
# The gateway flushes its counters at the first maintenance tick (1 s) at least 2 s after
# the previous flush (gateway.FLUSH_INTERVAL_S, POLL_INTERVAL_S): at most 3 s apart.
FLUSH_GAP_S = 3.0


@pytest.fixture
def start_fleet(tmp_path, pg_database, mock):
    started: list[Replica] = []

    def start(limit: int) -> tuple[list[Replica], str]:
        ports = [free_port(h) for h in HOSTS]
        peers = [f"{h}:{p}" for h, p in zip(HOSTS, ports, strict=True)]
        for i, host in enumerate(HOSTS):
            config = fleet_config(mock.url, pg_database, f"r{i}", peers, ports[i], limit, TIMING)
            started.append(Replica(tmp_path, f"r{i}", host, config))
        wait_formed(started)
        return started, pg_database

    try:
        yield start
    finally:
        for r in started:
            r.stop(signal.SIGKILL)


class Targets:
    """The replicas the load goes to (as a load balancer would route): round robin over
    those in the list that are running."""

    def __init__(self, replicas: list[Replica]) -> None:
        self.replicas = list(replicas)

    def set(self, replicas: list[Replica]) -> None:
        self.replicas = list(replicas)

    def __call__(self, i: int) -> Replica | None:
        now = self.replicas  # one read: the list is replaced, never changed in place
        return now[i % len(now)] if now else None


def owner_of(replicas: list[Replica], lid: str) -> list[Replica]:
    return [r for r in replicas if r.alive() and lid in r.fleet()["owned"]]


def spare(replica: Replica) -> int:
    """Allowance this member holds unused (granted − returned − used)."""
    return sum(a["granted"] - a["returned"] - a["used"] for a in replica.fleet()["allowances"]
               if a["limit"] == LID)


@pytest.mark.timeout(60)
def test_owner_sigkilled_mid_window_never_overshoots_and_admissions_resume_after_detection(start_fleet):
    limit = 60
    replicas, _ = start_fleet(limit)
    skip_window_edge()
    assert replicas[0].chat()[0] == 200  # the limit exists in the fleet now: someone owns it
    eventually(lambda: len(owner_of(replicas, LID)) == 1 or [r.name for r in owner_of(replicas, LID)],
               10, "one owner of the key's limit")
    (owner,) = owner_of(replicas, LID)
    survivors = [r for r in replicas if r is not owner]

    targets = Targets(replicas)
    load = Load(targets, threads=4, interval=0.25)
    try:
        eventually(lambda: load.admitted() >= 15 or load.admitted(), 20, "admissions before the kill")
        held = sum(spare(r) for r in survivors)  # what the survivors may admit without a grant
        targets.set(survivors)
        killed_at = time.monotonic()
        owner.stop(signal.SIGKILL)
        before = load.admitted()

        def new_owner():
            found = owner_of(survivors, LID)
            return True if found else None

        detected = eventually(new_owner, DETECTION_S, "a survivor owns the limit (failure detected)")
        (successor,) = owner_of(survivors, LID)
        took_over_at = time.monotonic()
        # Admissions resume under the new owner (its grants), shortly after it took over.
        resumed = eventually(lambda: load.admitted(since=took_over_at) > 0 or load.admitted(since=took_over_at),
                             5.0, "admissions after the takeover")
        eventually(lambda: load.admitted(since=killed_at) > held or (held, load.admitted(since=killed_at)), 10.0,
                   "the survivors admit beyond what they held at the kill (new grants)")
    finally:
        answers = load.stop()
    statuses = Counter((a.status, a.code) for a in answers)
    admitted = sum(1 for a in answers if a.status == 200)
    assert admitted <= limit, statuses  # no request beyond the limit, ever
    assert 0 < before and admitted > before, statuses
    assert successor.fleet()["stats"]["takeovers"] >= 1
    # only answers the rule allows: admitted, refused by the fleet, or stalled while the
    # owner was down (a bounded wait, then 503), or cut by the kill
    assert set(statuses) <= {(200, ""), (429, "request_limited"), (503, "limit_coordination_timeout"),
                             (0, "RemoteDisconnected"), (0, "ConnectionResetError"),
                             (0, "ConnectionRefusedError")}, statuses
    print(f"owner {owner.name} killed: {before} admitted before, {admitted} in all (limit {limit}); "
          f"{successor.name} took over after {detected:.1f}s (bound {DETECTION_S:.1f}s), "
          f"admitting again {resumed:.1f}s later; {dict(statuses)}")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["sigkill", "sigterm"])
def test_a_replica_stopped_under_load_leaves_the_store_total_the_rule_allows(start_fleet, sig):
    replicas, dsn = start_fleet(1000)
    skip_window_edge()
    victim = replicas[2]
    targets = Targets(replicas)
    load = Load(targets, threads=3, interval=0.1)
    try:
        # a few flushes of the victim's usage, and requests in flight when it goes
        eventually(lambda: load.admitted(replica=victim.name) >= 20 or load.admitted(replica=victim.name),
                   20, "the victim admits")
        eventually(lambda: stored_total(dsn) > 0, 10, "a first flush")
        stopped_at, stopped_wall = time.monotonic(), time.time()
        code = victim.stop(sig)
        targets.set(replicas[:2])
        eventually(lambda: load.admitted(since=stopped_at + 1.0) >= 10, 10, "the survivors keep admitting")
    finally:
        answers = load.stop()
    admitted = sum(1 for a in answers if a.status == 200)
    assert admitted < 1000, "never near the limit"
    if sig == signal.SIGTERM:
        assert code == 0
        # The victim's final flush wrote all it served; the survivors flush theirs.
        eventually(lambda: stored_total(dsn) == admitted or (stored_total(dsn), admitted), 10,
                   "store total == admitted")
        return
    # SIGKILL: what it admitted since its last flush is lost, nothing more. Its last flush
    # was at most FLUSH_GAP_S before the kill ...
    flushed = last_flush(dsn, victim.name)
    assert flushed is not None and flushed >= stopped_wall - FLUSH_GAP_S, (flushed, stopped_wall)
    # ... so the store misses at most what it answered in those last seconds.
    recent = sum(1 for a in answers if a.status == 200 and a.replica == victim.name
                 and a.done >= stopped_at - FLUSH_GAP_S - 0.5)  # answered just before it settled
    waited = eventually(lambda: stored_total(dsn) >= admitted - recent or (stored_total(dsn), admitted, recent),
                        10, "store total ≥ admitted − the victim's last flush interval")
    total = stored_total(dsn)
    assert total <= admitted  # never more than was served
    print(f"SIGKILL: {admitted} admitted, store {total} after {waited:.1f}s; the victim admitted "
          f"{recent} in its last {FLUSH_GAP_S:.0f}s, last flushed {stopped_wall - flushed:.1f}s before the kill")


@pytest.mark.timeout(90)
def test_rolling_restart_keeps_the_limit_and_counts_every_request_once(start_fleet):
    limit = 60
    replicas, dsn = start_fleet(limit)
    skip_window_edge(need=90)
    targets = Targets(replicas)
    load = Load(targets, threads=3, interval=0.4)
    readings: list[tuple[float, str, float]] = []
    watching = threading.Event()

    def watch() -> None:  # the fleet's usage as any serving replica reports it
        i = 0
        deadline = time.monotonic() + 80
        while not watching.is_set() and time.monotonic() < deadline:
            serving = targets.replicas
            r = serving[i % len(serving)]
            i += 1
            try:
                readings.append((time.monotonic(), r.name, r.usage()))
            except (OSError, AssertionError):
                pass  # just stopped: the watcher asks another one next
            watching.wait(0.1)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        eventually(lambda: load.admitted() >= 5, 20, "first admissions")
        for r in replicas:
            targets.set([x for x in replicas if x is not r])  # the load balancer drains it
            assert r.stop(signal.SIGTERM) == 0
            r.start()  # same node name and gossip port: a new incarnation
            eventually(r.ready_everywhere, 30, f"{r.name} ready again")
            back = time.monotonic()
            targets.set(replicas)
        # the last one restarted answers requests again
        eventually(lambda: sum(1 for a in load.answers if a.replica == r.name and a.sent > back) >= 3,
                   10, f"{r.name} answers again")
    finally:
        answers = load.stop()
        watching.set()
        watcher.join(10)
    served = sum(1 for a in answers if a.status == 200)
    statuses = Counter((a.status, a.code) for a in answers)
    assert 0 < served <= limit, statuses
    # Once every replica has seen admissions (each learns of the others' by gossip), no
    # replica reads zero again: not a restarted one either (it loads the store, then merges).
    seen_by_all = max(min(t for t, name, v in readings if name == r.name and v > 0) for r in replicas)
    zeros = [(round(t - seen_by_all, 1), name) for t, name, v in readings if t > seen_by_all and v == 0]
    assert not zeros, f"usage read zero after admissions: {zeros}"
    # Every replica converges on the served count (nothing counted twice, nothing lost).
    eventually(lambda: [r.usage() for r in replicas] == [served] * 3 or [r.usage() for r in replicas],
               15, "every replica's usage == served")
    eventually(lambda: stored_total(dsn) == served or stored_total(dsn), 10, "store total == served")
    for r in replicas:
        assert r.stop(signal.SIGTERM) == 0
    assert stored_total(dsn) == served
    print(f"rolling restart: {served} served of limit {limit}; {len(readings)} usage readings; {dict(statuses)}")


@pytest.mark.timeout(60)
def test_a_replica_that_served_none_of_the_keys_requests_reports_the_fleets_usage(start_fleet):
    """Regression: a replica reported only what the store held when it started for a key it
    had not admitted anything for itself (the slot was never bound to the fleet limit, so
    gossip never reached it), e.g. one just restarted in a rolling restart."""
    replicas, _ = start_fleet(1000)
    skip_window_edge()
    assert [replicas[i % 2].chat()[0] for i in range(10)] == [200] * 10
    took = eventually(lambda: replicas[2].usage() == 10 or replicas[2].usage(), 10, "r2 reports the fleet's usage")
    print(f"r2 reported the fleet's 10 after {took:.1f}s")
