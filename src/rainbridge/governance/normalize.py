"""The ``governance`` block of config.json (Bifrost's shape) → normalized model objects.

Budgets and rate limits may be inline (``budget``, ``budgets``, ``rate_limit``) or refer to
``governance.budgets`` / ``governance.rate_limits`` by id (``budget_id``, ``budget_ids``,
``rate_limit_id``). Every problem is reported with its JSON path.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from dataclasses import dataclass, field

from ..config.schema import (
    BudgetConfig,
    GovernanceConfig,
    OwnerLimits,
    ProviderGrantConfig,
    RateLimitConfig,
)
from ..config.validate import Problem, child
from ..counters.windows import parse_duration
from .model import (
    Budget,
    Customer,
    ModelLimit,
    ProviderGrant,
    RateLimit,
    Team,
    VirtualKey,
    hash_value,
    hint,
)


@dataclass
class Normalized:
    customers: list[Customer] = field(default_factory=list)
    teams: list[Team] = field(default_factory=list)
    virtual_keys: list[VirtualKey] = field(default_factory=list)
    model_limits: list[ModelLimit] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


def check_duration(value: str | None, path: str, out: list[Problem]) -> None:
    if value is None:
        return
    try:
        parse_duration(value)
    except ValueError as exc:
        out.append(Problem(path, str(exc)))


def budget_from(config: BudgetConfig, budget_id: str, path: str, out: list[Problem], created_at: int) -> Budget:
    check_duration(config.reset_duration, f"{path}.reset_duration", out)
    return Budget(
        id=budget_id, max_limit=config.max_limit, reset_duration=config.reset_duration,
        calendar_aligned=config.calendar_aligned, created_at=created_at,
    )


def rate_limit_from(config: RateLimitConfig, path: str, out: list[Problem]) -> RateLimit:
    for kind in ("request", "token"):
        limit = getattr(config, f"{kind}_max_limit")
        duration = getattr(config, f"{kind}_reset_duration")
        check_duration(duration, f"{path}.{kind}_reset_duration", out)
        if limit is not None and duration is None:
            out.append(Problem(f"{path}.{kind}_reset_duration", f"required with {kind}_max_limit"))
    return RateLimit(
        request_max_limit=config.request_max_limit, request_reset_duration=config.request_reset_duration,
        token_max_limit=config.token_max_limit, token_reset_duration=config.token_reset_duration,
    )


def parse_time(value: str | int | None, path: str, out: list[Problem]) -> int | None:
    if value is None:
        return None
    if isinstance(value, int):
        return value
    try:
        parsed = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        out.append(Problem(path, f"not an RFC 3339 time: {value!r}"))
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.UTC)
    return int(parsed.timestamp() * 1000)


OWNER_FIELDS = {"customer": "customer_id", "team": "team_id", "vk": "virtual_key_id"}


def _limits(owner: OwnerLimits, owner_id: str, path: str, gov: GovernanceConfig, created_at: int, out: list[Problem],
            kind: str = "") -> tuple[list[Budget], RateLimit | None]:
    shared_budgets = {b.id: b for b in gov.budgets if b.id}
    shared_limits = {r.id: r for r in gov.rate_limits if r.id}
    budgets = []
    owner_field = OWNER_FIELDS.get(kind)
    for i, b in enumerate(gov.budgets):  # budgets that name their owner (Bifrost's other form)
        if owner_field and getattr(b, owner_field) == owner_id:
            where = f"$.governance.budgets[{i}]"
            budgets.append(budget_from(b, f"{owner_id}:{b.id or f'owned{i}'}", where, out, created_at))
    refs = ([owner.budget_id] if owner.budget_id else []) + list(owner.budget_ids)
    for i, ref in enumerate(refs):
        where = f"{path}.budget_id" if owner.budget_id and i == 0 else child(f"{path}.budget_ids", i - (1 if owner.budget_id else 0))
        if ref not in shared_budgets:
            out.append(Problem(where, f"no budget with id {ref!r} in governance.budgets"))
            continue
        budgets.append(budget_from(shared_budgets[ref], f"{owner_id}:{ref}", where, out, created_at))
    inline = ([owner.budget] if owner.budget else []) + list(owner.budgets)
    for i, config in enumerate(inline):
        where = f"{path}.budget" if owner.budget and i == 0 else child(f"{path}.budgets", i - (1 if owner.budget else 0))
        budgets.append(budget_from(config, f"{owner_id}:{config.id or f'b{i}'}", where, out, created_at))
    rate_limit = None
    if owner.rate_limit_id:
        shared = shared_limits.get(owner.rate_limit_id)
        if shared is None:
            out.append(Problem(f"{path}.rate_limit_id", f"no rate limit with id {owner.rate_limit_id!r} in governance.rate_limits"))
        else:
            rate_limit = rate_limit_from(shared, f"{path}.rate_limit_id", out)
    if owner.rate_limit is not None:
        rate_limit = rate_limit_from(owner.rate_limit, f"{path}.rate_limit", out)
    return budgets, rate_limit


def normalize(gov: GovernanceConfig, provider_names: set[str], created_at: int,
              value_for: Callable[[str, str], str] | None = None) -> Normalized:
    """``value_for(vk_id, path)``: the value of a virtual key the file lists without one
    (generated, see ``generated.py``); None when only checking the file."""
    n = Normalized()
    out = n.problems
    for i, b in enumerate(gov.budgets):
        check_duration(b.reset_duration, f"$.governance.budgets[{i}].reset_duration", out)
        if not b.id and not (b.virtual_key_id or b.team_id or b.customer_id):
            out.append(Problem(f"$.governance.budgets[{i}].id", "required: owners refer to shared budgets by id "
                               "(or the budget names its owner: virtual_key_id, team_id or customer_id)"))
    for i, r in enumerate(gov.rate_limits):
        rate_limit_from(r, f"$.governance.rate_limits[{i}]", out)
        if not r.id:
            out.append(Problem(f"$.governance.rate_limits[{i}].id", "required: owners refer to shared rate limits by id"))

    for i, b in enumerate(gov.budgets):
        named = [f for f in OWNER_FIELDS.values() if getattr(b, f)]
        if len(named) > 1:
            out.append(Problem(f"$.governance.budgets[{i}]", f"a budget has one owner: {' and '.join(named)} are both set"))

    names: dict[str, set[str]] = {"customers": set(), "teams": set(), "virtual_keys": set()}
    ids: dict[str, set[str]] = {"customers": set(), "teams": set(), "virtual_keys": set()}

    def unique(section: str, path: str, owner_id: str, name: str) -> None:
        if name in names[section]:
            out.append(Problem(f"{path}.name", f"duplicate name {name!r}"))
        if owner_id in ids[section]:
            out.append(Problem(f"{path}.id", f"duplicate id {owner_id!r}"))
        names[section].add(name)
        ids[section].add(owner_id)

    for i, c in enumerate(gov.customers):
        path = f"$.governance.customers[{i}]"
        cid = c.id or c.name
        unique("customers", path, cid, c.name)
        budgets, rate_limit = _limits(c, cid, path, gov, created_at, out, "customer")
        n.customers.append(Customer(id=cid, name=c.name, budgets=budgets, rate_limit=rate_limit, created_at=created_at, updated_at=created_at))
    for i, t in enumerate(gov.teams):
        path = f"$.governance.teams[{i}]"
        tid = t.id or t.name
        unique("teams", path, tid, t.name)
        if t.customer_id and t.customer_id not in ids["customers"]:
            out.append(Problem(f"{path}.customer_id", f"no customer with id {t.customer_id!r}"))
        budgets, rate_limit = _limits(t, tid, path, gov, created_at, out, "team")
        n.teams.append(Team(id=tid, name=t.name, customer_id=t.customer_id, budgets=budgets, rate_limit=rate_limit, created_at=created_at, updated_at=created_at))
    hashes: set[str] = set()
    for i, v in enumerate(gov.virtual_keys):
        path = f"$.governance.virtual_keys[{i}]"
        vid = v.id or v.name
        vname = v.name
        unique("virtual_keys", path, vid, vname)
        value = v.value or (value_for(vid, path) if value_for is not None else "")
        value_hash = hash_value(value) if value else ""
        if v.value and value_hash in hashes:
            out.append(Problem(f"{path}.value", "the same key value is used twice"))
        hashes.add(value_hash)
        if v.team_id and v.customer_id:
            out.append(Problem(path, "a virtual key belongs to a team or a customer, not both"))
        if v.team_id and v.team_id not in ids["teams"]:
            out.append(Problem(f"{path}.team_id", f"no team with id {v.team_id!r}"))
        if v.customer_id and v.customer_id not in ids["customers"]:
            out.append(Problem(f"{path}.customer_id", f"no customer with id {v.customer_id!r}"))
        grants = []
        for j, g in enumerate(v.provider_configs):
            if g.provider not in provider_names:
                out.append(Problem(f"{path}.provider_configs[{j}].provider", f"no provider {g.provider!r} in this file (fine if it exists in the config store)", "warning"))
            gpath = f"{path}.provider_configs[{j}]"
            # Per-provider limits: their counters are the grant's own (``vk:provider:budget``).
            pbudgets, prate = _limits(g, f"{vid}:{g.provider}", gpath, gov, created_at, out)
            if (pbudgets or prate) and any(x.provider == g.provider for x in v.provider_configs if x is not g):
                out.append(Problem(f"{gpath}.provider", f"provider {g.provider!r} is granted twice and this grant has "
                                   "limits: give the provider one grant (the other's limits would not apply)"))
            grants.append(ProviderGrant(provider=g.provider, weight=g.weight, allowed_models=g.allowed_models,
                                        key_ids=grant_key_ids(g, gpath, out), budgets=pbudgets, rate_limit=prate))
        budgets, rate_limit = _limits(v, vid, path, gov, created_at, out, "vk")
        allow_all = v.allow_all_providers if v.allow_all_providers is not None else not grants
        n.virtual_keys.append(VirtualKey(
            id=vid, name=vname, value_hash=value_hash, value_hint=hint(value), description=v.description,
            is_active=v.is_active, expires_at=parse_time(v.expires_at, f"{path}.expires_at", out),
            team_id=v.team_id, customer_id=v.customer_id, provider_configs=grants, allow_all_providers=allow_all,
            budgets=budgets, rate_limit=rate_limit, created_at=created_at, updated_at=created_at,
        ))
    n.model_limits = _model_limits(gov, ids["virtual_keys"], provider_names, out)
    owners = {"customer_id": ids["customers"], "team_id": ids["teams"], "virtual_key_id": ids["virtual_keys"]}
    for i, b in enumerate(gov.budgets):
        for owner_field, known in owners.items():
            ref = getattr(b, owner_field)
            if ref and ref not in known:
                out.append(Problem(f"$.governance.budgets[{i}].{owner_field}", f"no {owner_field[:-3].replace('_', ' ')} with id {ref!r}"))
    return n


def _model_limits(gov: GovernanceConfig, vk_ids: set[str], provider_names: set[str], out: list[Problem]) -> list[ModelLimit]:
    """``governance.model_configs``: each limit's budgets and rate limit windows, by id from
    governance.budgets / rate_limits or inline."""
    shared_limits = {r.id: r for r in gov.rate_limits if r.id}
    limits = []
    seen: set[str] = set()
    for i, mc in enumerate(gov.model_configs):
        path = f"$.governance.model_configs[{i}]"
        mid = mc.id or f"model-config-{i}"
        if mid in seen:
            out.append(Problem(f"{path}.id", f"duplicate id {mid!r}"))
        seen.add(mid)
        if mc.scope not in ("global", "virtual_key"):
            out.append(Problem(f"{path}.scope", f"unknown scope {mc.scope!r}: use global or virtual_key"))
        elif mc.scope == "virtual_key" and mc.scope_id not in vk_ids:
            out.append(Problem(f"{path}.scope_id", f"no virtual key with id {mc.scope_id!r}"))
        if mc.provider is not None and mc.provider not in provider_names:
            out.append(Problem(f"{path}.provider", f"no provider {mc.provider!r} in this file (fine if it exists in the config store)", "warning"))
        budgets, rate_limit = _limits(mc, f"model:{mid}", path, gov, 0, out)
        for b in budgets:
            b.calendar_aligned = b.calendar_aligned or mc.calendar_aligned
        windows = [rate_limit] if rate_limit is not None else []
        for j, ref in enumerate(mc.rate_limit_ids):
            shared = shared_limits.get(ref)
            if shared is None:
                out.append(Problem(child(f"{path}.rate_limit_ids", j), f"no rate limit with id {ref!r} in governance.rate_limits"))
            else:
                windows.append(rate_limit_from(shared, child(f"{path}.rate_limit_ids", j), out))
        if not budgets and not windows:
            out.append(Problem(path, "a model limit without budgets or rate limits limits nothing (ignored)", "warning"))
        limits.append(ModelLimit(id=mid, name=mid, model_name=mc.model_name, provider=mc.provider,
                                 vk_id=mc.scope_id if mc.scope == "virtual_key" else None, budgets=budgets, rate_limits=windows))
    return limits


def grant_key_ids(grant: ProviderGrantConfig, path: str, out: list[Problem]) -> list[str] | None:
    """The provider keys a grant allows: ``key_ids``, which already holds the Helm form
    ``keys: [{"name"}]`` (see ``ProviderGrantConfig``). None (absent, or ``"*"``) = every key
    of the provider; ``[]`` = none. An entry of ``keys`` that names no key is an error in the
    file (it narrows nothing, and was surely meant to)."""
    for k, ref in enumerate(grant.keys or ()):
        if not (ref.key_id or ref.name):
            out.append(Problem(f"{path}.keys[{k}]", "names no provider key: give its name (or key_id)"))
    if grant.key_ids is None:
        return None
    return None if "*" in grant.key_ids else list(grant.key_ids)
