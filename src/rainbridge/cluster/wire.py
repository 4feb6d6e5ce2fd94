"""memberlist's wire format, sans-IO: UDP packets and TCP stream messages <-> message objects.

Packet layers, outermost first, as memberlist 0.3+ writes them (``rawSendMsgPacket`` then
``labelWrappedTransport.WriteToAddress``), every layer optional::

    label header  [244][len][label]                       (WireConfig.label)
    encryption    [vsn][nonce 12][AES-GCM ct+tag], AAD = label   (keyring + verify_outgoing)
    CRC           [12][crc32 IEEE of the rest, big-endian]   (recipient understands v5)
    compression   [9]{Algo: 0, Buf: lzw(rest)}               (only when it is smaller)
    compound      [7][count u8][len u16 BE]*count + messages    (when more than one)
    message       [type][go-codec msgpack body]  (user: [8][raw payload])

Streams (push-pull, reliable user message, TCP ping/ack, err): the *dialer* writes the label
header once at the start of the connection (``labelWrappedTransport.DialAddressTimeout``);
each message is then optionally compressed (always, when enabled: ``rawSendMsgStream``) and
encrypted as ``[10][len u32 BE][vsn][nonce][ct+tag]`` with AAD = the 5 header bytes + label
(``encryptLocalState``). The reply on the same connection carries no label header but
still binds the label as AAD.

Which failures mean what for a driver:

* ``WireError`` from ``decode_packet`` — drop the whole packet silently (count it in
  metrics by ``err.reason``); memberlist only logs these.
* ``Skipped`` entries — parts of a packet that were ignored (unknown or unsupported type,
  one malformed or truncated part of a compound); the rest of the packet is still good.
* ``WireError`` from ``StreamDecoder`` — the stream is unusable: memberlist answers an
  ``Err`` message (``encode_stream(Err(...))``) when it can and closes the connection.
* ``WireError`` from the encoders — a bug or bad local data (meta > 512 bytes, bad IP).
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import NamedTuple

from . import gocodec as mp
from .codec import (
    META_MAX_SIZE,
    PACKET_TYPES,
    WireError,
    decode_body,
    decode_push_node_state,
    decode_tags,
    encode_body,
    encode_message,
    encode_tags,
    message_from_fields,
)
from .compress import LZWError, lzw_compress, lzw_decompress
from .messages import Ack, Err, MessageType, PacketMessage, Ping, PushPull, User
from .security import (
    Keyring,
    check_label,
    encrypted_length,
    encryption_overhead,
    label_header,
    split_label,
)

__all__ = [
    "META_MAX_SIZE",
    "Keyring",
    "Skipped",
    "StreamDecoder",
    "StreamMessage",
    "WireConfig",
    "WireError",
    "decode_packet",
    "decode_tags",
    "encode_message",
    "encode_packet",
    "encode_stream",
    "encode_tags",
    "encode_user",
]

UDP_MAX_PAYLOAD = 65507
COMPOUND_MAX_PARTS = 255  # the count is one byte
CRC_OVERHEAD = 5
MAX_PACKET_DECOMPRESSED = 1 << 20  # one datagram never legitimately expands past this
MAX_PUSH_STATE_BYTES = 20 * 1024 * 1024  # memberlist maxPushStateBytes
MAX_PUSH_STATE_NODES = 1024 * 1024
MAX_STREAM_DECOMPRESSED = 2 * MAX_PUSH_STATE_BYTES
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")

StreamMessage = PushPull | User | Ping | Ack | Err


@dataclass(frozen=True, slots=True)
class WireConfig:
    """What both ends of a memberlist cluster must agree on to read each other's bytes."""

    label: str = ""  # cluster label: header on every packet/stream and AES-GCM associated data
    keyring: Keyring | None = None  # None or empty: no encryption
    # memberlist GossipVerifyIncoming: refuse plaintext when a keyring is set (False lets a
    # cluster roll encryption out: encrypted and plain traffic are both accepted)
    gossip_verify_incoming: bool = True
    # memberlist GossipVerifyOutgoing: encrypt what we send when a keyring is set
    gossip_verify_outgoing: bool = True
    compression: bool = False  # LZW-compress packets (when smaller) and stream messages
    protocol_version: int = 5  # the memberlist protocol we speak: 1 selects encryption v0
    # memberlist SkipInboundLabelCheck: accept unlabelled input as if it had our label
    skip_inbound_label_check: bool = False

    def __post_init__(self) -> None:
        label_header(self.label)  # raises when longer than 255 bytes
        if not 1 <= self.protocol_version <= 5:
            raise ValueError("protocol_version must be between 1 and 5")

    @property
    def encrypted(self) -> bool:
        return self.keyring is not None and len(self.keyring) > 0

    @property
    def encryption_version(self) -> int:
        return 0 if self.protocol_version == 1 else 1


