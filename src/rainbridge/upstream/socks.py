"""SOCKS5 upstream proxies (Bifrost's ``proxy_config.type: socks5``), through python-socks.

python-socks (the optional extra ``rainbridge[socks]``) is small, pure Python, without
dependencies, and speaks asyncio: it opens the TCP connection to the proxy, does the SOCKS5
greeting, username/password authentication (RFC 1929) and CONNECT, and hands back the
socket; the pooled ``Connection`` then runs on that socket (TLS to the origin inside, for
https). Host names are sent to the proxy unresolved, as Go's SOCKS5 dialer (Bifrost's) does.
Every failure is a ``ProxyError`` naming the proxy, never its credentials.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from .proxy import ProxyError, connect_failure, parse_proxy_url


def available() -> bool:
    try:
        import python_socks.async_.asyncio  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass(frozen=True, repr=False)
class Socks5Proxy:
    """A SOCKS5 proxy; its credentials are part of the pool key and of no message or repr."""

    host: str
    port: int
    username: str | None = None
    password: str | None = None
    shown: str = field(default="", compare=False)  # socks5://host:port, for messages

    @classmethod
    def from_url(cls, url: str, username: str | None = None, password: str | None = None) -> Socks5Proxy:
        """``socks5://[user:pass@]host[:port]`` (``socks5h`` too; port 1080 by default);
        explicit credentials win over the URL's, and count only when both are non-empty."""
        host, port, username, password, shown = parse_proxy_url(url, ("socks5", "socks5h"), 1080, username, password)
        return cls(host, port, username, password, f"socks5://{shown}")

    def __repr__(self) -> str:
        return f"Socks5Proxy({self.shown})"

    async def open(self, loop: asyncio.AbstractEventLoop, host: str, port: int, tls, protocol, timeout: float):
        """Connect ``protocol`` to ``host:port`` through this proxy within ``timeout`` seconds."""
        from python_socks import ProxyConnectionError, ProxyTimeoutError, ProxyType
        from python_socks import ProxyError as SocksError
        from python_socks.async_.asyncio import Proxy

        proxy = Proxy(ProxyType.SOCKS5, self.host, self.port, self.username, self.password, rdns=True, loop=loop)
        try:
            async with asyncio.timeout(timeout):
                try:
                    sock = await proxy.connect(host, port, timeout=timeout)
                except ProxyConnectionError as exc:
                    cause = exc.__cause__ if isinstance(exc.__cause__, OSError) else exc
                    raise ProxyError(f"proxy {self.shown} is unreachable ({connect_failure(cause)})") from None
                except ProxyTimeoutError:
                    raise TimeoutError from None
                except SocksError as exc:  # the proxy's refusal (auth, rule, unreachable target)
                    reason = str(exc).replace(self.password or "\0", "…")[:120]
                    raise ProxyError(f"proxy {self.shown} refused the tunnel to {host}:{port}: {reason}") from None
                try:
                    transport, _ = await loop.create_connection(
                        lambda: protocol, sock=sock, ssl=tls, server_hostname=host if tls is not None else None)
                except BaseException:
                    sock.close()
                    raise
        except TimeoutError:
            raise ProxyError(f"no tunnel through proxy {self.shown} to {host}:{port} within {timeout:g}s") from None
        return transport
