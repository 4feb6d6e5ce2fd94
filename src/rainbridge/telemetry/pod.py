"""The whole pod's metrics with ``--workers N``: the kernel hands a scrape to any one worker,
and that worker must answer for all of them.

Each worker serves its own samples on a Unix socket in a directory the supervisor made
(``worker-<index>.sock``); the scraped worker reads every other socket (concurrently, each
bounded by ``PEER_TIMEOUT_S``) and merges: samples with the same name and labels are summed
(counters, histograms, and gauges such as queue depth, whose pod total is the sum); gauges
named ``*_up`` take the minimum (the pod is up only where every worker is). Series that carry
a worker's own ``node`` label (cluster member metrics) stay apart, as they should.

Why not prometheus_client's multiprocess mode: it keeps every sample in a memory-mapped
file per process and metric, so each increment on the request path writes through an mmap
with a lock, and it cannot hold our custom collectors (cluster, fleet, queue gauges) at all.
Here the request path stays plain adds in process memory; merging costs only at scrape time.
A worker that does not answer in time is left out of that scrape and logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson
from prometheus_client.core import Metric
from prometheus_client.samples import Sample

log = logging.getLogger("rainbridge.telemetry")

PEER_TIMEOUT_S = 2.0
MAX_SNAPSHOT_BYTES = 64 * 1024 * 1024


def snapshot(registry: Any) -> bytes:
    """A registry's families and samples as JSON (collected now, on the caller's thread)."""
    families = []
    for family in registry.collect():
        families.append([family.name, family.type, family.documentation, family.unit,
                         [[s.name, s.labels, s.value] for s in family.samples]])
    return orjson.dumps(families)


class Merged:
    """A registry-like ``collect()`` over several workers' snapshots."""

    def __init__(self, snapshots: Iterable[list]) -> None:
        self.families: dict[str, Metric] = {}
        values: dict[str, dict[tuple, list]] = {}
        for families in snapshots:
            for name, kind, doc, unit, samples in families:
                family = self.families.get(name)
                if family is None:
                    family = self.families[name] = Metric(name, doc, kind, unit)
                    values[name] = {}
                keep_min = kind == "gauge" and name.endswith("_up")
                merged = values[name]
                for sample_name, labels, value in samples:
                    key = (sample_name, tuple(sorted(labels.items())))
                    seen = merged.get(key)
                    if seen is None:
                        merged[key] = [sample_name, labels, value]
                    elif keep_min:
                        seen[2] = min(seen[2], value)
                    else:
                        seen[2] += value
        for name, family in self.families.items():
            family.samples = [Sample(n, labels, value) for n, labels, value in values[name].values()]

    def collect(self) -> Iterator[Metric]:
        return iter(self.families.values())


class PodMetrics:
    """This worker's side: serve its snapshot, and gather everyone's for a scrape."""

    def __init__(self, directory: Path | str, index: int, registry: Any) -> None:
        self.directory = Path(directory)
        self.index = index
        self.registry = registry
        self.path = self.directory / f"worker-{index}.sock"
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # a previous incarnation of this worker's socket
        self._server = await asyncio.start_unix_server(self._serve, path=str(self.path))
        os.chmod(self.path, 0o600)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(snapshot(self.registry))
            await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def merged(self) -> Merged:
        own = orjson.loads(snapshot(self.registry))
        peers = sorted(p for p in self.directory.glob("worker-*.sock") if p != self.path)
        found = await asyncio.gather(*(self._read(p) for p in peers))
        return Merged([own, *(f for f in found if f is not None)])

    async def _read(self, path: Path) -> list | None:
        try:
            async with asyncio.timeout(PEER_TIMEOUT_S):
                reader, writer = await asyncio.open_unix_connection(str(path), limit=MAX_SNAPSHOT_BYTES)
                try:
                    data = await reader.read(-1)
                finally:
                    writer.close()
            return orjson.loads(data)
        except (OSError, TimeoutError, orjson.JSONDecodeError) as exc:
            log.warning("metrics of worker %s left out of this scrape: %s", path.stem, exc or type(exc).__name__)
            return None
