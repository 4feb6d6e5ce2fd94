"""Weighted random choice among a provider's keys that serve the requested model.

Region-aware: a node with a region (``cluster_config.region``) draws from the keys of its own
region first, then from keys without a region, then from other regions' keys; a lower tier
is used only when every key of the tiers before it is excluded (it failed, was rate limited
upstream, or the virtual key may not use it). Without a node region, or with no key tagged,
all keys form one tier (plain weighted choice)."""

from __future__ import annotations

import bisect
import itertools
import random
from collections.abc import Collection, Sequence

from ..bounded import BoundedCache
from ..providers.base import ProviderKey

_CACHE_LIMIT = 4096

Tier = tuple[list[ProviderKey], list[float]]  # keys and their cumulative weights


def _tier(keys: list[ProviderKey]) -> Tier:
    if not any(k.weight > 0 for k in keys):
        return keys, [float(i + 1) for i in range(len(keys))]  # all zero: uniform
    return keys, list(itertools.accumulate(k.weight for k in keys))


def region_tiers(keys: list[ProviderKey], region: str | None) -> list[list[ProviderKey]]:
    """``keys`` split into own region, no region, other regions (empty tiers dropped)."""
    if not region or not any(k.regions for k in keys):
        return [keys] if keys else []
    home = [k for k in keys if region in k.regions]
    anywhere = [k for k in keys if not k.regions]
    away = [k for k in keys if k.regions and region not in k.regions]
    return [t for t in (home, anywhere, away) if t]


class KeyPool:
    """A provider's keys. Eligible keys per model are computed once and cached."""

    def __init__(self, keys: Sequence[ProviderKey], rng: random.Random | None = None, region: str | None = None):
        self.keys = list(keys)
        self.region = region
        self._eligible: BoundedCache[str, list[Tier]] = BoundedCache(_CACHE_LIMIT)
        self._random = (rng or random.Random()).random

    def tiers(self, model: str) -> list[Tier]:
        """Keys serving ``model`` by preference tier, each with cumulative weights."""
        hit = self._eligible.get(model)
        if hit is None:
            keys = [k for k in self.keys if k.serves(model)]
            hit = self._eligible.put(model, [_tier(t) for t in region_tiers(keys, self.region)])
        return hit

    def serves(self, model: str) -> bool:
        return bool(self.tiers(model))

    def choose(self, model: str, exclude: Collection[ProviderKey] = (), allowed: Collection[str] | None = None) -> ProviderKey | None:
        """A key serving ``model``, not in ``exclude``; ``allowed``: key ids or names (a
        virtual key's ``key_ids``) that may be used, None for any."""
        for keys, cumulative in self.tiers(model):
            key = self._choose_in(keys, cumulative, exclude, allowed)
            if key is not None:
                return key
        return None

    def _choose_in(
        self, keys: list[ProviderKey], cumulative: list[float],
        exclude: Collection[ProviderKey], allowed: Collection[str] | None,
    ) -> ProviderKey | None:
        if allowed is not None:
            exclude = [*exclude, *(k for k in keys if k.id not in allowed and k.name not in allowed)]
        if not exclude:
            if len(keys) == 1:
                return keys[0]
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
