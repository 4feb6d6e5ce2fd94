"""What a rainbridge member does so that Serf agents sharing its memberlist cluster read it
right (Serf 0.9, the Debian ``serf`` agent, and anything built on it, e.g. Consul).

Serf layers its own protocol on memberlist's user messages and push-pull user state: each
starts with Serf's message type byte (leave intent 0, join intent 1, push-pull 2, user
event 3, query 4, ... all below 16). rainbridge does not take part in it: those messages
are dropped before the application sees them (see ``appmessages.APP_MARKER``). Two things are
still needed:

- **Graceful leave.** Serf reports a member that leaves memberlist as *failed* unless it
  first received a Serf leave intent for that member (``serf.go`` ``handleNodeLeave``: only
  a member in ``StatusLeaving`` becomes ``StatusLeft``). Before leaving, a rainbridge
  member sends one to every Serf member, over TCP so that it arrives before memberlist's
  Dead message.
- **Lamport time of that intent.** Serf ignores an intent that is not newer than the last
  status change it recorded for the member (``statusLTime``; a previous life's leave, for
  a member restarted under the same name). ``SerfClock`` witnesses the member clock of the
  Serf messages and push-pull states that pass by, and the intent carries the next tick.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from . import gocodec as mp
from .codec import WireError, decode_tags
from .events import Member
from .messages import NodeState

if TYPE_CHECKING:
    from .node import ClusterNode

SERF_LEAVE_INTENT = 0
SERF_JOIN_INTENT = 1
SERF_PUSH_PULL = 2
# Serf's delegate protocol versions (memberlist vsn[3:5]): 2..5 in Serf 0.9.
SERF_DELEGATE_RANGE = (2, 5)


class SerfClock:
    """The highest Serf member-clock value seen (``LamportTime`` of intents and push-pulls)."""

    def __init__(self) -> None:
        self.time = 0

    def witness(self, payload: bytes) -> None:
        if not payload or payload[0] not in (SERF_LEAVE_INTENT, SERF_JOIN_INTENT, SERF_PUSH_PULL):
            return
        try:
            value = mp.Reader(payload, 1).value()
        except mp.MsgpackError:
            return
        if not isinstance(value, dict):
            return
        times = [value.get(b"LTime")]
        status = value.get(b"StatusLTimes")
        if isinstance(status, dict):
            times += list(status.values())
        for t in times:
            if isinstance(t, int) and t > self.time:
                self.time = t

    def next(self) -> int:
        self.time += 1
        return self.time


def leave_intent(node: str, ltime: int) -> bytes:
    """Serf's ``messageLeave{LTime, Node}`` (Prune left out: false), as a user message."""
    out = bytearray((SERF_LEAVE_INTENT,))
    mp.pack_map_header(out, 2)
    mp.pack_str(out, "LTime")
    mp.pack_uint(out, ltime)
    mp.pack_str(out, "Node")
    mp.pack_str(out, node)
    return bytes(out)


def is_serf_member(member: Member) -> bool:
    """A member that speaks Serf's delegate protocol and is not a rainbridge node."""
    dmin, dmax = member.vsn[3], member.vsn[4]
    if not (SERF_DELEGATE_RANGE[0] <= dmin <= dmax <= SERF_DELEGATE_RANGE[1]):
        return False
    try:
        role = decode_tags(member.meta).get("role")
    except WireError:
        return False
    return role != "rainbridge"


async def send_leave_intents(node: ClusterNode, clock: SerfClock, timeout: float) -> None:
    """A leave intent for ``node`` to every live Serf member, over TCP, waiting ``timeout``
    seconds at most: sent before memberlist's leave so that Serf reports *left*."""
    serf = [
        m.name
        for m in node.members()
        if m.name != node.name and m.state == NodeState.ALIVE and is_serf_member(m)
    ]
    if not serf:
        return
    intent = leave_intent(node.name, clock.next())
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            await asyncio.gather(*(node.send_reliable(name, intent) for name in serf))
