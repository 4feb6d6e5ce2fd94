"""Upstream HTTP proxies: a CONNECT tunnel under each pooled connection, and which proxy a URL takes.

What Bifrost means by a provider's ``proxy_config`` (looked up 2026-12-05):

- ``transports/config.schema.json`` (maximhq/bifrost, commit 003ecc6a, ``$defs.proxy_config``):
  ``type`` (required) one of ``none | http | socks5 | environment``; ``url`` (``env.VAR`` or a
  URI); ``username``; ``password``; ``ca_cert_pem`` ("PEM-encoded CA certificate to trust for
  TLS connections through the proxy (for SSL-intercepting proxies)"); no other field.
- ``core/schemas/provider.go`` ``ProxyConfig`` (the same five fields, each ``env.*``-capable);
  ``core/providers/utils`` ``ConfigureProxy``: ``http`` dials through fasthttpproxy's HTTP
  dialer (a CONNECT tunnel for every upstream, plain http ones too), credentials only when
  both username and password are non-empty; ``socks5`` through its SOCKS dialer;
  ``environment`` through ``FasthttpProxyHTTPDialer`` (Go's ``httpproxy.FromEnvironment``:
  HTTPS_PROXY / HTTP_PROXY / NO_PROXY, upper case first, then lower case; loopback and
  ``localhost`` never proxied); ``ca_cert_pem`` is added to the system roots for the
  provider's TLS. ``docs/features/networking.md`` shows the three types with examples.

Here: ``http`` opens a TCP connection to the proxy, sends ``CONNECT host:port`` (with
``Proxy-Authorization: Basic`` when credentials are given), and on a 2xx answer speaks to the
origin through the tunnel: TLS for https origins (the origin's certificate is verified as on
a direct connection), plain HTTP for http ones. Plain http origins are tunnelled too, rather
than sent as absolute-form requests: the request heads stay the cached origin-form heads, a
pooled connection stays a connection to one origin (so the pool's rules hold unchanged), and
it is what Bifrost does. The proxy's answer is read strictly: bounded in time and size, a
status line and header lines only, nothing after it; anything else is a ``ProxyError`` naming
the proxy (never its credentials), which the adapters turn into a 502. ``socks5`` is in
socks.py (python-socks, the optional extra ``rainbridge[socks]``).
"""

from __future__ import annotations

import asyncio
import base64
import functools
import ipaddress
import os
import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

if TYPE_CHECKING:
    from .socks import Socks5Proxy

# The proxy's answer to CONNECT (status line and headers) may take this many bytes.
MAX_CONNECT_HEAD_BYTES = 16 * 1024
MAX_CONNECT_HEADERS = 100

_STATUS_LINE = re.compile(rb"HTTP/1\.[01] ([0-9]{3})(?: ([\t\x20-\x7e\x80-\xff]*))?")
_NOT_PRINTABLE = re.compile(r"[^\x20-\x7e]")  # what of the proxy's reason phrase a message may show
_HEADER_LINE = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[\t\x20-\x7e\x80-\xff]*")


class ProxyError(ConnectionError):
    """The proxy could not be reached, refused the tunnel, or answered something invalid (502)."""



def parse_proxy_url(url: str, schemes: tuple[str, ...], default_port: int, username: str | None,
                    password: str | None) -> tuple[str, int, str | None, str | None, str]:
    """``scheme://[user:pass@]host[:port]`` -> (host, port, username, password, shown):
    explicit credentials win over the URL's, and count only when both are non-empty (as in
    Bifrost); ``shown`` is ``host:port`` without credentials, for messages."""
    parts = urlsplit(url.strip())
    if parts.scheme not in schemes:
        raise ValueError(f"proxy URL scheme must be {' or '.join(schemes)}, not {parts.scheme!r}")
    try:
        port = parts.port or default_port
    except ValueError:
        raise ValueError("proxy URL has an invalid port") from None
    if not parts.hostname:
        raise ValueError("proxy URL has no host")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError("proxy URL must be scheme://host:port without a path")
    if not (username and password):
        username, password = unquote(parts.username or ""), unquote(parts.password or "")
    if not (username and password):
        username = password = None
    host = parts.hostname
    return host, port, username, password, f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

