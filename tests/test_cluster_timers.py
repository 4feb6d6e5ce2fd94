"""Table tests of every membership timer and count formula (memberlist's values)."""

import pytest

from rainbridge.cluster.awareness import Awareness
from rainbridge.cluster.config import MembershipConfig, from_bifrost_gossip
from rainbridge.cluster.suspicion import Suspicion
from rainbridge.cluster.timers import (
    clamp_health_score,
    expected_confirmations,
    failed_probe_health_delta,
    probe_timing,
    push_pull_scale,
    reconnect_probability,
    remaining_suspicion_time,
    retransmit_limit,
    suspicion_bounds,
    suspicion_timeout,
    suspicion_total_timeout,
)


# memberlist util_test.go TestSuspicionTimeout (suspicion mult 3, 1 s interval, / 3), plus ours.
@pytest.mark.parametrize(
    ("mult", "n", "interval", "expected"),
    [
        (3, 5, 1.0, 3 * 1.000),
        (3, 10, 1.0, 3 * 1.000),
        (3, 50, 1.0, 3 * 1.698),
        (3, 100, 1.0, 3 * 2.000),
        (3, 500, 1.0, 3 * 2.698),
        (3, 1000, 1.0, 3 * 3.000),
        (4, 0, 1.0, 4.0),  # empty table: scale floors at 1
        (4, 1, 1.0, 4.0),
        (4, 2, 1.0, 4.0),  # Serf's measured 2-agent case: 4 s of suspicion
        (4, 10, 1.0, 4.0),  # LAN, 10 members
        (6, 10, 5.0, 30.0),  # WAN
        (3, 10, 2.0, 6.0),  # Bifrost {10, 3, 3}
    ],
)
def test_suspicion_timeout(mult, n, interval, expected):
    assert suspicion_timeout(mult, n, interval) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("mult", "max_mult", "n", "interval", "low", "high"),
    [
        (4, 6, 10, 1.0, 4.0, 24.0),
        (4, 6, 100, 1.0, 8.0, 48.0),
        (6, 6, 10, 5.0, 30.0, 180.0),
        (4, 1, 10, 1.0, 4.0, 4.0),  # Lifeguard off: a fixed timeout
    ],
)
def test_suspicion_bounds(mult, max_mult, n, interval, low, high):
    assert suspicion_bounds(mult, max_mult, n, interval) == pytest.approx((low, high))


@pytest.mark.parametrize(
    ("mult", "n", "k"),
    [
        (4, 10, 2),  # LAN: two confirmations reach the minimum
        (4, 4, 2),
        (4, 3, 0),  # only one other member could confirm: expect none
        (4, 1, 0),
        (3, 10, 1),
        (6, 10, 4),
        (6, 5, 0),
        (2, 10, 0),
        (1, 10, 0),
    ],
)
def test_expected_confirmations(mult, n, k):
    assert expected_confirmations(mult, n) == k


# memberlist suspicion_test.go TestSuspicion: k=3, min 0.5 s, max 2 s.
@pytest.mark.parametrize(
    ("confirmations", "expected"),
    [(0, 2.0), (1, 1.25), (2, 0.811), (3, 0.5), (4, 0.5)],
)
def test_suspicion_shrinks_with_confirmations(confirmations, expected):
    assert suspicion_total_timeout(confirmations, 3, 0.5, 2.0) == pytest.approx(expected)
    assert remaining_suspicion_time(confirmations, 3, 0.3, 0.5, 2.0) == pytest.approx(
        expected - 0.3
    )


@pytest.mark.parametrize(
    ("peers", "n", "deadline"),
    [
        ([], 0, 2.0),
        (["foo"], 1, 1.25),
        (["foo", "foo", "foo"], 1, 1.25),  # one confirmation per peer
        (["foo", "bar"], 2, 0.811),
        (["foo", "bar", "baz"], 3, 0.5),
        (["foo", "bar", "baz", "zoo"], 3, 0.5),  # beyond k: ignored
        (["me", "foo"], 1, 1.25),  # the accuser does not confirm itself
    ],
)
def test_suspicion_timer(peers, n, deadline):
    s = Suspicion("me", k=3, low=0.5, high=2.0, start=10.0)
    for peer in peers:
        s.confirm(peer)
    assert s.n == n
    assert s.deadline == pytest.approx(10.0 + deadline)


def test_suspicion_without_expected_confirmations_uses_the_minimum():
    s = Suspicion("me", k=0, low=4.0, high=24.0, start=0.0)
    assert s.deadline == 4.0
    assert not s.confirm("other")
    assert s.deadline == 4.0


# memberlist util_test.go TestRetransmitLimit, plus LAN sizes.
@pytest.mark.parametrize(
    ("mult", "n", "limit"),
    [
        (3, 0, 0),
        (3, 1, 3),
        (3, 99, 6),
        (4, 1, 4),
        (4, 9, 4),
        (4, 10, 8),
        (4, 50, 8),
        (4, 100, 12),
        (2, 10, 4),
    ],
)
def test_retransmit_limit(mult, n, limit):
    assert retransmit_limit(mult, n) == limit


# memberlist util_test.go TestPushPullScale.
@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (0, 30.0),
        (1, 30.0),
        (32, 30.0),
        (33, 60.0),
        (64, 60.0),
        (65, 90.0),
        (128, 90.0),
        (129, 120.0),
        (1000, 180.0),
    ],
)
def test_push_pull_scale(n, expected):
    assert push_pull_scale(30.0, n) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("score", "interval", "timeout"),
    [(0, 1.0, 0.5), (1, 2.0, 1.0), (3, 4.0, 2.0), (7, 8.0, 4.0)],
)
def test_health_scaled_probe_timing(score, interval, timeout):
    assert probe_timing(1.0, 0.5, score) == pytest.approx((interval, timeout))


