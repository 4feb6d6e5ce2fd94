"""MessagePack exactly as memberlist's go-codec handle writes it, and a lenient reader.

memberlist (and Serf) encode with ``codec.MsgpackHandle{}`` of hashicorp/go-msgpack with
``WriteExt`` false, i.e. the *old* msgpack spec (go-msgpack ``msgpack.go``,
``encodeString``/``encodeStringBytes``/``writeContainerLen``):

* strings **and** ``[]byte`` are both written as "raw": fixraw ``0xa0|n`` below 32 bytes,
  else ``0xda`` + uint16, else ``0xdb`` + uint32 — never str8 (``0xd9``) nor bin (``0xc4``..);
* a nil ``[]byte`` is ``0xc0`` (nil);
* integers take the smallest form; non-negative signed ints are written as unsigned
  (``encodeInt`` calls ``encodeUint`` for ``i >= 0``);
* structs are maps keyed by the Go field names, **sorted** by name (``kStruct`` walks
  ``ti.sfi``, sorted by ``encName`` in ``helper.go``), ``omitempty`` fields left out.

msgspec cannot produce this layout (it writes ``bytes`` as bin and 32..255-byte strings as
str8), so the few primitives are hand-written here. The reader accepts every msgpack form
(new-spec str8/bin included, as newer go-msgpack peers may send) and returns raw/str/bin
alike as ``bytes``; the caller decides what is text.
"""

from __future__ import annotations

import struct

_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")

MAX_DEPTH = 32  # nesting bound for the reader: no legitimate message comes close


class MsgpackError(ValueError):
    """The bytes are not valid msgpack (or not what the field needs)."""


class Incomplete(MsgpackError):
    """The buffer ends before the value does: wait for more bytes (streams) or reject."""


# -- writer ---------------------------------------------------------------------------------


def pack_uint(out: bytearray, n: int) -> None:
    if n < 0:
        raise MsgpackError("negative value for an unsigned field")
    if n <= 0x7F:
        out.append(n)
    elif n <= 0xFF:
        out += b"\xcc" + bytes((n,))
    elif n <= 0xFFFF:
        out += b"\xcd" + _U16.pack(n)
    elif n <= 0xFFFFFFFF:
        out += b"\xce" + _U32.pack(n)
    else:
        out += b"\xcf" + _U64.pack(n)


def pack_bool(out: bytearray, value: bool) -> None:
    out.append(0xC3 if value else 0xC2)


def pack_raw(out: bytearray, data: bytes) -> None:
    n = len(data)
    if n < 32:
        out.append(0xA0 | n)
    elif n < 0x10000:
        out += b"\xda" + _U16.pack(n)
    else:
        out += b"\xdb" + _U32.pack(n)
    out += data


def pack_bytes(out: bytearray, data: bytes) -> None:
    """A Go ``[]byte`` field: nil when empty (what Go sends for an unset slice)."""
    if data:
        pack_raw(out, data)
    else:
        out.append(0xC0)


def pack_str(out: bytearray, text: str) -> None:
    pack_raw(out, text.encode("utf-8", "surrogateescape"))


def pack_map_header(out: bytearray, n: int) -> None:
    if n < 16:
        out.append(0x80 | n)
    elif n < 0x10000:
        out += b"\xde" + _U16.pack(n)
    else:
        out += b"\xdf" + _U32.pack(n)


# -- reader ---------------------------------------------------------------------------------


