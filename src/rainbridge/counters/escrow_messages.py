"""The messages of fleet-wide counters (see ``escrow.py`` for the protocol).

Plain frozen dataclasses: the sans-IO core hands them out as ``Send(to, message)`` and takes
them in through ``EscrowNode.handle``; a transport encodes them. Every quantity is
cumulative (everything granted, returned or used so far in the window), so a duplicated,
reordered or repeated message changes nothing: receivers merge by max.

``member`` is a member-incarnation id (``name:incarnation``); ``window`` the window start
(epoch ms) of the limit ``lid``.
"""

from __future__ import annotations

from dataclasses import dataclass

from rainbridge.counters.crdt import Ballot, WindowLedger

# ------------------------------------------------------------------ member <-> owner


@dataclass(frozen=True, slots=True)
class Ask:
    """Member → owner: top my allowance up (``want``: units waiting admissions need now; 0:
    a top-up ahead of need). Carries what the member knows, so the owner can re-send a
    lost grant instead of granting twice, its usage (a coalesced usage delta) and what it
    has taken of its allowance (``taken``: usage plus what requests in flight hold, which a
    reclaim cannot get back; 0 from a member that does not say)."""

    lid: str
    window: int
    member: str
    want: int
    granted: int
    returned: int
    used: int
    taken: int = 0


@dataclass(frozen=True, slots=True)
class Grant:
    """Owner → member: everything granted to ``member`` in the window so far (committed:
    a majority of acceptors holds a ledger with it)."""

    lid: str
    window: int
    member: str
    granted: int


@dataclass(frozen=True, slots=True)
class Deny:
    """Owner → member: the fleet's limit is reached (after a reclaim round)."""

    lid: str
    window: int
    member: str


@dataclass(frozen=True, slots=True)
class Reclaim:
    """Owner → member: hand back every unit you hold unused."""

    lid: str
    window: int
    member: str


@dataclass(frozen=True, slots=True)
class Return:
    """Member → owner: everything I handed back so far, my usage and what I have taken of
    my allowance (as ``Ask``) (answers ``Reclaim``; also sent unasked when the member idles)."""

    lid: str
    window: int
    member: str
    returned: int
    used: int
    taken: int = 0


@dataclass(frozen=True, slots=True)
class UsageDelta:
    """Member → owner: my usage of the window moved (coalesced per key, once per gossip
    interval at most)."""

    lid: str
    window: int
    member: str
    used: int


# ------------------------------------------------------------------ owner <-> acceptors


@dataclass(frozen=True, slots=True)
class Prepare:
    """A would-be owner asks every member to promise ``ballot`` and send its ledgers."""

    lid: str
    ballot: Ballot


@dataclass(frozen=True, slots=True)
class Promise:
    """Reply to ``Prepare`` (``ok``) or a refusal naming the higher ``promised`` ballot."""

    lid: str
    ballot: Ballot
    ok: bool
    promised: Ballot
    ledgers: tuple[tuple[int, WindowLedger], ...] = ()


@dataclass(frozen=True, slots=True)
class Accept:
    """The owner's ledger of one window, to be merged by every acceptor before the grants
    in it are sent (a majority of acks commits them). ``seq`` names this commit: an ack of
    an earlier one (late, or a duplicate) must not count for it."""

    lid: str
    ballot: Ballot
    window: int
    ledger: WindowLedger
    seq: int


@dataclass(frozen=True, slots=True)
class Accepted:
    lid: str
    ballot: Ballot
    window: int
    seq: int
    ok: bool
    promised: Ballot


# ------------------------------------------------------------------ state exchange


Rosters = tuple[tuple[int, tuple[str, ...]], ...]  # (roster epoch, member ids), see epochs.py


@dataclass(frozen=True, slots=True)
class SyncRequest:
    """A member that moved to a new roster epoch asks for every limit's promised ballot and
    ledgers (and what the replier was verified for) before it acts as acceptor. Carries the
    newest rosters: the replier moves to that epoch first, sealing the older ones."""

    nonce: int
    rosters: Rosters


@dataclass(frozen=True, slots=True)
class SyncReply:
    """``states``: ``(lid, promised, verified epoch, ledgers)``; ``epoch`` the replier's
    epoch when it answered (it seals every older one), ``member`` its incarnation."""

    nonce: int
    member: str
    epoch: int
    rosters: Rosters
    states: tuple[tuple[str, Ballot, int, tuple[tuple[int, WindowLedger], ...]], ...]


@dataclass(frozen=True, slots=True)
class RosterNews:
    """To a member that used an older roster epoch: the newer rosters."""

    rosters: Rosters


@dataclass(frozen=True, slots=True)
class FullState:
    """Push-pull of the live windows' usage maps: ``(lid, window, {member: used})``;
    repairs whatever deltas were lost. ``reply``: this is the pull half."""

    usage: tuple[tuple[str, int, tuple[tuple[str, int], ...]], ...]
    reply: bool


Message = (
    Ask
    | Grant
    | Deny
    | Reclaim
    | Return
    | UsageDelta
    | Prepare
    | Promise
    | Accept
    | Accepted
    | SyncRequest
    | SyncReply
    | RosterNews
    | FullState
)


@dataclass(frozen=True, slots=True)
class Send:
    """Deliver ``message`` to the member named ``to`` (point to point; may be lost)."""

    to: str
    message: Message