class Skipped(NamedTuple):
    """A part of a packet that ``decode_packet`` ignored."""

    type: int  # the message type byte
    reason: str  # "unknown_type" | "malformed" | "truncated" | "nested"


def encode_user(payload: bytes) -> PacketMessage:
    """A best-effort application message (memberlist ``SendBestEffort``)."""
    return User(payload=bytes(payload))


# -- packets ---------------------------------------------------------------------------------


def packet_overhead(config: WireConfig, crc: bool) -> int:
    """Bytes the outer layers add to a packet (label, encryption, CRC)."""
    overhead = len(label_header(config.label)) + (CRC_OVERHEAD if crc else 0)
    if config.encrypted and config.gossip_verify_outgoing:
        overhead += encryption_overhead(config.encryption_version)
    return overhead


def _compound(parts: list[bytes]) -> bytes:
    header = bytearray((MessageType.COMPOUND, len(parts)))
    for part in parts:
        header += _U16.pack(len(part))
    return bytes(header) + b"".join(parts)


def _compressed(body: bytes) -> bytes:
    out = bytearray((MessageType.COMPRESS,))
    mp.pack_map_header(out, 2)
    mp.pack_str(out, "Algo")
    mp.pack_uint(out, 0)  # lzwAlgo
    mp.pack_str(out, "Buf")
    mp.pack_raw(out, lzw_compress(body))
    return bytes(out)


def _wrap_packet(body: bytes, config: WireConfig, crc: bool) -> bytes:
    if config.compression:
        packed = _compressed(body)
        if len(packed) < len(body):
            body = packed
    if crc:
        body = bytes((MessageType.HAS_CRC,)) + _U32.pack(zlib.crc32(body)) + body
    label = config.label.encode()
    if config.encrypted and config.gossip_verify_outgoing:
        assert config.keyring is not None
        body = config.keyring.seal(config.encryption_version, body, label)
    packet = label_header(config.label) + body
    if len(packet) > UDP_MAX_PAYLOAD:
        raise WireError("too_large", f"a {len(packet)}-byte packet does not fit in UDP")
    return packet


def encode_packet(
    messages: list[PacketMessage | bytes],
    config: WireConfig,
    max_size: int = 1400,
    *,
    crc: bool | None = None,
) -> list[bytes]:
    """UDP payloads carrying ``messages`` in order, each at most ``max_size`` bytes.

    Items may be message objects or bytes from ``encode_message`` (a broadcast queue keeps
    those). Messages are packed greedily into compound messages; one that does not fit
    ``max_size`` with the overhead goes alone. ``crc``: add memberlist's CRC32 layer —
    pass ``peer_vsn[1] >= 5`` (memberlist adds it only for recipients whose protocol max
    is >= 5); None means ``config.protocol_version >= 5``.
    """
    if crc is None:
        crc = config.protocol_version >= 5
    budget = max_size - packet_overhead(config, crc)
    packets: list[bytes] = []
    group: list[bytes] = []
    size = 2  # compound type byte + count byte

    def flush() -> None:
        nonlocal group, size
        if group:
            packets.append(_wrap_packet(_group_body(group), config, crc))
        group, size = [], 2

    for message in messages:
        part = message if isinstance(message, bytes) else encode_message(message)
        if len(part) > 0xFFFF:  # its length does not fit a compound entry: alone, in order
            flush()
            packets.append(_wrap_packet(part, config, crc))
            continue
        if group and (size + 2 + len(part) > budget or len(group) == COMPOUND_MAX_PARTS):
            flush()
        group.append(part)
        size += 2 + len(part)
    flush()
    return packets