class Reader:
    """Reads msgpack values from ``data`` starting at ``pos``; ``pos`` advances."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes | bytearray | memoryview, pos: int = 0) -> None:
        self.data = memoryview(data)
        self.pos = pos

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise Incomplete("truncated msgpack value")
        chunk = bytes(self.data[self.pos : end])
        self.pos = end
        return chunk

    def _uint(self, size: int) -> int:
        return int.from_bytes(self.take(size), "big")

    def _sint(self, size: int) -> int:
        return int.from_bytes(self.take(size), "big", signed=True)

    def value(self, depth: int = 0) -> object:
        """One value: None, bool, int, float, bytes (str/bin/raw), list, dict, or Ext."""
        if depth > MAX_DEPTH:
            raise MsgpackError("msgpack nesting too deep")
        b = self._uint(1)
        if b <= 0x7F:
            return b
        if b >= 0xE0:
            return b - 0x100
        if 0xA0 <= b <= 0xBF:
            return self.take(b & 0x1F)
        if 0x90 <= b <= 0x9F:
            return self._array(b & 0x0F, depth)
        if 0x80 <= b <= 0x8F:
            return self._map(b & 0x0F, depth)
        if b == 0xC0:
            return None
        if b in (0xC2, 0xC3):
            return b == 0xC3
        if b in (0xC4, 0xD9):  # bin8, str8
            return self.take(self._uint(1))
        if b in (0xC5, 0xDA):
            return self.take(self._uint(2))
        if b in (0xC6, 0xDB):
            return self.take(self._uint(4))
        if 0xCC <= b <= 0xCF:
            return self._uint(1 << (b - 0xCC))
        if 0xD0 <= b <= 0xD3:
            return self._sint(1 << (b - 0xD0))
        if b == 0xCA:
            return struct.unpack(">f", self.take(4))[0]
        if b == 0xCB:
            return struct.unpack(">d", self.take(8))[0]
        if b in (0xDC, 0xDD):
            return self._array(self._uint(2 if b == 0xDC else 4), depth)
        if b in (0xDE, 0xDF):
            return self._map(self._uint(2 if b == 0xDE else 4), depth)
        if 0xD4 <= b <= 0xD8:  # fixext 1..16
            size = 1 << (b - 0xD4)
            return Ext(self._uint(1), self.take(size))
        if b in (0xC7, 0xC8, 0xC9):  # ext 8/16/32
            size = self._uint(1 << (b - 0xC7))
            return Ext(self._uint(1), self.take(size))
        raise MsgpackError(f"invalid msgpack byte 0x{b:02x}")

    def _array(self, n: int, depth: int) -> list[object]:
        if n > len(self.data) - self.pos:  # every element takes at least one byte
            raise Incomplete("truncated msgpack array")
        return [self.value(depth + 1) for _ in range(n)]

    def _map(self, n: int, depth: int) -> dict[object, object]:
        if 2 * n > len(self.data) - self.pos:
            raise Incomplete("truncated msgpack map")
        result: dict[object, object] = {}
        for _ in range(n):
            key = self.value(depth + 1)
            if isinstance(key, (list, dict)):
                raise MsgpackError("unhashable msgpack map key")
            result[key] = self.value(depth + 1)
        return result

    def struct_map(self) -> dict[str, object]:
        """A Go struct encoded as a map: keys decoded as text, unknown keys kept (ignored later)."""
        value = self.value()
        if not isinstance(value, dict):
            raise MsgpackError("expected a msgpack map")
        fields: dict[str, object] = {}
        for key, item in value.items():
            if isinstance(key, bytes):
                fields[key.decode("utf-8", "surrogateescape")] = item
        return fields


class Ext:
    """A msgpack extension value (memberlist never sends one; kept so readers can skip it)."""

    __slots__ = ("code", "data")

    def __init__(self, code: int, data: bytes) -> None:
        self.code = code
        self.data = data


# -- typed field access, with go-codec's decoding rules ----------------------------------


def get_uint(fields: dict[str, object], name: str, bits: int) -> int:
    """A Go unsigned field: missing/nil is 0; negative or too wide is an error."""
    value = fields.get(name)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise MsgpackError(f"{name}: expected an integer")
    if value < 0 or value >> bits:
        raise MsgpackError(f"{name}: {value} does not fit uint{bits}")
    return value


def get_int(fields: dict[str, object], name: str) -> int:
    value = fields.get(name)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise MsgpackError(f"{name}: expected an integer")
    if not -(1 << 63) <= value < 1 << 63:
        raise MsgpackError(f"{name}: does not fit int64")
    return value


def get_bool(fields: dict[str, object], name: str) -> bool:
    value = fields.get(name)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise MsgpackError(f"{name}: expected a bool")
    return value


def get_bytes(fields: dict[str, object], name: str) -> bytes:
    value = fields.get(name)
    if value is None:
        return b""
    if isinstance(value, bytes):
        return value
    if isinstance(value, list) and all(
        isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in value
    ):
        return bytes(value)  # go-codec also fills a []byte from an array of small ints
    raise MsgpackError(f"{name}: expected bytes")


def get_str(fields: dict[str, object], name: str) -> str:
    value = fields.get(name)
    if value is None:
        return ""
    if not isinstance(value, bytes):
        raise MsgpackError(f"{name}: expected a string")
    return value.decode("utf-8", "surrogateescape")
