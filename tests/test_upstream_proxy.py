"""The upstream client through proxies (issue 14, Bifrost's proxy_config): CONNECT tunnels
through a real tinyproxy (TLS to the origin inside the tunnel, and plain HTTP), Basic
credentials, pools kept apart per proxy and credential, and every way a proxy can fail or lie
ending as a ``ProxyError`` in bounded time; SOCKS5 through a real microsocks; the environment
proxies' selection rules."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import re
import ssl
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from proxy_support import PASSWORD, USER, Microsocks, Tinyproxy
from rainbridge.upstream import HttpProxy, ProxyError, Socks5Proxy, UpstreamClient
from rainbridge.upstream.proxy import MAX_CONNECT_HEAD_BYTES, EnvironmentProxies

HOST = "127.0.0.1"
ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: application/json\r\n\r\n{}"


class Origin:
    """An upstream that answers every request with ``ANSWER`` on keep-alive connections."""

    def __init__(self):
        self.requests: list[bytes] = []
        self.connections = 0
        self.peers: list[str] = []  # the address each connection came from

    async def start(self, tls: ssl.SSLContext | None = None) -> Origin:
        self.server = await asyncio.start_server(self._serve, HOST, 0, ssl=tls)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _serve(self, reader, writer):
        self.connections += 1
        self.peers.append(writer.get_extra_info("peername")[0])
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                self.requests.append(head)
                writer.write(ANSWER)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    async def stop(self):
        self.server.close()


def origin_cert():
    """A self-signed certificate for 127.0.0.1 (an IP SAN: no name resolution involved)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "origin")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(HOST))]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def request_head(port: int) -> bytes:
    return b"GET /v1/models HTTP/1.1\r\nHost: %s:%d\r\n\r\n" % (HOST.encode(), port)


@pytest.fixture
def tls_pair(tmp_path):
    cert, key = origin_cert()
    (tmp_path / "c.pem").write_bytes(cert)
    (tmp_path / "k.pem").write_bytes(key)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(tmp_path / "c.pem", tmp_path / "k.pem")
    return server, ssl.create_default_context(cadata=cert.decode())


def at(proxy: Tinyproxy, username: str = USER, password: str = PASSWORD) -> HttpProxy:
    return HttpProxy.from_url(proxy.url, username, password)


async def test_https_origin_through_tinyproxy_is_a_connect_tunnel_with_tls_inside_and_is_reused(tmp_path, tls_pair):
    server_tls, client_tls = tls_pair
    origin = await Origin().start(server_tls)
    proxy = Tinyproxy(tmp_path, [origin.port])
    client = UpstreamClient(connect_timeout=5)
    try:
        pool = client.origin(f"https://{HOST}:{origin.port}", client_tls, proxy=at(proxy))
        for _ in range(3):
            exchange = await client.request(pool, request_head(origin.port), b"", 5)
            assert exchange.status == 200 and await exchange.read() == b"{}"
        assert len(origin.requests) == 3 and origin.connections == 1  # one tunnel, kept alive
        assert proxy.connects(origin.port) == 1
        assert origin.requests[0].startswith(b"GET /v1/models HTTP/1.1\r\n")  # origin-form inside the tunnel
    finally:
        await client.close()
        proxy.stop()
        await origin.stop()


async def test_the_origin_certificate_is_verified_inside_the_tunnel(tmp_path, tls_pair):
    server_tls, _ = tls_pair
    origin = await Origin().start(server_tls)
    proxy = Tinyproxy(tmp_path, [origin.port])
    client = UpstreamClient(connect_timeout=5)
    try:
        pool = client.origin(f"https://{HOST}:{origin.port}", True, proxy=at(proxy))  # default trust store
        with pytest.raises(ssl.SSLCertVerificationError):
            await client.request(pool, request_head(origin.port), b"", 5)
        assert origin.requests == []
    finally:
        await client.close()
        proxy.stop()
        await origin.stop()


