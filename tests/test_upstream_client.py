"""The upstream HTTP/1.1 client against scripted servers on real sockets."""

import asyncio
import datetime
import ssl

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from rainbridge.upstream import ConnectionLost, ProtocolError, Timeout, UpstreamClient

OK = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"


class Script:
    """A server whose answer to each request is decided by the test."""

    def __init__(self, respond):
        self.respond = respond
        self.connections = 0
        self.requests: list[bytes] = []
        self.server = None
        self.writers = []

    async def _handle(self, reader, writer):
        self.connections += 1
        self.writers.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                body = await reader.readexactly(length) if length else b""
                self.requests.append(head + body)
                keep = await self.respond(writer, len(self.requests))
                if not keep:
                    writer.close()
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def start(self, ssl_ctx=None):
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=ssl_ctx)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self):
        self.server.close()
        for w in self.writers:
            w.close()


def head(port, path="/v1/x", extra=b"", length=2):
    return b"POST " + path.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n" % port + extra + b"Content-Length: %d\r\n\r\n" % length


async def test_keep_alive_reuses_one_connection():
    async def respond(w, n):
        w.write(OK)
        return True

    srv = await Script(respond).start()
    client = UpstreamClient()
    origin = client.origin(f"http://127.0.0.1:{srv.port}")
    for _ in range(5):
        ex = await client.request(origin, head(srv.port), b"{}", 5)
        assert ex.status == 200 and await ex.read() == b"{}"
    assert srv.connections == 1
    assert srv.requests[0].endswith(b"\r\n\r\n{}")
    await client.close()
    await srv.stop()


async def test_connection_close_is_not_reused_and_chunked_bodies_are_decoded():
    async def respond(w, n):
        w.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
        return False

    srv = await Script(respond).start()
    client = UpstreamClient()
    origin = client.origin(f"http://127.0.0.1:{srv.port}")
    for _ in range(3):
        ex = await client.request(origin, head(srv.port), b"{}", 5)
        assert await ex.read() == b"abcde"
    assert srv.connections == 3
    await client.close()
    await srv.stop()


async def test_body_delimited_by_connection_end():
    async def respond(w, n):
        w.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nall of it")
        return False

    srv = await Script(respond).start()
    client = UpstreamClient()
    ex = await client.request(client.origin(f"http://127.0.0.1:{srv.port}"), head(srv.port), b"{}", 5)
    assert await ex.read() == b"all of it"
    await client.close()
    await srv.stop()


async def test_stale_idle_connection_is_retried_once_on_a_new_one():
    async def respond(w, n):
        w.write(OK)
        return n != 1  # after the first answer the server drops the connection without saying so

    srv = await Script(respond).start()
    client = UpstreamClient()
    origin = client.origin(f"http://127.0.0.1:{srv.port}")
    await client.request(origin, head(srv.port), b"{}", 5)
    await asyncio.sleep(0.05)
    ex = await client.request(origin, head(srv.port), b"{}", 5)
    assert ex.status == 200
    assert srv.connections == 2
    await client.close()
    await srv.stop()


async def test_a_connection_lost_mid_response_is_an_error_not_a_retry():
    async def respond(w, n):
        w.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npartial")
        await w.drain()
        w.transport.abort()
        return False

    srv = await Script(respond).start()
    client = UpstreamClient()
    with pytest.raises(ConnectionLost) as info:
        await client.request(client.origin(f"http://127.0.0.1:{srv.port}"), head(srv.port), b"{}", 5)
    assert info.value.before_response is False
    assert len(srv.requests) == 1
    await client.close()
    await srv.stop()


async def test_timeout_drops_the_connection():
    async def respond(w, n):
        await asyncio.sleep(5)
        return False

    srv = await Script(respond).start()
    client = UpstreamClient()
    origin = client.origin(f"http://127.0.0.1:{srv.port}")
    with pytest.raises(Timeout):
        await client.request(origin, head(srv.port), b"{}", 0.2)
    assert not origin.idle
    await client.close()
    await srv.stop()


async def test_refused_connection_is_an_oserror():
    client = UpstreamClient()
    srv = await Script(None).start()
    port = srv.port
    await srv.stop()
    srv.server.close()
    await srv.server.wait_closed()
    with pytest.raises(OSError):
        await client.request(client.origin(f"http://127.0.0.1:{port}"), head(port), b"{}", 2)


