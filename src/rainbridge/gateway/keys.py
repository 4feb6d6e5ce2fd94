"""Weighted random choice among a provider's keys that serve the requested model."""

from __future__ import annotations

import bisect
import itertools
import random
from collections.abc import Collection, Sequence

from ..bounded import BoundedCache
from ..providers.base import ProviderKey

_CACHE_LIMIT = 4096


class KeyPool:
    """A provider's keys. Eligible keys per model are computed once and cached."""

    def __init__(self, keys: Sequence[ProviderKey], rng: random.Random | None = None):
        self.keys = list(keys)
        self._eligible: BoundedCache[str, tuple[list[ProviderKey], list[float]]] = BoundedCache(_CACHE_LIMIT)
        self._random = (rng or random.Random()).random

    def eligible(self, model: str) -> tuple[list[ProviderKey], list[float]]:
        """Keys serving ``model`` and their cumulative weights."""
        hit = self._eligible.get(model)
        if hit is None:
            keys = [k for k in self.keys if k.serves(model)]
            if not any(k.weight > 0 for k in keys):
                cumulative = [float(i + 1) for i in range(len(keys))]  # all zero: uniform
            else:
                cumulative = list(itertools.accumulate(k.weight for k in keys))
            hit = self._eligible.put(model, (keys, cumulative))
        return hit

    def serves(self, model: str) -> bool:
        return bool(self.eligible(model)[0])

    def choose(self, model: str, exclude: Collection[ProviderKey] = (), allowed: Collection[str] | None = None) -> ProviderKey | None:
        """A key serving ``model``, not in ``exclude``; ``allowed``: key ids or names (a
        virtual key's ``key_ids``) that may be used, None for any."""
        keys, cumulative = self.eligible(model)
        if allowed is not None:
            exclude = [*exclude, *(k for k in keys if k.id not in allowed and k.name not in allowed)]
        if not exclude:
            if len(keys) == 1:
                return keys[0]
            if not keys:
                return None
            return keys[bisect.bisect_right(cumulative, self._random() * cumulative[-1])]
        rest = [k for k in keys if k not in exclude]
        if not rest:
            return None
        weights = [k.weight for k in rest]
        if not any(w > 0 for w in weights):
            weights = [1.0] * len(rest)
        point = self._random() * sum(weights)
        for key, weight in zip(rest, weights, strict=True):
            point -= weight
            if point < 0:
                return key
        return rest[-1]
