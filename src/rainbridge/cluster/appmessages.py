"""The application's messages over the membership: framing, channels, the handler, and a
broadcast that reaches every member.

- **Framing**: every application payload starts with ``APP_MARKER`` so that other memberlist
  applications' messages in the same cluster (a Serf agent's events and push-pull state)
  never reach the handler; they are counted as ``foreign`` and dropped. Frame:
  ``APP_MARKER, kind`` then, for ``KIND_DIRECT`` (``send``, the handler's own
  ``get_broadcasts``) the payload; for ``KIND_GOSSIP`` (``broadcast``) an 8-byte random id
  and the payload; ``rpc.KIND_REQUEST`` / ``KIND_REPLY`` go to the request/reply helper.
- **Channels** (``on_message``): several parts of the application share the cluster: the
  first byte of an application payload names its channel, and a payload whose first byte
  is a registered channel goes to that channel's callback (without the byte); any other
  payload goes to the ``ClusterHandler``. Channels in use: ``b"c"`` configuration changes
  (``gateway/propagation.py``), ``b"E"`` fleet counters (``counters/fleet.py``).
- **broadcast** reaches every member, as Serf's events do: memberlist sends a broadcast
  only retransmit_mult·log10(N+1) times and receivers do not pass it on, which leaves a
  member out now and then in a small cluster (membership messages have push-pull to
  repair that; application messages do not). So we keep our own queue with
  ``app_retransmit_mult`` = max(6, 2 × retransmit_mult), piggy-backed through the
  delegate's ``get_broadcasts``, and every member relays a gossip frame once, the first
  time it sees its id (a window of ``SEEN_WINDOW`` ids). A payload larger than
  ``max_broadcast_payload`` (one gossip packet: ``udp_buffer_size`` minus label,
  encryption, CRC, compound and frame overhead; 1,380 bytes by default, 1,351 with
  encryption) could never be sent, so ``broadcast`` raises ``ValueError`` for it instead of
  queueing it forever: send such state point to point (``send(..., reliable=True)``).
"""

from __future__ import annotations

import logging
import secrets
from collections import Counter, OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING

from .addresses import format_address
from .broadcast import (
    COMPOUND_HEADER_OVERHEAD,
    COMPOUND_OVERHEAD,
    USER_MSG_OVERHEAD,
    TransmitLimitedQueue,
)
from .events import Delegate, Member, MemberEvent
from .rpc import KIND_REPLY, KIND_REQUEST, RequestReply
from .wire import WireConfig, packet_overhead

if TYPE_CHECKING:
    from .config import MembershipConfig
    from .node import ClusterNode

log = logging.getLogger("rainbridge.cluster")

APP_MARKER = b"\xb7"  # first byte of every rainbridge application payload; Serf's are < 16
KIND_DIRECT = b"\x00"
KIND_GOSSIP = b"\x01"
_ID_SIZE = 8
SEEN_WINDOW = 8192  # gossip ids remembered for de-duplication
_GOSSIP_FRAME = len(APP_MARKER) + len(KIND_GOSSIP) + _ID_SIZE


def max_broadcast_payload(udp_buffer_size: int, wire: WireConfig) -> int:
    """The largest ``broadcast`` payload one gossip packet can carry: the packet budget
    (``udp_buffer_size``) minus what ``ClusterNode`` wraps every packet in (label header,
    encryption, CRC: ``packet_overhead``), the compound header the gossip round reserves,
    the per-message length and user-message type byte, and our own gossip frame (marker,
    kind, 8-byte id). With the defaults (1,400 bytes, no label, no encryption) 1,380."""
    return (
        udp_buffer_size
        - packet_overhead(wire, crc=True)
        - COMPOUND_HEADER_OVERHEAD
        - COMPOUND_OVERHEAD
        - USER_MSG_OVERHEAD
        - _GOSSIP_FRAME
    )


def max_packet_frame(udp_buffer_size: int, wire: WireConfig) -> int:
    """The largest frame ``send`` carries in one UDP user message (memberlist's check in
    ``send_user``: the packet budget minus packet overhead and the type byte)."""
    return udp_buffer_size - packet_overhead(wire, crc=True) - USER_MSG_OVERHEAD


class ClusterHandler(Delegate):
    """The application's hooks into the cluster (the state-sync layer builds on these).

    memberlist's delegate, passed through: ``notify_msg`` (a broadcast or a direct user
    message arrived), ``get_broadcasts`` (payloads to piggy-back on gossip now),
    ``local_state`` / ``merge_remote_state`` (application state in push-pull), plus
    ``notify_event`` for member joins, leaves and updates. Payloads are the application's
    own bytes: the service adds and strips ``APP_MARKER``. ``node_meta`` and
    ``notify_conflict`` are the service's, not the handler's. Every hook runs on the event
    loop inside the protocol: return quickly, never block.
    """

    def notify_event(self, event: MemberEvent) -> None:
        """A member joined, left / died, changed metadata, was suspected or recovered."""


