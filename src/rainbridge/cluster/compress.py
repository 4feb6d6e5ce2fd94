"""LZW as Go's ``compress/lzw`` does it with ``lzw.LSB`` and literal width 8.

memberlist compresses with exactly that (``util.go``: ``compressPayload`` /
``decompressBuffer``, ``lzwLitWidth = 8``, ``lzwAlgo = 0``), so these must agree with Go
bit for bit:

* codes 0..255 are literals, 256 is *clear*, 257 is *end of data*; new table entries start
  at 258; codes are 9 bits wide at first and grow up to 12;
* codes are packed least significant bit first;
* the writer sends a clear code first (Go >= 1.17 does; older writers did not, and the
  reader accepts both), widens the code one entry *before* the table needs it (the writer
  bumps the width when its next code reaches ``1 << width``; the reader, one code behind,
  when its next code does), and when the 12-bit table is full (next code 4095) it emits a
  clear and starts over;
* on a full table a reader that sees no clear keeps the 12-bit width and adds no entries.

Compression is written from that description and checked against vectors from Go 1.19's
``compress/lzw`` (the toolchain Debian's ``serf`` binary was built with) in the tests.
"""

from __future__ import annotations

_LIT_WIDTH = 8
_CLEAR = 1 << _LIT_WIDTH  # 256
_EOF = _CLEAR + 1  # 257
_MAX_WIDTH = 12
_MAX_CODE = (1 << _MAX_WIDTH) - 1  # 4095


class LZWError(ValueError):
    """The compressed data is malformed or expands past the allowed size."""


def lzw_compress(data: bytes) -> bytes:
    """Compress like ``lzw.NewWriter(w, lzw.LSB, 8)`` + ``Write(data)`` + ``Close()``."""
    out = bytearray()
    bits = 0
    nbits = 0
    width = _LIT_WIDTH + 1
    hi = _EOF  # the last code assigned; the next entry gets hi + 1
    overflow = 1 << width
    table: dict[int, int] = {}  # (prefix code << 8 | next byte) -> code

    def emit(code: int) -> None:
        nonlocal bits, nbits
        bits |= code << nbits
        nbits += width
        while nbits >= 8:
            out.append(bits & 0xFF)
            bits >>= 8
            nbits -= 8

    def next_code() -> bool:
        """Account for one more assigned code; False when the table was reset instead."""
        nonlocal hi, width, overflow
        hi += 1
        if hi == overflow:
            width += 1
            overflow <<= 1
        if hi == _MAX_CODE:
            emit(_CLEAR)
            width = _LIT_WIDTH + 1
            hi = _EOF
            overflow = 1 << width
            table.clear()
            return False
        return True

    emit(_CLEAR)
    if data:
        code = data[0]
        for byte in data[1:]:
            key = code << 8 | byte
            found = table.get(key)
            if found is not None:
                code = found
                continue
            emit(code)
            code = byte
            if next_code():
                table[key] = hi
        emit(code)
        next_code()
    emit(_EOF)
    if nbits:
        out.append(bits & 0xFF)
    return bytes(out)


def lzw_decompress(data: bytes, max_size: int) -> bytes:
    """Expand Go LZW data; ``LZWError`` if malformed or larger than ``max_size`` bytes."""
    out = bytearray()
    entries: list[bytes] = [bytes((i,)) for i in range(_CLEAR)] + [b"", b""]
    width = _LIT_WIDTH + 1
    hi = _EOF
    overflow = 1 << width
    last: bytes | None = None  # the previous code's expansion; None right after a clear
    bits = 0
    nbits = 0
    pos = 0
    n = len(data)
    while True:
        while nbits < width:
            if pos >= n:
                raise LZWError("lzw data ends before the end-of-data code")
            bits |= data[pos] << nbits
            pos += 1
            nbits += 8
        code = bits & ((1 << width) - 1)
        bits >>= width
        nbits -= width

        if code == _CLEAR:
            width = _LIT_WIDTH + 1
            hi = _EOF
            overflow = 1 << width
            last = None
            del entries[_EOF + 1 :]
            continue
        if code == _EOF:
            return bytes(out)
        if code < len(entries):  # a literal or a defined entry (256/257 were handled above)
            expansion = entries[code]
        elif code == hi and last is not None:
            expansion = last + last[:1]  # the "KwKwK" case: the code being defined now
        else:
            raise LZWError("lzw: invalid code")
        out += expansion
        if len(out) > max_size:
            raise LZWError(f"decompressed data exceeds {max_size} bytes")
        if last is not None:
            entries.append(last + expansion[:1])  # entry number hi
        last = expansion
        hi += 1
        if hi >= overflow:
            if width == _MAX_WIDTH:
                last = None  # table full: keep the width, add nothing until a clear
                hi -= 1
            else:
                width += 1
                overflow <<= 1