@dataclass(frozen=True, repr=False)
class HttpProxy:
    """An HTTP proxy reached over plain TCP. ``authorization`` is the ``Proxy-Authorization``
    value; it is part of the pool key (two credentials never share a connection) and of no
    message or repr."""

    host: str
    port: int
    authorization: bytes | None = None
    shown: str = field(default="", compare=False)  # http://host:port, for messages

    @classmethod
    def from_url(cls, url: str, username: str | None = None, password: str | None = None) -> HttpProxy:
        """``http://[user:pass@]host[:port]`` (or ``host:port``); explicit credentials win
        over the URL's, and count only when both are non-empty (as in Bifrost)."""
        host, port, username, password, shown = parse_proxy_url(
            url if "://" in url.strip() else "http://" + url.strip(), ("http",), 80, username, password)
        authorization = None
        if username and password:
            authorization = b"Basic " + base64.b64encode(f"{username}:{password}".encode())
        return cls(host, port, authorization, f"http://{shown}")

    def __repr__(self) -> str:
        return f"HttpProxy({self.shown})"

    async def open(self, loop: asyncio.AbstractEventLoop, host: str, port: int, tls, protocol, timeout: float):
        return await open_tunnel(loop, self, host, port, tls, protocol, timeout)

    def connect_request(self, host: str, port: int) -> bytes:
        target = (f"[{host}]" if ":" in host else host).encode("idna") + b":%d" % port
        auth = b"Proxy-Authorization: " + self.authorization + b"\r\n" if self.authorization else b""
        return b"CONNECT " + target + b" HTTP/1.1\r\nHost: " + target + b"\r\n" + auth + b"\r\n"


class _ConnectAnswer(asyncio.Protocol):
    """Reads the proxy's answer to CONNECT: a head, bounded, and not a byte after it."""

    def __init__(self, loop: asyncio.AbstractEventLoop, proxy: HttpProxy):
        self.proxy = proxy
        self.done: asyncio.Future[None] = loop.create_future()
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.late: ProxyError | None = None  # a failure after the answer was accepted

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.done.done():  # a byte after the answer, before the tunnel was handed over
            self._fail(f"proxy {self.proxy.shown} sent data after its answer to CONNECT")
            return
        start = max(0, len(self.buffer) - 3)  # the blank line may straddle two reads
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n", start)
        if end < 0:
            if len(self.buffer) > MAX_CONNECT_HEAD_BYTES:
                self._fail(f"proxy {self.proxy.shown} sent an answer to CONNECT larger than {MAX_CONNECT_HEAD_BYTES} bytes")
            return
        if end + 4 > MAX_CONNECT_HEAD_BYTES:
            self._fail(f"proxy {self.proxy.shown} sent an answer to CONNECT larger than {MAX_CONNECT_HEAD_BYTES} bytes")
            return
        problem = self._check(bytes(self.buffer[:end]))  # a refusal's body is not read
        if problem is None and end + 4 < len(self.buffer):
            problem = f"proxy {self.proxy.shown} sent data after its answer to CONNECT"
        if problem is not None:
            self._fail(problem)
            return
        assert self.transport is not None
        self.transport.pause_reading()  # the tunnel's bytes are for the connection taking over
        self.done.set_result(None)

    def _check(self, head: bytes) -> str | None:
        lines = head.split(b"\r\n")
        status = _STATUS_LINE.fullmatch(lines[0])
        if status is None:
            return f"proxy {self.proxy.shown} sent an invalid answer to CONNECT (not an HTTP/1.x status line)"
        if len(lines) - 1 > MAX_CONNECT_HEADERS:
            return f"proxy {self.proxy.shown} sent more than {MAX_CONNECT_HEADERS} header lines in its answer to CONNECT"
        if not all(_HEADER_LINE.fullmatch(line) for line in lines[1:]):
            return f"proxy {self.proxy.shown} sent an invalid header line in its answer to CONNECT"
        code = int(status.group(1))
        if not 200 <= code < 300:  # RFC 9110 §9.3.6: any 2xx opens the tunnel; nothing else does
            reason = _NOT_PRINTABLE.sub("?", (status.group(2) or b"").decode("latin-1")).strip()[:80]
            return f"proxy {self.proxy.shown} refused the tunnel: {code} {reason}".rstrip()
        # A 2xx's Content-Length / Transfer-Encoding are ignored (RFC 9110 §9.3.6): the
        # tunnel starts right after the head.
        return None

    def _fail(self, message: str) -> None:
        if not self.done.done():
            self.done.set_exception(ProxyError(message))
        else:
            self.late = ProxyError(message)
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_exception(ProxyError(f"proxy {self.proxy.shown} closed the connection before answering CONNECT"))