async def test_stream_chunks_arrive_as_sent_and_idle_timeout_fires():
    async def respond(w, n):
        w.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        for part in (b"one", b"two"):
            w.write(b"%x\r\n%s\r\n" % (len(part), part))
            await w.drain()
            await asyncio.sleep(0.05)
        await asyncio.sleep(2)  # then silence
        return False

    srv = await Script(respond).start()
    client = UpstreamClient()
    ex = await client.stream(client.origin(f"http://127.0.0.1:{srv.port}"), head(srv.port), b"{}", 5)
    assert ex.status == 200
    assert await ex.next_chunk(1) == b"one"
    assert await ex.next_chunk(1) == b"two"
    with pytest.raises(TimeoutError):
        await ex.next_chunk(0.2)
    ex.abort()
    await client.close()
    await srv.stop()


async def test_slow_stream_reader_pauses_the_socket_and_gets_everything():
    total = 3 * 1024 * 1024

    async def respond(w, n):
        w.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % total)
        for _ in range(total // 65536):
            w.write(b"x" * 65536)
            await w.drain()
        return True

    srv = await Script(respond).start()
    client = UpstreamClient()
    origin = client.origin(f"http://127.0.0.1:{srv.port}")
    ex = await client.stream(origin, head(srv.port), b"{}", 5)
    await asyncio.sleep(0.3)  # let the server fill our buffer
    assert ex._size <= 1024 * 1024  # bounded by the high-water mark plus what the socket held
    got = 0
    async for chunk in ex.chunks(5):
        got += len(chunk)
    assert got == total
    assert len(origin.idle) == 1  # complete exchange: connection back in the pool
    await client.close()
    await srv.stop()


def self_signed():
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


async def test_tls_with_an_extra_ca_and_verification(tmp_path):
    cert_pem, key_pem = self_signed()
    (tmp_path / "c.pem").write_bytes(cert_pem)
    (tmp_path / "k.pem").write_bytes(key_pem)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(tmp_path / "c.pem", tmp_path / "k.pem")

    async def respond(w, n):
        w.write(OK)
        return True

    srv = await Script(respond).start(server_ctx)
    client = UpstreamClient()
    trusted = ssl.create_default_context(cadata=cert_pem.decode())
    ex = await client.request(client.origin(f"https://localhost:{srv.port}", trusted), head(srv.port), b"{}", 5)
    assert ex.status == 200
    with pytest.raises(ssl.SSLError):  # the default trust store does not know our CA
        await client.request(client.origin(f"https://localhost:{srv.port}"), head(srv.port), b"{}", 5)
    ex = await client.request(client.origin(f"https://localhost:{srv.port}", False), head(srv.port), b"{}", 5)
    assert ex.status == 200
    await client.close()
    await srv.stop()


# -- interim (1xx) responses: RFC 9110 §15.2 --------------------------------------------------


def answer(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n" + extra + b"content-length: %d\r\n\r\n" % len(body) + body


@pytest.mark.parametrize("interim", [
    b"HTTP/1.1 100 Continue\r\n\r\n",
    b"HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload\r\n\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing\r\n\r\nHTTP/1.1 199 Whatever\r\nretry-after: 9\r\n\r\n",
])
async def test_interim_responses_are_skipped_and_the_final_one_is_the_answer(interim):
    async def respond(w, n):
        w.write(interim)
        await w.drain()
        await asyncio.sleep(0.05)  # the final response comes in a later read
        w.write(answer(b'{"n": %d}' % n))
        return True

    srv = await Script(respond).start()
    client = UpstreamClient()
    origin = client.origin(f"http://127.0.0.1:{srv.port}")
    for n in (1, 2):
        ex = await client.request(origin, head(srv.port), b"{}", 5)
        assert (ex.status, await ex.read(), ex.retry_after) == (200, b'{"n": %d}' % n, None)
    ex = await client.stream(origin, head(srv.port), b"{}", 5)
    assert ex.status == 200 and await ex.next_chunk(5) == b'{"n": 3}'
    assert srv.connections == 1  # the interim responses did not break keep-alive
    await client.close()
    await srv.stop()


async def test_a_1xx_never_hands_one_requests_answer_to_the_next_request():
    """The cross-tenant bug: A's connection went back to the pool after A's ``100 Continue``,
    B's request was sent on it, and B received A's real answer."""
    b_arrived = asyncio.Event()

    async def respond(w, n):
        body = srv.requests[-1]
        if body.endswith(b'"A"'):
            w.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            await w.drain()
            try:  # A's real answer waits until B's request is in (or a bound passes)
                await asyncio.wait_for(b_arrived.wait(), 1.0)
            except TimeoutError:
                pass
            w.write(answer(b'{"for": "A"}'))
        else:
            b_arrived.set()
            w.write(answer(b'{"for": "B"}'))
        return True

    srv = await Script(respond).start()
    client = UpstreamClient()
    origin = client.origin(f"http://127.0.0.1:{srv.port}")
    await client.request(origin, head(srv.port), b"{}", 5)  # a warm idle connection
    conn = origin.idle[-1]
    task_a = asyncio.create_task(client.request(origin, head(srv.port, length=3), b'"A"', 5))
    for _ in range(500):  # until the client has read A's 100 Continue
        if conn._received:
            break
        await asyncio.sleep(0.01)
    assert conn._received
    ex_b = await client.request(origin, head(srv.port, length=3), b'"B"', 5)
    ex_a = await task_a
    assert (ex_a.status, await ex_a.read()) == (200, b'{"for": "A"}')
    assert (ex_b.status, await ex_b.read()) == (200, b'{"for": "B"}')
    await client.close()
    await srv.stop()


@pytest.mark.parametrize("stream", [False, True])
async def test_a_101_switching_protocols_fails_the_exchange_and_drops_the_connection(stream):
    async def respond(w, n):
        if n == 1:
            w.write(b"HTTP/1.1 101 Switching Protocols\r\nupgrade: h2c\r\nconnection: upgrade\r\n\r\n")
            await w.drain()
            await asyncio.sleep(0.05)
        w.write(answer(b'{"n": %d}' % n))
        return True

    srv = await Script(respond).start()
    client = UpstreamClient()
    origin = client.origin(f"http://127.0.0.1:{srv.port}")
    call = client.stream if stream else client.request
    with pytest.raises(ProtocolError, match="101"):
        await call(origin, head(srv.port), b"{}", 5)
    assert not origin.idle
    ex = await client.request(origin, head(srv.port), b"{}", 5)
    assert await ex.read() == b'{"n": 2}'  # on a new connection
    assert srv.connections == 2
    await client.close()
    await srv.stop()


# -- stray bytes: a connection that receives anything it did not ask for is not reused -----

FORGED = answer(b"ANSWER for FORGED")


async def wait_closed(conn, bound=5.0):
    for _ in range(int(bound / 0.01)):
        if conn.closed:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("connection still open")


@pytest.mark.parametrize("first", [
    answer(b'{"n": 1}') + FORGED,  # a forged second response in the same write
    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n" + b'{"n": 1}' + FORGED,  # short content-length
    answer(b'{"n": 1}') + b"garbage",
    b"HTTP/1.1 204 No Content\r\ncontent-length: 9\r\n\r\n" + b'{"n": 1}',
])
async def test_bytes_after_the_response_in_the_same_write_mean_the_connection_is_not_reused(first):
    async def respond(w, n):
        w.write(first if n == 1 else answer(b'{"n": %d}' % n))
        return True

    srv = await Script(respond).start()
    client = UpstreamClient()
    origin = client.origin(f"http://127.0.0.1:{srv.port}")
    await client.request(origin, head(srv.port), b"{}", 5)
    ex = await client.request(origin, head(srv.port), b"{}", 5)
    assert await ex.read() == b'{"n": 2}'
    assert srv.connections == 2
    await client.close()
    await srv.stop()


@pytest.mark.parametrize("stray", [FORGED, b"H", b"\r\n"])
async def test_a_byte_received_while_idle_drops_the_connection(stray):
    sent = asyncio.Event()

    async def respond(w, n):
        w.write(answer(b'{"n": %d}' % n))
        if n == 1:
            await w.drain()
            await sent.wait()  # the client has the answer; its connection is idle now
            w.write(stray)
        return True

    srv = await Script(respond).start()
    client = UpstreamClient()
    origin = client.origin(f"http://127.0.0.1:{srv.port}")
    await client.request(origin, head(srv.port), b"{}", 5)
    conn = origin.idle[-1]
    sent.set()
    await wait_closed(conn)
    ex = await client.request(origin, head(srv.port), b"{}", 5)
    assert await ex.read() == b'{"n": 2}'
    assert srv.connections == 2
    await client.close()
    await srv.stop()


async def test_eof_while_idle_is_noticed_and_the_connection_is_not_reused():
    async def respond(w, n):
        w.write(answer(b'{"n": %d}' % n))
        return n != 1

    srv = await Script(respond).start()
    client = UpstreamClient()
    origin = client.origin(f"http://127.0.0.1:{srv.port}")
    await client.request(origin, head(srv.port), b"{}", 5)
    await wait_closed(origin.idle[-1])
    ex = await client.request(origin, head(srv.port), b"{}", 5)
    assert await ex.read() == b'{"n": 2}'
    await client.close()
    await srv.stop()