@pytest.mark.parametrize(
    ("score", "max_mult", "clamped"),
    [(-1, 8, 0), (0, 8, 0), (5, 8, 5), (7, 8, 7), (8, 8, 7), (100, 8, 7), (3, 1, 0)],
)
def test_health_score_clamp(score, max_mult, clamped):
    assert clamp_health_score(score, max_mult) == clamped


def test_awareness_applies_deltas_within_bounds():
    a = Awareness(8)
    for delta, score, mult in [(3, 3, 4), (10, 7, 8), (-2, 5, 6), (-10, 0, 1)]:
        a.apply_delta(delta)
        assert (a.score, a.multiplier) == (score, mult)
    a.apply_delta(2)
    assert a.scale(0.5) == 1.5


@pytest.mark.parametrize(
    ("expected", "got", "delta"),
    [(3, 0, 3), (3, 1, 2), (3, 3, 0), (3, 5, 0), (0, 0, 1)],
)
def test_failed_probe_health_delta(expected, got, delta):
    assert failed_probe_health_delta(expected, got) == delta


@pytest.mark.parametrize(
    ("failed", "alive", "p"),
    [(0, 5, 0.0), (1, 9, 1 / 9), (2, 3, 2 / 3), (5, 1, 1.0), (1, 0, 1.0)],
)
def test_reconnect_probability(failed, alive, p):
    assert reconnect_probability(failed, alive) == pytest.approx(p)


# --------------------------------------------------------------------------- config


def test_presets_are_memberlists_defaults():
    lan, wan, local = MembershipConfig.lan(), MembershipConfig.wan(), MembershipConfig.local()
    assert (lan.probe_interval, lan.probe_timeout, lan.gossip_interval, lan.gossip_nodes) == (
        1.0,
        0.5,
        0.2,
        3,
    )
    assert (lan.suspicion_mult, lan.suspicion_max_timeout_mult, lan.push_pull_interval) == (
        4,
        6,
        30.0,
    )
    assert (lan.indirect_checks, lan.retransmit_mult, lan.awareness_max_multiplier) == (3, 4, 8)
    assert (lan.gossip_to_the_dead_time, lan.tcp_timeout, lan.udp_buffer_size) == (30.0, 10.0, 1400)
    assert (wan.probe_interval, wan.probe_timeout, wan.suspicion_mult, wan.gossip_nodes) == (
        5.0,
        3.0,
        6,
        4,
    )
    assert (wan.gossip_interval, wan.push_pull_interval, wan.gossip_to_the_dead_time) == (
        0.5,
        60.0,
        60.0,
    )
    assert (local.probe_timeout, local.indirect_checks, local.retransmit_mult) == (0.2, 1, 2)
    assert (local.suspicion_mult, local.push_pull_interval, local.gossip_interval) == (3, 15.0, 0.1)
    assert MembershipConfig.profile("wan") == wan
    with pytest.raises(ValueError, match="unknown gossip profile"):
        MembershipConfig.profile("moon")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "bad",
    [
        {"probe_interval": 0},
        {"probe_timeout": 1.0},
        {"awareness_max_multiplier": 0},
        {"suspicion_mult": 0},
        {"gossip_nodes": -1},
    ],
)
def test_config_rejects_nonsense(bad):
    with pytest.raises(ValueError):
        MembershipConfig(**bad)


# Bifrost's cluster_config.gossip.config -> tunables (see from_bifrost_gossip's docstring).
@pytest.mark.parametrize(
    ("timeout_s", "success", "failure", "profile", "interval", "probe_timeout", "mult"),
    [
        (10, 3, 3, "lan", 2.0, 0.5, 3),  # Bifrost's documented example
        (5, 3, 3, "lan", 1.0, 0.5, 3),
        (6, 1, 4, "lan", 1.0, 0.5, 4),  # = memberlist LAN timers
        (30, 3, 3, "wan", 6.0, 3.0, 3),
        (1, 0, 3, "local", 0.2, 0.1, 3),  # probe timeout capped at half the interval
        (3, 2, 1, "lan", 1.0, 0.5, 1),
    ],
)
def test_bifrost_gossip_mapping(
    timeout_s, success, failure, profile, interval, probe_timeout, mult
):
    base = MembershipConfig.profile(profile)
    cfg = from_bifrost_gossip(timeout_s, success, failure, base)
    assert cfg.probe_interval == pytest.approx(interval)
    assert cfg.probe_timeout == pytest.approx(probe_timeout)
    assert (cfg.suspicion_mult, cfg.success_threshold) == (mult, success)
    # Everything else is the profile's.
    assert (cfg.gossip_interval, cfg.push_pull_interval, cfg.suspicion_max_timeout_mult) == (
        base.gossip_interval,
        base.push_pull_interval,
        base.suspicion_max_timeout_mult,
    )
    # The meaning: expected detection in a small cluster = (F + 2) probe intervals = T.
    assert (failure + 2) * cfg.probe_interval == pytest.approx(timeout_s)


@pytest.mark.parametrize(
    ("timeout_s", "success", "failure", "field"),
    [
        (0, 3, 3, "timeout_seconds"),
        (10, 3, 0, "failure_threshold"),
        (10, -1, 3, "success_threshold"),
    ],
)
def test_bifrost_gossip_mapping_rejects_bad_values(timeout_s, success, failure, field):
    with pytest.raises(ValueError, match=field):
        from_bifrost_gossip(timeout_s, success, failure)
