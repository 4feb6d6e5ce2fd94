"""Cost of a request: tokens × price, from a bundled, versioned table plus config overrides.

Model names are matched exactly, then by the longest known name they extend with a dash
(``gpt-4o-2024-08-06`` → ``gpt-4o``, ``claude-3-5-sonnet-latest`` → ``claude-3-5-sonnet``).
An unknown model costs 0 and is warned about once per worker (while it is among the last
4,096 unknown names: the memory is bounded whatever names clients send).
"""

from __future__ import annotations

import json
import logging
from importlib import resources
from typing import NamedTuple

from ..bounded import BoundedCache

log = logging.getLogger("rainbridge.pricing")

_CACHE_LIMIT = 4096


class Price(NamedTuple):
    input_per_token: float
    output_per_token: float


def bundled() -> tuple[str, dict[str, Price]]:
    data = json.loads((resources.files("rainbridge.governance") / "prices.json").read_text("utf-8"))
    return data["version"], {m: Price(p[0] / 1e6, p[1] / 1e6) for m, p in data["models"].items()}


class Pricing:
    def __init__(self, overrides: dict[str, Price] | None = None):
        self.version, self.table = bundled()
        self.overrides = dict(overrides or {})
        self._cache: BoundedCache[tuple[str, str], Price | None] = BoundedCache(_CACHE_LIMIT)
        self._warned: BoundedCache[str, None] = BoundedCache(_CACHE_LIMIT)

    def price(self, provider: str, model: str) -> Price | None:
        key = (provider, model)
        if key in self._cache:
            return self._cache[key]
        found = self._cache.put(key, self.overrides.get(f"{provider}/{model}") or self.overrides.get(model) or self._match(model))
        if found is None and self._warned.first_time(model):
            log.warning("no price for model %s/%s: its cost counts as 0 (set pricing_overrides)", provider, model)
        return found

    def _match(self, model: str) -> Price | None:
        hit = self.table.get(model)
        if hit is not None:
            return hit
        best = None
        for name in self.table:
            if model.startswith(name + "-") and (best is None or len(name) > len(best)):
                best = name
        return self.table[best] if best else None

    def cost(self, provider: str, model: str, prompt_tokens: int, completion_tokens: int) -> float:
        price = self.price(provider, model)
        if price is None:
            return 0.0
        return prompt_tokens * price.input_per_token + completion_tokens * price.output_per_token
