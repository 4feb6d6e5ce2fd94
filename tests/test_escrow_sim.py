"""Fleet-wide limits in the seeded simulator (``counters/escrow_sim.py``): exactness without
faults, Σ admitted ≤ limit for every seed with them, and the partition / crash / restart /
idle / window rules one by one."""

from __future__ import annotations

import pytest

from rainbridge.counters.escrow import EscrowConfig, Limit
from rainbridge.counters.escrow_sim import (
    START_MS,
    EscrowSim,
    Faults,
    chaos_scenario,
    fault_scenario,
    scale_up_scenario,
)

A = Limit("vk_a:requests:10s", 50, "10s")
SMALL = Limit("vk_b:requests:10s", 7, "10s")
LIMITS = {A.lid: A.limit, SMALL.lid: SMALL.limit}
W0, W1 = START_MS, START_MS + 10_000  # the first two windows of 10 s


def _others(sim: EscrowSim, name: str) -> list[str]:
    return [n for n in sim.names if n != name]


@pytest.mark.parametrize("n", [3, 8, 20])
@pytest.mark.parametrize("spread", ["uniform", "skewed"])
def test_without_faults_four_times_the_limit_admits_exactly_the_limit(n, spread):
    sim = EscrowSim(n, [A, SMALL], seed=n)
    hot = "n1" if spread == "skewed" else None
    for lim in (A, SMALL):
        sim.load(lim.lid, 4 * lim.limit / 10, 0, 30, hot=hot, hot_share=0.8)
    sim.run_until(32)
    for lim in (A, SMALL):
        windows = sim.window_starts(lim.lid, 0, 30)
        assert len(windows) == 3
        assert [sim.admitted[(lim.lid, ws)] for ws in windows] == [lim.limit] * 3
    assert sim.summary(0, 30)["under_admission_pct"] == 0


@pytest.mark.parametrize("hot_share", [0.0, 0.8])
def test_200_requests_in_a_burst_against_50_admit_exactly_50(hot_share):
    sim = EscrowSim(3, [A], seed=7)
    for i in range(200):
        target = "n0" if i < 200 * hot_share else sim.names[i % 3]
        sim.at(1 + i * 0.001, lambda target=target: sim.request(target, A.lid))
    sim.run_until(3)
    assert sim.admitted[(A.lid, W0)] == 50
    assert sim.refused[(A.lid, W0)] == 150  # every request got its answer


def test_owner_reclaims_unused_allowance_before_refusing():
    """Allowances spread over five members, then all load moves to one: the limit is still
    reached exactly, well before idle members would hand anything back."""
    sim = EscrowSim(5, [A], seed=2)
    for i in range(20):
        sim.at(1 + i * 0.001, lambda i=i: sim.request(sim.names[i % 5], A.lid))
    for i in range(180):
        sim.at(1.1 + i * 0.002, lambda: sim.request("n0", A.lid))
    sim.run_until(2.5)  # idle hand-back would start at 3 s
    assert sim.admitted[(A.lid, W0)] == 50
    assert sim.stat("reclaims") > 0


def test_small_limit_is_granted_one_unit_at_a_time():
    sim = EscrowSim(10, [SMALL], seed=3)
    sim.load(SMALL.lid, 4 * SMALL.limit / 10, 0, 10)
    sim.run_until(10)
    assert sim.admitted[(SMALL.lid, W0)] == SMALL.limit
    grants = [a.last_grant for m in sim.processes for _, a in m.node.allowances() if a.granted]
    assert grants and max(grants) == 1


SEEDS = range(50)


@pytest.mark.parametrize("seed", SEEDS)
def test_fleet_limit_holds_under_loss_partition_owner_crash_and_skew(seed):
    sim = fault_scenario(seed, [A, SMALL])
    assert sim.violations() == {}
    assert sim.unserved > 0 or sim.stat("takeovers") > 0  # the faults happened
    assert all(v <= LIMITS[k[0]] for k, v in sim.admitted.items())


@pytest.mark.parametrize("seed", [*range(20), 5054])  # 5054: a duplicated ack once committed a grant
def test_fleet_limit_holds_through_random_partitions_crashes_and_restarts(seed):
    sim = chaos_scenario(seed, [A, SMALL])
    assert sim.violations() == {}


@pytest.mark.parametrize("seed", range(5))
def test_fleet_limit_holds_through_a_bulk_scale_up(seed):
    sim = scale_up_scenario(seed, [A, SMALL], acceptors=15, fleet=15)
    assert len(sim.names) <= 15
    assert sim.violations() == {}
    assert sum(sim.admitted.values()) > 0
    assert max(sim.epochs) >= 2  # the joins were roster epochs


