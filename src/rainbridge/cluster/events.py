"""What the membership state machine reports and asks for: members, events, outgoing work,
and the application's delegate hooks.

The I/O driver drains ``Membership.take_outgoing()`` and ``take_events()`` after every call
into the state machine and acts on each item (see ``state.py`` for the contract).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from rainbridge.cluster.messages import (
    Address,
    NodeState,
    PacketMessage,
    Ping,
    PushPull,
    User,
)

META_MAX_SIZE = 512  # memberlist's MetaMaxSize


class UnknownMemberError(LookupError):
    """A member name this node does not know (or knows only as dead/left)."""


@dataclass(frozen=True, slots=True)
class Member:
    """One member as this node sees it."""

    name: str
    address: Address
    meta: bytes
    incarnation: int
    state: NodeState
    state_change: float  # clock time of the last state change
    vsn: tuple[int, int, int, int, int, int]
    healthy: bool  # see MembershipConfig.success_threshold


class EventKind(enum.Enum):
    JOIN = "join"  # new, or back from dead/left (memberlist NotifyJoin; also for ourselves)
    LEAVE = "leave"  # now dead (failed) or left (graceful) — see member.state and reason
    UPDATE = "update"  # metadata changed (memberlist NotifyUpdate)
    # Informational, no memberlist equivalent (for logs and metrics):
    SUSPECT = "suspect"  # alive -> suspect
    RECOVER = "recover"  # suspect -> alive (refuted) without having been declared dead
    HEALTHY = "healthy"  # a returning member reached success_threshold consecutive acks


@dataclass(frozen=True, slots=True)
class MemberEvent:
    kind: EventKind
    member: Member
    reason: str = ""


# --------------------------------------------------------------------------- outgoing


@dataclass(frozen=True, slots=True)
class SendPacket:
    """Send these messages to ``to`` over UDP: one message as is, several as a compound
    message (split into several packets if the encoding exceeds the packet size)."""

    to: Address
    messages: tuple[PacketMessage, ...]


@dataclass(frozen=True, slots=True)
class StartPushPull:
    """Open a TCP stream to ``to``, send ``state``, read the peer's push-pull reply and call
    ``Membership.push_pull_result(reply_or_None, to, now)`` (None on any failure)."""

    to: Address
    join: bool
    state: PushPull


@dataclass(frozen=True, slots=True)
class StartTcpPing:
    """Fallback probe: send ``ping`` over a TCP stream to ``to``, expect an ack with the
    same sequence number before ``deadline`` (clock time), then call
    ``Membership.tcp_ping_result(seq_no, ok, now)`` — at the latest at ``deadline``."""

    to: Address
    seq_no: int
    ping: Ping
    deadline: float


@dataclass(frozen=True, slots=True)
class SendReliable:
    """Deliver a user message over a TCP stream (memberlist SendReliable). Fire and forget
    from the state machine's point of view; the driver may report failures itself."""

    to: Address
    message: User


Outgoing = SendPacket | StartPushPull | StartTcpPing | SendReliable


# --------------------------------------------------------------------------- delegate


class Delegate:
    """Application hooks (memberlist's Delegate + ConflictDelegate). Override what you need.

    They are called synchronously from inside the state machine, so they must not block.
    """

    def node_meta(self, limit: int) -> bytes:
        """Our metadata (≤ ``limit`` bytes), asked when ``meta=None`` is given."""
        return b""

    def notify_msg(self, payload: bytes) -> None:
        """A user message arrived (gossiped broadcast, best-effort or reliable send)."""

    def get_broadcasts(self, overhead: int, limit: int) -> list[bytes]:
        """Payloads to piggy-back now; each costs ``overhead`` + len bytes of ``limit``."""
        return []

    def local_state(self, join: bool) -> bytes:
        """Application state to send in a push-pull."""
        return b""

    def merge_remote_state(self, buf: bytes, join: bool) -> None:
        """A peer's application state from a push-pull."""

    def notify_conflict(self, existing: Member, other: Member) -> None:
        """Another address claims the name of a live member; we keep ``existing``."""
