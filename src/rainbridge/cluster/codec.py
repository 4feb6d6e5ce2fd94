"""One memberlist message <-> its bytes: the type byte and go-codec msgpack body.

The Go structs (memberlist 0.2.2 ``net.go``, the version Debian's ``serf`` links; the layout
is unchanged in later releases) and how our message classes map onto them:

=================  ======================================================================
``Ping``           ``ping{SeqNo uint32, Node string, SourceAddr []byte, SourcePort uint16,
                   SourceNode string}`` — the three Source* fields are ``omitempty``
``IndirectPing``   ``indirectPingReq{SeqNo, Target []byte, Port uint16, Node, Nack bool,
                   SourceAddr, SourcePort, SourceNode}`` (Source* ``omitempty``)
``Ack``            ``ackResp{SeqNo uint32, Payload []byte}``
``Nack``           ``nackResp{SeqNo uint32}``
``Err``            ``errResp{Error string}``
``Suspect/Dead``   ``suspect/dead{Incarnation uint32, Node string, From string}``
``Alive``          ``alive{Incarnation uint32, Node string, Addr []byte, Port uint16,
                   Meta []byte, Vsn []uint8}`` — Vsn is a ``[]byte``, so a 6-byte raw
``PushNodeState``  ``pushNodeState{Name, Addr, Port, Meta, Incarnation, State int, Vsn}``
``User``           no msgpack: ``userMsg`` byte + the payload bytes (``SendBestEffort``)
=================  ======================================================================

Addresses: ``[]byte`` of 4 bytes for IPv4 (memberlist ``FinalAdvertiseAddr`` applies
``To4()``), 16 for IPv6; a 16-byte IPv4-mapped address reads back as IPv4, as Go prints it.
"""

from __future__ import annotations

import ipaddress

from . import gocodec as mp
from .messages import (
    Ack,
    Address,
    Alive,
    Dead,
    Err,
    IndirectPing,
    MessageType,
    Nack,
    NodeState,
    PacketMessage,
    Ping,
    PushNodeState,
    Suspect,
    User,
)

META_MAX_SIZE = 512  # memberlist MetaMaxSize
TAG_MAGIC_BYTE = 0xFF  # serf.go tagMagicByte: Meta holds msgpack tags, not a bare role


