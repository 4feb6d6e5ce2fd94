"""The HTTP exchange every adapter makes, on the worker's upstream client.

Request heads are built once per (key, path) and reused: a request adds only its
``content-length`` (and any ``x-bf-eh-*`` headers the client sent). Errors are translated
here, at the boundary: an error status becomes ``UpstreamError`` (with the provider's
message, scrubbed of the key), a socket or timeout failure ``UpstreamUnreachable`` /
``UpstreamTimeout``, a broken stream ``StreamError``.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

from ..bounded import BoundedCache
from ..config.schema import NetworkConfig
from ..errors import InvalidRequest, UpstreamTimeout, UpstreamUnreachable
from ..upstream import (
    ConnectionLost,
    Exchange,
    Origin,
    ProtocolError,
    ProxyError,
    Timeout,
    UpstreamClient,
)
from ..upstream.proxy import ProxyChoice
from .base import ProviderKey, Reply, StreamError, UpstreamStream, iter_sse, upstream_error

# Headers a client may not set through x-bf-eh-*: hop-by-hop and framing headers (RFC 9110
# §7.6.1, RFC 9112 §6: an ``expect: 100-continue`` or a second ``content-length`` changes how
# the upstream frames its answer on a pooled connection), provider credentials, and the
# ``accept-encoding`` we fix to ``identity``. ``proxy-*`` is refused as a prefix.
FORBIDDEN_EXTRA = frozenset(
    {
        "host", "content-length", "transfer-encoding", "connection", "keep-alive", "upgrade",
        "te", "trailer", "expect", "authorization", "api-key", "x-api-key", "x-goog-api-key", "accept-encoding",
    }
)

# Control characters but HTAB may not appear in a field value (RFC 9110 §5.5).
_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f]")
# RFC 9110 §5.6.2 token characters: what a header name may be made of.
_TCHAR = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


def header_block(headers: dict[str, str]) -> bytes:
    lines = []
    for name, value in headers.items():
        if any(c in name or c in value for c in "\r\n\0"):
            raise ValueError(f"header {name!r} contains a line break")
        lines.append(f"{name}: {value}\r\n")
    return "".join(lines).encode("latin-1")


def extra_block(extra: dict[str, str] | None) -> bytes:
    """The client's x-bf-eh-* headers as request head lines.

    A header that must not or cannot be forwarded is a 400 naming it, not a silent drop:
    the client learns at once that the upstream will not see it.
    """
    if not extra:
        return b""
    lines = []
    for name, value in extra.items():
        lower = name.lower()
        if lower in FORBIDDEN_EXTRA or lower.startswith("proxy-"):
            raise _bad_extra(name, "is a hop-by-hop, framing or credential header the gateway sets itself")
        if not name or not _TCHAR.issuperset(name):
            raise _bad_extra(name, "is not a valid header name")
        if _CONTROL.search(value):
            raise _bad_extra(name, "has a control character (line break, NUL …) in its value")
        lines.append(f"{name}: {value}\r\n")
    return "".join(lines).encode("latin-1")


def _bad_extra(name: str, why: str) -> InvalidRequest:
    shown = "x-bf-eh-" + name.encode("unicode_escape").decode("ascii")[:100]
    return InvalidRequest(f"header {shown} cannot be forwarded upstream: it {why}", param=shown, code="invalid_extra_header")


class HttpAdapter:
    family = "openai"
    native_messages = False

    def __init__(self, name: str, base_url: str, client: UpstreamClient, network: NetworkConfig):
        self.name = name
        self.base_url = base_url.rstrip("/")
        self.client = client
        self.network = network
        self.timeout_s = float(network.default_request_timeout_in_seconds)
        self.idle_s = float(network.stream_idle_timeout_in_seconds)
        self.verify = tls_setting(network)
        self.max_idle = network.max_conns_per_host or 1000
        self._origins: dict[str, Origin] = {}
        self.proxy_for: ProxyChoice | None = None  # proxy_config: an upstream URL's proxy
        # Keyed by path too, and an Azure path holds the client's model name: bounded.
        self._heads: BoundedCache[tuple, bytes] = BoundedCache(4096)
        self.base_path = urlsplit(self.base_url).path.rstrip("/") if self.base_url else ""

    # -- request heads ----------------------------------------------------------------------

    def key_headers(self, key: ProviderKey) -> dict[str, str]:
        raise NotImplementedError

    def origin_for(self, url: str) -> Origin:
        origin = self._origins.get(url)
        if origin is None:
            proxy = self.proxy_for(url) if self.proxy_for is not None else None
            origin = self._origins[url] = self.client.origin(url, self.verify, self.max_idle, proxy)
        return origin

    def head(self, method: str, origin: Origin, path: str, key: ProviderKey,
             replaced: frozenset[str] = frozenset()) -> bytes:
        """Everything of the request head but content-length and the final blank line;
        the key's headers named in ``replaced`` (lower case) are left to the request."""
        cache_key = (method, origin.host_header, path, key.name, replaced)
        head = self._heads.get(cache_key)
        if head is None:
            headers = {"Accept-Encoding": "identity", **key.headers}
            if replaced:
                headers = {n: v for n, v in headers.items() if n.lower() not in replaced}
            head = self._heads.put(cache_key, (
                f"{method} {path} HTTP/1.1\r\n".encode("latin-1")
                + b"Host: " + origin.host_header + b"\r\n"
                + header_block(headers)
            ))
        return head

    def post_head(self, origin: Origin, path: str, key: ProviderKey, length: int, extra: dict[str, str] | None) -> bytes:
        """A POST's head. A request's own header (x-bf-eh-*, a native client's
        anthropic-version) replaces the provider's header of that name instead of
        following it as a second one (after extra_block has refused what may not pass)."""
        if not extra:
            return self.head("POST", origin, path, key) + b"Content-Length: %d\r\n\r\n" % length
        lines = extra_block(extra)
        names = {name.lower() for name in extra}
        replaced = frozenset(n for n in map(str.lower, key.headers) if n in names)
        return self.head("POST", origin, path, key, replaced) + b"Content-Length: %d\r\n" % length + lines + b"\r\n"

    async def request_head(self, origin: Origin, path: str, key: ProviderKey, body: bytes,
                           extra: dict[str, str] | None) -> bytes:
        """A POST's whole head. Adapters whose credentials change per request (a SigV4
        signature, an OAuth token) add them here."""
        return self.post_head(origin, path, key, len(body), extra)

    # -- exchanges --------------------------------------------------------------------------

    async def post(self, url: str, path: str, body: bytes, key: ProviderKey, extra: dict[str, str] | None) -> Reply:
        origin = self.origin_for(url)
        head = await self.request_head(origin, path, key, body, extra)
        exchange = await self._exchange(origin, head, body)
        data = await exchange.read()  # complete already
        if exchange.status != 200 and not _relayable(exchange.status):
            raise self._refused(exchange, data, key)
        return Reply(data)

    async def get(self, url: str, path: str, key: ProviderKey) -> Reply:
        origin = self.origin_for(url)
        head = self.head("GET", origin, path, key) + b"\r\n"
        exchange = await self._exchange(origin, head, b"")
        data = await exchange.read()
        if exchange.status != 200 and not _relayable(exchange.status):
            raise self._refused(exchange, data, key)
        return Reply(data)

    async def _exchange(self, origin: Origin, head: bytes, body: bytes) -> Exchange:
        try:
            return await self.client.request(origin, head, body, self.timeout_s)
        except Timeout:
            raise UpstreamTimeout(
                f"provider {self.name} did not answer within {self.timeout_s:g}s", provider=self.name
            ) from None
        except (OSError, ProtocolError) as exc:
            raise self._unreachable(exc) from None

    async def open_stream(self, url: str, path: str, body: bytes, key: ProviderKey, extra: dict[str, str] | None) -> Exchange:
        """Send a streaming request; return once the upstream answered 2xx headers."""
        origin = self.origin_for(url)
        head = await self.request_head(origin, path, key, body, extra)
        try:
            exchange = await self.client.stream(origin, head, body, self.timeout_s)
        except Timeout:
            raise UpstreamTimeout(
                f"provider {self.name} did not answer within {self.timeout_s:g}s", provider=self.name
            ) from None
        except (OSError, ProtocolError) as exc:
            raise self._unreachable(exc) from None
        if exchange.status != 200 and not _relayable(exchange.status):
            data = b""
            if exchange.status >= 400:  # its body was buffered: the provider's message
                try:
                    data = await _bounded(exchange.read(), self.timeout_s)
                except (OSError, ProtocolError, TimeoutError):
                    pass
            exchange.abort()  # (a no-op when the body was read to its end)
            raise self._refused(exchange, data, key)
        return exchange

    async def events(self, exchange: Exchange) -> AsyncIterator[tuple[bytes, bytes]]:
        """The stream's server-sent events; transport failures become ``StreamError``."""
        try:
            async for event in iter_sse(exchange.chunks(self.idle_s)):
                yield event
        except StreamError as exc:  # from iter_sse: an event over its size limit
            raise StreamError(f"provider {self.name} sent a {exc.message}") from None
        except TimeoutError:
            raise StreamError(f"provider {self.name} sent nothing for {self.idle_s:g}s") from None
        except (OSError, ProtocolError) as exc:
            raise StreamError(f"provider {self.name} broke the stream ({_reason(exc)})") from None

    def stream_of(self, iterator: AsyncIterator, exchange: Exchange) -> UpstreamStream:
        return UpstreamStream(iterator, exchange.abort)

    def _unreachable(self, exc: BaseException) -> UpstreamUnreachable:
        if isinstance(exc, ProxyError):  # its message names the proxy, never its credentials
            return UpstreamUnreachable(f"provider {self.name} is unreachable: {exc}", provider=self.name,
                                       code="upstream_proxy_error")
        if isinstance(exc, ProtocolError):
            return UpstreamUnreachable(
                f"provider {self.name} sent an invalid response ({exc})", provider=self.name, code="upstream_protocol_error"
            )
        return UpstreamUnreachable(f"provider {self.name} is unreachable ({_reason(exc)})", provider=self.name)

    def _refused(self, exchange: Exchange, data: bytes, key: ProviderKey) -> Exception:
        """An error status passes on with the provider's message; a status we cannot
        relay as an answer (no content, a redirect we do not follow) is a 502."""
        status = exchange.status
        if status >= 400:
            return upstream_error(self.name, status, data, key, exchange.retry_after)
        return UpstreamUnreachable(
            f"provider {self.name} answered HTTP {status}, which is not an answer the gateway can relay",
            provider=self.name,
            code="unexpected_status",
        )


def _relayable(status: int) -> bool:
    """A 2xx with content: 204 and 205 have none, 3xx redirects are not followed."""
    return 200 <= status < 300 and status != 204 and status != 205


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ConnectionLost):
        return "connection closed"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ProtocolError):
        return f"invalid HTTP response: {exc}"
    return type(exc).__name__ + (f": {exc.strerror}" if isinstance(exc, OSError) and exc.strerror else "")


async def _bounded(coro, timeout: float):
    import asyncio

    async with asyncio.timeout(timeout):
        return await coro


def tls_setting(network: NetworkConfig, proxy_ca_pem: str | None = None) -> bool | ssl.SSLContext:
    """TLS for this provider: verify (default), skip verification, or trust extra CAs (the
    network's, and the proxy_config's for an SSL-intercepting proxy, as Bifrost merges them)."""
    if network.insecure_skip_verify:
        return False
    if network.ca_cert_pem or proxy_ca_pem:
        context = ssl.create_default_context()
        for pem in (network.ca_cert_pem, proxy_ca_pem):
            if pem:
                context.load_verify_locations(cadata=pem)
        return context
    return True
