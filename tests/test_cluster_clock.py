# ruff: noqa: F811  (tests take the imported `make` fixture as an argument)
"""Clock offsets between members: the NTP-style estimate and its rules with injected clocks,
then two real members on loopback, one with its wall clock 1.5 s ahead."""

from __future__ import annotations

import logging
import time

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from rainbridge.cluster.clock import (
    SAMPLES,
    ClockOffsets,
    ClockProbe,
    Sample,
    decode_time,
    encode_time,
    estimate,
)
from rainbridge.cluster.rpc import RequestError
from support import free_port
from test_cluster_node import make, wait_until  # noqa: F401  (make: a fixture)


@pytest.mark.parametrize(
    ("sent", "rtt", "remote", "offset", "error"),
    [
        (100.0, 0.0, 100.0, 0.0, 0.0),  # same clock, no delay
        (100.0, 0.2, 101.6, 1.5, 0.1),  # 1.5 s ahead, read mid-flight
        (100.0, 0.2, 98.6, -1.5, 0.1),  # 1.5 s behind
        (100.0, 0.2, 101.5, 1.4, 0.1),  # read at once on arrival: still within the bound
        (100.0, -0.1, 100.0, 0.0, 0.0),  # a negative RTT (cannot happen) counts as none
    ],
)
def test_estimate_formula(sent, rtt, remote, offset, error):
    got_offset, got_error = estimate(sent, rtt, remote)
    assert got_offset == pytest.approx(offset) and got_error == pytest.approx(error)


def test_time_payload_round_trip_and_malformed_reply():
    assert decode_time(encode_time(1_764_870_000.123456)) == pytest.approx(1_764_870_000.123456, abs=1e-6)
    for bad in (b"", b"1234567", b"123456789"):
        with pytest.raises(ValueError, match="8 bytes"):
            decode_time(bad)


def test_the_estimate_is_the_lowest_rtt_sample_of_the_last_few():
    table = ClockOffsets()
    table.record("b", "b-1", Sample(offset=1.0, error=0.010, taken=1))
    table.record("b", "b-1", Sample(offset=1.2, error=0.002, taken=2))
    table.record("b", "b-1", Sample(offset=0.8, error=0.050, taken=3))
    assert table.best("b") == Sample(1.2, 0.002, 2)
    for i in range(SAMPLES):  # the good sample rolls out of the last SAMPLES
        table.record("b", "b-1", Sample(offset=0.9, error=0.020 + i / 1000, taken=10 + i))
    assert table.best("b") == Sample(0.9, 0.020, 10)
    assert table.best("nobody") is None


def test_a_restarted_member_starts_over_and_a_gone_one_is_forgotten():
    table = ClockOffsets()
    table.record("b", "b-1", Sample(1.0, 0.001, 1))
    table.record("b", "b-2", Sample(-0.5, 0.004, 2))  # new boot: maybe another host
    assert table.best("b") == Sample(-0.5, 0.004, 2)
    table.record("c", "c-1", Sample(0.1, 0.001, 3))
    table.forget_except(["c"])
    assert table.best("b") is None and set(table.offsets()) == {"c"}


def test_pick_takes_the_members_probed_longest_ago_never_probed_first():
    table = ClockOffsets()
    table.tried("a", "a", 30)
    table.tried("b", "b", 10)
    table.tried("c", "c", 20)  # unanswered probes count as tried too
    assert table.pick(["a", "b", "c", "e", "d"], 3) == ["d", "e", "b"]
    assert table.pick(["a", "b", "c"], 10) == ["b", "c", "a"]
    assert table.pick([], 3) == []


def test_warning_only_when_surely_above_one_second_and_once_per_ten_minutes():
    table = ClockOffsets()
    table.record("near", "n", Sample(offset=1.3, error=0.4, taken=0))  # maybe 0.9 s: no
    assert table.due_warning("near", 0) is None
    table.record("far", "f", Sample(offset=-1.5, error=0.001, taken=0))
    assert table.due_warning("far", 100.0) == Sample(-1.5, 0.001, 0)
    assert table.due_warning("far", 100.0 + 599) is None
    assert table.due_warning("far", 100.0 + 600) is not None
    assert table.due_warning("nobody", 0) is None


class Clocks:
    """Our wall and monotonic clocks, moved by the fake request below."""

    def __init__(self) -> None:
        self.wall = 1_000.0
        self.mono = 50.0

    def advance(self, seconds: float) -> None:
        self.wall += seconds
        self.mono += seconds


