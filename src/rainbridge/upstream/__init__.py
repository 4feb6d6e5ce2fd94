"""A lean HTTP/1.1 client for upstream providers (keep-alive pools, httptools)."""

from .client import Origin, Timeout, UpstreamClient
from .connection import ConnectionLost, Exchange, ProtocolError

__all__ = ["ConnectionLost", "Exchange", "Origin", "ProtocolError", "Timeout", "UpstreamClient"]