def _group_body(group: list[bytes]) -> bytes:
    return group[0] if len(group) == 1 else _compound(group)


def decode_packet(
    data: bytes, config: WireConfig, skipped: list[Skipped] | None = None
) -> list[PacketMessage]:
    """The messages in one UDP payload, in order.

    ``WireError``: drop the packet (bad/mismatched label, decryption failure, plaintext
    when encryption is required, CRC mismatch, corrupt compression or compound header, a
    lone malformed message). Ignored parts are appended to ``skipped`` when given.
    """
    if skipped is None:
        skipped = []
    found = split_label(data)
    if found is None:
        raise WireError("bad_label", "label header truncated")
    received, offset = found
    label = check_label(received, config.label, config.skip_inbound_label_check)
    buf = bytes(data[offset:])
    if config.encrypted:
        assert config.keyring is not None
        try:
            buf = config.keyring.open(buf, label.encode())
        except WireError:
            if config.gossip_verify_incoming:
                raise
            # memberlist: without verify_incoming an undecryptable packet is read as plaintext
    if len(buf) >= CRC_OVERHEAD and buf[0] == MessageType.HAS_CRC:
        (expected,) = _U32.unpack_from(buf, 1)
        buf = buf[CRC_OVERHEAD:]
        if zlib.crc32(buf) != expected:
            raise WireError("bad_crc", "checksum mismatch")
    out: list[PacketMessage] = []
    _decode_command(buf, out, skipped, in_compound=False, in_compress=False)
    return out


def _decode_command(
    buf: bytes,
    out: list[PacketMessage],
    skipped: list[Skipped],
    *,
    in_compound: bool,
    in_compress: bool,
) -> None:
    if not buf:
        raise WireError("malformed", "missing message type byte")
    kind, body = buf[0], buf[1:]
    if kind == MessageType.COMPOUND:
        if in_compound:  # memberlist never nests them; refusing bounds the work
            skipped.append(Skipped(kind, "nested"))
            return
        parts, truncated = _split_compound(body)
        for part in parts:
            try:
                _decode_command(part, out, skipped, in_compound=True, in_compress=in_compress)
            except WireError:
                skipped.append(Skipped(part[0] if part else -1, "malformed"))
        skipped.extend([Skipped(MessageType.COMPOUND, "truncated")] * truncated)
    elif kind == MessageType.COMPRESS:
        if in_compress:
            skipped.append(Skipped(kind, "nested"))
            return
        try:
            inner = _decompress(mp.Reader(body), MAX_PACKET_DECOMPRESSED)
        except mp.MsgpackError as exc:
            raise WireError("bad_compression", str(exc)) from exc
        _decode_command(inner, out, skipped, in_compound=in_compound, in_compress=True)
    elif kind in PACKET_TYPES:
        try:
            out.append(decode_body(kind, body))
        except mp.MsgpackError as exc:
            raise WireError("malformed", f"message type {kind}: {exc}") from exc
    else:
        skipped.append(Skipped(kind, "unknown_type"))


def _split_compound(body: bytes) -> tuple[list[bytes], int]:
    """memberlist ``decodeCompoundMessage``: the parts, and how many were cut off."""
    if not body:
        raise WireError("bad_compound", "missing compound length byte")
    count = body[0]
    if len(body) < 1 + 2 * count:
        raise WireError("bad_compound", "truncated length table")
    lengths = [_U16.unpack_from(body, 1 + 2 * i)[0] for i in range(count)]
    pos = 1 + 2 * count
    parts: list[bytes] = []
    for index, length in enumerate(lengths):
        if pos + length > len(body):
            return parts, count - index
        parts.append(body[pos : pos + length])
        pos += length
    return parts, 0


