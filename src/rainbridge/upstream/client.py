"""Keep-alive connection pools per upstream origin, and the request/stream calls on them.

Taking a connection from the pool happens without an ``await`` when an idle one exists,
so the common case is a list pop. A reused connection that the upstream had already
closed while it sat idle fails before any response byte arrives; that request is sent
once more on a fresh connection, which is safe because the upstream never saw it.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from .connection import MAX_BODY_BYTES, Connection, ConnectionLost, Exchange
from .proxy import HttpProxy
from .socks import Socks5Proxy

IDLE_LIFETIME_S = 50.0  # below the usual 60 s keep-alive of upstream load balancers


@dataclass(eq=False)
class Origin:
    """Where requests go: scheme, host and port, TLS settings, the ``Host`` header, and the
    proxy whose tunnels reach it (HTTP CONNECT or SOCKS5; None: direct). An origin is its own pool, so a
    tunnelled connection is never reused for a direct request, another proxy or credential."""

    host: str
    port: int
    tls: ssl.SSLContext | None
    host_header: bytes
    max_idle: int = 1000
    proxy: HttpProxy | Socks5Proxy | None = None
    idle: deque[Connection] = field(default_factory=deque)  # newest on the right

    @classmethod
    def from_url(cls, url: str, verify: bool | ssl.SSLContext = True, max_idle: int = 1000,
                 proxy: HttpProxy | Socks5Proxy | None = None) -> Origin:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        https = parts.scheme == "https"
        port = parts.port or (443 if https else 80)
        tls = None
        if https:
            if isinstance(verify, ssl.SSLContext):
                tls = verify
            else:
                tls = ssl.create_default_context()
                if not verify:
                    tls.check_hostname = False
                    tls.verify_mode = ssl.CERT_NONE
        default_port = 443 if https else 80
        host = parts.hostname
        shown = f"[{host}]" if ":" in host else host
        host_header = shown if port == default_port else f"{shown}:{port}"
        return cls(host, port, tls, host_header.encode("idna"), max_idle, proxy)


class Timeout(TimeoutError):
    pass


class UpstreamClient:
    """One per worker. ``request`` returns a complete answer; ``stream`` an open one."""

    def __init__(self, connect_timeout: float = 10.0, max_body_bytes: int = MAX_BODY_BYTES):
        self.connect_timeout = connect_timeout
        self.max_body_bytes = max_body_bytes  # largest body read whole (see connection.py)
        self._origins: list[Origin] = []
        self._by_key: dict[tuple, Origin] = {}
        self._closed = False

    def origin(self, url: str, verify: bool | ssl.SSLContext = True, max_idle: int = 1000,
               proxy: HttpProxy | Socks5Proxy | None = None) -> Origin:
        """The pool for ``url`` (one per URL, TLS setting and proxy with its credentials,
        shared by rebuilt adapters)."""
        key = (url, verify if isinstance(verify, bool) else id(verify), max_idle, proxy)
        origin = self._by_key.get(key)
        if origin is None:
            origin = self._by_key[key] = Origin.from_url(url, verify, max_idle, proxy)
            self._origins.append(origin)
        return origin

    # -- pool -------------------------------------------------------------------------------

    def _idle_connection(self, origin: Origin, loop: asyncio.AbstractEventLoop) -> Connection | None:
        """The most recently used idle connection (LIFO keeps the working set small, so
        connections a burst opened age out instead of staying in rotation)."""
        idle = origin.idle
        while idle:
            conn = idle.pop()
            if not conn.closed:
                return conn
        return None

    async def _new_connection(self, origin: Origin, loop: asyncio.AbstractEventLoop) -> Connection:
        def release(conn: Connection) -> None:
            # Called by the connection after a complete final response with nothing after
            # it: no exchange, reading on (a stray byte or EOF while idle drops it).
            if self._closed or len(origin.idle) >= origin.max_idle:
                conn.close()
                return
            conn.reused = True
            now = conn.idle_since = loop.time()
            idle = origin.idle
            idle.append(conn)
            while now - idle[0].idle_since > IDLE_LIFETIME_S:  # oldest first
                idle.popleft().close()

        if origin.proxy is not None:
            conn = Connection(loop, release, self.max_body_bytes)
            await origin.proxy.open(loop, origin.host, origin.port, origin.tls, conn, self.connect_timeout)
            return conn
        async with asyncio.timeout(self.connect_timeout):
            _, conn = await loop.create_connection(
                lambda: Connection(loop, release, self.max_body_bytes),
                origin.host,
                origin.port,
                ssl=origin.tls,
                server_hostname=origin.host if origin.tls else None,
            )
        return conn

    async def _start(self, origin: Origin, head: bytes, body: bytes, stream: bool) -> tuple[Connection, Exchange]:
        loop = asyncio.get_running_loop()
        conn = self._idle_connection(origin, loop)
        if conn is None:
            conn = await self._new_connection(origin, loop)
        return conn, conn.start(head, body, stream)

    # -- calls ------------------------------------------------------------------------------

    async def request(self, origin: Origin, head: bytes, body: bytes, timeout: float) -> Exchange:
        """Send and read the whole answer within ``timeout`` seconds."""
        try:
            async with asyncio.timeout(timeout):
                return await self._request_once(origin, head, body)
        except TimeoutError:
            raise Timeout(f"no complete answer within {timeout:g}s") from None

    async def _request_once(self, origin: Origin, head: bytes, body: bytes) -> Exchange:
        for attempt in (1, 2):
            conn, exchange = await self._start(origin, head, body, stream=False)
            try:
                await exchange.read()
                return exchange
            except ConnectionLost as exc:
                if attempt == 1 and exc.before_response and conn.reused:
                    continue  # the upstream had closed this idle connection; it never saw us
                raise
            except BaseException:
                conn.abort()  # cancelled or failed half-way: the connection cannot be reused
                raise
        raise AssertionError("unreachable")

    async def stream(self, origin: Origin, head: bytes, body: bytes, timeout: float) -> Exchange:
        """Send and wait for the response headers (within ``timeout``); the body streams."""
        try:
            async with asyncio.timeout(timeout):
                for attempt in (1, 2):
                    conn, exchange = await self._start(origin, head, body, stream=True)
                    try:
                        await exchange.headers()
                        return exchange
                    except ConnectionLost as exc:
                        if attempt == 1 and exc.before_response and conn.reused:
                            continue
                        raise
                    except BaseException:
                        conn.abort()
                        raise
        except TimeoutError:
            raise Timeout(f"no response headers within {timeout:g}s") from None
        raise AssertionError("unreachable")

    async def close(self) -> None:
        self._closed = True
        for origin in self._origins:
            while origin.idle:
                origin.idle.pop().close()
