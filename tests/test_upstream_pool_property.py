"""The pool invariant, property-tested: a response body reaches only the request that
caused it, or that request fails (ProtocolError / ConnectionLost / Timeout: the gateway's
502 / 504); never another request.

A scripted upstream on a real socket answers each request by a script hypothesis draws:
interim 1xx responses, delays, then a final response framed right or wrong (short or long
Content-Length, chunked, read-until-close, a broken chunk), possibly followed in the same
write by garbage or a forged second response, or cut short by a close, or a 101. Every body
names the id that its request carried. Several workers share one UpstreamClient, so
connections are reused across requests.

Not scripted: stray bytes that arrive *after* a connection was reused for the next request.
No HTTP/1.1 client can tell those from that request's answer; what the client guarantees is
that bytes arriving while a connection is idle (or after a response in the same read) drop
it (see test_upstream_client.py).
"""

import asyncio
import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rainbridge.upstream import ConnectionLost, ProtocolError, Timeout, UpstreamClient
from support import read_request

ID = re.compile(rb"<(r\d+|FORGED)>")
FAILURES = (ProtocolError, ConnectionLost, Timeout, TimeoutError)


def body_for(rid: str) -> bytes:
    return b"<%s>" % rid.encode() + b"." * 40


def final(framing: str, body: bytes) -> bytes:
    if framing == "cl":
        return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(body) + body
    if framing == "short_cl":  # the rest of the body follows as stray bytes
        return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % (len(body) - 20) + body
    if framing == "long_cl":  # then the connection closes
        return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % (len(body) + 20) + body
    if framing == "eof":  # body delimited by the connection's end
        return b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n" + body
    half = len(body) // 2
    chunks = b"%x\r\n%s\r\n%x\r\n%s\r\n" % (half, body[:half], len(body) - half, body[half:])
    if framing == "bad_chunk":
        chunks = chunks.replace(b"%x\r\n" % half, b"zz\r\n", 1)
    return b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n"


TRAILERS = {None: b"", "garbage": b"garbage\r\n", "forged": final("cl", body_for("FORGED"))}
CLOSING = {"long_cl", "eof"}

step = st.one_of(
    st.tuples(st.just("delay"), st.integers(0, 10)),
    st.tuples(st.just("interim"), st.sampled_from([100, 102, 103, 199])),
)
ending = st.one_of(
    st.tuples(st.just("final"), st.sampled_from(["cl", "cl", "chunked", "short_cl", "long_cl", "eof", "bad_chunk"]),
              st.sampled_from([None, None, "garbage", "forged"])),
    st.tuples(st.just("cut"), st.integers(0, 99)),
    st.just(("upgrade",)),
)
script = st.tuples(st.lists(step, max_size=3), ending, st.booleans())  # (steps, ending, stream?)


class Upstream:
    """Answers request ``rN`` by ``scripts[N]`` on its first arrival, plainly after that."""

    def __init__(self, scripts):
        self.scripts = scripts
        self.seen: set[str] = set()

    async def handle(self, reader, writer):
        try:
            while True:
                _, body = await read_request(reader)
                rid = ID.search(body).group(1).decode()
                first = rid not in self.seen
                self.seen.add(rid)
                if not await self.answer(writer, rid, first):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def answer(self, writer, rid, first) -> bool:
        body = body_for(rid)
        if not first:
            writer.write(final("cl", body))
            return True
        steps, ending, _ = self.scripts[int(rid[1:])]
        for kind, arg in steps:
            if kind == "delay":
                await asyncio.sleep(arg / 1000)
            else:
                writer.write(b"HTTP/1.1 %d Interim\r\n\r\n" % arg)
                await writer.drain()
        if ending[0] == "upgrade":
            writer.write(b"HTTP/1.1 101 Switching Protocols\r\nupgrade: h2c\r\nconnection: upgrade\r\n\r\n")
            return True
        if ending[0] == "cut":
            data = final("cl", body)
            writer.write(data[: len(data) * ending[1] // 100])
            return False
        _, framing, trailer = ending
        # After a body framed by the close or longer than sent, a trailer would be body.
        writer.write(final(framing, body) + (b"" if framing in CLOSING else TRAILERS[trailer]))
        return framing not in CLOSING


async def fetch(client, origin, port, rid, stream):
    body = body_for(rid)
    head = b"POST /v1/x HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Length: %d\r\n\r\n" % (port, len(body))
    if not stream:
        ex = await client.request(origin, head, body, 2.0)
        return ex.status, await ex.read()
    ex = await client.stream(origin, head, body, 2.0)
    return ex.status, b"".join([chunk async for chunk in ex.chunks(2.0)])


def check(rid: str, status: int, got: bytes) -> None:
    """Success means: this request's own body (a short Content-Length may cut it), nothing else."""
    assert status == 200, (rid, status, got)
    assert [m.decode() for m in ID.findall(got)] == [rid], (rid, got)
    assert body_for(rid).startswith(got), (rid, got)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scripts=st.lists(script, min_size=4, max_size=12), workers=st.integers(1, 4))
async def test_a_response_reaches_only_its_own_request(scripts, workers):
    upstream = Upstream(scripts)
    server = await asyncio.start_server(upstream.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = UpstreamClient()
    origin = client.origin(f"http://127.0.0.1:{port}")
    outcomes: dict[str, object] = {}

    async def worker(w):
        for n in range(w, len(scripts), workers):
            rid = f"r{n}"
            try:
                status, got = await fetch(client, origin, port, rid, scripts[n][2])
            except FAILURES as exc:
                outcomes[rid] = exc
                continue
            check(rid, status, got)
            outcomes[rid] = "ok"

    try:
        async with asyncio.timeout(20):
            await asyncio.gather(*(worker(w) for w in range(workers)))
        assert len(outcomes) == len(scripts)
        for conn in origin.idle:  # what the pool kept: open ones idle, reading, nothing half-read
            assert conn.closed or (conn.exchange is None and not conn._finished and not conn._paused)
    finally:
        await client.close()
        server.close()


async def test_plain_scripts_all_succeed_on_few_connections():
    """The harness itself: well-behaved answers all succeed, over reused connections."""
    upstream = Upstream([([], ("final", "cl", None), False)] * 8)
    server = await asyncio.start_server(upstream.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = UpstreamClient()
    origin = client.origin(f"http://127.0.0.1:{port}")
    for n in range(8):
        check(f"r{n}", *await fetch(client, origin, port, f"r{n}", n % 2 == 1))
    assert len(origin.idle) == 1
    await client.close()
    server.close()
