"""A lean HTTP/1.1 client for upstream providers (keep-alive pools, httptools)."""

from .client import Origin, Timeout, UpstreamClient
from .connection import ConnectionLost, Exchange, ProtocolError
from .proxy import HttpProxy, ProxyError
from .socks import Socks5Proxy

__all__ = ["ConnectionLost", "Exchange", "HttpProxy", "Origin", "ProtocolError", "ProxyError", "Socks5Proxy", "Timeout", "UpstreamClient"]