async def test_plain_http_origin_goes_through_a_connect_tunnel_too(tmp_path):
    origin = await Origin().start()
    proxy = Tinyproxy(tmp_path, [origin.port])
    client = UpstreamClient(connect_timeout=5)
    try:
        pool = client.origin(f"http://{HOST}:{origin.port}", proxy=at(proxy))
        exchange = await client.request(pool, request_head(origin.port), b"", 5)
        assert exchange.status == 200
        assert proxy.connects(origin.port) == 1 and len(origin.requests) == 1
    finally:
        await client.close()
        proxy.stop()
        await origin.stop()


async def test_a_wrong_password_is_a_proxy_error_naming_the_refusal_and_not_the_password(tmp_path):
    origin = await Origin().start()
    proxy = Tinyproxy(tmp_path, [origin.port])
    client = UpstreamClient(connect_timeout=5)
    try:
        pool = client.origin(f"http://{HOST}:{origin.port}", proxy=at(proxy, password="wrong-secret-42"))
        with pytest.raises(ProxyError) as caught:
            await client.request(pool, request_head(origin.port), b"", 5)
        message = str(caught.value)
        # tinyproxy 1.11 refuses a CONNECT's bad credentials with 401 (407 for other methods)
        assert re.fullmatch(rf"proxy {proxy.url} refused the tunnel: 40[17] \w.*", message), message
        assert "wrong-secret-42" not in message and USER not in message
        assert origin.requests == [] and not pool.idle
    finally:
        await client.close()
        proxy.stop()
        await origin.stop()


async def test_a_port_the_proxy_does_not_allow_is_a_proxy_error(tmp_path):
    origin = await Origin().start()
    proxy = Tinyproxy(tmp_path, [origin.port + 1 if origin.port < 65535 else origin.port - 1])
    client = UpstreamClient(connect_timeout=5)
    try:
        pool = client.origin(f"http://{HOST}:{origin.port}", proxy=at(proxy))
        with pytest.raises(ProxyError, match=r"refused the tunnel: 403"):
            await client.request(pool, request_head(origin.port), b"", 5)
    finally:
        await client.close()
        proxy.stop()
        await origin.stop()


async def test_pools_are_kept_apart_per_proxy_and_credential(tmp_path):
    origin = await Origin().start()
    proxy = Tinyproxy(tmp_path, [origin.port])
    client = UpstreamClient(connect_timeout=5)
    url = f"http://{HOST}:{origin.port}"
    try:
        direct = client.origin(url)
        tunnelled = client.origin(url, proxy=at(proxy))
        other_user = client.origin(url, proxy=at(proxy, "someone-else", PASSWORD))
        assert len({id(direct), id(tunnelled), id(other_user)}) == 3
        assert client.origin(url, proxy=at(proxy)) is tunnelled  # same proxy and credential: same pool
        for pool in (tunnelled, direct, tunnelled, direct):
            await client.request(pool, request_head(origin.port), b"", 5)
        assert proxy.connects(origin.port) == 1  # the direct requests never used the tunnel
        assert origin.connections == 2 and len(tunnelled.idle) == 1 and len(direct.idle) == 1
        with pytest.raises(ProxyError, match=r"refused the tunnel: 40[17]"):  # nor does another credential reuse it
            await client.request(other_user, request_head(origin.port), b"", 5)
    finally:
        await client.close()
        proxy.stop()
        await origin.stop()


async def test_a_proxy_that_is_down_fails_at_once():
    client = UpstreamClient(connect_timeout=5)
    with socket_closed() as port:
        pool = client.origin("http://127.0.0.1:9", proxy=HttpProxy.from_url(f"http://{HOST}:{port}"))
        started = time.monotonic()
        with pytest.raises(ProxyError, match=rf"proxy http://{HOST}:{port} is unreachable \(connection refused\)"):
            await client.request(pool, request_head(9), b"", 5)
        assert time.monotonic() - started < 2
    await client.close()


