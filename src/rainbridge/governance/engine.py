"""Governance on the request path: which virtual key, may it pass, and what it used.

``identify`` finds the key; ``targets`` applies its provider grants to routing; ``admit``
checks every budget and limit of the key, its team and its customer at once and reserves
what the request may use (all or nothing, without an ``await``); ``settle`` replaces the
reservation with the real tokens and cost once the answer is complete.
"""

from __future__ import annotations

import datetime
import math
import random
from collections.abc import Iterable

from ..counters.base import Counters, Key, Need, Reservation
from ..counters.windows import Window, human_reset, window_for
from ..errors import (
    BudgetExceeded,
    GatewayError,
    ModelBlocked,
    ProviderBlocked,
    RequestLimited,
    TokenLimited,
    VirtualKeyBlocked,
    VirtualKeyNotFound,
    VirtualKeyRequired,
)
from ..gateway.routing import Routes, Target, fallback_list, model_field
from .model import Budget, Customer, Owner, Team, VirtualKey, hash_value
from .pricing import Pricing

LABELS = {"vk": "virtual key", "team": "team", "customer": "customer"}


class GovernanceState:
    """An immutable snapshot of every key, team and customer; replaced whole on change."""

    def __init__(self, customers: Iterable[Customer] = (), teams: Iterable[Team] = (), vks: Iterable[VirtualKey] = ()):
        self.customers = {c.id: c for c in customers}
        self.teams = {t.id: t for t in teams}
        self.vks = {v.id: v for v in vks}
        self.by_hash = {v.value_hash: v for v in self.vks.values()}

    def levels(self, vk: VirtualKey) -> list[tuple[str, Owner]]:
        """The key, then its team, then the team's (or the key's) customer."""
        out: list[tuple[str, Owner]] = [("vk", vk)]
        customer_id = vk.customer_id
        team = self.teams.get(vk.team_id) if vk.team_id else None
        if team is not None:
            out.append(("team", team))
            customer_id = team.customer_id or customer_id
        customer = self.customers.get(customer_id) if customer_id else None
        if customer is not None:
            out.append(("customer", customer))
        return out


class Admission:
    __slots__ = ("headers", "kinds", "reservation", "vk")

    def __init__(self, vk: VirtualKey, reservation: Reservation, kinds: list[str], headers: list[tuple[bytes, bytes]]):
        self.vk = vk
        self.reservation = reservation
        self.kinds = kinds  # metric of each reserved need: requests | tokens | spend
        self.headers = headers

    @property
    def needs_usage(self) -> bool:
        return "tokens" in self.kinds or "spend" in self.kinds


class WindowCache:
    """The open window of each (duration, alignment, anchor), recomputed only when it ends."""

    def __init__(self) -> None:
        self._open: dict[tuple[str, bool, int], Window] = {}

    def get(self, duration: str, aligned: bool, anchor: int, now_ms: int) -> Window:
        key = (duration, aligned, anchor)
        w = self._open.get(key)
        if w is None or not (w.start_ms <= now_ms < w.end_ms):
            if len(self._open) > 10_000:
                self._open.clear()
            w = self._open[key] = window_for(duration, now_ms, aligned, anchor)
        return w


