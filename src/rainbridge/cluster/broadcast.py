"""The transmit-limited broadcast queue (memberlist ``queue.go``) and message sizes.

Broadcasts are held as message objects, not bytes, so the state machine stays free of the
codec; each carries the size it will take on the wire (``estimate_size`` or the codec's own
sizer). Order of transmission: fewest transmissions first, then largest, then newest — so
fresh news goes out first and big items are not starved. A named broadcast replaces the
queued one with the same name (memberlist's NamedBroadcast: node name for membership
messages); unnamed ones are unique. Each is sent ``retransmit_limit(mult, N)`` times.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

from rainbridge.cluster.messages import (
    Ack,
    Address,
    Alive,
    Dead,
    Err,
    IndirectPing,
    Nack,
    PacketMessage,
    Ping,
    Suspect,
    User,
)
from rainbridge.cluster.timers import retransmit_limit

T = TypeVar("T")

# memberlist's framing constants (net.go).
COMPOUND_HEADER_OVERHEAD = 2  # compound type byte + message count
COMPOUND_OVERHEAD = 2  # per message: its uint16 length
USER_MSG_OVERHEAD = 1  # the user message type byte


@dataclass(slots=True)
class _Item(Generic[T]):
    transmits: int
    size: int
    id: int
    message: T
    name: str | None
    factor: int = 1  # × the transmit limit (news a missed copy of costs a push-pull)

    def order(self) -> tuple[int, int, int]:
        return (self.transmits, -self.size, -self.id)


class TransmitLimitedQueue(Generic[T]):
    """Broadcasts waiting to piggy-back on packets, each sent a bounded number of times."""

    def __init__(self, retransmit_mult: int, max_depth: int) -> None:
        self.retransmit_mult = retransmit_mult
        self.max_depth = max_depth
        self._items: list[_Item[T]] = []
        self._named: dict[str, _Item[T]] = {}
        self._next_id = 0

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._named

    def queue(self, message: T, size: int, name: str | None = None, factor: int = 1) -> None:
        """Add a broadcast; one with the same ``name`` is replaced. Prunes to ``max_depth``.
        ``factor``: sent ``factor`` × the transmit limit."""
        if name is not None:
            old = self._named.pop(name, None)
            if old is not None:
                self._items.remove(old)
        self._next_id += 1
        item = _Item(0, size, self._next_id, message, name, factor)
        self._items.append(item)
        if name is not None:
            self._named[name] = item
        if len(self._items) > self.max_depth:
            self.prune(self.max_depth)

    def get(self, overhead: int, limit: int, num_nodes: int) -> tuple[list[T], int]:
        """Take broadcasts fitting in ``limit`` bytes, ``overhead`` more each; count the send.

        Returns the messages and the bytes they use (overheads included).
        """
        if not self._items:
            return [], 0
        transmit_limit = retransmit_limit(self.retransmit_mult, num_nodes)
        used = 0
        taken: list[T] = []
        # One greedy pass in transmission order equals memberlist's tier-by-tier search:
        # an item skipped for size is larger than everything that still fits after it.
        for item in sorted(self._items, key=_Item.order):
            free = limit - used - overhead
            if free <= 0:
                break
            if item.size > free:
                continue
            used += overhead + item.size
            taken.append(item.message)
            item.transmits += 1
            if item.transmits >= transmit_limit * item.factor:
                self._remove(item)
        return taken, used

    def prune(self, max_retain: int) -> None:
        """Keep the ``max_retain`` first-in-line broadcasts; drop the rest."""
        if len(self._items) <= max_retain:
            return
        self._items.sort(key=_Item.order)
        for item in self._items[max_retain:]:
            if item.name is not None:
                del self._named[item.name]
        del self._items[max_retain:]

    def transmits(self) -> list[tuple[str | None, int]]:
        """(name, transmissions so far) in transmission order — for tests and metrics."""
        return [(i.name, i.transmits) for i in sorted(self._items, key=_Item.order)]

    def _remove(self, item: _Item[T]) -> None:
        self._items.remove(item)
        if item.name is not None:
            del self._named[item.name]


# --------------------------------------------------------------------------- sizes
# Sizes of memberlist's msgpack encoding (a type byte, then a map keyed by Go field names),
# computed rather than encoded so the state machine needs no codec. They are upper bounds
# of go-msgpack's output (checked against ``codec.encode_message``): exact or a few bytes
# over (short byte strings, omitted empty fields), never under.


def _uint(v: int) -> int:
    if v < 128:
        return 1
    if v < 256:
        return 2
    if v < 65536:
        return 3
    if v < 2**32:
        return 5
    return 9


def _str(n: int) -> int:
    # go-msgpack (memberlist's codec) writes strings as the old "raw" type: fixraw up to
    # 31 bytes, then raw16 — never str8.
    if n < 32:
        return 1 + n
    if n < 65536:
        return 3 + n
    return 5 + n


def _bin(n: int) -> int:
    # Byte strings are raw as well in go-msgpack; bin8 (2-byte header) below 32 bytes
    # covers a codec that uses the bin types.
    if n < 32:
        return 2 + n
    if n < 65536:
        return 3 + n
    return 5 + n


def _key(name: str) -> int:
    return 1 + len(name)


def _ip(address: Address) -> int:
    return _bin(16 if ":" in address[0] else 4)


def _source(address: Address | None, node: str) -> int:
    if address is None:
        return _key("SourceNode") + _str(len(node.encode())) if node else 0
    return (
        _key("SourceAddr")
        + _ip(address)
        + _key("SourcePort")
        + _uint(address[1])
        + _key("SourceNode")
        + _str(len(node.encode()))
    )


def estimate_size(message: PacketMessage) -> int:
    """Bytes ``message`` takes on the wire (type byte + msgpack body), before framing."""
    head = 2  # type byte + fixmap header
    if isinstance(message, User):
        return USER_MSG_OVERHEAD + len(message.payload)
    if isinstance(message, Ping):
        return (
            head
            + _key("SeqNo")
            + _uint(message.seq_no)
            + _key("Node")
            + _str(len(message.node.encode()))
            + _source(message.source, message.source_node)
        )
    if isinstance(message, IndirectPing):
        return (
            head
            + _key("SeqNo")
            + _uint(message.seq_no)
            + _key("Target")
            + _ip(message.target)
            + _key("Port")
            + _uint(message.target[1])
            + _key("Node")
            + _str(len(message.node.encode()))
            + _key("Nack")
            + 1
            + _source(message.source, message.source_node)
        )
    if isinstance(message, Ack):
        return (
            head
            + _key("SeqNo")
            + _uint(message.seq_no)
            + _key("Payload")
            + _bin(len(message.payload))
        )
    if isinstance(message, Nack):
        return head + _key("SeqNo") + _uint(message.seq_no)
    if isinstance(message, Err):
        return head + _key("Error") + _str(len(message.error.encode()))
    if isinstance(message, Suspect | Dead):
        return (
            head
            + _key("Incarnation")
            + _uint(message.incarnation)
            + _key("Node")
            + _str(len(message.node.encode()))
            + _key("From")
            + _str(len(message.sender.encode()))
        )
    if isinstance(message, Alive):
        return (
            head
            + _key("Incarnation")
            + _uint(message.incarnation)
            + _key("Node")
            + _str(len(message.node.encode()))
            + _key("Addr")
            + _ip(message.address)
            + _key("Port")
            + _uint(message.address[1])
            + _key("Meta")
            + _bin(len(message.meta))
            + _key("Vsn")
            + 1
            + len(message.vsn)
        )
    raise TypeError(f"not a packet message: {type(message).__name__}")
