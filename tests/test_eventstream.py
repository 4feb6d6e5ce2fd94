"""The AWS event-stream codec (Bedrock's ConverseStream framing) against botocore's parser,
the reference, on valid streams cut anywhere and on hostile input: bad CRCs, truncation,
impossible and huge lengths, malformed header blocks. Decoding stays bounded."""

from __future__ import annotations

import struct
from binascii import crc32

import pytest
from botocore.eventstream import EventStreamBuffer
from hypothesis import given, settings
from hypothesis import strategies as st

from rainbridge.eventstream import MAX_MESSAGE, EventStreamDecoder, EventStreamError, encode_message

SETTINGS = settings(max_examples=100, deadline=None)


def frame(header_block: bytes, payload: bytes) -> bytes:
    """A message around any header block, with correct lengths and CRCs."""
    prelude = struct.pack(">II", 12 + len(header_block) + len(payload) + 4, len(header_block))
    prelude += struct.pack(">I", crc32(prelude))
    body = prelude + header_block + payload
    return body + struct.pack(">I", crc32(body))


def header(name: str, kind: int, value: object) -> bytes:
    raw = name.encode()
    out = bytes([len(raw)]) + raw + bytes([kind])
    if kind in (0, 1):
        return out
    if kind in (6, 7):
        data = value if isinstance(value, bytes) else str(value).encode()
        return out + struct.pack(">H", len(data)) + data
    if kind == 9:
        return out + value  # type: ignore[operator]
    fmt = {2: ">b", 3: ">h", 4: ">i", 5: ">q", 8: ">q"}[kind]
    return out + struct.pack(fmt, value)


def ours(data: bytes, cuts: list[int] = ()) -> tuple[list, Exception | None, int]:
    decoder = EventStreamDecoder()
    messages: list = []
    pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
    try:
        for piece in pieces:
            messages += decoder.feed(piece)
    except EventStreamError as exc:
        return messages, exc, decoder.pending
    return messages, None, decoder.pending


def botocores(data: bytes) -> tuple[list, Exception | None]:
    buffer = EventStreamBuffer()
    buffer.add_data(data)
    messages = []
    try:
        for message in buffer:
            messages.append((message.headers, message.payload))
    except Exception as exc:  # ParserError, and struct/Unicode/Key errors on bad header blocks
        return messages, exc
    return messages, None


names = st.text(st.characters(codec="utf-8"), min_size=1, max_size=20).filter(lambda n: len(n.encode()) < 256)
values = st.one_of(
    st.tuples(st.just(0), st.none()), st.tuples(st.just(1), st.none()),
    st.tuples(st.just(2), st.integers(-128, 127)), st.tuples(st.just(3), st.integers(-2**15, 2**15 - 1)),
    st.tuples(st.just(4), st.integers(-2**31, 2**31 - 1)), st.tuples(st.just(5), st.integers(-2**63, 2**63 - 1)),
    st.tuples(st.just(6), st.binary(max_size=50)), st.tuples(st.just(7), st.text(max_size=50)),
    st.tuples(st.just(8), st.integers(0, 2**62)), st.tuples(st.just(9), st.binary(min_size=16, max_size=16)),
)
messages = st.tuples(st.dictionaries(names, values, max_size=6), st.binary(max_size=300))


@SETTINGS
@given(st.lists(messages, min_size=1, max_size=4), st.data())
def test_valid_streams_decode_as_botocore_decodes_them_however_they_are_cut(batch, data):
    stream = b"".join(frame(b"".join(header(n, k, v) for n, (k, v) in hs.items()), p) for hs, p in batch)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6, unique=True)))
    got, error, pending = ours(stream, cuts)
    expected, reference_error = botocores(stream)
    assert error is None and reference_error is None and pending == 0
    assert got == expected and len(got) == len(batch)


