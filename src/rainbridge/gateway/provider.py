"""A provider as one worker runs it: adapter, keys, queue and retry settings together."""

from __future__ import annotations

from ..config.schema import Config, ProviderConfig
from ..providers.http import HttpAdapter
from ..providers.registry import build_adapter, build_keys
from ..upstream import UpstreamClient
from .keys import KeyPool
from .queue import ProviderQueue


class Provider:
    __slots__ = ("adapter", "backoff_initial_ms", "backoff_max_ms", "keys", "max_retries", "name", "queue")

    def __init__(self, name: str, adapter: HttpAdapter, keys: KeyPool, queue: ProviderQueue, pc: ProviderConfig):
        self.name = name
        self.adapter = adapter
        self.keys = keys
        self.queue = queue
        net = pc.network_config
        self.max_retries = net.max_retries
        self.backoff_initial_ms = float(net.retry_backoff_initial)
        self.backoff_max_ms = float(net.retry_backoff_max)

    @property
    def family(self) -> str:
        return self.adapter.family  # type: ignore[attr-defined]


def build_providers(configs: dict[str, ProviderConfig], config: Config, client: UpstreamClient) -> dict[str, Provider]:
    providers = {}
    drop = config.client.drop_excess_requests
    for name, pc in configs.items():
        adapter = build_adapter(name, pc, client)
        keys = KeyPool(build_keys(pc, adapter, config.version), region=config.cluster_config.region)
        cb = pc.concurrency_and_buffer_size
        queue = ProviderQueue(name, cb.concurrency, cb.buffer_size, drop)
        providers[name] = Provider(name, adapter, keys, queue, pc)
    return providers
