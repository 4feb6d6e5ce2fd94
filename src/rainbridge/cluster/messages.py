"""The membership protocol's messages, as plain data (memberlist's names and meanings).

This module is the contract between the sans-IO state machine (``state.py`` and friends),
which produces and consumes these objects, and the wire codec (``wire.py``), which turns
them into memberlist's exact bytes (message type byte + msgpack map with memberlist's Go
field names, compound/CRC/label/compression/encryption wrappers). Nothing here does I/O.

Addresses are ``(ip, port)`` with ``ip`` a ``str`` ("10.0.0.7" or "::1"); the codec turns
them into memberlist's 4- or 16-byte ``[]byte`` and back.
"""

from __future__ import annotations

import enum

import msgspec


class MessageType(enum.IntEnum):
    """memberlist's ``messageType`` values (the first byte of every message)."""

    PING = 0
    INDIRECT_PING = 1
    ACK = 2
    SUSPECT = 3
    ALIVE = 4
    DEAD = 5
    PUSH_PULL = 6
    COMPOUND = 7
    USER = 8
    COMPRESS = 9
    ENCRYPT = 10
    NACK = 11
    HAS_CRC = 12
    ERR = 13
    HAS_LABEL = 244


class NodeState(enum.IntEnum):
    """memberlist's ``NodeStateType``."""

    ALIVE = 0
    SUSPECT = 1
    DEAD = 2
    LEFT = 3


Address = tuple[str, int]

# Protocol and delegate versions we speak: (pmin, pmax, pcur, dmin, dmax, dcur).
# memberlist protocol 2..5, current 5; delegate protocol versions are the application's.
DEFAULT_VSN = (1, 5, 2, 2, 5, 4)


class Ping(msgspec.Struct, frozen=True, kw_only=True):
    seq_no: int
    node: str  # the name of the node we mean to reach (it rejects pings meant for another)
    source: Address | None = None  # where to send the ack (protocol >= ...); None: the packet's source
    source_node: str = ""


class IndirectPing(msgspec.Struct, frozen=True, kw_only=True):
    seq_no: int
    target: Address
    node: str
    nack: bool = True  # ask the relay to answer with a nack if the target does not ack
    source: Address | None = None
    source_node: str = ""


class Ack(msgspec.Struct, frozen=True, kw_only=True):
    seq_no: int
    payload: bytes = b""


class Nack(msgspec.Struct, frozen=True, kw_only=True):
    seq_no: int


class Err(msgspec.Struct, frozen=True, kw_only=True):
    error: str


class Suspect(msgspec.Struct, frozen=True, kw_only=True):
    incarnation: int
    node: str
    sender: str  # memberlist's "From"


class Alive(msgspec.Struct, frozen=True, kw_only=True):
    incarnation: int
    node: str
    address: Address
    meta: bytes = b""
    vsn: tuple[int, int, int, int, int, int] = DEFAULT_VSN


class Dead(msgspec.Struct, frozen=True, kw_only=True):
    incarnation: int
    node: str
    sender: str  # memberlist's "From"; a node announcing its own death is leaving gracefully


class User(msgspec.Struct, frozen=True, kw_only=True):
    """An application message (memberlist's userMsg): opaque bytes for the delegate."""

    payload: bytes


class PushNodeState(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    address: Address
    meta: bytes
    incarnation: int
    state: NodeState
    vsn: tuple[int, int, int, int, int, int] = DEFAULT_VSN


class PushPull(msgspec.Struct, frozen=True, kw_only=True):
    """A full-state exchange over a TCP stream (push-pull / join)."""

    join: bool
    nodes: tuple[PushNodeState, ...]
    user_state: bytes = b""


# What may travel in a UDP packet (possibly several in one compound message).
PacketMessage = Ping | IndirectPing | Ack | Nack | Err | Suspect | Alive | Dead | User