class WireError(Exception):
    """Bytes we must drop (or a message we cannot send), with a stable ``reason`` code.

    The text says what was wrong with the bytes; it never includes key material.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


# -- addresses ------------------------------------------------------------------------------


def ip_to_bytes(ip: str) -> bytes:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError as exc:
        raise WireError("bad_address", f"not an IP address: {ip!r}") from exc
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.packed


def ip_from_bytes(raw: bytes) -> str:
    if len(raw) == 4:
        return str(ipaddress.IPv4Address(raw))
    if len(raw) == 16:
        addr = ipaddress.IPv6Address(raw)
        return str(addr.ipv4_mapped or addr)
    raise mp.MsgpackError(f"an IP address has 4 or 16 bytes, not {len(raw)}")


def _port(port: int) -> int:
    if not 0 <= port <= 0xFFFF:
        raise WireError("bad_address", f"port {port} out of range")
    return port


# -- encoding -------------------------------------------------------------------------------


def _map(out: bytearray, fields: list[tuple[str, object]]) -> None:
    """Write ``fields`` (already in go-codec's sorted order) as a msgpack map."""
    mp.pack_map_header(out, len(fields))
    for name, value in fields:
        mp.pack_str(out, name)
        if isinstance(value, bool):
            mp.pack_bool(out, value)
        elif isinstance(value, int):
            mp.pack_uint(out, value)
        elif isinstance(value, str):
            mp.pack_str(out, value)
        else:
            assert isinstance(value, bytes)
            mp.pack_bytes(out, value)


def _source_fields(source: Address | None, source_node: str) -> list[tuple[str, object]]:
    fields: list[tuple[str, object]] = []  # omitempty, in sorted order
    if source is not None:
        fields.append(("SourceAddr", ip_to_bytes(source[0])))
    if source_node:
        fields.append(("SourceNode", source_node))
    if source is not None and source[1]:
        fields.append(("SourcePort", _port(source[1])))
    return fields


def _check_meta(meta: bytes) -> bytes:
    if len(meta) > META_MAX_SIZE:
        raise WireError("meta_too_large", f"{len(meta)} bytes > {META_MAX_SIZE}")
    return meta


def _u32(value: int, name: str) -> int:
    if not 0 <= value <= 0xFFFFFFFF:
        raise WireError("bad_field", f"{name} {value} does not fit uint32")
    return value


def encode_body(msg: object, out: bytearray) -> None:
    """Append the msgpack body (no type byte) of ``msg`` to ``out``."""
    if isinstance(msg, Ping):
        seq = _u32(msg.seq_no, "SeqNo")
        _map(
            out, [("Node", msg.node), ("SeqNo", seq), *_source_fields(msg.source, msg.source_node)]
        )
    elif isinstance(msg, IndirectPing):
        fields: list[tuple[str, object]] = [
            ("Nack", msg.nack),
            ("Node", msg.node),
            ("Port", _port(msg.target[1])),
            ("SeqNo", _u32(msg.seq_no, "SeqNo")),
            *_source_fields(msg.source, msg.source_node),
            ("Target", ip_to_bytes(msg.target[0])),
        ]
        _map(out, fields)
    elif isinstance(msg, Ack):
        _map(out, [("Payload", msg.payload), ("SeqNo", _u32(msg.seq_no, "SeqNo"))])
    elif isinstance(msg, Nack):
        _map(out, [("SeqNo", _u32(msg.seq_no, "SeqNo"))])
    elif isinstance(msg, Err):
        _map(out, [("Error", msg.error)])
    elif isinstance(msg, (Suspect, Dead)):
        inc = _u32(msg.incarnation, "Incarnation")
        _map(out, [("From", msg.sender), ("Incarnation", inc), ("Node", msg.node)])
    elif isinstance(msg, Alive):
        _map(
            out,
            [
                ("Addr", ip_to_bytes(msg.address[0])),
                ("Incarnation", _u32(msg.incarnation, "Incarnation")),
                ("Meta", _check_meta(msg.meta)),
                ("Node", msg.node),
                ("Port", _port(msg.address[1])),
                ("Vsn", _vsn_bytes(msg.vsn)),
            ],
        )
    elif isinstance(msg, PushNodeState):
        _map(
            out,
            [
                ("Addr", ip_to_bytes(msg.address[0])),
                ("Incarnation", _u32(msg.incarnation, "Incarnation")),
                ("Meta", _check_meta(msg.meta)),
                ("Name", msg.name),
                ("Port", _port(msg.address[1])),
                ("State", int(msg.state)),
                ("Vsn", _vsn_bytes(msg.vsn)),
            ],
        )
    else:
        raise TypeError(f"not a memberlist message: {type(msg).__name__}")


def _vsn_bytes(vsn: tuple[int, ...]) -> bytes:
    try:
        return bytes(vsn)
    except ValueError as exc:
        raise WireError("bad_field", "Vsn entries are uint8") from exc


_TYPE_OF: dict[type, MessageType] = {
    Ping: MessageType.PING,
    IndirectPing: MessageType.INDIRECT_PING,
    Ack: MessageType.ACK,
    Nack: MessageType.NACK,
    Err: MessageType.ERR,
    Suspect: MessageType.SUSPECT,
    Alive: MessageType.ALIVE,
    Dead: MessageType.DEAD,
    User: MessageType.USER,
}


def encode_message(msg: PacketMessage) -> bytes:
    """The message as memberlist sends it on its own: type byte + body."""
    try:
        kind = _TYPE_OF[type(msg)]
    except KeyError:
        raise TypeError(f"not a packet message: {type(msg).__name__}") from None
    if isinstance(msg, User):
        return bytes((MessageType.USER,)) + msg.payload
    out = bytearray((kind,))
    encode_body(msg, out)
    return bytes(out)


# -- decoding -------------------------------------------------------------------------------


def _source(fields: dict[str, object]) -> Address | None:
    raw = mp.get_bytes(fields, "SourceAddr")
    port = mp.get_uint(fields, "SourcePort", 16)
    # memberlist uses the source only when both are set (handlePing)
    return (ip_from_bytes(raw), port) if raw and port else None


def _address(fields: dict[str, object], ip_key: str) -> Address:
    raw = mp.get_bytes(fields, ip_key)
    return (ip_from_bytes(raw) if raw else "", mp.get_uint(fields, "Port", 16))


def _vsn(fields: dict[str, object]) -> tuple[int, int, int, int, int, int]:
    raw = mp.get_bytes(fields, "Vsn")[:6].ljust(6, b"\0")  # absent Vsn reads as zeros
    return (raw[0], raw[1], raw[2], raw[3], raw[4], raw[5])


def decode_body(kind: int, body: bytes) -> PacketMessage:
    """Decode one message body (trailing bytes are ignored, as go-codec does).

    ``mp.MsgpackError`` if malformed, ``KeyError`` if ``kind`` is not a packet message.
    """
    if kind == MessageType.USER:
        return User(payload=bytes(body))
    return message_from_fields(kind, mp.Reader(body).struct_map())


def message_from_fields(kind: int, fields: dict[str, object]) -> PacketMessage:
    """The message of type ``kind`` from its decoded msgpack map."""
    return _DECODERS[kind](fields)


def decode_push_node_state(fields: dict[str, object]) -> PushNodeState:
    state = mp.get_int(fields, "State")
    try:
        node_state = NodeState(state)
    except ValueError:
        raise mp.MsgpackError(f"unknown node state {state}") from None
    return PushNodeState(
        name=mp.get_str(fields, "Name"),
        address=_address(fields, "Addr"),
        meta=mp.get_bytes(fields, "Meta"),
        incarnation=mp.get_uint(fields, "Incarnation", 32),
        state=node_state,
        vsn=_vsn(fields),
    )


_DECODERS = {
    MessageType.PING: lambda f: Ping(
        seq_no=mp.get_uint(f, "SeqNo", 32),
        node=mp.get_str(f, "Node"),
        source=_source(f),
        source_node=mp.get_str(f, "SourceNode"),
    ),
    MessageType.INDIRECT_PING: lambda f: IndirectPing(
        seq_no=mp.get_uint(f, "SeqNo", 32),
        target=_address(f, "Target"),
        node=mp.get_str(f, "Node"),
        nack=mp.get_bool(f, "Nack"),
        source=_source(f),
        source_node=mp.get_str(f, "SourceNode"),
    ),
    MessageType.ACK: lambda f: Ack(
        seq_no=mp.get_uint(f, "SeqNo", 32), payload=mp.get_bytes(f, "Payload")
    ),
    MessageType.NACK: lambda f: Nack(seq_no=mp.get_uint(f, "SeqNo", 32)),
    MessageType.ERR: lambda f: Err(error=mp.get_str(f, "Error")),
    MessageType.SUSPECT: lambda f: Suspect(
        incarnation=mp.get_uint(f, "Incarnation", 32),
        node=mp.get_str(f, "Node"),
        sender=mp.get_str(f, "From"),
    ),
    MessageType.DEAD: lambda f: Dead(
        incarnation=mp.get_uint(f, "Incarnation", 32),
        node=mp.get_str(f, "Node"),
        sender=mp.get_str(f, "From"),
    ),
    MessageType.ALIVE: lambda f: Alive(
        incarnation=mp.get_uint(f, "Incarnation", 32),
        node=mp.get_str(f, "Node"),
        address=_address(f, "Addr"),
        meta=mp.get_bytes(f, "Meta"),
        vsn=_vsn(f),
    ),
}

PACKET_TYPES = frozenset(_DECODERS) | {MessageType.USER}


# -- Serf tags in node metadata ----------------------------------------------------------


def encode_tags(tags: dict[str, str]) -> bytes:
    """Node ``Meta`` as Serf writes tags: byte 255 + a msgpack map of strings.

    (serf.go ``encodeTags`` for Serf protocol >= 3; Go iterates the map in random order,
    we sort the keys so the bytes are stable.) ``WireError`` past 512 bytes.
    """
    out = bytearray((TAG_MAGIC_BYTE,))
    mp.pack_map_header(out, len(tags))
    for key in sorted(tags):
        mp.pack_str(out, key)
        mp.pack_str(out, tags[key])
    return _check_meta(bytes(out))


def decode_tags(meta: bytes) -> dict[str, str]:
    """Serf's ``decodeTags``: without the magic byte the whole Meta is the ``role`` tag."""
    if not meta or meta[0] != TAG_MAGIC_BYTE:
        return {"role": meta.decode("utf-8", "surrogateescape")}
    reader = mp.Reader(meta, 1)
    try:
        value = reader.value()
    except mp.MsgpackError as exc:
        raise WireError("bad_tags", str(exc)) from exc
    if not isinstance(value, dict):
        raise WireError("bad_tags", "tags are not a msgpack map")
    tags: dict[str, str] = {}
    for key, item in value.items():
        if not isinstance(key, bytes) or not isinstance(item, bytes):
            raise WireError("bad_tags", "tag keys and values must be strings")
        tags[key.decode("utf-8", "surrogateescape")] = item.decode("utf-8", "surrogateescape")
    return tags
