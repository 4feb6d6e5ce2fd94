"""AWS event-stream framing (``application/vnd.amazon.eventstream``), sans-IO.

Bedrock's ConverseStream answers in binary messages instead of server-sent events::

    | total length u32 | headers length u32 | prelude CRC32 u32 |
    | headers ...                                              |
    | payload ...                                              |
    | message CRC32 u32 (of everything before it)              |

A header is ``name length u8, name, type u8, value`` (strings: ``u16 length, bytes``).
The decoder is strict and bounded: both CRCs are checked, lengths that cannot be right are
refused before anything is buffered, and no message may exceed ``max_message`` bytes, so a
hostile upstream makes us hold at most that much. botocore's parser is the reference; a
differential test feeds both the same bytes. Where they differ we are stricter: a header
whose declared length runs past the header block is an error (botocore reads what is there),
and a message over ``max_message`` (1 MiB) is refused (botocore allows 24 MiB payloads).
"""

from __future__ import annotations

import struct
from binascii import crc32

__all__ = ["EventStreamDecoder", "EventStreamError", "encode_message"]

PRELUDE = 12  # total length, headers length, prelude CRC
MIN_MESSAGE = PRELUDE + 4  # no headers, no payload, the message CRC
MAX_HEADERS = 128 * 1024  # as botocore and AWS's spec bound the header section
# A ConverseStream event is a delta of a few hundred bytes; one MiB bounds what we hold.
MAX_MESSAGE = 1024 * 1024

_U32 = struct.Struct(">I")
_PRELUDE = struct.Struct(">III")
# Fixed-size header value types: type -> (size, struct format).
_FIXED = {2: (1, ">b"), 3: (2, ">h"), 4: (4, ">i"), 5: (8, ">q"), 8: (8, ">q")}


class EventStreamError(ValueError):
    """The bytes are not a valid event stream (bad CRC, impossible length, bad header)."""


def encode_message(headers: dict[str, str], payload: bytes) -> bytes:
    """One message with string headers (type 7), as AWS frames ConverseStream events."""
    block = bytearray()
    for name, value in headers.items():
        raw_name, raw_value = name.encode(), value.encode()
        block += bytes([len(raw_name)]) + raw_name + b"\x07" + struct.pack(">H", len(raw_value)) + raw_value
    total = PRELUDE + len(block) + len(payload) + 4
    prelude = struct.pack(">II", total, len(block))
    prelude += _U32.pack(crc32(prelude))
    body = prelude + bytes(block) + payload
    return body + _U32.pack(crc32(body))


class EventStreamDecoder:
    """Feed bytes as they arrive; get back whole messages as ``(headers, payload)``."""

    __slots__ = ("_buffer", "_max")

    def __init__(self, max_message: int = MAX_MESSAGE) -> None:
        self._buffer = bytearray()
        self._max = max_message

    @property
    def pending(self) -> int:
        """Bytes of an unfinished message: non-zero when the stream ends means it was cut."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[tuple[dict[str, object], bytes]]:
        self._buffer += data
        out = []
        while len(self._buffer) >= PRELUDE:
            total, headers_length, prelude_crc = _PRELUDE.unpack_from(self._buffer)
            if crc32(self._buffer[:8]) != prelude_crc:
                raise EventStreamError("event-stream prelude checksum mismatch")
            if total < MIN_MESSAGE or headers_length > total - MIN_MESSAGE:
                raise EventStreamError(f"event-stream message length {total} cannot hold {headers_length} header bytes")
            if headers_length > MAX_HEADERS:
                raise EventStreamError(f"event-stream headers of {headers_length} bytes exceed {MAX_HEADERS}")
            if total > self._max:
                raise EventStreamError(f"event-stream message of {total} bytes exceeds {self._max}")
            if len(self._buffer) < total:
                break
            message = bytes(self._buffer[:total])
            del self._buffer[:total]
            if crc32(message[:-4]) != _U32.unpack_from(message, total - 4)[0]:
                raise EventStreamError("event-stream message checksum mismatch")
            headers = _headers(message[PRELUDE : PRELUDE + headers_length])
            out.append((headers, message[PRELUDE + headers_length : -4]))
        return out


def _headers(block: bytes) -> dict[str, object]:
    headers: dict[str, object] = {}
    i, end = 0, len(block)
    while i < end:
        size = block[i]
        i += 1
        if i + size + 1 > end:
            raise EventStreamError("event-stream header name runs past the header block")
        try:
            name = block[i : i + size].decode()
        except UnicodeDecodeError:
            raise EventStreamError("event-stream header name is not UTF-8") from None
        i += size
        kind = block[i]
        i += 1
        value: object
        if kind in (0, 1):
            value = kind == 0
        elif kind in _FIXED:
            width, fmt = _FIXED[kind]
            if i + width > end:
                raise EventStreamError(f"event-stream header {name!r} runs past the header block")
            value = struct.unpack_from(fmt, block, i)[0]
            i += width
        elif kind in (6, 7):
            if i + 2 > end:
                raise EventStreamError(f"event-stream header {name!r} runs past the header block")
            length = struct.unpack_from(">H", block, i)[0]
            i += 2
            if i + length > end:
                raise EventStreamError(f"event-stream header {name!r} runs past the header block")
            raw = block[i : i + length]
            i += length
            if kind == 6:
                value = raw
            else:
                try:
                    value = raw.decode()
                except UnicodeDecodeError:
                    raise EventStreamError(f"event-stream header {name!r} is not UTF-8") from None
        elif kind == 9:
            if i + 16 > end:
                raise EventStreamError(f"event-stream header {name!r} runs past the header block")
            value = block[i : i + 16]  # the UUID's bytes, as botocore gives them
            i += 16
        else:
            raise EventStreamError(f"event-stream header {name!r} has unknown type {kind}")
        if name in headers:
            raise EventStreamError(f"event-stream header {name!r} appears twice")
        headers[name] = value
    return headers