async def test_probe_rounds_are_bounded_and_measure_with_the_injected_clocks(caplog):
    clocks = Clocks()
    skew = {"b": 2.0, "c": 0.0, "d": -0.2, "e": 0.0}
    asked: list[str] = []

    async def request(member: str, kind: str, payload: bytes, timeout: float) -> bytes:
        asked.append(member)
        if member == "e":
            raise RequestError("timeout", "no reply")
        clocks.advance(0.004)  # on the way there
        reading = clocks.wall + skew[member]
        clocks.advance(0.006)  # on the way back
        return encode_time(reading)

    members = [(n, f"{n}-boot") for n in skew]
    probe = ClockProbe(request, lambda: members, wall=lambda: clocks.wall,
                       monotonic=lambda: clocks.mono, per_round=3)
    with caplog.at_level(logging.WARNING, logger="rainbridge.cluster"):
        await probe.round()
        assert sorted(asked) == ["b", "c", "d"]  # per_round of them, never-measured first
        await probe.round()
        assert sorted(asked[3:6]) == ["b", "c", "e"]  # e never probed, then the oldest
        await probe.round()
        # c, probed last in round 2, waits; e (no answer) waits its turn like the others
        assert sorted(asked[6:]) == ["b", "d", "e"]
    assert probe.failures == 2
    best = probe.offsets.best("b")
    assert best is not None and best.error == pytest.approx(0.005)
    assert abs(best.offset - 2.0) <= best.error
    assert probe.offsets.best("d").offset == pytest.approx(-0.2 - 0.001)
    assert probe.offsets.best("e") is None
    warnings = [r.getMessage() for r in caplog.records if "wall clock" in r.getMessage()]
    assert len(warnings) == 1 and "member b is +1999 ms" in warnings[0]
    assert probe.answer("x", b"") == encode_time(clocks.wall)


# --------------------------------------------------------------------------- real sockets

SHIFT = 1.5


async def test_two_members_one_clock_shifted_show_the_offset_and_warn(make, caplog):
    ip_a, ip_b = "127.0.0.41", "127.0.0.42"
    port = free_port(ip_a)
    peers = [f"{ip_a}:{port}"]
    caplog.set_level(logging.WARNING, logger="rainbridge.cluster")
    registry = CollectorRegistry(auto_describe=False)
    a = await make("ca", ip_a, peers, port=port, clock_interval=0.2, start=False)
    await a.start(registry)  # with metrics
    make.started.append(a)
    b = await make("cb", ip_b, peers, clock_interval=0.2, wall_clock=lambda: time.time() + SHIFT)

    def seen(service, other: str):
        rows = {m["name"]: m for m in service.status()["members"]}
        row = rows.get(other)
        return row if row is not None and row["clock_offset_ms"] is not None else None

    await wait_until(lambda: seen(a, "cb") and seen(b, "ca"), 10, "offsets measured both ways")
    ab, ba = seen(a, "cb"), seen(b, "ca")
    assert abs(ab["clock_offset_ms"] - SHIFT * 1000) <= ab["clock_error_ms"] + 0.1
    assert abs(ba["clock_offset_ms"] + SHIFT * 1000) <= ba["clock_error_ms"] + 0.1
    assert ab["clock_error_ms"] < 50  # loopback
    mine = {m["name"]: m for m in a.status()["members"]}["ca"]
    assert mine["clock_offset_ms"] == 0.0 and mine["clock_error_ms"] == 0.0

    def warned() -> list[str]:
        return [r.getMessage() for r in caplog.records if "wall clock of member" in r.getMessage()]

    await wait_until(lambda: len(warned()) == 2, 5, "one warning on each side")
    assert any("member cb is +15" in w for w in warned())
    assert any("member ca is -15" in w for w in warned())
    # more rounds go by: still one warning per member (ten minutes apart)
    rounds = a.clock.offsets._members["cb"].samples.maxlen
    await wait_until(lambda: len(a.clock.offsets._members["cb"].samples) == rounds, 10, "more samples")
    assert len(warned()) == 2

    text = generate_latest(registry).decode()
    line = next(x for x in text.splitlines()
                if x.startswith('rainbridge_cluster_clock_offset_seconds{member="cb",node="ca"}'))
    assert abs(float(line.split()[-1]) - SHIFT) < 0.05
    assert 'rainbridge_cluster_clock_offset_max_abs_seconds{node="ca"}' in text
