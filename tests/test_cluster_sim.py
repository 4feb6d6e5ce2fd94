"""Whole-cluster behaviour on the simulated network and virtual clock (``cluster/sim.py``).

Every scenario is deterministic (seeded); several run over a handful of seeds so that a
lucky schedule cannot hide a bug. Timings are virtual seconds with memberlist's LAN
defaults unless a test says otherwise.
"""

import math
import statistics

from rainbridge.cluster.config import MembershipConfig, from_bifrost_gossip
from rainbridge.cluster.events import Delegate, EventKind
from rainbridge.cluster.messages import NodeState
from rainbridge.cluster.sim import LinkProfile, SimNetwork
from rainbridge.cluster.timers import retransmit_limit

LAN = MembershipConfig.lan()


def formed(seed: int, n: int = 10, **kw) -> tuple[SimNetwork, list[str]]:
    net = SimNetwork(seed=seed, **kw)
    names = net.cluster(n)
    assert net.run_until(30, stop=net.converged), "cluster did not form"
    net.run_until(30)
    return net, names


def failures(net: SimNetwork, since: float = 0.0) -> list[tuple[float, str, str]]:
    """(time, observer, member) of every member declared dead (not left)."""
    return [
        (t, o, e.member.name)
        for t, o, e in net.log
        if t >= since and e.kind == EventKind.LEAVE and e.member.state == NodeState.DEAD
    ]


# --------------------------------------------------------------------------- join


def join_rounds(seed: int) -> tuple[int, int]:
    """Gossip rounds until (a) ten members joining through n0 at once all see each other,
    (b) a late joiner is known everywhere, counted from when the seed knew it."""
    net = SimNetwork(seed=seed)
    net.cluster(10)  # n1..n9 all push-pull with n0 at t=0
    assert net.run_until(30, stop=net.converged)
    initial = math.ceil(net.now / LAN.gossip_interval)
    net.run_until(20)
    net.add_node("late")
    net.join("late", ["n0"])
    assert net.run_for(10, stop=lambda: "late" in net.alive_set("n0"))
    t_seed = net.now
    assert net.run_for(10, stop=net.converged)
    return initial, math.ceil((net.now - t_seed) / LAN.gossip_interval)


def test_ten_nodes_join_through_one_seed_and_converge():
    rounds = [join_rounds(seed) for seed in range(10)]
    initial, late = sorted(r[0] for r in rounds), sorted(r[1] for r in rounds)
    detail = f"rounds: initial {initial}, late joiner {late}"
    assert max(initial) <= 5, detail
    assert max(late) <= 10, detail  # the target: ≤ 10 rounds p99


def lossy_join_rounds(seed: int, loss: float) -> int:
    net, _ = formed(seed)
    net.link = LinkProfile(loss=loss)
    net.add_node("late")
    net.join("late", ["n0"])
    assert net.run_for(30, stop=lambda: "late" in net.view("n0"))
    t_seed = net.now

    def everyone_knows() -> bool:
        return all(
            net.view(n).get("late") in (NodeState.ALIVE, NodeState.SUSPECT) for n in net.live()
        )

    assert net.run_for(30, stop=everyone_knows)
    return math.ceil((net.now - t_seed) / LAN.gossip_interval)


def test_join_spreads_under_30_percent_loss():
    rounds = sorted(lossy_join_rounds(seed, 0.30) for seed in range(10))
    assert statistics.median(rounds) <= 14, f"rounds at 30% loss: {rounds}"


# --------------------------------------------------------------------------- failure detection


def detection_time(seed: int, n: int = 10, config: MembershipConfig = LAN) -> float:
    """Seconds from a crash until every other member has declared it dead."""
    net, _ = formed(seed, n=n, config=config)
    victim = f"n{n // 2}"
    net.crash(victim)
    t0 = net.now
    assert net.run_for(60, stop=lambda: net.sees(victim, NodeState.DEAD))
    reasons = {e.reason for _, _, e in net.log if e.kind == EventKind.LEAVE}
    assert any(r.startswith("suspicion timed out") for r in reasons)
    assert {m for _, _, m in failures(net)} == {victim}
    return net.now - t0


def test_crash_is_detected_by_everyone_in_expected_time():
    times = sorted(detection_time(seed) for seed in range(10))
    detail = f"detection times {[round(t, 2) for t in times]}"
    # No member can be declared dead before the minimum suspicion time (4 s at N = 10);
    # everyone must agree within 10 s (the p99 target with LAN timings).
    assert times[0] >= 4.0, detail
    assert times[-1] <= 10.0, detail


def test_bifrost_timeout_seconds_is_the_expected_detection_time():
    config = from_bifrost_gossip(timeout_seconds=10, success_threshold=3, failure_threshold=3)
    times = [detection_time(seed, n=5, config=config) for seed in range(8)]
    mean = statistics.mean(times)
    assert 7.0 <= mean <= 13.0, f"mean {mean:.2f} s, times {[round(t, 2) for t in times]}"


