"""Fleet-wide counters, the pure parts: CRDT merges, the owner choice, the grant formula."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rainbridge.counters import rendezvous
from rainbridge.counters.crdt import Ballot, UsageMap, WindowLedger, merge_max
from rainbridge.counters.escrow import backoff, grant_size

MEMBERS = st.sampled_from(["n0:1", "n1:1", "n2:1", "n2:2", "n3:1"])
VECTORS = st.dictionaries(MEMBERS, st.integers(0, 1000), max_size=5)
BALLOTS = st.builds(Ballot, st.integers(0, 3), st.sampled_from(["", "n0", "n1"]))
LEDGERS = st.builds(WindowLedger, VECTORS, VECTORS, BALLOTS)
USAGES = st.builds(UsageMap, VECTORS)
PROPS = settings(max_examples=200, deadline=None)


def _merged(a, b):
    out = a.copy() if isinstance(a, WindowLedger) else UsageMap(a.by_member)
    out.merge(b)
    return out


@pytest.mark.parametrize("values", [USAGES, LEDGERS], ids=["usage", "ledger"])
def test_merges_are_commutative_associative_idempotent(values):
    @PROPS
    @given(values, values, values)
    def check(a, b, c):
        assert _merged(a, b) == _merged(b, a)
        assert _merged(_merged(a, b), c) == _merged(a, _merged(b, c))
        assert _merged(a, a) == a
        assert _merged(_merged(a, b), b) == _merged(a, b)

    check()


@PROPS
@given(VECTORS, VECTORS)
def test_usage_total_of_a_merge_is_never_below_either_side(a, b):
    merged = UsageMap(merge_max(a, b))
    assert merged.total() >= max(UsageMap(a).total(), UsageMap(b).total())
    assert merged == _merged(UsageMap(a), UsageMap(b))


def test_usage_map_ignores_a_stale_own_value_and_reads_the_sum():
    u = UsageMap()
    u.set_own("n0:1", 5)
    u.set_own("n0:1", 3)  # a reordered, older report
    u.set_own("n1:1", 2)
    assert u.by_member == {"n0:1": 5, "n1:1": 2}
    assert u.total() == 7


def test_ledger_adopts_the_grants_of_the_higher_ballot_and_keeps_every_return():
    deposed = WindowLedger({"n1:1": 25, "n0:1": 20}, {"n0:1": 1}, Ballot(1, 5, "n1"))
    current = WindowLedger({"n0:1": 20, "n2:1": 30}, {"n2:1": 4}, Ballot(1, 6, "n0"))
    merged = _merged(deposed, current)
    assert merged.granted == {"n0:1": 20, "n2:1": 30}  # n1's uncommitted 25 is not summed in
    assert merged.returned == {"n0:1": 1, "n2:1": 4}
    assert merged.ballot == Ballot(1, 6, "n0")
    assert merged.outstanding() == 45
    assert merged.free(50) == 5


def test_ledger_of_one_ballot_merges_grants_by_max():
    a = WindowLedger({"n0:1": 3, "n1:1": 1}, {}, Ballot(1, 2, "n0"))
    b = WindowLedger({"n0:1": 2, "n1:1": 4}, {"n1:1": 1}, Ballot(1, 2, "n0"))
    merged = _merged(a, b)
    assert merged.granted == {"n0:1": 3, "n1:1": 4}
    assert merged.held("n1:1") == 3
    assert WindowLedger({"n0:1": 60}).free(50) == 0  # never negative


@pytest.mark.parametrize(
    ("free", "want", "live", "units"),
    [
        (50, 0, 5, 5),  # a fair share: ceil(50 / (2 × 5))
        (50, 12, 5, 12),  # what waits, when more than the share
        (50, 80, 5, 50),  # never more than is free
        (7, 0, 20, 1),  # small limit: one unit per ask
        (1, 3, 3, 1),
        (0, 3, 3, 0),  # nothing free: nothing (the owner reclaims, then refuses)
        (9, 0, 0, 5),  # no live count yet: treated as one member
    ],
)
def test_grant_size(free, want, live, units):
    assert grant_size(free, want, live) == units


@pytest.mark.parametrize(
    ("base", "tries", "cap", "wait"),
    [(15, 0, 1000, 15), (15, 1, 1000, 30), (15, 6, 1000, 960), (15, 7, 1000, 1000), (100, 99, 2000, 2000)],
)
def test_retry_backoff(base, tries, cap, wait):
    assert backoff(base, tries, cap) == wait


@pytest.mark.parametrize(
    ("key", "ranking"),
    [
        ("vk_a:requests:1m", ["n0", "n4", "n1", "n3", "n2"]),
        ("vk_b:tokens:1h", ["n2", "n1", "n4", "n3", "n0"]),
        ("team_x:spend:1d", ["n1", "n0", "n2", "n3", "n4"]),
    ],
)
def test_rendezvous_owner_table(key, ranking):
    """Fixed values: every process (any Python, any hash seed) must pick the same owner."""
    members = ["n0", "n1", "n2", "n3", "n4"]
    assert rendezvous.ranking(key, members) == ranking
    assert rendezvous.owner(key, members) == ranking[0]
    assert rendezvous.owner(key, reversed(members)) == ranking[0]
    assert rendezvous.owner(key, ranking[1:]) == ranking[1]  # the owner gone: its successor


def test_rendezvous_owner_of_no_or_one_member():
    assert rendezvous.owner("k", []) is None
    assert rendezvous.owner("k", ["only"]) == "only"


def test_rendezvous_owner_is_stable_when_unrelated_members_join_or_leave():
    members = [f"n{i}" for i in range(20)]
    keys = [f"vk_{i}:requests:1m" for i in range(300)]
    before = {k: rendezvous.owner(k, members) for k in keys}
    joined = {k: rendezvous.owner(k, [*members, "n20"]) for k in keys}
    # Only keys the newcomer wins move, and they move to it.
    assert all(joined[k] in (before[k], "n20") for k in keys)
    assert 0 < sum(joined[k] == "n20" for k in keys) < 40  # ≈ 300 / 21
    gone = "n7"
    left = {k: rendezvous.owner(k, [m for m in members if m != gone]) for k in keys}
    assert all(left[k] == before[k] for k in keys if before[k] != gone)
    # The leaver's keys go to their next-ranked member.
    assert all(left[k] == rendezvous.ranking(k, members)[1] for k in keys if before[k] == gone)