class AppMessages(Delegate):
    """Membership's delegate: frames application payloads and passes them through.

    ``stats``: the service's counters (``foreign_messages``, ``unknown_app_messages``,
    ``relay_too_large``); ``on_foreign`` sees every foreign payload (Serf's clock)."""

    def __init__(self, name: str, stats: Counter[str], on_foreign: Callable[[bytes], None]) -> None:
        self.node: ClusterNode | None = None  # set by the service once its node has started
        self.handler: ClusterHandler | None = None
        self.channels: dict[bytes, Callable[[bytes], None]] = {}  # see on_message
        self.stats = stats
        self._on_foreign = on_foreign
        self._seen: OrderedDict[bytes, None] = OrderedDict()
        self.queue: TransmitLimitedQueue[bytes] = TransmitLimitedQueue(6, 4096)
        self.max_broadcast = 0  # set by configure(): max_broadcast_payload
        self.rpc = RequestReply(name, self._send_frame, 0)

    def configure(self, timing: MembershipConfig, wire: WireConfig) -> None:
        """Size the queue and the packet budgets for this member's timing and wire format."""
        self.queue = TransmitLimitedQueue(
            max(6, 2 * timing.retransmit_mult), timing.broadcast_queue_depth
        )
        self.max_broadcast = max_broadcast_payload(timing.udp_buffer_size, wire)
        self.rpc.max_packet_frame = max_packet_frame(timing.udp_buffer_size, wire)

    # ------------------------------------------------------------------ membership's delegate
    def notify_msg(self, payload: bytes) -> None:
        if payload[:1] != APP_MARKER:
            self._foreign(payload)
            return
        kind, body = payload[1:2], payload[2:]
        if kind == KIND_GOSSIP and len(body) >= _ID_SIZE:
            if not self._first_sight(body[:_ID_SIZE]):
                return
            self._relay(payload)
            body = body[_ID_SIZE:]
        elif kind == KIND_REQUEST:
            self.rpc.on_request(APP_MARKER, body)
            return
        elif kind == KIND_REPLY:
            self.rpc.on_reply(body)
            return
        elif kind != KIND_DIRECT:
            self.stats["unknown_app_messages"] += 1
            return
        channel = self.channels.get(body[:1])
        if channel is not None:
            channel(body[1:])
        elif self.handler is not None:
            self.handler.notify_msg(body)

    def get_broadcasts(self, overhead: int, limit: int) -> list[bytes]:
        membership = self.node.membership if self.node is not None else None
        members = membership.num_alive() if membership is not None else 1
        frames, used = self.queue.get(overhead, limit, members)
        handler = self.handler
        if handler is not None and limit - used > overhead + 2:
            own = handler.get_broadcasts(overhead + 2, limit - used)
            frames += [APP_MARKER + KIND_DIRECT + p for p in own]
        return frames

    def local_state(self, join: bool) -> bytes:
        handler = self.handler
        state = handler.local_state(join) if handler is not None else b""
        return APP_MARKER + state if state else b""

    def merge_remote_state(self, buf: bytes, join: bool) -> None:
        handler = self.handler
        if buf[:1] == APP_MARKER:
            if handler is not None:
                handler.merge_remote_state(buf[1:], join)
        else:
            self._foreign(buf)

    def notify_conflict(self, existing: Member, other: Member) -> None:
        log.warning(
            "cluster: %s claims the name of live member %s (%s); ignored",
            format_address(other.address),
            existing.name,
            format_address(existing.address),
        )

    # ------------------------------------------------------------------ the application's side
    def on_message(self, channel: bytes, callback: Callable[[bytes], None] | None) -> None:
        """See ``ClusterService.on_message``."""
        if len(channel) != 1:
            raise ValueError("a channel is one byte")
        if callback is None:
            self.channels.pop(channel, None)
        elif self.channels.setdefault(channel, callback) != callback:
            raise ValueError(f"cluster channel {channel!r} is taken")

    def broadcast(self, payload: bytes, name: str | None = None) -> None:
        """See ``ClusterService.broadcast``."""
        self._node()  # started
        if len(payload) > self.max_broadcast:
            raise ValueError(
                f"broadcast payload is {len(payload)} bytes; one gossip packet carries at most "
                f"{self.max_broadcast} (udp_buffer_size minus label, encryption, CRC and "
                "framing): send it point to point (send(..., reliable=True) or request())"
            )
        message_id = secrets.token_bytes(_ID_SIZE)
        self._first_sight(message_id)
        frame = APP_MARKER + KIND_GOSSIP + message_id + payload
        # Sent with the next gossip round or probe (within gossip_interval).
        self.queue.queue(frame, len(frame), name)

    def send(self, member: str, payload: bytes, reliable: bool) -> None:
        self._node().send_user(member, APP_MARKER + KIND_DIRECT + payload, reliable)

    def _send_frame(self, member: str, frame: bytes, reliable: bool) -> None:
        self._node().send_user(member, frame, reliable)

    def _relay(self, frame: bytes) -> None:
        """Pass a gossip frame on (called from inside the protocol: no I/O here)."""
        node = self.node
        if node is not None and node.membership is not None and not node.membership.has_left:
            if len(frame) - _GOSSIP_FRAME > self.max_broadcast:  # a member with a larger budget
                self.stats["relay_too_large"] += 1
                return
            self.queue.queue(frame, len(frame))

    def _first_sight(self, message_id: bytes) -> bool:
        if message_id in self._seen:
            return False
        self._seen[message_id] = None
        if len(self._seen) > SEEN_WINDOW:
            self._seen.popitem(last=False)
        return True

    def _foreign(self, payload: bytes) -> None:
        self.stats["foreign_messages"] += 1
        self._on_foreign(payload)

    def _node(self) -> ClusterNode:
        if self.node is None:
            raise RuntimeError("the cluster service is not started")
        return self.node