class Governance:
    def __init__(self, counters: Counters, pricing: Pricing, mandatory: bool, rng: random.Random | None = None):
        self.counters = counters
        self.pricing = pricing
        self.mandatory = mandatory
        self.state = GovernanceState()
        self.windows = WindowCache()
        self._random = (rng or random.Random()).random

    # -- who ---------------------------------------------------------------------------------

    def identify(self, value: str | None, now_ms: int) -> VirtualKey | None:
        if value is None:
            if self.mandatory:
                raise VirtualKeyRequired(
                    "a virtual key is required: send it as Authorization: Bearer sk-rb-..., x-api-key or x-bf-vk",
                    code="virtual_key_required",
                )
            return None
        vk = self.state.by_hash.get(hash_value(value))
        if vk is None:
            raise VirtualKeyNotFound("virtual key not found", code="virtual_key_not_found")
        if not vk.is_active:
            raise VirtualKeyBlocked(f"virtual key '{vk.name}' is inactive", code="virtual_key_inactive")
        if vk.expires_at is not None and now_ms >= vk.expires_at:
            raise VirtualKeyBlocked(f"virtual key '{vk.name}' expired at {_iso(vk.expires_at)}", code="virtual_key_expired")
        return vk

    # -- where -------------------------------------------------------------------------------

    def targets(self, vk: VirtualKey | None, model: object, fallbacks: object, default: str, routes: Routes) -> list[Target]:
        """Routing under a key's provider grants: only allowed providers and models; a bare
        model picks among the grants that allow it, by weight. Blocked fallbacks are dropped."""
        if vk is None or (vk.allow_all_providers and not vk.provider_configs):
            return routes.targets(model, fallbacks, default)
        out = [self._granted(vk, model_field(model), routes, default, "model")]
        for i, fb in enumerate(fallback_list(fallbacks)):
            try:
                out.append(self._granted(vk, fb, routes, default, f"fallbacks[{i}]"))
            except (ProviderBlocked, ModelBlocked):
                continue
        return out

    def _granted(self, vk: VirtualKey, model: str, routes: Routes, default: str, param: str) -> Target:
        prefix, sep, rest = model.partition("/")
        if sep and rest and prefix in routes.providers:
            grant = vk.grant(prefix)
            if grant is None and not vk.allow_all_providers:
                raise ProviderBlocked(f"virtual key '{vk.name}' may not use provider {prefix!r}", param=param, code="provider_blocked")
            if grant is not None and not grant.allows(rest):
                raise ModelBlocked(f"virtual key '{vk.name}' may not use model {rest!r} of provider {prefix!r}", param=param, code="model_blocked")
            return Target(routes.providers[prefix], rest)
        grants = [g for g in vk.provider_configs if g.provider in routes.providers and g.allows(model)]
        if not grants:
            if vk.allow_all_providers:
                return routes.resolve(model, default, param)
            raise ModelBlocked(f"virtual key '{vk.name}' has no provider that may serve model {model!r}", param=param, code="model_blocked")
        total = sum(g.weight for g in grants)
        point = self._random() * total if total > 0 else 0.0
        choice = grants[-1]
        for g in grants:
            point -= g.weight
            if point < 0:
                choice = g
                break
        return Target(routes.providers[choice.provider], model)

    def allowed_keys(self, vk: VirtualKey | None) -> dict[str, frozenset[str]] | None:
        if vk is None:
            return None
        limited = {g.provider: frozenset(g.key_ids) for g in vk.provider_configs if g.key_ids is not None}
        return limited or None

    # -- may it pass -------------------------------------------------------------------------

    def admit(self, vk: VirtualKey, target: Target, prompt_tokens: int, max_tokens: int, now_ms: int) -> Admission:
        estimate = prompt_tokens + max_tokens
        price = self.pricing.price(target.provider.name, target.model)
        cost = (prompt_tokens * price.input_per_token + max_tokens * price.output_per_token) if price else 0.0
        needs: list[Need] = []
        kinds: list[str] = []
        meta: list[tuple[str, Owner, object, Window]] = []
        windows = self.windows
        for kind, owner in self.state.levels(vk):
            rl = owner.rate_limit
            if rl is not None:
                if rl.request_max_limit is not None and rl.request_reset_duration:
                    w = windows.get(rl.request_reset_duration, True, 0, now_ms)
                    needs.append(Need(Key(kind, owner.id, "requests", w.start_ms), 1, rl.request_max_limit))
                    kinds.append("requests")
                    meta.append((kind, owner, rl, w))
                if rl.token_max_limit is not None and rl.token_reset_duration:
                    w = windows.get(rl.token_reset_duration, True, 0, now_ms)
                    needs.append(Need(Key(kind, owner.id, "tokens", w.start_ms), estimate, rl.token_max_limit))
                    kinds.append("tokens")
                    meta.append((kind, owner, rl, w))
            for budget in owner.budgets:
                w = windows.get(budget.reset_duration, budget.calendar_aligned, budget.created_at, now_ms)
                needs.append(Need(Key("budget", budget.id, "spend", w.start_ms), cost, budget.max_limit, strict=False))
                kinds.append("spend")
                meta.append((kind, owner, budget, w))
        result = self.counters.reserve(needs)
        if isinstance(result, int):
            raise self._denied(needs[result], kinds[result], meta[result], now_ms)
        return Admission(vk, result, kinds, self._headers(needs, kinds, meta, now_ms))

    def _denied(self, need: Need, kind: str, meta: tuple, now_ms: int) -> GatewayError:
        level, owner, limit, w = meta
        who = f"{LABELS[level]} '{owner.name}'"
        reset_ms = w.end_ms - now_ms
        retry = [(b"retry-after", str(max(1, math.ceil(reset_ms / 1000))).encode())]
        used = self.counters.value(need.key) + self.counters.reserved(need.key)
        if kind == "spend":
            assert isinstance(limit, Budget)
            return BudgetExceeded(
                f"budget of ${limit.max_limit:g} per {limit.reset_duration} exhausted for {who} "
                f"(spent ${used:.6g}); it resets at {_iso(w.end_ms)}",
                code="budget_exceeded",
            )
        if kind == "requests":
            return RequestLimited(
                f"request limit of {need.limit:g} per {limit.request_reset_duration} reached for {who}; "
                f"it resets in {human_reset(reset_ms)}",
                code="request_limited", headers=retry + _limit_headers(b"requests", need.limit, need.limit - used, reset_ms),
            )
        return TokenLimited(
            f"token limit of {need.limit:g} per {limit.token_reset_duration} reached for {who} "
            f"({used:g} used or reserved, this request may use up to {need.amount:g}); it resets in {human_reset(reset_ms)}",
            code="token_limited", headers=retry + _limit_headers(b"tokens", need.limit, need.limit - used, reset_ms),
        )

    def _headers(self, needs: list[Need], kinds: list[str], meta: list[tuple], now_ms: int) -> list[tuple[bytes, bytes]]:
        out: list[tuple[bytes, bytes]] = []
        for metric in ("requests", "tokens"):
            tightest = None
            for need, kind, m in zip(needs, kinds, meta, strict=True):
                if kind != metric:
                    continue
                left = need.limit - self.counters.value(need.key) - self.counters.reserved(need.key)
                if tightest is None or left < tightest[1]:
                    tightest = (need.limit, left, m[3].end_ms - now_ms)
            if tightest is not None:
                out += _limit_headers(metric.encode(), *tightest)
        return out

    # -- what it used ------------------------------------------------------------------------

    def settle(self, admission: Admission, provider: str | None, model: str | None, prompt: int, completion: int) -> float:
        cost = self.pricing.cost(provider, model, prompt, completion) if provider and model else 0.0
        tokens = prompt + completion
        actual = [1.0 if k == "requests" else float(tokens) if k == "tokens" else cost for k in admission.kinds]
        self.counters.settle(admission.reservation, actual)
        return cost

    def usage(self, vk: VirtualKey, now_ms: int) -> list[dict]:
        """Usage, limits and reset times of a key and every level above it."""
        return [self.usage_level(kind, owner, now_ms) for kind, owner in self.state.levels(vk)]

    def usage_level(self, kind: str, owner: Owner, now_ms: int) -> dict:
        entry: dict = {"level": LABELS[kind], "id": owner.id, "name": owner.name, "budgets": [], "rate_limit": None}
        for b in owner.budgets:
            w = self.windows.get(b.reset_duration, b.calendar_aligned, b.created_at, now_ms)
            key = Key("budget", b.id, "spend", w.start_ms)
            entry["budgets"].append({
                "id": b.id, "max_limit": b.max_limit, "reset_duration": b.reset_duration,
                "calendar_aligned": b.calendar_aligned, "current_usage": self.counters.value(key),
                "reserved": self.counters.reserved(key), "last_reset": _iso(w.start_ms), "resets_at": _iso(w.end_ms),
            })
        rl = owner.rate_limit
        if rl is not None:
            rate: dict = {}
            for metric, limit, duration in (("request", rl.request_max_limit, rl.request_reset_duration),
                                            ("token", rl.token_max_limit, rl.token_reset_duration)):
                if limit is None or not duration:
                    continue
                w = self.windows.get(duration, True, 0, now_ms)
                key = Key(kind, owner.id, metric + "s", w.start_ms)
                rate[metric] = {"max_limit": limit, "reset_duration": duration, "current_usage": self.counters.value(key),
                                "reserved": self.counters.reserved(key), "last_reset": _iso(w.start_ms), "resets_at": _iso(w.end_ms)}
            entry["rate_limit"] = rate
        return entry


def _limit_headers(metric: bytes, limit: float, remaining: float, reset_ms: int) -> list[tuple[bytes, bytes]]:
    return [
        (b"x-ratelimit-limit-" + metric, b"%d" % int(limit)),
        (b"x-ratelimit-remaining-" + metric, b"%d" % max(0, int(remaining))),
        (b"x-ratelimit-reset-" + metric, human_reset(reset_ms).encode()),
    ]


def _iso(ms: int) -> str:
    return datetime.datetime.fromtimestamp(ms / 1000, datetime.UTC).isoformat().replace("+00:00", "Z")