def _decompress(reader: mp.Reader, limit: int) -> bytes:
    """Read a ``compress{Algo, Buf}`` body and expand it (``mp.Incomplete`` if cut short)."""
    try:
        fields = reader.struct_map()
        algo = mp.get_uint(fields, "Algo", 8)
        buf = mp.get_bytes(fields, "Buf")
    except mp.Incomplete:
        raise
    except mp.MsgpackError as exc:
        raise WireError("bad_compression", str(exc)) from exc
    if algo != 0:
        raise WireError("bad_compression", f"unknown compression algorithm {algo}")
    try:
        return lzw_decompress(buf, limit)
    except LZWError as exc:
        raise WireError("bad_compression", str(exc)) from exc


# -- streams ---------------------------------------------------------------------------------


def _stream_body(message: StreamMessage) -> bytes:
    if isinstance(message, PushPull):
        out = bytearray((MessageType.PUSH_PULL,))
        mp.pack_map_header(out, 3)  # pushPullHeader, fields sorted
        mp.pack_str(out, "Join")
        mp.pack_bool(out, message.join)
        mp.pack_str(out, "Nodes")
        mp.pack_uint(out, len(message.nodes))
        mp.pack_str(out, "UserStateLen")
        mp.pack_uint(out, len(message.user_state))
        for node in message.nodes:
            encode_body(node, out)
        out += message.user_state
        return bytes(out)
    if isinstance(message, User):
        out = bytearray((MessageType.USER,))
        mp.pack_map_header(out, 1)  # userMsgHeader
        mp.pack_str(out, "UserMsgLen")
        mp.pack_uint(out, len(message.payload))
        return bytes(out) + message.payload
    if isinstance(message, (Ping, Ack, Err)):
        return encode_message(message)
    raise TypeError(f"not a stream message: {type(message).__name__}")


def encode_stream(message: StreamMessage, config: WireConfig, *, dialer: bool = True) -> bytes:
    """The bytes to write on a TCP stream for ``message``.

    ``dialer``: we opened the connection and this is its first message, so it starts with
    the label header; the accepting side's reply (``dialer=False``) has none.
    """
    body = _stream_body(message)
    if config.compression:
        body = _compressed(body)
    if config.encrypted and config.gossip_verify_outgoing:
        assert config.keyring is not None
        version = config.encryption_version
        header = bytes((MessageType.ENCRYPT,)) + _U32.pack(encrypted_length(version, len(body)))
        body = header + config.keyring.seal(version, body, header + config.label.encode())
    return (label_header(config.label) if dialer else b"") + body