def test_paused_node_refutes_and_is_not_declared_dead():
    suspected_runs = 0
    for seed in range(10):
        net, _ = formed(seed)
        incarnation = net.nodes["n3"].membership.incarnation
        t0 = net.now
        net.pause("n3", 2.0)  # SIGSTOP for 2 s, then SIGCONT
        net.run_for(60)
        suspected = [
            e
            for t, _, e in net.log
            if t >= t0 and e.kind == EventKind.SUSPECT and e.member.name == "n3"
        ]
        assert failures(net, since=t0) == [], f"seed {seed}"
        assert net.converged()
        if suspected:
            suspected_runs += 1
            assert net.nodes["n3"].membership.incarnation > incarnation  # it refuted
            assert net.nodes["n3"].membership.stats["refutations"] >= 1
    assert suspected_runs >= 2  # the scenario exercised refutation at all


def test_a_probe_carrying_a_stale_suspicion_is_answered_with_the_current_alive():
    """n0 suspects the paused n3, then hears nothing for 1.5 s: n3 resumes and refutes,
    everyone else takes the new incarnation, and the refutation's gossip runs out before
    n0 listens again. n0's next probe of n3 carries its old Suspect (buddy system); n3
    answers it with its current Alive instead of ignoring it, so n0's suspicion ends there
    and does not time out into a false death. (Without the answer every seed here ends with
    n0 declaring n3 dead after its unconfirmed 24 s timer.) Push-pull is off so that only
    the probe can repair n0's view."""
    config = LAN.replace(push_pull_interval=0)
    for seed in range(5):
        net = SimNetwork(seed=seed, config=config)
        net.cluster(5)
        assert net.run_until(30, stop=net.converged)
        net.run_until(30)
        old = net.nodes["n3"].membership.incarnation
        net.pause("n3")
        assert net.run_for(10, stop=lambda net=net: net.view("n0")["n3"] == NodeState.SUSPECT)
        others = ("n1", "n2", "n3", "n4")
        for name in others:
            net.set_link(name, "n0", LinkProfile(loss=1.0), both=False)
        t0 = net.now
        net.resume("n3")
        net.run_for(1.5)
        for name in others:
            net.set_link(name, "n0", LinkProfile(), both=False)
        net.run_for(40)
        n3 = net.nodes["n3"].membership
        assert n3.incarnation > old, f"seed {seed}: n3 never refuted"
        assert n3.stats["stale_suspicions_answered"] >= 1, f"seed {seed}"
        assert failures(net, since=t0) == [], f"seed {seed}"
        assert net.converged(), f"seed {seed}: {net.view('n0')}"


def test_graceful_leave_is_seen_as_left_not_as_a_failure():
    net, names = formed(3)
    t0 = net.now
    net.leave("n4")
    assert net.run_for(5, stop=lambda: net.nodes["n4"].membership.leave_propagated)
    net.crash("n4")  # the process exits after its leave went out
    assert net.run_for(2, stop=lambda: net.sees("n4", NodeState.LEFT))
    net.run_for(120)  # long past reaping: nobody turns the leave into a failure
    assert failures(net, since=t0) == []
    leaves = [(o, e.reason) for t, o, e in net.log if t >= t0 and e.kind == EventKind.LEAVE]
    assert sorted(leaves) == sorted((n, "left") for n in names)  # n4 logs its own too
    assert all(net.nodes[n].membership.failed_members() == {} for n in net.live())
    assert net.converged()


def test_restart_under_the_same_name_gets_a_new_incarnation():
    # Restarted before anyone noticed: the new process refutes its old life.
    net, _ = formed(5)
    old = net.nodes["n7"].membership.incarnation
    net.crash("n7")
    net.run_for(2)
    net.restart("n7", join=["n0"], meta=b"boot-2")
    assert net.run_for(
        10,
        stop=lambda: all(
            net.nodes[n].membership.member("n7").meta == b"boot-2" for n in net.live()
        ),
    )
    assert net.nodes["n7"].membership.incarnation > old
    assert failures(net) == [] and net.converged()

    # Restarted after it was declared dead: everyone sees it join again.
    net, _ = formed(6)
    net.crash("n7")
    assert net.run_for(30, stop=lambda: net.sees("n7", NodeState.DEAD))
    t0 = net.now
    net.restart("n7", join=["n0"])
    assert net.run_for(10, stop=net.converged)
    joins = {
        o for t, o, e in net.log if t >= t0 and e.kind == EventKind.JOIN and e.member.name == "n7"
    }
    assert joins == set(net.live())


def test_restart_under_the_same_name_at_a_new_address():
    """memberlist semantics: the name stays with the old address until that member is
    declared dead and reaped (gossip_to_the_dead_time), then the new address is taken."""
    net, _ = formed(7)
    t0 = net.now
    net.crash("n7")
    net.restart("n7", address=("10.0.9.9", 7946), join=["n0"])

    def moved() -> bool:
        return all(
            (m := net.nodes[n].membership.member("n7")) is not None
            and m.address == ("10.0.9.9", 7946)
            and m.state == NodeState.ALIVE
            for n in net.live()
        )

    assert net.run_for(120, stop=moved)
    # detection (~6 s) + gossip_to_the_dead_time (30 s) + up to one probe-list pass (the
    # reaping happens at a wrap), then each member learns the new address from the new
    # n7's next push-pull with it (its Alive was gossiped out long before): seeds 0-8 take
    # 38-58 s.
    bound = LAN.gossip_to_the_dead_time + LAN.push_pull_interval + 20
    assert net.now - t0 <= bound, f"took {net.now - t0:.1f} s"
    assert net.total("conflicts") > 0