# 3: before roster epochs, joiners that had synced from early snapshots formed a quorum of
# the new roster and adopted a ledger without the old owner's later grants (8 of 7 admitted).
@pytest.mark.parametrize("seed", range(4))
def test_fleet_limit_holds_through_a_bulk_scale_up_past_the_acceptor_group_size(seed):
    # Groups of 5 in a fleet growing to 15: a limit's group changes members with each
    # epoch, and the new group takes the ledger over from a sealed majority of the old one.
    sim = scale_up_scenario(seed, [A, SMALL], acceptors=5, fleet=15)
    assert sim.violations() == {}
    assert sum(sim.admitted.values()) > 0


@pytest.mark.parametrize("seed", [0, 1, 2, 10])
def test_outstanding_allowance_never_exceeds_the_limit_at_any_instant(seed):
    """Stronger than Σ admitted: Σ (granted − returned) over every process that ever ran
    (crashed ones included), checked after every simulated event."""
    sim = fault_scenario(seed, [A, SMALL], until=25, strict=True)
    assert sim.peak_outstanding
    assert all(v <= LIMITS[k[0]] for k, v in sim.peak_outstanding.items())


def _big_limit_sim(n: int, seed: int, **kw) -> EscrowSim:
    big = Limit("vk_big:requests:10s", 1000, "10s")
    sim = EscrowSim(n, [big], seed=seed, **kw)
    sim.load(big.lid, 60, 0, 10)
    return sim


@pytest.mark.parametrize("isolate", ["member", "owner"])
def test_side_without_a_majority_spends_only_allowance_it_holds(isolate):
    sim = _big_limit_sim(5, seed=4)
    lid = "vk_big:requests:10s"
    owner = sim.owner_of(lid)
    alone = owner if isolate == "owner" else next(n for n in sim.names if n != owner)
    sim.run_until(2)
    a = sim.members[alone].node.allowance(lid, W0)
    granted, spare = a.granted, a.spare()
    before = {n: sim.admitted_by[(n, lid, W0)] for n in sim.names}
    sim.partition([alone], _others(sim, alone))
    sim.run_until(8)
    assert a.granted == granted  # nothing new reached it
    assert sim.admitted_by[(alone, lid, W0)] - before[alone] <= spare
    majority = sum(sim.admitted_by[(n, lid, W0)] - before[n] for n in _others(sim, alone))
    assert majority > 4 * 60  # the majority side kept going (≈ 4/5 of 6 s × 60/s)
    assert sim.admitted[(lid, W0)] <= 1000
    if isolate == "owner":
        new_owner = sim.owner_of(lid)  # truth: the isolated owner is live but unreachable
        assert any(sim.members[n].node.owns(lid) for n in _others(sim, alone))
        assert new_owner == alone  # by hash it still wins: only a majority may grant


def test_owner_crash_stalls_grants_until_failure_detection_then_resumes():
    sim = _big_limit_sim(5, seed=5, faults=Faults(detect=(0.5, 1.0)))
    lid = "vk_big:requests:10s"
    sim.run_until(3)
    owner = sim.owner_of(lid)
    sim.crash(owner)
    sim.run_until(4.5)  # detection (≤ 1 s) plus one Prepare round
    successor = sim.owner_of(lid)
    assert successor != owner and sim.members[successor].node.owns(lid)
    before = sim.admitted[(lid, W0)]
    sim.run_until(9)
    assert sim.admitted[(lid, W0)] - before > 3 * 60  # admissions continue past allowances held


def test_restarted_member_neither_promises_nor_owns_before_it_synced():
    sim = EscrowSim(3, [A], seed=6)
    owner = sim.owner_of(A.lid)
    sim.run_until(1)
    ballot_before = sim.members[owner].node.acceptor.promised_for(A.lid)
    sim.partition([owner], _others(sim, owner))
    sim.restart(owner)
    sim.run_until(4)
    node = sim.members[owner].node
    assert not node.synced and not node.owns(A.lid)
    assert any(sim.members[n].node.owns(A.lid) for n in _others(sim, owner))
    sim.heal()
    sim.run_until(7)
    assert node.synced and node.owns(A.lid)  # it hashes highest again, so it takes over
    # Its restart was roster epoch 2: it owns under a ballot of that epoch, above every
    # ballot of its earlier life.
    assert node.epoch == 2 and node.acceptor.promised_for(A.lid) > ballot_before
    assert node.acceptor.promised_for(A.lid).epoch == 2