async def open_tunnel(loop: asyncio.AbstractEventLoop, proxy: HttpProxy, host: str, port: int, tls, protocol, timeout: float):
    """Connect ``protocol`` to ``host:port`` through ``proxy`` (TLS inside the tunnel when
    ``tls`` is an SSL context), within ``timeout`` seconds; raise ``ProxyError``."""
    transport = None
    try:
        async with asyncio.timeout(timeout):
            try:
                transport, answer = await loop.create_connection(lambda: _ConnectAnswer(loop, proxy), proxy.host, proxy.port)
            except OSError as exc:
                raise ProxyError(f"proxy {proxy.shown} is unreachable ({connect_failure(exc)})") from None
            transport.write(proxy.connect_request(host, port))
            await answer.done
            if answer.late is not None:
                raise answer.late
            if tls is not None:
                transport = await loop.start_tls(transport, protocol, tls, server_hostname=host)
            else:
                transport.set_protocol(protocol)
                transport.resume_reading()
    except TimeoutError:
        if transport is not None:
            transport.abort()
        raise ProxyError(f"no tunnel through proxy {proxy.shown} to {host}:{port} within {timeout:g}s") from None
    except BaseException:
        if transport is not None:
            transport.abort()
        raise
    protocol.connection_made(transport)
    return transport


def connect_failure(exc: OSError) -> str:
    """Why a connection to a proxy failed, in a few words ("connection refused")."""
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve its name: {exc.strerror}"
    if exc.errno:
        return os.strerror(exc.errno).lower()
    return str(exc)[:120] or type(exc).__name__


# ----------------------------------------------------------------------------- environment


@dataclass(frozen=True)
class EnvironmentProxies:
    """HTTPS_PROXY / HTTP_PROXY / NO_PROXY (upper case first, then lower case), as Go's
    ``httpproxy.FromEnvironment`` reads them for Bifrost's ``environment`` type."""

    https: HttpProxy | None
    http: HttpProxy | None
    no_proxy: tuple[str, ...]

    @classmethod
    def read(cls, env: Mapping[str, str]) -> EnvironmentProxies:
        def get(name: str) -> str:
            return env.get(name) or env.get(name.lower()) or ""

        def proxy(name: str) -> HttpProxy | None:
            value = get(name).strip()
            if not value:
                return None
            try:
                return HttpProxy.from_url(value)
            except ValueError as exc:
                raise ValueError(f"{name}: {exc}") from None

        no_proxy = tuple(e.strip().lower() for e in get("NO_PROXY").split(",") if e.strip())
        return cls(proxy("HTTPS_PROXY"), proxy("HTTP_PROXY"), no_proxy)

    def for_url(self, url: str) -> HttpProxy | None:
        parts = urlsplit(url)
        proxy = self.https if parts.scheme == "https" else self.http
        if proxy is None or not parts.hostname:
            return None
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return None if bypassed(parts.hostname.lower(), port, self.no_proxy) else proxy


def bypassed(host: str, port: int, no_proxy: tuple[str, ...]) -> bool:
    """Go's rules: loopback and ``localhost`` go direct; ``*`` bypasses everything; an entry is
    an IP, a CIDR, or a domain (``example.com`` covers its subdomains, ``.example.com`` and
    ``*.example.com`` only them), each with an optional ``:port``."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    if host == "localhost" or (ip is not None and ip.is_loopback):
        return True
    for entry in no_proxy:
        if entry == "*":
            return True
        if "/" in entry:
            try:
                if ip is not None and ip in ipaddress.ip_network(entry, strict=False):
                    return True
            except ValueError:
                pass
            continue
        name, want_port = entry, None
        m = re.fullmatch(r"(\[[^\]]+\]|[^:]+):(\d+)", entry)
        if m:
            name, want_port = m.group(1).strip("[]"), int(m.group(2))
        if want_port is not None and want_port != port:
            continue
        try:
            entry_ip = ipaddress.ip_address(name)
        except ValueError:
            entry_ip = None
        if entry_ip is not None:
            if ip == entry_ip:
                return True
            continue
        if name.startswith("*."):
            name = name[1:]
        if name.startswith("."):
            if host.endswith(name):
                return True
        elif host == name or host.endswith("." + name):
            return True
    return False


@functools.cache
def environment_proxies() -> EnvironmentProxies:
    """The process environment's proxies, read once (at the first use, during start-up)."""
    return EnvironmentProxies.read(os.environ)


ProxyChoice = Callable[[str], "HttpProxy | Socks5Proxy | None"]  # upstream URL -> its proxy (None: direct)
