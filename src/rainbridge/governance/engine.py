"""Governance on the request path: which virtual key, may it pass, and what it used.

``identify`` finds the key; ``targets`` applies its provider grants to routing; ``admit``
checks every budget and limit of the key, its team and its customer at once and reserves
what the request may use (all or nothing, without an ``await``), with the limits of its
target (the key's per-provider limits, model limits); when the router falls back, ``leave``
and ``enter`` move that target's part to the fallback; ``settle`` replaces the reservation
with the real tokens and cost once the answer is complete. Compiling a key's limits is in
``plan.py``, the x-ratelimit-* headers in ``ratelimit_headers.py``, usage reports in
``usage.py``.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Iterable

from ..counters.base import Counters, Slot
from ..counters.windows import human_reset
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
from .model import (
    Customer,
    ModelLimit,
    Owner,
    ProviderGrant,
    Team,
    VirtualKey,
    hash_value,
)
from .plan import TARGET_LEVELS, Check, Plan, owner_checks, plan_key
from .pricing import Price, Pricing
from .ratelimit_headers import head_lines, limit_headers
from .usage import LABELS, WindowCache, iso, key_usage, level_usage


class GovernanceState:
    """An immutable snapshot of every key, team and customer; replaced whole on change."""

    def __init__(self, customers: Iterable[Customer] = (), teams: Iterable[Team] = (), vks: Iterable[VirtualKey] = ()):
        self.customers = {c.id: c for c in customers}
        self.teams = {t.id: t for t in teams}
        self.vks = {v.id: v for v in vks}
        self.by_hash = {v.value_hash: v for v in self.vks.values()}
        self.by_value: dict[str, VirtualKey] = {}
        self.plans: dict[str, Plan] = {}

    def plan(self, vk: VirtualKey | None, grant: ProviderGrant | None = None,
             models: tuple[ModelLimit, ...] = (), key: str | None = None) -> Plan:
        """Every limit of the key, its team and its customer, compiled once; with ``grant``
        (a provider grant with limits of its own) that grant's limits too, in a plan of their
        own for requests to that provider (``plan_key``); with ``models``, the model limits
        the request's target matches (``key`` then names the combination)."""
        if key is None:
            assert vk is not None
            key = vk.id if grant is None else plan_key(vk, grant.provider)
        hit = self.plans.get(key)
        if hit is None:
            checks: list[Check] = []
            if vk is not None:
                for level, owner in self.levels(vk):
                    owner_checks(checks, level, owner, level, owner.id, owner.rate_limit, owner.budgets)
            if grant is not None and vk is not None:
                owner_checks(checks, "provider", vk, "provider", f"{vk.id}:{grant.provider}", grant.rate_limit,
                              grant.budgets, grant.provider)
            for m in models:
                owner_checks(checks, "model", m, "model", m.id, None, m.budgets)
                for rl in m.rate_limits:
                    owner_checks(checks, "model", m, "model", m.id, rl, [])
            if len(self.plans) > 100_000:
                self.plans.clear()
            hit = self.plans[key] = Plan(checks)
        return hit

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


# What one admitted request holds until it is settled: a plain tuple, made on every governed
# request (a NamedTuple's construction measured 1.7 µs against 0.2 µs for a tuple here):
#   0 held: its target's request limits, one request held on each
#   1 tokens: token limits, ``estimate`` reserved on each
#   2 spend: budgets, charged at settlement, ``cost`` reserved on each
#   3 estimate, 4 cost: the worst-case cost reserved on each budget (cluster mode), else 0
#   5 plan: the plan of its target (its price cache)
#   6 lines: the x-ratelimit-* header lines of the answer (see ``server.http.HEAD_LINES``)
#   7 own: how many of tokens, spend are the key's own (the rest: its target's)
Admission = tuple[list[tuple[Slot, float]], list[tuple[Slot, float]], list[tuple[Slot, float]], int, float, Plan,
                  bytes, tuple[int, int]]
LINES = 6  # Admission's header lines


def needs_usage(admission: Admission) -> bool:
    """Whether settling needs the request's token counts (a token limit or a budget)."""
    return bool(admission[1] or admission[2])