def test_partition_3_2_heals_into_one_cluster():
    net, names = formed(11, n=5)
    left, right = names[:3], names[3:]
    net.partition(left, right)
    net.run_for(90)  # both sides declare the other dead and reap it
    for n in left:
        assert net.alive_set(n) == set(left)
    for n in right:
        assert net.alive_set(n) == set(right)
    net.heal()
    t0 = net.now
    assert net.run_for(3 * LAN.reconnect_interval, stop=net.converged), net.now - t0
    assert net.total("reconnects") > 0


def test_partition_healed_before_reaping_converges_by_refutation():
    net, names = formed(12, n=5)
    net.partition(names[:3], names[3:])
    net.run_for(15)  # dead on both sides, not yet reaped
    assert net.nodes["n0"].membership.member("n4").state == NodeState.DEAD
    net.heal()
    assert net.run_for(3 * LAN.reconnect_interval, stop=net.converged)


# --------------------------------------------------------------------------- bad networks


def test_ten_percent_loss_for_ten_minutes_without_false_deaths():
    net, _ = formed(21, link=LinkProfile(loss=0.10))
    net.run_until(600)
    detail = (
        f"suspicions {net.total('suspicions')}, refutations {net.total('refutations')}, "
        f"failed probes {net.total('probe_failures')} of {net.total('probes')}, "
        f"packets lost {net.packets_lost} of {net.packets_sent}"
    )
    assert failures(net) == [], detail
    assert net.converged(), detail
    # The loss did bite (direct pings were missed and re-sent), yet no probe needed more:
    assert net.total("ping_resends") > 0 and net.total("indirect_pings") > 0, detail


def test_duplication_and_reordering_are_harmless():
    net, _ = formed(4, link=LinkProfile(duplicate=0.3, delay=(0.001, 0.3)))
    net.run_for(120)
    assert failures(net) == [] and net.converged()


def test_lifeguard_lowers_false_suspicions_under_a_slow_node():
    def run(config: MembershipConfig) -> dict[str, int]:
        net, _ = formed(1, config=config)
        base = {k: net.total(k) for k in ("suspicions", "deaths", "probe_failures")}
        net.slow("n4", 1.2)  # processes every message 1.2 s late (> the probe interval)
        net.run_for(300)
        out = {k: net.total(k) - v for k, v in base.items()}
        out["accusations_by_slow_node"] = net.nodes["n4"].membership.stats["probe_failures"]
        return out

    lifeguard = run(LAN)
    plain = run(LAN.without_lifeguard())
    detail = f"Lifeguard {lifeguard} vs plain SWIM {plain}"
    assert lifeguard["suspicions"] * 2 < plain["suspicions"], detail
    assert lifeguard["accusations_by_slow_node"] * 10 < plain["accusations_by_slow_node"], detail
    assert lifeguard["deaths"] == 0, detail


# --------------------------------------------------------------------------- dissemination


def test_broadcast_reaches_everyone_and_is_sent_retransmit_limit_times():
    class Inbox(Delegate):
        def __init__(self) -> None:
            self.got: list[bytes] = []

        def notify_msg(self, payload: bytes) -> None:
            self.got.append(payload)

    net = SimNetwork(seed=2)
    inboxes = {f"n{i}": Inbox() for i in range(10)}
    for name, inbox in inboxes.items():
        net.add_node(name, delegate=inbox)
    for name in list(inboxes)[1:]:
        net.join(name, ["n0"])
    assert net.run_until(30, stop=net.converged)
    sender = net.nodes["n0"].membership
    before = sender.stats["outgoing"]
    sender.queue_broadcast(b"limit-update", name="limits")
    net.run_for(10)
    deliveries = sum(inbox.got.count(b"limit-update") for inbox in inboxes.values())
    # Exactly retransmit_limit copies (8 at N = 10, no loss here), all from the sender:
    # memberlist does not re-gossip user messages; the application does if it wants to.
    assert deliveries == retransmit_limit(LAN.retransmit_mult, 10)
    assert b"limit-update" not in inboxes["n0"].got
    assert sender.stats["outgoing"] > before


def test_same_seed_same_history():
    def history(seed: int) -> list[tuple[float, str, str, str]]:
        net, _ = formed(seed, link=LinkProfile(loss=0.05, duplicate=0.05))
        net.crash("n2")
        net.run_for(30)
        return [(t, o, e.kind.value, e.member.name) for t, o, e in net.log]

    assert history(9) == history(9)
    assert history(9) != history(10)


def test_push_pull_fails_across_a_partition():
    net, _ = formed(13, n=3)
    net.partition(["n0"], ["n1", "n2"])
    net.run_for(120)
    assert net.nodes["n0"].membership.stats["push_pull_failures"] > 0
