"""Which module builds the backend of ``discovery.type``: the one convention of every backend.

Each backend lives in ``rainbridge.cluster.discovery.<type>`` and exposes::

    def make(
        config: DiscoveryConfig,          # cluster_config.discovery
        self_address: tuple[str, int],    # our advertised gossip (ip, port): never a candidate
        node_name: str,                   # our member name (registrations, announcements)
        environ: Mapping[str, str],       # the process environment (tokens, POD_IP ...)
    ) -> Discovery

``make`` only builds (no I/O); :meth:`Discovery.start` opens connections. Importing the
module by type here means a backend's client library is imported only when that backend is
configured: a missing optional dependency becomes a start-up error naming the extra.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

from .base import Discovery, DiscoveryConfigError

if TYPE_CHECKING:
    from rainbridge.config.schema import DiscoveryConfig

# type -> the pip extra that installs its client library (None: standard library only)
EXTRAS: dict[str, str | None] = {
    "static": None,
    "udp": None,
    "dns": "dns",
    "etcd": "etcd",
    "kubernetes": "k8s",
    "consul": "consul",
    "mdns": "mdns",
}


class BackendFactory(Protocol):
    def __call__(
        self,
        config: DiscoveryConfig,
        self_address: tuple[str, int],
        node_name: str,
        environ: Mapping[str, str],
    ) -> Discovery: ...


def factory(kind: str) -> BackendFactory:
    """The ``make`` of backend ``kind``; :class:`DiscoveryConfigError` naming the field or
    the extra to install when it cannot be had."""
    if kind not in EXTRAS:
        raise DiscoveryConfigError(
            f"$.cluster_config.discovery.type: unknown discovery type {kind!r} "
            f"(one of {', '.join(sorted(EXTRAS))})"
        )
    try:
        module = importlib.import_module(f"{__package__}.{kind}")
    except ImportError as exc:
        extra = EXTRAS[kind]
        # Only a missing third-party library is the user's to fix; our own module missing
        # is a packaging bug and keeps its traceback.
        if extra is None or (exc.name or "").startswith("rainbridge"):
            raise
        raise DiscoveryConfigError(
            f"$.cluster_config.discovery.type: {kind} discovery needs the optional "
            f"dependency {exc.name or 'its client library'!s}: pip install 'rainbridge[{extra}]'"
        ) from exc
    return module.make


def make_discovery(
    config: DiscoveryConfig,
    self_address: tuple[str, int],
    node_name: str,
    environ: Mapping[str, str],
) -> Discovery:
    """Build the backend ``config.type`` names (not started)."""
    if not config.type:
        raise DiscoveryConfigError(
            "$.cluster_config.discovery.type: required when discovery is enabled"
        )
    return factory(config.type)(config, self_address, node_name, environ)
