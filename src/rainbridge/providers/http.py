"""The HTTP exchange every adapter makes: one POST on the worker's pooled aiohttp session.

Errors are translated here, at the boundary: an error status becomes ``UpstreamError`` (with
the provider's message, scrubbed of the key), a socket or timeout failure becomes
``UpstreamUnreachable`` / ``UpstreamTimeout``.
"""

from __future__ import annotations

import ssl

import aiohttp

from ..config.schema import NetworkConfig
from .base import ProviderKey, Reply, network_error, upstream_error


class HttpAdapter:
    def __init__(self, name: str, base_url: str, session: aiohttp.ClientSession, network: NetworkConfig):
        self.name = name
        self.base_url = base_url.rstrip("/")
        self.session = session
        self.network = network
        self.timeout_s = float(network.default_request_timeout_in_seconds)
        self.timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        self.stream_timeout = aiohttp.ClientTimeout(
            total=None,
            sock_connect=self.timeout_s,
            sock_read=float(network.stream_idle_timeout_in_seconds),
        )
        self.ssl = tls_setting(network)

    def headers_for(self, key: ProviderKey, extra: dict[str, str] | None) -> dict[str, str]:
        if extra:
            return {**key.headers, **extra}
        return key.headers

    async def post(self, url: str, data: bytes, headers: dict[str, str], key: ProviderKey) -> Reply:
        try:
            return await self._post_once(url, data, headers, key)
        except aiohttp.ServerDisconnectedError:
            # A pooled keep-alive connection the upstream had already closed: the request
            # never reached it, so one immediate resend on a fresh connection is safe.
            try:
                return await self._post_once(url, data, headers, key)
            except (TimeoutError, aiohttp.ClientError) as exc:
                raise network_error(self.name, exc, self.timeout_s) from exc
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise network_error(self.name, exc, self.timeout_s) from exc

    async def _post_once(self, url: str, data: bytes, headers: dict[str, str], key: ProviderKey) -> Reply:
        async with self.session.post(url, data=data, headers=headers, timeout=self.timeout, ssl=self.ssl) as resp:
            body = await resp.read()
            if resp.status >= 400:
                raise upstream_error(self.name, resp.status, body, key, resp.headers.get("retry-after"))
            return Reply(body)

    async def get(self, url: str, headers: dict[str, str], key: ProviderKey) -> Reply:
        try:
            async with self.session.get(url, headers=headers, timeout=self.timeout, ssl=self.ssl) as resp:
                body = await resp.read()
                if resp.status >= 400:
                    raise upstream_error(self.name, resp.status, body, key, None)
                return Reply(body)
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise network_error(self.name, exc, self.timeout_s) from exc

    async def open(self, url: str, data: bytes, headers: dict[str, str], key: ProviderKey) -> aiohttp.ClientResponse:
        """Send a streaming request; return the response once its status is 2xx."""
        try:
            resp = await self.session.post(
                url, data=data, headers=headers, timeout=self.stream_timeout, ssl=self.ssl
            )
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise network_error(self.name, exc, self.timeout_s) from exc
        if resp.status >= 400:
            try:
                body = await resp.read()
            except (TimeoutError, aiohttp.ClientError):
                body = b""
            finally:
                resp.release()
            raise upstream_error(self.name, resp.status, body, key, resp.headers.get("retry-after"))
        return resp


def tls_setting(network: NetworkConfig) -> bool | ssl.SSLContext:
    """aiohttp's ``ssl=`` argument for this provider: verify (default), skip, or extra CA."""
    if network.insecure_skip_verify:
        return False
    if network.ca_cert_pem:
        context = ssl.create_default_context()
        context.load_verify_locations(cadata=network.ca_cert_pem)
        return context
    return True
