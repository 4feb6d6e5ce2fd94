"""Static discovery: ``cluster_config.peers``, host names re-resolved every round.

A name that does not resolve yet (a peer still starting, a DNS record not yet published)
makes the round *degraded* for that name only; the addresses that did resolve still count,
and the last good ones of a failing name are kept. ``discovery.type: static`` names no
other source: the cluster service always runs this backend over ``peers``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from ..addresses import resolve_peers
from .base import Address, Discovery

if TYPE_CHECKING:
    from rainbridge.config.schema import DiscoveryConfig


class StaticDiscovery(Discovery):
    name = "static"

    def __init__(self, peers: Sequence[str], self_address: Address) -> None:
        super().__init__()
        self.peers = list(peers)
        self.self_address = self_address
        self._last: list[Address] = []

    async def candidates(self) -> list[Address]:
        found, problems = await resolve_peers(self.peers)
        found = [a for a in found if a != self.self_address]
        health = self.health
        if problems:
            health.healthy = False
            health.failures += 1
            health.last_error = "; ".join(problems)[:300]
            # keep what a failing name resolved to last time
            found = list(dict.fromkeys([*found, *self._last]))
        else:
            health.healthy, health.failures, health.last_error = True, 0, None
            health.last_success = time.time()
        health.candidates = len(found)
        self._last = found
        return found


def make(
    config: DiscoveryConfig,
    self_address: tuple[str, int],
    node_name: str,
    environ: Mapping[str, str],
    *,
    peers: Sequence[str] = (),
) -> Discovery:
    """The registry's convention; ``peers`` (``cluster_config.peers``) is passed by the
    cluster service, which lives one level up from ``discovery``."""
    return StaticDiscovery(peers, self_address)