class socket_closed:
    """A loopback port nothing listens on (bound, then closed)."""

    def __enter__(self) -> int:
        import socket

        with socket.socket() as s:
            s.bind((HOST, 0))
            return s.getsockname()[1]

    def __exit__(self, *exc):
        return False


class FakeProxy:
    """A proxy that answers CONNECT with a script (hostile answers)."""

    def __init__(self, answer: bytes | None):
        self.answer = answer
        self.received = bytearray()

    async def start(self) -> FakeProxy:
        self.server = await asyncio.start_server(self._serve, HOST, 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _serve(self, reader, writer):
        try:
            self.received += await reader.readuntil(b"\r\n\r\n")
            if self.answer is not None:
                writer.write(self.answer)
                await writer.drain()
            await reader.read()  # hold the connection open until the client drops it
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def stop(self):
        self.server.close()


HOSTILE = {
    "huge head": (b"HTTP/1.1 200 OK\r\n" + b"X-Pad: " + b"a" * (MAX_CONNECT_HEAD_BYTES + 10), "larger than"),
    "huge head at once": (b"HTTP/1.1 200 OK\r\nX-Pad: " + b"a" * MAX_CONNECT_HEAD_BYTES + b"\r\n\r\n", "larger than"),
    "garbage": (b"SSH-2.0-OpenSSH_9.2\r\n\r\n", "not an HTTP/1.x status line"),
    "too many header lines": (b"HTTP/1.1 200 OK\r\n" + b"X-A: b\r\n" * 101 + b"\r\n", "more than 100 header lines"),
    "HTTP/2 status line": (b"HTTP/2 200\r\n\r\n", "not an HTTP/1.x status line"),
    "bad header line": (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "invalid header line"),
    "control byte in header": (b"HTTP/1.1 200 OK\r\nX-A: b\x00c\r\n\r\n", "invalid header line"),
    "a 200 with a body": (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", "data after its answer"),
    "a 407": (b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic\r\nContent-Length: 0\r\n\r\n",
              "refused the tunnel: 407 Proxy Authentication Required"),
    "a 502": (b"HTTP/1.1 502 Bad Gateway\r\n\r\n", "refused the tunnel: 502 Bad Gateway"),
    "a 100 first": (b"HTTP/1.1 100 Continue\r\n\r\n", "refused the tunnel: 100"),
}


@pytest.mark.parametrize("name", list(HOSTILE))
async def test_hostile_proxy_answers_are_proxy_errors(name):
    answer, expected = HOSTILE[name]
    fake = await FakeProxy(answer).start()
    client = UpstreamClient(connect_timeout=3)
    try:
        pool = client.origin("http://127.0.0.1:9", proxy=HttpProxy.from_url(f"http://{HOST}:{fake.port}", "u", "p"))
        started = time.monotonic()
        with pytest.raises(ProxyError, match=expected):
            await client.request(pool, request_head(9), b"", 5)
        assert time.monotonic() - started < 3
        assert not pool.idle
    finally:
        await client.close()
        await fake.stop()


async def test_a_proxy_closing_without_an_answer_is_a_proxy_error():
    async def close_after_request(reader, writer):
        try:
            await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    server = await asyncio.start_server(close_after_request, HOST, 0)
    port = server.sockets[0].getsockname()[1]
    client = UpstreamClient(connect_timeout=3)
    try:
        pool = client.origin("http://127.0.0.1:9", proxy=HttpProxy.from_url(f"http://{HOST}:{port}"))
        with pytest.raises(ProxyError, match="closed the connection before answering CONNECT"):
            await client.request(pool, request_head(9), b"", 5)
    finally:
        await client.close()
        server.close()


async def test_a_silent_proxy_is_a_proxy_error_within_the_connect_timeout():
    fake = await FakeProxy(None).start()
    client = UpstreamClient(connect_timeout=0.5)
    try:
        pool = client.origin("http://127.0.0.1:9", proxy=HttpProxy.from_url(f"http://{HOST}:{fake.port}"))
        started = time.monotonic()
        with pytest.raises(ProxyError, match=rf"no tunnel through proxy http://{HOST}:{fake.port} to 127.0.0.1:9 within 0.5s"):
            await client.request(pool, request_head(9), b"", 30)
        assert time.monotonic() - started < 2
    finally:
        await client.close()
        await fake.stop()


async def test_the_connect_request_carries_basic_credentials_and_the_target():
    fake = await FakeProxy(b"HTTP/1.1 403 Forbidden\r\n\r\n").start()
    client = UpstreamClient(connect_timeout=2)
    try:
        pool = client.origin("https://api.example.test:8443",
                             proxy=HttpProxy.from_url(f"http://{HOST}:{fake.port}", "alice", "s3cr:t"))
        with pytest.raises(ProxyError):
            await client.request(pool, request_head(9), b"", 5)
        assert bytes(fake.received) == (b"CONNECT api.example.test:8443 HTTP/1.1\r\nHost: api.example.test:8443\r\n"
                                        b"Proxy-Authorization: Basic YWxpY2U6czNjcjp0\r\n\r\n")  # alice:s3cr:t
    finally:
        await client.close()
        await fake.stop()


# ----------------------------------------------------------------------------- parsing


def test_proxy_urls_and_credentials():
    assert HttpProxy.from_url("http://proxy.corp:3128").shown == "http://proxy.corp:3128"
    assert HttpProxy.from_url("proxy.corp:3128").port == 3128  # no scheme: http, as Go reads it
    assert HttpProxy.from_url("http://proxy.corp").port == 80
    from_url = HttpProxy.from_url("http://bob:pa%40ss@proxy.corp:3128")
    assert from_url.authorization == b"Basic Ym9iOnBhQHNz"  # bob:pa@ss
    assert "pa@ss" not in repr(from_url) and "bob" not in repr(from_url)
    assert HttpProxy.from_url("http://bob:x@p:1", "carol", "y").authorization == b"Basic Y2Fyb2w6eQ=="
    assert HttpProxy.from_url("http://p:1", "carol", "").authorization is None  # both or neither
    for bad in ("https://p:1", "socks5://p:1", "http://p:1/path", "http://:1", "http://p:99999"):
        with pytest.raises(ValueError):
            HttpProxy.from_url(bad)
    assert HttpProxy.from_url("http://p:1", "a", "b") != HttpProxy.from_url("http://p:1", "a", "c")


def test_environment_proxies_follow_gos_rules():
    env = EnvironmentProxies.read({
        "HTTPS_PROXY": "http://secure.proxy:3128", "http_proxy": "plain.proxy:8080",
        "no_proxy": "internal.corp, .only-subs.corp, *.star.corp, 10.0.0.0/8, 192.168.1.5, api.port.corp:8443",
    })
    assert env.for_url("https://api.openai.com/v1").shown == "http://secure.proxy:3128"
    assert env.for_url("http://ollama.lan:11434").shown == "http://plain.proxy:8080"  # lower case read too
    direct = ["https://internal.corp", "https://a.internal.corp", "https://x.only-subs.corp", "https://x.star.corp",
              "https://10.1.2.3", "https://192.168.1.5", "https://api.port.corp:8443", "https://127.0.0.1:8000",
              "https://localhost", "https://[::1]:8000"]
    for url in direct:
        assert env.for_url(url) is None, url
    proxied = ["https://only-subs.corp", "https://notinternal.corp", "https://11.0.0.1", "https://api.port.corp",
               "https://192.168.1.6"]
    for url in proxied:
        assert env.for_url(url) is not None, url
    assert EnvironmentProxies.read({"HTTPS_PROXY": "http://p:1", "NO_PROXY": "*"}).for_url("https://x") is None
    upper_first = EnvironmentProxies.read({"HTTPS_PROXY": "http://upper:1", "https_proxy": "http://lower:1"})
    assert upper_first.for_url("https://x").host == "upper"
    assert EnvironmentProxies.read({}).for_url("https://x") is None
    with pytest.raises(ValueError, match="HTTPS_PROXY"):
        EnvironmentProxies.read({"HTTPS_PROXY": "socks5://p:1080"})


# ----------------------------------------------------------------------------- SOCKS5


async def test_socks5_tunnel_carries_tls_to_the_origin_and_is_kept_apart_from_direct(tmp_path, tls_pair):
    server_tls, client_tls = tls_pair
    origin = await Origin().start(server_tls)
    socks = Microsocks(tmp_path)
    client = UpstreamClient(connect_timeout=5)
    url = f"https://{HOST}:{origin.port}"
    try:
        tunnelled = client.origin(url, client_tls, proxy=Socks5Proxy.from_url(socks.url, USER, PASSWORD))
        direct = client.origin(url, client_tls)
        for pool in (tunnelled, tunnelled, direct):
            exchange = await client.request(pool, request_head(origin.port), b"", 5)
            assert exchange.status == 200 and await exchange.read() == b"{}"
        assert origin.peers == [socks.bind, HOST]  # one tunnel (kept alive), then one direct connection
        assert len(origin.requests) == 3
    finally:
        await client.close()
        socks.stop()
        await origin.stop()


async def test_socks5_wrong_password_is_a_proxy_error_without_the_password(tmp_path):
    origin = await Origin().start()
    socks = Microsocks(tmp_path)
    client = UpstreamClient(connect_timeout=5)
    try:
        pool = client.origin(f"http://{HOST}:{origin.port}", proxy=Socks5Proxy.from_url(socks.url, USER, "wrong-secret-42"))
        with pytest.raises(ProxyError, match=rf"proxy {socks.url} refused the tunnel to {HOST}:{origin.port}: ") as caught:
            await client.request(pool, request_head(origin.port), b"", 5)
        assert "wrong-secret-42" not in str(caught.value)
        assert origin.connections == 0
    finally:
        await client.close()
        socks.stop()
        await origin.stop()


async def test_socks5_proxy_down_fails_at_once():
    client = UpstreamClient(connect_timeout=5)
    with socket_closed() as port:
        pool = client.origin("http://127.0.0.1:9", proxy=Socks5Proxy.from_url(f"socks5://{HOST}:{port}"))
        started = time.monotonic()
        with pytest.raises(ProxyError, match=rf"proxy socks5://{HOST}:{port} is unreachable \(connection refused\)"):
            await client.request(pool, request_head(9), b"", 5)
        assert time.monotonic() - started < 2
    await client.close()


async def test_a_silent_socks5_proxy_is_a_proxy_error_within_the_connect_timeout():
    fake = await FakeProxy(None).start()  # reads until a blank line that never comes: silent
    client = UpstreamClient(connect_timeout=0.5)
    try:
        pool = client.origin("http://127.0.0.1:9", proxy=Socks5Proxy.from_url(f"socks5://{HOST}:{fake.port}"))
        started = time.monotonic()
        with pytest.raises(ProxyError, match=r"no tunnel through proxy .* within 0.5s"):
            await client.request(pool, request_head(9), b"", 30)
        assert time.monotonic() - started < 2
    finally:
        await client.close()
        await fake.stop()


async def test_garbage_from_a_socks5_proxy_is_a_proxy_error():
    fake = await RawProxy(b"HTTP/1.1 200 OK\r\n\r\n").start()
    client = UpstreamClient(connect_timeout=2)
    try:
        pool = client.origin("http://127.0.0.1:9", proxy=Socks5Proxy.from_url(f"socks5://{HOST}:{fake.port}"))
        with pytest.raises(ProxyError, match=rf"proxy socks5://{HOST}:{fake.port} refused the tunnel"):
            await client.request(pool, request_head(9), b"", 5)
    finally:
        await client.close()
        await fake.stop()


class RawProxy(FakeProxy):
    """Answers the first bytes it gets (a SOCKS greeting) with a script."""

    async def _serve(self, reader, writer):
        try:
            self.received += await reader.read(64)
            writer.write(self.answer or b"")
            await writer.drain()
            await reader.read()
        except ConnectionError:
            pass
        finally:
            writer.close()


def test_socks5_urls_and_credentials():
    assert Socks5Proxy.from_url("socks5://p.corp").port == 1080
    assert Socks5Proxy.from_url("socks5h://p.corp:1081").shown == "socks5://p.corp:1081"
    with_creds = Socks5Proxy.from_url("socks5://u:s3cret@p:1")
    assert (with_creds.username, with_creds.password) == ("u", "s3cret") and "s3cret" not in repr(with_creds)
    assert Socks5Proxy.from_url("socks5://p:1", "u", "").username is None  # both or neither
    for bad in ("http://p:1", "socks4://p:1", "socks5://p:1/x"):
        with pytest.raises(ValueError):
            Socks5Proxy.from_url(bad)


async def test_proxy_config_ca_cert_pem_is_trusted_for_tls_through_the_proxy(tmp_path, tls_pair):
    """Bifrost's ``ca_cert_pem`` (for SSL-intercepting proxies) joins the system roots for the
    provider's TLS: an origin certificate it signed verifies, through the proxy."""
    from rainbridge.config.load import load_data
    from rainbridge.providers.registry import build_adapter

    server_tls, _ = tls_pair
    origin = await Origin().start(server_tls)
    proxy = Tinyproxy(tmp_path, [origin.port])
    client = UpstreamClient(connect_timeout=5)
    try:
        raw = {"providers": {"corp": {
            "keys": [{"name": "k", "value": "sk-corp-0123456789", "models": ["*"]}],
            "network_config": {"base_url": f"https://{HOST}:{origin.port}"},
            "custom_provider_config": {"base_provider_type": "openai"},
            "proxy_config": {"type": "http", "url": proxy.url, "username": USER, "password": "env.CORP_PROXY_PASSWORD",
                             "ca_cert_pem": (tmp_path / "c.pem").read_text()}}}}
        loaded = load_data(raw, {"CORP_PROXY_PASSWORD": PASSWORD})
        adapter = build_adapter("corp", loaded.config.providers["corp"], client)
        pool = adapter.origin_for(adapter.base_url)
        exchange = await client.request(pool, request_head(origin.port), b"", 5)
        assert exchange.status == 200 and proxy.connects(origin.port) == 1
    finally:
        await client.close()
        proxy.stop()
        await origin.stop()


async def test_a_connect_answer_dripped_byte_by_byte_opens_the_tunnel():
    """The answer's blank line may straddle reads; the bytes after it are the origin's."""
    async def drip_then_serve(reader, writer):
        try:
            await reader.readuntil(b"\r\n\r\n")
            for byte in b"HTTP/1.1 200 Connection established\r\nX-Via: test\r\n\r\n":
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(0.001)
            await reader.readuntil(b"\r\n\r\n")  # the request, inside the tunnel
            writer.write(ANSWER)
            await writer.drain()
            await reader.read()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(drip_then_serve, HOST, 0)
    port = server.sockets[0].getsockname()[1]
    client = UpstreamClient(connect_timeout=5)
    try:
        pool = client.origin("http://origin.example.test:80", proxy=HttpProxy.from_url(f"http://{HOST}:{port}"))
        exchange = await client.request(pool, request_head(80), b"", 5)
        assert exchange.status == 200 and await exchange.read() == b"{}"
    finally:
        await client.close()
        server.close()