class Governance:
    def __init__(self, counters: Counters, pricing: Pricing, mandatory: bool, rng: random.Random | None = None):
        self.counters = counters
        self.shared = counters.shared  # cluster mode: limits are the fleet's (see _fleet)
        self._model_limits: tuple[ModelLimit, ...] = ()
        self._model_matches: dict[tuple[str, str, str], tuple[ModelLimit, ...]] = {}
        self.pricing = pricing
        self.mandatory = mandatory
        self.state = GovernanceState()
        self.windows = WindowCache()  # for usage reports; admission keeps windows on its checks
        self._random = (rng or random.Random()).random

    @property
    def model_limits(self) -> tuple[ModelLimit, ...]:
        """governance.model_configs: from the file, or the config store (with the API's)."""
        return self._model_limits

    @model_limits.setter
    def model_limits(self, limits: tuple[ModelLimit, ...]) -> None:
        self._model_limits = limits
        self._model_matches = {}  # (plans are per state: replaced with it on every reload)

    # -- who ---------------------------------------------------------------------------------

    def identify(self, value: str | None, now_ms: int) -> VirtualKey | None:
        if value is None:
            if self.mandatory:
                raise VirtualKeyRequired(
                    "a virtual key is required: send it as Authorization: Bearer sk-rb-..., x-api-key or x-bf-vk",
                    code="virtual_key_required",
                )
            return None
        state = self.state
        vk = state.by_value.get(value)
        if vk is None:
            vk = state.by_hash.get(hash_value(value))
            if vk is not None and len(state.by_value) < 10_000:
                state.by_value[value] = vk  # skips the hash next time (memory only, never stored)
        if vk is None:
            raise VirtualKeyNotFound("virtual key not found", code="virtual_key_not_found")
        if not vk.is_active:
            raise VirtualKeyBlocked(f"virtual key '{vk.name}' is inactive", code="virtual_key_inactive")
        if vk.expires_at is not None and now_ms >= vk.expires_at:
            raise VirtualKeyBlocked(f"virtual key '{vk.name}' expired at {iso(vk.expires_at)}", code="virtual_key_expired")
        return vk

    # -- where -------------------------------------------------------------------------------

    def targets(self, vk: VirtualKey | None, model: object, fallbacks: object, default: str, routes: Routes,
                now_ms: int = 0) -> list[Target]:
        """Routing under a key's provider grants: only allowed providers and models; a bare
        model picks among the grants that allow it, by weight, leaving out those whose own
        limits are spent (as Bifrost; unless all are). Blocked fallbacks are dropped."""
        if vk is None or (vk.allow_all_providers and not vk.provider_configs):
            return routes.targets(model, fallbacks, default)
        out = [self._granted(vk, model_field(model), routes, default, "model", now_ms)]
        for i, fb in enumerate(fallback_list(fallbacks)):
            try:
                out.append(self._granted(vk, fb, routes, default, f"fallbacks[{i}]", now_ms))
            except (ProviderBlocked, ModelBlocked):
                continue
        return out

    def _granted(self, vk: VirtualKey, model: str, routes: Routes, default: str, param: str, now_ms: int = 0) -> Target:
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
        if len(grants) > 1 and any(g.limited for g in grants):
            now_ms = now_ms or int(time.time() * 1000)
            grants = [g for g in grants if not (g.limited and self._spent(vk, g, now_ms))] or grants
        total = sum(g.weight for g in grants)
        point = self._random() * total if total > 0 else 0.0
        choice = grants[-1]
        for g in grants:
            point -= g.weight
            if point < 0:
                choice = g
                break
        return Target(routes.providers[choice.provider], model)

    def _spent(self, vk: VirtualKey, grant: ProviderGrant, now_ms: int) -> bool:
        """Whether one of the grant's own limits has no room for another request (a peek:
        nothing is reserved; admission decides)."""
        state = self.state
        plan = state.plans.get(plan_key(vk, grant.provider)) or state.plan(vk, grant)
        if not (plan.valid_from <= now_ms < plan.valid_until):
            plan.refresh(now_ms, self.counters)
        for c in plan.checks:
            s = c.slot
            if c.level != "provider" or s is None:
                continue
            used = s.committed + (s.reserved + 1 if c.metric == "requests" else s.reserved if c.metric == "tokens" else 0)
            if used > c.limit or (c.metric != "requests" and used >= c.limit):
                return True
        return False

    def capacity(self, vk: VirtualKey | None, target: Target, now_ms: int) -> tuple[float, float, float]:
        """Routing rules' budget_used, tokens_used, request: the highest use, in percent of
        the limit, of the target's own limits (the key's grant on its provider, the model
        limits it matches), reservations of requests in flight included; 0 without limits."""
        plan = self.plan_for(vk, target)
        if plan is None:
            return 0.0, 0.0, 0.0
        if not (plan.valid_from <= now_ms < plan.valid_until):
            plan.refresh(now_ms, self.counters)
        used = {"spend": 0.0, "tokens": 0.0, "requests": 0.0}
        for c in plan.checks:
            s = c.slot
            if c.level in TARGET_LEVELS and s is not None and c.limit > 0:
                used[c.metric] = max(used[c.metric], (s.committed + s.reserved) * 100.0 / c.limit)
        return used["spend"], used["tokens"], used["requests"]

    def allowed_keys(self, vk: VirtualKey | None) -> dict[str, frozenset[str]] | None:
        """Provider -> key ids/names the key may use (its grants' ``key_ids``); None: any."""
        if vk is None or not vk.provider_configs:
            return None
        limited = {g.provider: frozenset(g.key_ids) for g in vk.provider_configs if g.key_ids is not None}
        return limited or None

    def limit_for(self, lid: str) -> tuple[int, str, bool, int] | None:
        """``(units, duration, aligned, anchor)`` of a fleet limit id (``Check.lid``) in the
        current state (budgets in micro-USD), for a member that hears of it from another
        before any of its own requests used it."""
        scope, _, rest = lid.partition("/")
        owner_id, _, rest = rest.partition("/")
        metric, _, duration = rest.partition("/")
        state = self.state
        if scope == "budget":
            grants = [g for vk in state.vks.values() for g in vk.provider_configs]
            for owner in (*state.vks.values(), *state.teams.values(), *state.customers.values(), *grants, *self.model_limits):
                for b in owner.budgets:
                    if b.id == owner_id and b.reset_duration == duration:
                        return int(b.max_limit * 1_000_000), duration, b.calendar_aligned, b.created_at
            return None
        if scope == "model":  # a model limit's windows
            for m in self.model_limits:
                if m.id == owner_id:
                    for rl in m.rate_limits:
                        if metric == "requests" and rl.request_max_limit is not None and rl.request_reset_duration == duration:
                            return int(rl.request_max_limit), duration, True, 0
                        if metric == "tokens" and rl.token_max_limit is not None and rl.token_reset_duration == duration:
                            return int(rl.token_max_limit), duration, True, 0
            return None
        if scope == "provider":  # a key's rate limit on one provider: "<vk id>:<provider>"
            vk_id, _, provider = owner_id.rpartition(":")
            vk = state.vks.get(vk_id)
            grant = vk.grant(provider) if vk is not None else None
            rl = grant.rate_limit if grant is not None else None
        else:
            owners: dict = {"vk": state.vks, "team": state.teams, "customer": state.customers}.get(scope, {})
            owner = owners.get(owner_id)
            rl = owner.rate_limit if owner is not None else None
        if rl is None:
            return None
        if metric == "requests" and rl.request_max_limit is not None and rl.request_reset_duration == duration:
            return int(rl.request_max_limit), duration, True, 0
        if metric == "tokens" and rl.token_max_limit is not None and rl.token_reset_duration == duration:
            return int(rl.token_max_limit), duration, True, 0
        return None

    # -- may it pass -------------------------------------------------------------------------

    def matching_models(self, vk: VirtualKey | None, target: Target | None) -> tuple[ModelLimit, ...]:
        """The model limits a request to ``target`` counts against (cached per combination)."""
        if not self.model_limits or target is None:
            return ()
        key = (target.provider.name, target.model, vk.id if vk is not None else "")
        hit = self._model_matches.get(key)
        if hit is None:
            if len(self._model_matches) > 10_000:
                self._model_matches.clear()
            hit = self._model_matches[key] = tuple(m for m in self.model_limits if m.matches(*key[:2], vk.id if vk else None))
        return hit

    def plan_for(self, vk: VirtualKey | None, target: Target | None) -> Plan | None:
        """The plan of a request to ``target``: the key's own limits, its grant's for that
        provider, the model limits the target matches; None: nothing to count."""
        state = self.state
        grant = vk.limited_grant(target.provider.name) if vk is not None and target is not None and vk.provider_configs else None
        models = self.matching_models(vk, target) if self.model_limits else ()
        if models:  # model limits (governance.model_configs) apply: a plan per combination
            key = f"{vk.id if vk else ''}\x00{grant.provider if grant else ''}\x00" + "\x00".join(m.id for m in models)
            return state.plans.get(key) or state.plan(vk, grant, models, key)
        if vk is None:
            return None  # no key and no model limit: nothing to count
        if grant is None:
            return state.plans.get(vk.id) or state.plan(vk)
        # the target's provider has limits of its own for this key
        return state.plans.get(plan_key(vk, grant.provider)) or state.plan(vk, grant)

    def admit(self, vk: VirtualKey | None, prompt_tokens: int, max_tokens: int, now_ms: int,
              target: Target | None = None) -> Admission | None:
        """Check every limit of the key, its team and its customer, and those of ``target``
        (where the request goes first), and reserve, all or nothing. In cluster mode budgets
        reserve the worst-case cost (the prompt estimate and ``max_tokens`` at the target
        model's price)."""
        if vk is not None and not vk.provider_configs and not self._model_limits:  # the usual: the key's own
            plan = self.state.plans.get(vk.id) or self.state.plan(vk)
        else:
            plan = self.plan_for(vk, target)  # type: ignore[assignment]
            if plan is None:
                return None
        if not (plan.valid_from <= now_ms < plan.valid_until):
            plan.refresh(now_ms, self.counters)
        requests, held, tokens, spend = plan.requests, plan.held, plan.tokens, plan.spend
        estimate = prompt_tokens + max_tokens  # counts stay ints: cheap to format in the headers
        for s, limit in requests:  # (the key's requests are never reserved: counted at once)
            if s.committed + 1 > limit:
                raise self._denied(plan, estimate, now_ms)
        self._check(plan, held, tokens, spend, estimate, now_ms)
        cost = 0.0
        if self.shared:
            cost = self._worst_cost(plan, prompt_tokens, max_tokens, target)
            self._fleet(plan, requests, held, tokens, spend, estimate, cost, now_ms)
        for s, _ in requests:
            s.committed += 1
        for s, _ in held:
            s.reserved += 1
        for s, _ in tokens:
            s.reserved += estimate
        if cost:
            for s, _ in spend:
                s.reserved += cost
        pair = plan.pair
        if pair is not None:  # one request limit and one token limit: only the counts change
            template, rs, rl, ts, tl = pair
            left_r = rl - rs.committed - rs.reserved
            left_t = tl - ts.committed - ts.reserved
            lines = template % (left_r if left_r > 0 else 0, left_t if left_t > 0 else 0)
        else:
            lines = head_lines(plan) if plan.header_groups else b""
        return held, tokens, spend, estimate, cost, plan, lines, plan.own

    def _check(self, plan: Plan, held: list[tuple[Slot, float]], tokens: list[tuple[Slot, float]],
               spend: list[tuple[Slot, float]], estimate: int, now_ms: int,
               levels: frozenset[str] | None = None) -> None:
        """Raise the refusal of the first of these limits without room: one more held
        request, ``estimate`` more tokens, any budget left (a request's cost is known only
        after it). ``levels``: the refusal is one of a limit of those levels (``_denied``)."""
        for s, limit in held:
            if s.committed + s.reserved + 1 > limit:
                raise self._denied(plan, estimate, now_ms, levels)
        for s, limit in tokens:
            if s.committed + s.reserved + estimate > limit:
                raise self._denied(plan, estimate, now_ms, levels)
        for s, limit in spend:
            if s.committed >= limit:
                raise self._denied(plan, estimate, now_ms, levels)

    @staticmethod
    def _lines(plan: Plan) -> bytes:
        pair = plan.pair
        if pair is not None:  # one request limit and one token limit: only the counts change
            template, rs, rl, ts, tl = pair
            left_r = rl - rs.committed - rs.reserved
            left_t = tl - ts.committed - ts.reserved
            return template % (left_r if left_r > 0 else 0, left_t if left_t > 0 else 0)
        return head_lines(plan) if plan.header_groups else b""

    def admit_route(self, vk: VirtualKey | None, prompt_tokens: int, max_tokens: int, now_ms: int,
                    targets: list[Target]) -> tuple[Admission | None, list[Target]]:
        """``admit`` for the first target whose own limits (its provider grant's, its model
        limits) have room, and the targets from that one on: as Bifrost, whose governance
        hook runs again for each fallback, a target over its own limit is skipped. A limit
        of the key, its team or its customer refuses at once; all skipped: the first
        target's refusal."""
        first: GatewayError | None = None
        for i, target in enumerate(targets):
            try:
                admission = self.admit(vk, prompt_tokens, max_tokens, now_ms, target)
            except GatewayError as exc:
                if not getattr(exc, "target_limit", False) or i + 1 == len(targets):
                    raise (first or exc) from None
                first = first or exc
                continue
            return admission, targets[i:] if i else targets
        raise AssertionError("no targets")  # pragma: no cover

    def leave(self, admission: Admission) -> Admission:
        """The request leaves the target it was admitted for (it failed there, the router
        falls back): that target is charged nothing, neither a request nor tokens nor cost
        (Bifrost counts a provider's and a model's usage on the attempt that served it, and a
        request only on success). What stays: the key's own part."""
        held, tokens, spend, estimate, cost, plan, lines, (own_tokens, own_spend) = admission
        for s, _ in held:
            s.reserved -= 1
        for s, _ in tokens[own_tokens:]:
            s.reserved -= estimate
        if cost:
            for s, _ in spend[own_spend:]:
                s.reserved -= cost
        return [], tokens[:own_tokens], spend[:own_spend], estimate, cost, plan, lines, (own_tokens, own_spend)

    def enter(self, admission: Admission | None, vk: VirtualKey | None, prompt_tokens: int, max_tokens: int,
              now_ms: int, target: Target) -> Admission | None:
        """A fallback to ``target`` after ``leave``: check and hold its own limits (its
        provider grant's, its model limits); the key's own stay as admitted. Raises the
        refusal of a limit of ``target``'s without room (the router skips the target)."""
        if admission is None:  # no key, and the earlier targets matched no model limit
            return self.admit(vk, prompt_tokens, max_tokens, now_ms, target)
        plan = self.plan_for(vk, target)
        if plan is None:  # (only without a key: its own part is then empty)
            return None
        if not (plan.valid_from <= now_ms < plan.valid_until):
            plan.refresh(now_ms, self.counters)
        _, base_tokens, base_spend, estimate, cost, _, _, _ = admission
        own_tokens, own_spend = plan.own
        held, tokens, spend = plan.held, plan.tokens[own_tokens:], plan.spend[own_spend:]
        self._check(plan, held, tokens, spend, estimate, now_ms, TARGET_LEVELS)
        if self.shared:  # (budgets hold the first target's worst-case cost: an estimate)
            self._fleet(plan, [], held, tokens, spend, estimate, cost, now_ms)
        for s, _ in held:
            s.reserved += 1
        for s, _ in tokens:
            s.reserved += estimate
        if cost:
            for s, _ in spend:
                s.reserved += cost
        return (held, base_tokens + tokens, base_spend + spend, estimate, cost, plan, self._lines(plan),
                (len(base_tokens), len(base_spend)))

    def _price(self, plan: Plan, provider: str | None, model: str | None) -> Price | None:
        """The model's price, cached on the plan (the same model, request after request)."""
        if model != plan.priced_model or provider != plan.priced_provider:
            plan.price = self.pricing.price(provider, model) if provider and model else None
            plan.priced_provider, plan.priced_model = provider, model
        return plan.price

    def _worst_cost(self, plan: Plan, prompt_tokens: int, max_tokens: int, target: Target | None) -> float:
        """What budgets reserve in cluster mode: the prompt estimate and ``max_tokens`` at
        the target model's price."""
        if plan.spend and target is not None:
            price = self._price(plan, target.provider.name, target.model)
            if price is not None:
                return prompt_tokens * price.input_per_token + max_tokens * price.output_per_token
        return 0.0

    def _fleet(self, plan: Plan, requests: list[tuple[Slot, float]], held: list[tuple[Slot, float]],
               tokens: list[tuple[Slot, float]], spend: list[tuple[Slot, float]], estimate: int, cost: float,
               now_ms: int) -> None:
        """Cluster mode, after the limits' own checks: each limit past its fleet allowance's
        low-water mark (``Slot.low``) asks the fleet (``Counters.reach``: raises the denial
        of a limit the fleet refused, or ``fleet.AwaitGrant``)."""
        reach = self.counters.reach
        for s, _ in requests:
            if s.committed + 1 > s.low and not reach(s, 1):
                raise self._fleet_denial(plan, s, 1, now_ms)
        for s, _ in held:
            if s.committed + s.reserved + 1 > s.low and not reach(s, 1):
                raise self._fleet_denial(plan, s, 1, now_ms)
        for s, _ in tokens:
            if s.committed + s.reserved + estimate > s.low and not reach(s, estimate):
                raise self._fleet_denial(plan, s, estimate, now_ms)
        for s, _ in spend:
            if s.committed + s.reserved + cost > s.low and not reach(s, cost):
                raise self._fleet_denial(plan, s, cost, now_ms)

    def _fleet_denial(self, plan: Plan, slot: Slot, amount: float, now_ms: int) -> GatewayError:
        check = next(c for c in plan.checks if c.slot is slot)
        used = slot.committed if check.metric == "spend" else max(slot.committed + slot.reserved, check.limit)
        return self._denial(check, used, amount, now_ms)

    def _denied(self, plan: Plan, estimate: float, now_ms: int, levels: frozenset[str] | None = None) -> GatewayError:
        """The error for the first check the request does not pass (the slow path); with
        ``levels``, among the checks of those levels only."""
        if self.shared:
            self.counters.refused()
        for check in plan.checks:
            assert check.slot is not None
            if levels is not None and check.level not in levels:
                continue
            used = check.slot.committed + check.slot.reserved
            if check.metric == "requests":
                failed = used + 1.0 > check.limit
            elif check.metric == "tokens":
                failed = used + estimate > check.limit
            else:
                failed = used >= check.limit
            if failed:
                return self._denial(check, used, estimate, now_ms)
        raise AssertionError("admission failed but no check did")  # pragma: no cover

    def _denial(self, check: Check, used: float, amount: float, now_ms: int) -> GatewayError:
        """The refusal; ``target_limit`` on it says a limit of the target refused (a
        fallback may still pass), not one of the key, its team or its customer."""
        who = f"{LABELS[check.level]} '{check.owner.name}'"
        if check.provider is not None:
            who += f" on provider '{check.provider}'"
        w = check.current(now_ms)
        reset_ms = w.end_ms - now_ms
        retry = [(b"retry-after", str(max(1, math.ceil(reset_ms / 1000))).encode())]
        err: GatewayError
        if check.metric == "spend":
            err = BudgetExceeded(
                f"budget of ${check.limit:g} per {check.duration} exhausted for {who} "
                f"(spent ${used:.6g}); it resets at {iso(w.end_ms)}",
                code="budget_exceeded",
            )
        elif check.metric == "requests":
            err = RequestLimited(
                f"request limit of {check.limit:g} per {check.duration} reached for {who}; "
                f"it resets in {human_reset(reset_ms)}",
                code="request_limited", headers=retry + limit_headers("requests", check.limit, check.limit - used, reset_ms),
            )
        else:
            err = TokenLimited(
                f"token limit of {check.limit:g} per {check.duration} reached for {who} "
                f"({used:g} used or reserved, this request may use up to {amount:g}); it resets in {human_reset(reset_ms)}",
                code="token_limited", headers=retry + limit_headers("tokens", check.limit, check.limit - used, reset_ms),
            )
        err.target_limit = check.level in TARGET_LEVELS  # type: ignore[attr-defined]
        return err

    # -- what it used ------------------------------------------------------------------------

    def settle(self, admission: Admission, provider: str | None, model: str | None, prompt: int, completion: int,
               answered: bool = True) -> float:
        """Replace the reservations by what the request used and return its cost; the caller
        settles each admission once (a retried or fallen-back request is one admission:
        charged once, to the target it was last admitted for: ``enter``). ``answered``:
        the target's request limits count the request (Bifrost counts requests on success)."""
        held, tokens, spend, estimate, reserved_cost, plan, _, _ = admission
        if held:
            done = 1 if answered else 0
            for s, _ in held:
                s.reserved -= 1
                s.committed += done
        used = prompt + completion
        for s, _ in tokens:
            s.reserved -= estimate
            s.committed += used
        price = plan.price if model == plan.priced_model and provider == plan.priced_provider else self._price(plan, provider, model)
        if price is None:
            cost = 0.0
        else:
            cost = prompt * price.input_per_token + completion * price.output_per_token
            for s, _ in spend:
                s.committed += cost
        if reserved_cost:
            for s, _ in spend:
                s.reserved -= reserved_cost
        return cost

    def usage(self, vk: VirtualKey, now_ms: int) -> list[dict]:
        """Usage, limits and reset times of a key and every level above it (usage.py)."""
        return key_usage(self, vk, now_ms)

    def usage_level(self, kind: str, owner: Owner, now_ms: int) -> dict:
        return level_usage(self, kind, owner, now_ms)
