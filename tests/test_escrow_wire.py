"""Escrow messages on the wire: every message type survives encode → decode unchanged, and
any other frame (random bytes, wrong shapes, wrong types, out-of-range numbers) is a
``WireError``, never another exception and never a half-built message."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rainbridge.counters.crdt import Ballot, WindowLedger
from rainbridge.counters.escrow_messages import (
    Accept,
    Accepted,
    Ask,
    Deny,
    FullState,
    Grant,
    Prepare,
    Promise,
    Reclaim,
    Return,
    RosterNews,
    SyncReply,
    SyncRequest,
    UsageDelta,
)
from rainbridge.counters.escrow_wire import MAX_INT, TYPES, WireError, decode, encode

names = st.text(min_size=1, max_size=20)
counts = st.integers(min_value=0, max_value=MAX_INT)
ballots = st.builds(Ballot, counts, counts, names)
rosters = st.lists(st.tuples(counts, st.lists(names, max_size=4).map(tuple)), max_size=3).map(tuple)
vectors = st.dictionaries(names, counts, max_size=4)
ledgers = st.builds(WindowLedger, vectors, vectors, ballots)
snapshots = st.lists(st.tuples(counts, ledgers), max_size=3).map(tuple)

BY_TYPE = {
    Ask: st.builds(Ask, names, counts, names, counts, counts, counts, counts, counts),
    Grant: st.builds(Grant, names, counts, names, counts),
    Deny: st.builds(Deny, names, counts, names),
    Reclaim: st.builds(Reclaim, names, counts, names),
    Return: st.builds(Return, names, counts, names, counts, counts, counts),
    UsageDelta: st.builds(UsageDelta, names, counts, names, counts),
    Prepare: st.builds(Prepare, names, ballots),
    Promise: st.builds(Promise, names, ballots, st.booleans(), ballots, snapshots),
    Accept: st.builds(Accept, names, ballots, counts, ledgers, counts),
    Accepted: st.builds(Accepted, names, ballots, counts, counts, st.booleans(), ballots),
    SyncRequest: st.builds(SyncRequest, counts, rosters),
    SyncReply: st.builds(SyncReply, counts, names, counts, rosters,
                         st.lists(st.tuples(names, ballots, counts, snapshots), max_size=3).map(tuple)),
    RosterNews: st.builds(RosterNews, rosters),
    FullState: st.builds(FullState, st.lists(st.tuples(names, counts, st.lists(st.tuples(names, counts), max_size=3).map(tuple)),
                                  max_size=3).map(tuple), st.booleans()),
}
MESSAGES = st.one_of(*BY_TYPE.values())


@settings(max_examples=300, deadline=None)
@given(names, MESSAGES)
def test_every_message_type_round_trips_unchanged(sender, message):
    assert decode(encode(sender, message)) == (sender, message)


def test_the_strategy_covers_every_message_type():
    assert set(BY_TYPE) == set(TYPES)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_are_a_wire_error_or_a_message(frame):
    try:
        sender, message = decode(frame)
    except WireError:
        return
    assert isinstance(sender, str) and type(message) in TYPES


def frame(*items) -> bytes:
    return msgspec.msgpack.encode(list(items))


def test_an_ask_and_a_return_without_what_the_member_has_taken_decode_with_none_taken():
    """A member of the previous version sends them without their last field (``taken``)."""
    assert decode(frame("m1", 0, "lid", 60, "m1:1", 2, 5, 1, 3)) == ("m1", Ask("lid", 60, "m1:1", 2, 5, 1, 3, 0))
    assert decode(frame("m1", 4, "lid", 60, "m1:1", 1, 3)) == ("m1", Return("lid", 60, "m1:1", 1, 3, 0))


def test_fields_a_newer_member_appended_are_ignored_up_to_four():
    """A rolling upgrade: the newer member's extra fields are dropped, the known ones kept."""
    assert decode(frame("m1", 1, "lid", 60, "m1:1", 7, "new", [1, 2])) == ("m1", Grant("lid", 60, "m1:1", 7))
    ask = ("lid", 60, "m1:1", 2, 5, 1, 3, 4)
    assert decode(frame("m1", 0, *ask, 9, 9, 9, 9)) == ("m1", Ask(*ask))
    with pytest.raises(WireError):
        decode(frame("m1", 0, *ask, 9, 9, 9, 9, 9))


@pytest.mark.parametrize(("bad", "why"), [
    (b"", "empty"),
    (msgspec.msgpack.encode({"a": 1}), "a map, not an array"),
    (frame("m1"), "no tag"),
    (frame("m1", 99, "x"), "an unknown tag"),
    (frame("m1", -1), "a negative tag"),
    (frame("m1", True), "a boolean tag"),
    (frame(7, 1, "lid", 0, "m", 1), "a sender that is not a string"),
    (frame("m1", 1, "lid", 0, "m"), "a Grant missing a field"),
    (frame("m1", 1, "lid", 0, "m", 1, *range(5)), "a Grant with five fields too many"),
    (frame("m1", 4, "lid", 0, "m", 1), "a Return missing two fields"),
    (frame("m1", 4, "lid", 0, "m", 1, 2, 3, 4, *range(5)), "a Return with five fields too many"),
    (frame("m1", 1, "lid", 0, "m", -5), "a negative count"),
    (frame("m1", 1, "lid", 0, "m", 2**64 - 1), "a count past 2^63"),
    (frame("m1", 1, "lid", 0, "m", 1.5), "a float count"),
    (frame("m1", 1, "lid", 0, "m", True), "a boolean count"),
    (frame("m1", 1, "x" * 600, 0, "m", 1), "a limit name too long"),
    (frame("m1", 6, "lid", [1]), "a ballot of one item"),
    (frame("m1", 6, "lid", [1, 2]), "a ballot whose owner is a number"),
    (frame("m1", 8, "lid", [1, "o"], 0, [[1, "o"], {"m": "x"}, {}], 1), "a ledger count that is a string"),
    (frame("m1", 8, "lid", [1, "o"], 0, [[1, "o"], [], {}], 1), "a ledger vector that is a list"),
    (frame("m1", 12, [["lid", 0, [["m", 1, 2]]]], False), "a usage entry of three items"),
    (b"\x91" * 5000, "nesting past the decoder's depth"),
])
def test_malformed_frames_are_wire_errors(bad, why):
    with pytest.raises(WireError):
        decode(bad)