def test_idle_member_hands_its_allowance_back():
    config = EscrowConfig(idle_ms=1000)
    sim = EscrowSim(3, [A], seed=8, config=config)
    idle = next(n for n in sim.names if n != sim.owner_of(A.lid))
    sim.load(A.lid, 20, 0, 1, targets=[idle])
    sim.run_until(1)
    a = sim.members[idle].node.allowance(A.lid, W0)
    assert a.spare() > 0
    sim.run_until(3.5)
    assert a.spare() == 0 and a.returned > 0
    owner = sim.members[sim.owner_of(A.lid)].node
    assert owner.acceptor.windows(A.lid)[W0].returned[f"{idle}:1"] == a.returned


def test_draining_member_hands_everything_back_and_stops_owning():
    sim = EscrowSim(3, [A], seed=14)
    sim.load(A.lid, 20, 0, 1)
    sim.run_until(1)
    owner = sim.owner_of(A.lid)
    node = sim.members[owner].node
    held = node.allowance(A.lid, W0)
    assert node.owns(A.lid) and held.spare() > 0
    sim.drain(owner)
    sim.run_until(1.5)
    assert not node.owns(A.lid) and held.spare() == 0
    successor = sim.members[sim.owner_of(A.lid)].node
    assert successor.owns(A.lid)
    ledger = successor.acceptor.windows(A.lid)[W0]
    assert ledger.returned[f"{owner}:1"] == held.returned > 0  # free to grant again


def test_window_leftovers_vanish_with_the_window():
    sim = EscrowSim(3, [A], seed=9)
    sim.load(A.lid, 3, 0, 5)  # far below the limit: allowances left over
    sim.run_until(9)
    assert any(m.node.allowance(A.lid, W0) for m in sim.processes)
    sim.run_until(10 + 6 * 2 + 1.5)  # the end, the skew slack, one gossip interval
    assert not any(m.node.allowance(A.lid, W0) for m in sim.processes)
    assert not any(W0 in m.node.acceptor.windows(A.lid) for m in sim.processes)


def test_fleet_usage_converges_to_the_true_sum_despite_loss():
    sim = EscrowSim(6, [A], seed=11, faults=Faults(loss=0.2, duplicate=0.05))
    sim.load(A.lid, 6, 0, 4)
    sim.run_until(9.9)  # about six push-pull rounds after the last admission
    truth = sim.admitted[(A.lid, W0)]
    assert truth > 10
    assert [m.node.fleet_usage(A.lid, W0) for m in sim.members.values()] == [truth] * 6


def test_member_whose_clock_runs_ahead_is_granted_in_the_next_window():
    sim = EscrowSim(3, [A], seed=12)
    owner = sim.owner_of(A.lid)
    ahead = next(n for n in sim.names if n != owner)
    sim.members[ahead].skew_ms = 2000  # its windows turn 2 s early
    sim.load(A.lid, 20, 8.2, 9.8, targets=[ahead])
    sim.run_until(9.8)  # the owner's clock has not reached the window yet
    assert sim.admitted_by[(ahead, A.lid, W1)] > 10
    assert sim.members[owner].node.acceptor.windows(A.lid)[W1].granted[f"{ahead}:1"] > 0


def test_in_a_large_fleet_the_side_with_most_of_the_acceptor_group_keeps_granting():
    """N = 9, the limit's acceptor group is 5 of them: three acceptors alone outvote the six
    others (owner included) and keep granting; the six spend what they hold."""
    sim = _big_limit_sim(9, seed=13)
    lid = "vk_big:requests:10s"
    group = sim.members["n0"].node.acceptors[lid]
    assert len(group) == 5
    owner = sim.owner_of(lid)
    small = [n for n in group if n != owner][:3]
    large = [n for n in sim.names if n not in small]
    sim.run_until(2)

    def granted() -> dict[str, int]:
        allowances = {n: sim.members[n].node.allowance(lid, W0) for n in sim.names}
        return {n: a.granted if a else 0 for n, a in allowances.items()}

    before = granted()
    sim.partition(small, large)
    sim.run_until(8)
    assert any(sim.members[n].node.owns(lid) for n in small)
    after = granted()
    grown = {n for n in sim.names if after[n] > before[n]}
    assert grown and grown <= set(small)  # only the acceptor majority's side got grants
    assert sim.admitted[(lid, W0)] <= 1000
