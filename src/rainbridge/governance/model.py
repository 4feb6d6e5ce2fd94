"""Virtual keys, teams, customers, budgets and rate limits as the gateway holds them.

These are the normalized forms: every budget is owned by one VK, team or customer (the
config file may share one definition by id; each owner still gets its own counter), times
are epoch milliseconds, and a virtual key's secret is only ever kept as a SHA-256 hash.
"""

from __future__ import annotations

import hashlib
import secrets

import msgspec

VK_PREFIX = "sk-rb-"
VK_PREFIXES = ("sk-rb-", "sk-bf-")  # our own, and Bifrost's (so a Bifrost config keeps working)


def hash_value(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def new_value() -> str:
    return VK_PREFIX + secrets.token_urlsafe(32)


def hint(value: str) -> str:
    """What may be shown of a key after creation: its prefix and last four characters."""
    return f"{value[:10]}…{value[-4:]}" if len(value) > 16 else "…"


def new_id(kind: str) -> str:
    return f"{kind}_{secrets.token_hex(8)}"


class Budget(msgspec.Struct, kw_only=True):
    id: str
    max_limit: float  # USD per window
    reset_duration: str
    calendar_aligned: bool = False
    created_at: int = 0  # windows of a non-aligned budget count from here


class RateLimit(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Rate limit windows are always calendar-aligned (a minute is :00 to :59 on every node)."""

    request_max_limit: int | None = None
    request_reset_duration: str | None = None
    token_max_limit: int | None = None
    token_reset_duration: str | None = None


class ProviderGrant(msgspec.Struct, kw_only=True):
    """What a virtual key may do with one provider.

    ``key_ids``: the provider keys (by id or name) the virtual key may use; None = all.
    Bifrost spells "all" ``["*"]``: it is turned into None here, the one place every
    grant passes through (config file, management API, store), so no path takes the
    star for a key name. ``[]`` = none (Bifrost v1.5+: an empty allow-list allows nothing).
    """

    provider: str
    weight: float = 1.0
    allowed_models: list[str] | None = None
    key_ids: list[str] | None = None
    # Bifrost's per-provider limits: they count the key's requests this provider serves (a
    # fallback is charged to the provider that served it: governance/engine.py, on the same
    # counters as the key's own limits).
    budgets: list[Budget] = []
    rate_limit: RateLimit | None = None

    def __post_init__(self) -> None:
        if self.key_ids is not None and "*" in self.key_ids:
            self.key_ids = None

    @property
    def limited(self) -> bool:
        return bool(self.budgets) or self.rate_limit is not None

    def allows(self, model: str) -> bool:
        models = self.allowed_models
        return models is None or "*" in models or model in models


class Owner(msgspec.Struct, kw_only=True):
    id: str
    name: str
    budgets: list[Budget] = []
    rate_limit: RateLimit | None = None
    created_at: int = 0
    updated_at: int = 0


class Customer(Owner, kw_only=True):
    kind = "customer"


class Team(Owner, kw_only=True):
    kind = "team"
    customer_id: str | None = None


class VirtualKey(Owner, kw_only=True):
    kind = "vk"
    value_hash: str
    value_hint: str = "…"
    description: str = ""
    is_active: bool = True
    expires_at: int | None = None
    team_id: str | None = None
    customer_id: str | None = None
    provider_configs: list[ProviderGrant] = []
    allow_all_providers: bool = True

    def limited_grant(self, provider: str) -> ProviderGrant | None:
        """The grant of ``provider`` when it carries budgets or a rate limit of its own."""
        for grant in self.provider_configs:
            if grant.provider == provider:
                return grant if grant.limited else None
        return None

    def grant(self, provider: str) -> ProviderGrant | None:
        for grant in self.provider_configs:
            if grant.provider == provider:
                return grant
        return None


class ModelLimit(Owner, kw_only=True):
    """A model limit (Bifrost's ``governance.model_configs``, and its management API): counts
    every request the model (or any, ``*``) of the provider (or any) serves, of all traffic
    or of one virtual key. Its budgets' windows count from the epoch (not from a creation
    time: every node and restart must agree on the windows, whoever created the limit)."""

    kind = "model"
    model_name: str = "*"
    provider: str | None = None
    vk_id: str | None = None  # scope virtual_key
    rate_limits: list[RateLimit] = []

    def matches(self, provider: str, model: str, vk_id: str | None) -> bool:
        return (self.model_name in ("*", model) and self.provider in (None, provider)
                and (self.vk_id is None or self.vk_id == vk_id))