@SETTINGS
@given(st.binary(max_size=80), st.binary(max_size=40))
def test_hostile_header_blocks_are_refused_where_botocore_refuses_them(block, payload):
    """Any bytes as the header block, framed with correct CRCs. Ours is stricter in one way
    only: a declared length running past the block is refused (botocore reads what is there)."""
    got, error, _ = ours(frame(block, payload))
    expected, reference_error = botocores(frame(block, payload))
    if error is None:
        assert reference_error is None and got == expected
    elif reference_error is None:
        assert "runs past the header block" in str(error)


@SETTINGS
@given(messages, st.data())
def test_a_flipped_byte_is_refused_by_both(message, data):
    hs, payload = message
    raw = bytearray(frame(b"".join(header(n, k, v) for n, (k, v) in hs.items()), payload))
    at = data.draw(st.integers(0, len(raw) - 1))
    raw[at] ^= data.draw(st.integers(1, 255))
    got, error, _ = ours(bytes(raw))
    expected, reference_error = botocores(bytes(raw))
    # A changed length or prelude CRC fails the prelude's checksum; anything after it the message's.
    assert got == [] and expected == [] and error is not None and reference_error is not None


def test_a_truncated_message_yields_nothing_and_leaves_bytes_pending():
    raw = encode_message({":event-type": "contentBlockDelta"}, b'{"delta":{"text":"hi"}}')
    for cut in (1, 11, 12, len(raw) - 1):
        got, error, pending = ours(raw[:cut])
        assert got == [] and error is None and pending == cut


def test_a_bad_prelude_crc_is_refused_before_the_body_arrives():
    raw = bytearray(encode_message({"a": "b"}, b"x"))
    raw[8] ^= 1
    with pytest.raises(EventStreamError, match="prelude checksum"):
        EventStreamDecoder().feed(bytes(raw[:12]))


def test_a_bad_message_crc_is_refused():
    raw = bytearray(encode_message({"a": "b"}, b"payload"))
    raw[-1] ^= 1
    with pytest.raises(EventStreamError, match="message checksum"):
        EventStreamDecoder().feed(bytes(raw))


@pytest.mark.parametrize("total", [MAX_MESSAGE + 1, 2**31, 2**32 - 1])
def test_a_huge_length_is_refused_from_the_prelude_alone(total):
    """Nothing past the 12-byte prelude is needed (or buffered) to refuse it."""
    prelude = struct.pack(">II", total, 0)
    with pytest.raises(EventStreamError, match="exceeds"):
        EventStreamDecoder().feed(prelude + struct.pack(">I", crc32(prelude)))


@pytest.mark.parametrize(("total", "headers"), [(15, 0), (0, 0), (16, 1), (100, 90)])
def test_lengths_that_cannot_hold_a_message_are_refused(total, headers):
    prelude = struct.pack(">II", total, headers)
    with pytest.raises(EventStreamError, match="cannot hold"):
        EventStreamDecoder().feed(prelude + struct.pack(">I", crc32(prelude)))


def test_headers_over_128_kib_are_refused():
    prelude = struct.pack(">II", 12 + 128 * 1024 + 1 + 4, 128 * 1024 + 1)
    with pytest.raises(EventStreamError, match="headers of"):
        EventStreamDecoder().feed(prelude + struct.pack(">I", crc32(prelude)))


def test_a_stream_without_an_end_holds_at_most_one_message():
    """Bytes that never finish a message are bounded by the message's declared length, itself
    bounded by MAX_MESSAGE: the decoder refuses before holding more."""
    decoder = EventStreamDecoder(max_message=4096)
    prelude = struct.pack(">II", 4096, 0)
    decoder.feed(prelude + struct.pack(">I", crc32(prelude)))
    for _ in range(3):
        decoder.feed(b"\0" * 1000)
    assert decoder.pending == 3012
    with pytest.raises(EventStreamError, match="message checksum"):
        decoder.feed(b"\0" * 2000)


def test_duplicate_headers_are_refused_by_both():
    raw = frame(header("a", 7, "x") + header("a", 7, "y"), b"")
    assert ours(raw)[1] is not None and botocores(raw)[1] is not None
