"""Escrow messages <-> bytes, for the cluster transport (see ``escrow_messages.py``).

A frame is a msgpack array ``[sender, tag, *fields]``: ``sender`` the member name that sent
it (the cluster's direct messages do not say who sent them), ``tag`` the message type's
index in ``TYPES``. A ``Ballot`` is ``[epoch, round, owner]``; rosters are
``[[epoch, [member id, ...]], ...]``; a ``WindowLedger`` is
``[ballot, {member: granted}, {member: returned}]``.

Rolling upgrades: a later build may append fields to a message (never change or remove
one), and a field is only ever added when ignoring it is safe — the receiver then behaves as
the previous version did (``Ask.taken`` and ``Return.taken`` came this way). So this build
reads the fields it knows and ignores up to ``MAX_EXTRA_FIELDS`` more from a newer member,
and gives the fields it knows added later (``_TRAILING``) their defaults when an older member
leaves them out: old and new members keep granting to each other during a rolling upgrade.

Every frame comes from the network: ``decode`` checks each field's type and range and
raises ``WireError`` for anything else (never another exception), so a malformed or
hostile frame is dropped and counted, not half-applied.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from rainbridge.counters.crdt import Ballot, WindowLedger
from rainbridge.counters.escrow_messages import (
    Accept,
    Accepted,
    Ask,
    Deny,
    FullState,
    Grant,
    Message,
    Prepare,
    Promise,
    Reclaim,
    Return,
    RosterNews,
    SyncReply,
    SyncRequest,
    UsageDelta,
)

TYPES: tuple[type, ...] = (
    Ask, Grant, Deny, Reclaim, Return, UsageDelta, Prepare, Promise, Accept, Accepted,
    SyncRequest, SyncReply, FullState, RosterNews,
)
_TAG = {t: i for i, t in enumerate(TYPES)}
MAX_NAME = 512  # a member or limit name
MAX_INT = 2**63 - 1

_encoder = msgspec.msgpack.Encoder()


class WireError(ValueError):
    """A frame that is not a well-formed escrow message."""


# ------------------------------------------------------------------ encode


def _ballot(b: Ballot) -> list[Any]:
    return [b.epoch, b.round, b.owner]


def _ledger(led: WindowLedger) -> list[Any]:
    return [_ballot(led.ballot), led.granted, led.returned]


def _snapshot(snap: tuple[tuple[int, WindowLedger], ...]) -> list[Any]:
    return [[ws, _ledger(led)] for ws, led in snap]


def _rosters(rosters: tuple[tuple[int, tuple[str, ...]], ...]) -> list[Any]:
    return [[e, list(members)] for e, members in rosters]


def _fields(m: Message) -> list[Any]:
    if isinstance(m, Promise):
        return [m.lid, _ballot(m.ballot), m.ok, _ballot(m.promised), _snapshot(m.ledgers)]
    if isinstance(m, Accept):
        return [m.lid, _ballot(m.ballot), m.window, _ledger(m.ledger), m.seq]
    if isinstance(m, Accepted):
        return [m.lid, _ballot(m.ballot), m.window, m.seq, m.ok, _ballot(m.promised)]
    if isinstance(m, Prepare):
        return [m.lid, _ballot(m.ballot)]
    if isinstance(m, SyncReply):
        return [m.nonce, m.member, m.epoch, _rosters(m.rosters),
                [[lid, _ballot(b), v, _snapshot(s)] for lid, b, v, s in m.states]]
    if isinstance(m, SyncRequest):
        return [m.nonce, _rosters(m.rosters)]
    if isinstance(m, RosterNews):
        return [_rosters(m.rosters)]
    if isinstance(m, FullState):
        return [[[lid, ws, [list(e) for e in entries]] for lid, ws, entries in m.usage], m.reply]
    return [getattr(m, name) for name in m.__slots__]  # flat messages: ints and strings


def encode(sender: str, message: Message) -> bytes:
    return _encoder.encode([sender, _TAG[type(message)], *_fields(message)])


# ------------------------------------------------------------------ decode


def _int(v: object) -> int:
    if type(v) is not int or not 0 <= v <= MAX_INT:
        raise WireError(f"expected a non-negative integer, got {type(v).__name__}")
    return v


def _str(v: object) -> str:
    if type(v) is not str or len(v) > MAX_NAME:
        raise WireError("expected a name of at most 512 characters")
    return v


def _bool(v: object) -> bool:
    if type(v) is not bool:
        raise WireError("expected a boolean")
    return v


def _list(v: object, n: int | None = None) -> list[Any]:
    if type(v) is not list or (n is not None and len(v) != n):
        raise WireError(f"expected an array of {n if n is not None else 'any'} items")
    return v


def _vector(v: object) -> dict[str, int]:
    if type(v) is not dict:
        raise WireError("expected a map of member to count")
    return {_str(k): _int(x) for k, x in v.items()}


def _dec_ballot(v: object) -> Ballot:
    e, r, owner = _list(v, 3)
    return Ballot(_int(e), _int(r), _str(owner))


def _dec_ledger(v: object) -> WindowLedger:
    b, granted, returned = _list(v, 3)
    return WindowLedger(_vector(granted), _vector(returned), _dec_ballot(b))


def _dec_snapshot(v: object) -> tuple[tuple[int, WindowLedger], ...]:
    out = []
    for item in _list(v):
        ws, led = _list(item, 2)
        out.append((_int(ws), _dec_ledger(led)))
    return tuple(out)


def _dec_states(v: object) -> tuple[tuple[str, Ballot, int, tuple[tuple[int, WindowLedger], ...]], ...]:
    out = []
    for item in _list(v):
        lid, b, verified, snap = _list(item, 4)
        out.append((_str(lid), _dec_ballot(b), _int(verified), _dec_snapshot(snap)))
    return tuple(out)


MAX_ROSTERS = 64  # epochs in one message (members send two)
MAX_MEMBERS = 4096  # member ids in one roster


def _dec_rosters(v: object) -> tuple[tuple[int, tuple[str, ...]], ...]:
    items = _list(v)
    if len(items) > MAX_ROSTERS:
        raise WireError(f"at most {MAX_ROSTERS} rosters")
    out = []
    for item in items:
        e, members = _list(item, 2)
        members = _list(members)
        if len(members) > MAX_MEMBERS:
            raise WireError(f"a roster of at most {MAX_MEMBERS} members")
        out.append((_int(e), tuple(_str(m) for m in members)))
    return tuple(out)


def _dec_usage(v: object) -> tuple[tuple[str, int, tuple[tuple[str, int], ...]], ...]:
    out = []
    for item in _list(v):
        lid, ws, entries = _list(item, 3)
        pairs = []
        for e in _list(entries):
            member, used = _list(e, 2)
            pairs.append((_str(member), _int(used)))
        out.append((_str(lid), _int(ws), tuple(pairs)))
    return tuple(out)


# Field decoders per type, in ``_fields`` order (flat messages: their slots' types).
_S, _I, _B = _str, _int, _bool
_DECODERS: dict[type, tuple[Callable[[object], Any], ...]] = {
    Ask: (_S, _I, _S, _I, _I, _I, _I, _I),
    Grant: (_S, _I, _S, _I),
    Deny: (_S, _I, _S),
    Reclaim: (_S, _I, _S),
    Return: (_S, _I, _S, _I, _I, _I),
    UsageDelta: (_S, _I, _S, _I),
    Prepare: (_S, _dec_ballot),
    Promise: (_S, _dec_ballot, _B, _dec_ballot, _dec_snapshot),
    Accept: (_S, _dec_ballot, _I, _dec_ledger, _I),
    Accepted: (_S, _dec_ballot, _I, _I, _B, _dec_ballot),
    SyncRequest: (_I, _dec_rosters),
    SyncReply: (_I, _S, _I, _dec_rosters, _dec_states),
    RosterNews: (_dec_rosters,),
    FullState: (_dec_usage, _B),
}

# Messages whose last field came later: a frame without it still decodes.
_TRAILING = frozenset((Ask, Return))
MAX_EXTRA_FIELDS = 4  # fields a newer member may have appended; more is not an upgrade


def decode(frame: bytes) -> tuple[str, Message]:
    """``(sender, message)`` of a frame; ``WireError`` for anything malformed."""
    try:
        items = msgspec.msgpack.decode(frame)
    except (msgspec.DecodeError, RecursionError) as exc:
        raise WireError(f"not msgpack: {exc}") from None
    if type(items) is not list or len(items) < 2:
        raise WireError("expected [sender, tag, fields...]")
    sender = _str(items[0])
    tag = items[1]
    if type(tag) is not int or not 0 <= tag < len(TYPES):
        raise WireError(f"unknown message tag {tag!r}")
    kind = TYPES[tag]
    decoders = _DECODERS[kind]
    fields = items[2:]
    if kind in _TRAILING and len(fields) == len(decoders) - 1:
        decoders = decoders[:-1]  # a member without the last field (it keeps its default)
    elif len(decoders) < len(fields) <= len(decoders) + MAX_EXTRA_FIELDS:
        fields = fields[: len(decoders)]  # a newer member's appended fields: safe to ignore
    if len(fields) != len(decoders):
        raise WireError(f"{kind.__name__}: expected {len(decoders)} fields, got {len(fields)}")
    return sender, kind(*(d(f) for d, f in zip(decoders, fields, strict=True)))
