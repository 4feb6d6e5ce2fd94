"""iter_sse: server-sent events out of upstream body chunks, however the chunks fall."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rainbridge.providers.base import StreamError, iter_sse

STREAM = (
    b"data: {\"a\": 1}\n\n"
    b": a comment\n\n"
    b"event: message_start\ndata: {\"b\": 2}\n\n"
    b"data: line one\ndata: line two\n\n"
    b"event: ping\n\n"
    b"data: [DONE]\n\n"
)
EXPECTED = [(b"", b'{"a": 1}'), (b"message_start", b'{"b": 2}'), (b"", b"line one\nline two"), (b"", b"[DONE]")]


async def collect(chunks, **kw):
    async def gen():
        for chunk in chunks:
            yield chunk

    return [event async for event in iter_sse(gen(), **kw)]


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True) if a < b]


@settings(max_examples=200, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0), max_size=30), crlf=st.booleans())
async def test_events_are_the_same_however_the_stream_is_cut(cuts, crlf):
    data = STREAM.replace(b"\n", b"\r\n") if crlf else STREAM
    assert await collect(split(data, cuts)) == EXPECTED


async def test_every_single_byte_cut_including_inside_crlf():
    data = STREAM.replace(b"\n", b"\r\n")
    assert await collect([data[i : i + 1] for i in range(len(data))]) == EXPECTED


async def test_a_last_event_without_separator_is_still_delivered():
    assert await collect([b"data: 1\n\ndata: 2"]) == [(b"", b"1"), (b"", b"2")]


async def test_an_event_without_separator_fails_the_stream_once_over_the_limit():
    pulled = 0

    async def endless():
        nonlocal pulled
        for _ in range(10_000):  # 640 MB if nothing stopped it
            pulled += 1
            yield b"data: " + b"x" * 65536

    with pytest.raises(StreamError, match="larger than 1048576 bytes"):
        async for _ in iter_sse(endless()):
            pass
    assert pulled <= 1048576 // 65536 + 2  # it stopped at the limit, not at the end


async def test_one_oversized_chunk_fails_and_a_big_event_under_the_limit_passes():
    with pytest.raises(StreamError):
        await collect([b"data: " + b"x" * 2000], limit=1000)
    assert await collect([b"data: " + b"x" * 900, b"\n\n"], limit=1000) == [(b"", b"x" * 900)]