class StreamDecoder:
    """Incremental reader of memberlist stream messages from one TCP connection.

    ``feed()`` bytes as they arrive; ``message()`` returns the next complete message or
    None. ``dialer=True`` on the side that opened the connection (no label header comes
    back). Raises ``WireError`` on bad input or past memberlist's size limits.
    """

    def __init__(self, config: WireConfig, *, dialer: bool = False) -> None:
        self._config = config
        self._buf = bytearray()
        self._label: str | None = config.label if dialer else None
        self._fresh = False  # bytes arrived since the last incomplete parse
        self._limit = MAX_PUSH_STATE_BYTES + 5 + 2 + 255

    def feed(self, data: bytes) -> None:
        self._buf += data
        self._fresh = True
        if len(self._buf) > self._limit:
            raise WireError("too_large", f"stream message exceeds {self._limit} bytes")

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def message(self) -> StreamMessage | None:
        if not self._fresh:
            return None
        if self._label is None:
            found = split_label(self._buf)
            if found is None or not self._buf:
                self._fresh = False
                return None
            received, offset = found
            cfg = self._config
            self._label = check_label(received, cfg.label, cfg.skip_inbound_label_check)
            del self._buf[:offset]
        try:
            message, used = self._parse()
        except mp.Incomplete:
            self._fresh = False
            return None
        del self._buf[:used]
        return message

    def _parse(self) -> tuple[StreamMessage, int]:
        buf, cfg = self._buf, self._config
        if not buf:
            raise mp.Incomplete("no bytes yet")
        if buf[0] == MessageType.ENCRYPT:
            if not cfg.encrypted:
                raise WireError(
                    "not_configured", "remote state is encrypted and encryption is not configured"
                )
            if len(buf) < 5:
                raise mp.Incomplete("encrypt header")
            (length,) = _U32.unpack_from(buf, 1)
            if length > MAX_PUSH_STATE_BYTES:
                raise WireError("too_large", f"remote state is larger than {MAX_PUSH_STATE_BYTES}")
            if len(buf) < 5 + length:
                raise mp.Incomplete("encrypted payload")
            assert cfg.keyring is not None
            aad = bytes(buf[:5]) + (self._label or "").encode()
            plain = cfg.keyring.open(bytes(buf[5 : 5 + length]), aad)
            return _complete(plain), 5 + length
        if cfg.encrypted and cfg.gossip_verify_incoming:
            raise WireError(
                "not_encrypted", "encryption is configured but the stream is not encrypted"
            )
        # a copy: a memoryview over the bytearray would pin it against resizing in feed()
        return _parse_plain(mp.Reader(bytes(buf)), allow_compress=True)


def _complete(data: bytes) -> StreamMessage:
    """Parse a buffer that must hold exactly one whole message (decrypted or decompressed)."""
    try:
        message, _ = _parse_plain(mp.Reader(data), allow_compress=True)
    except mp.Incomplete as exc:
        raise WireError("truncated", str(exc)) from exc
    return message


def _parse_plain(reader: mp.Reader, *, allow_compress: bool) -> tuple[StreamMessage, int]:
    kind = reader.take(1)[0]
    try:
        if kind == MessageType.COMPRESS and allow_compress:
            inner = _decompress(reader, MAX_STREAM_DECOMPRESSED)
            try:
                message, _ = _parse_plain(mp.Reader(inner), allow_compress=False)
            except mp.Incomplete as exc:
                raise WireError("truncated", str(exc)) from exc
            return message, reader.pos
        if kind == MessageType.PUSH_PULL:
            return _read_push_pull(reader), reader.pos
        if kind == MessageType.USER:
            size = mp.get_int(reader.struct_map(), "UserMsgLen")
            if not 0 <= size <= MAX_PUSH_STATE_BYTES:
                raise WireError("too_large", f"user message of {size} bytes")
            return User(payload=reader.take(size)), reader.pos
        if kind in (MessageType.PING, MessageType.ACK, MessageType.ERR):
            message = message_from_fields(kind, reader.struct_map())
            assert isinstance(message, (Ping, Ack, Err))
            return message, reader.pos
    except mp.Incomplete:
        raise
    except mp.MsgpackError as exc:
        raise WireError("malformed", f"stream message type {kind}: {exc}") from exc
    raise WireError("unexpected_type", f"stream message type {kind} is not handled")


def _read_push_pull(reader: mp.Reader) -> PushPull:
    header = reader.struct_map()
    count = mp.get_int(header, "Nodes")
    user_len = mp.get_int(header, "UserStateLen")
    if not 0 <= count <= MAX_PUSH_STATE_NODES:
        raise WireError("too_large", f"push-pull with {count} nodes")
    if not 0 <= user_len <= MAX_PUSH_STATE_BYTES:
        raise WireError("too_large", f"push-pull user state of {user_len} bytes")
    nodes = tuple(decode_push_node_state(reader.struct_map()) for _ in range(count))
    return PushPull(join=mp.get_bool(header, "Join"), nodes=nodes, user_state=reader.take(user_len))
