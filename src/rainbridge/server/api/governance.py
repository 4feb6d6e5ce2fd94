"""``/api/governance/{virtual-keys,teams,customers}``: create, read, update, delete, usage.

Bodies use Bifrost's shapes (``budget`` or ``budgets``, ``rate_limit``, ``provider_configs``).
Every write is one transaction; a rejected write leaves nothing behind. The worker that made
the change reloads at once and, in cluster mode, announces it, so every member reloads at
once too (``gateway/propagation.py``); the store poll is the fallback.
"""

from __future__ import annotations

import datetime
import time
from typing import TYPE_CHECKING, Any

import msgspec
import msgspec.inspect as mi
import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ...config.schema import CustomerConfig, TeamConfig, VirtualKeyConfig
from ...config.validate import Problem, check
from ...errors import GatewayError, InvalidRequest, NotFound, Unavailable
from ...governance.model import (
    VK_PREFIXES,
    Customer,
    Owner,
    ProviderGrant,
    Team,
    VirtualKey,
    hash_value,
    hint,
    new_id,
    new_value,
)
from ...governance.normalize import budget_from, parse_time, rate_limit_from
from ...store import StoreUnavailable
from ...store.base import Conflict
from .params import json_body

if TYPE_CHECKING:
    from ...gateway.gateway import Gateway


class ConflictError(GatewayError):
    status = 409
    type = "conflict"


TABLES = {"vk": "virtual_keys", "team": "teams", "customer": "customers"}
LABELS = {"vk": "virtual key", "team": "team", "customer": "customer"}

KINDS = {
    # path segment: (kind, singular, plural key, input struct, model class)
    "virtual-keys": ("vk", "virtual_key", "virtual_keys", VirtualKeyConfig, VirtualKey),
    "teams": ("team", "team", "teams", TeamConfig, Team),
    "customers": ("customer", "customer", "customers", CustomerConfig, Customer),
}
_INFO = {cls: mi.type_info(cls) for _, _, _, cls, _ in KINDS.values()}


def _iso(ms: int | None) -> str | None:
    return None if ms is None else datetime.datetime.fromtimestamp(ms / 1000, datetime.UTC).isoformat().replace("+00:00", "Z")


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status, media_type="application/json")


def _first_error(problems: list[Problem]) -> None:
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        message = "; ".join(str(p) for p in errors)
        raise InvalidRequest(message, param=errors[0].path.removeprefix("$."), code="invalid_field")


def _grants_body(vk: VirtualKey) -> list[dict]:
    """A key's provider grants in the input shape: per-provider budgets inline under their
    own ids (stored as ``<vk id>:<provider>:<id>``), limits only where a grant has them."""
    out = []
    for grant in vk.provider_configs:
        body = msgspec.to_builtins(grant)
        prefix = f"{vk.id}:{grant.provider}:"
        if grant.budgets:
            body["budgets"] = [{"id": b.id.removeprefix(prefix), "max_limit": b.max_limit, "reset_duration": b.reset_duration,
                                "calendar_aligned": b.calendar_aligned} for b in grant.budgets]
        else:
            del body["budgets"]
        if grant.rate_limit is None:
            del body["rate_limit"]
        out.append(body)
    return out


def _as_body(owner: Owner) -> dict:
    """An existing entity in the input shape (for partial updates)."""
    body: dict[str, Any] = {"id": owner.id, "name": owner.name}
    if owner.rate_limit is not None:
        body["rate_limit"] = msgspec.to_builtins(owner.rate_limit)
    if isinstance(owner, VirtualKey):
        body.update(description=owner.description, is_active=owner.is_active, expires_at=owner.expires_at,
                    team_id=owner.team_id, customer_id=owner.customer_id,
                    provider_configs=_grants_body(owner),
                    allow_all_providers=owner.allow_all_providers)
    if isinstance(owner, Team):
        body["customer_id"] = owner.customer_id
    return body


def routes(gateway: Gateway) -> list[Route]:
    def repo():
        if gateway.governance_repo is None:
            raise Unavailable("the config store is disabled: governance is read-only (from the config file)", code="store_disabled")
        return gateway.governance_repo

    def state_of(kind: str) -> dict[str, Owner]:
        state = gateway.governance.state
        return {"vk": state.vks, "team": state.teams, "customer": state.customers}[kind]  # type: ignore[return-value]

    def present(kind: str, owner: Owner) -> dict:
        now_ms = int(time.time() * 1000)
        out = {
            "id": owner.id, "name": owner.name,
            "budgets": [], "rate_limit": msgspec.to_builtins(owner.rate_limit) if owner.rate_limit else None,
            "created_at": _iso(owner.created_at), "updated_at": _iso(owner.updated_at),
        }
        usage = {b["id"]: b for b in gateway.governance.usage_level(kind, owner, now_ms)["budgets"]}
        for b in owner.budgets:
            out["budgets"].append({**msgspec.to_builtins(b), "created_at": _iso(b.created_at),
                                   "current_usage": usage.get(b.id, {}).get("current_usage", 0.0),
                                   "last_reset": usage.get(b.id, {}).get("last_reset")})
        if isinstance(owner, VirtualKey):
            out.update(description=owner.description, is_active=owner.is_active, expires_at=_iso(owner.expires_at),
                       team_id=owner.team_id, customer_id=owner.customer_id,
                       provider_configs=_grants_body(owner),
                       allow_all_providers=owner.allow_all_providers, value_hint=owner.value_hint)
        if isinstance(owner, Team):
            out["customer_id"] = owner.customer_id
        return out

    def build(kind: str, body: dict, existing: Owner | None) -> tuple[Owner, str | None]:
        """Validate a body and make the entity; returns it and a new key value (VK create)."""
        _, _, _, struct, _ = next(v for v in KINDS.values() if v[0] == kind)
        problems: list[Problem] = []
        check(body, _INFO[struct], "$", problems)
        _first_error(problems)
        conf = msgspec.convert(body, struct)
        now = int(time.time() * 1000)
        owner_id = existing.id if existing else (conf.id or new_id({"vk": "vk", "team": "team", "customer": "cust"}[kind]))
        if not existing and conf.id and ("/" in conf.id or conf.id.startswith(VK_PREFIXES)):
            problems.append(Problem("$.id", "an id goes into URLs: no '/', and not a key value (sk-rb-...)"))
        created = existing.created_at if existing else now
        budgets_given = any(k in body for k in ("budget", "budgets", "budget_id", "budget_ids"))
        old_budgets = {b.id: b for b in existing.budgets} if existing else {}
        budgets = []
        inline = ([conf.budget] if conf.budget else []) + list(conf.budgets)
        for i, b in enumerate(inline):
            path = "$.budget" if conf.budget and i == 0 else f"$.budgets[{i - (1 if conf.budget else 0)}]"
            bid = f"{owner_id}:{b.id or f'b{i}'}"
            if any(x.id == bid for x in budgets):
                problems.append(Problem(f"{path}.id", f"duplicate budget id {bid.partition(':')[2]!r}"))
            # An unchanged window definition keeps its anchor, so an edit does not reset usage.
            anchor = old_budgets[bid].created_at if bid in old_budgets else now
            budgets.append(budget_from(b, bid, path, problems, anchor))
        if conf.budget_id or conf.budget_ids:
            problems.append(Problem("$.budget_id", "shared budgets by id exist only in the config file; give the budget inline"))
        if not budgets_given and existing:
            budgets = existing.budgets
        rate_limit = rate_limit_from(conf.rate_limit, "$.rate_limit", problems) if conf.rate_limit else None
        if "rate_limit" not in body and existing:
            rate_limit = existing.rate_limit
        state = gateway.governance.state
        if kind == "team" and conf.customer_id and conf.customer_id not in state.customers:
            problems.append(Problem("$.customer_id", f"no customer with id {conf.customer_id!r}"))
        value = None
        if kind != "vk":
            _first_error(problems)
            cls = Team if kind == "team" else Customer
            extra = {"customer_id": conf.customer_id} if kind == "team" else {}
            return cls(id=owner_id, name=conf.name, budgets=budgets, rate_limit=rate_limit,
                       created_at=created, updated_at=now, **extra), None
        if conf.team_id and conf.customer_id:
            problems.append(Problem("$.team_id", "a virtual key belongs to a team or a customer, not both"))
        if conf.team_id and conf.team_id not in state.teams:
            problems.append(Problem("$.team_id", f"no team with id {conf.team_id!r}"))
        if conf.customer_id and conf.customer_id not in state.customers:
            problems.append(Problem("$.customer_id", f"no customer with id {conf.customer_id!r}"))
        for j, g in enumerate(conf.provider_configs):
            if g.provider not in gateway.providers:
                problems.append(Problem(f"$.provider_configs[{j}].provider", f"no provider {g.provider!r} is configured"))
            for name in ("budget_id", "budget_ids", "rate_limit_id"):  # a limit that silently does nothing lets the key spend past it
                if getattr(g, name):
                    problems.append(Problem(f"$.provider_configs[{j}].{name}", "shared budgets and rate limits by id exist "
                                            "only in the config file; give the provider's budget / rate_limit inline"))
        expires = parse_time(conf.expires_at, "$.expires_at", problems)
        if existing is not None:
            value_hash, value_hint = existing.value_hash, existing.value_hint  # type: ignore[attr-defined]
            if conf.value:
                problems.append(Problem("$.value", "a key's value cannot be changed; create a new key"))
        else:
            value = conf.value or new_value()
            if conf.value and (not conf.value.startswith(VK_PREFIXES) or len(conf.value) < 20):
                problems.append(Problem("$.value", "must start with sk-rb- (or sk-bf-) and be at least 20 characters"))
            value_hash, value_hint = hash_value(value), hint(value)
        _first_error(problems)
        grants = [_grant(g, f"{owner_id}:{g.provider}", f"$.provider_configs[{j}]", problems, existing, now)
                  for j, g in enumerate(conf.provider_configs)]
        _first_error(problems)
        allow_all = conf.allow_all_providers if conf.allow_all_providers is not None else not grants
        vk = VirtualKey(id=owner_id, name=conf.name, value_hash=value_hash, value_hint=value_hint,
                        description=conf.description, is_active=conf.is_active, expires_at=expires,
                        team_id=conf.team_id, customer_id=conf.customer_id, provider_configs=grants,
                        allow_all_providers=allow_all, budgets=budgets, rate_limit=rate_limit,
                        created_at=created, updated_at=now)
        return vk, value

    async def refresh(writing: bool = True) -> None:
        """Answer and validate against the store, not against this worker's copy, which may
        be up to a poll interval behind a change made through another worker (a list read
        right after a create through the other worker must show it). Without a store,
        reads answer from the config file and writes are refused."""
        if not writing and gateway.governance_repo is None:
            return
        repo()
        try:
            await gateway.reload_if_changed()
        except StoreUnavailable as exc:
            raise Unavailable(f"config store unavailable: {exc}", code="store_unavailable") from None

    async def save(kind: str, owner: Owner, creating: bool) -> None:
        r = repo()
        label = LABELS[kind]
        try:
            async with r.db.transaction() as tx:
                # The repo upserts by id: re-check inside the transaction, so a create never
                # overwrites and an update never brings back a row deleted a moment ago.
                exists = await tx.fetchval(f"SELECT 1 FROM {TABLES[kind]} WHERE id = $1", owner.id) is not None
                if creating and exists:
                    raise ConflictError(f"a {label} with id {owner.id!r} exists", param="id", code="duplicate")
                if not creating and not exists:
                    raise NotFound(f"no {label} with id {owner.id!r}", param="id", code="not_found")
                await {"vk": r.save_vk, "team": r.save_team, "customer": r.save_customer}[kind](tx, owner)  # type: ignore[operator]
        except Conflict as exc:
            message, param = _conflict(kind, owner, str(exc))
            raise ConflictError(message, param=param, code="duplicate") from None
        except StoreUnavailable as exc:
            raise Unavailable(f"config store unavailable: {exc}", code="store_unavailable") from None
        await gateway.reload()
        gateway.announce_change()

    def guard_id(owner_id: str) -> None:
        if owner_id.startswith(VK_PREFIXES):
            raise InvalidRequest("virtual key values are secrets and never belong in a URL; use the key's id",
                                 param="id", code="secret_in_url")

    def endpoints(segment: str) -> list[Route]:
        kind, singular, plural, _, _ = KINDS[segment]

        async def list_all(request: Request) -> Response:
            await refresh(writing=False)
            items = [present(kind, o) for o in state_of(kind).values()]
            return _json({plural: items, "count": len(items)})

        async def create(request: Request) -> Response:
            body = await json_body(request)
            await refresh()
            owner, value = build(kind, body, None)
            if owner.id in state_of(kind):
                raise ConflictError(f"a {singular.replace('_', ' ')} with id {owner.id!r} exists", param="id", code="duplicate")
            await save(kind, owner, creating=True)
            body = present(kind, owner)
            if value is not None:
                body["value"] = value  # shown once, here; only its hash is stored
            return _json({"message": f"{singular.replace('_', ' ')} created", singular: body}, 201)

        def get_or_404(owner_id: str) -> Owner:
            guard_id(owner_id)
            owner = state_of(kind).get(owner_id)
            if owner is None:
                raise NotFound(f"no {singular.replace('_', ' ')} with id {owner_id!r}", param="id", code="not_found")
            return owner

        async def get_one(request: Request) -> Response:
            guard_id(request.path_params["id"])
            await refresh(writing=False)
            return _json({singular: present(kind, get_or_404(request.path_params["id"]))})

        async def update(request: Request) -> Response:
            guard_id(request.path_params["id"])
            patch = await json_body(request)
            await refresh()
            existing = get_or_404(request.path_params["id"])
            if "id" in patch and patch["id"] != existing.id:
                raise InvalidRequest("an id cannot be changed", param="id", code="invalid_field")
            merged = {**_as_body(existing), **patch}
            for gone in ("budget_id", "budget_ids"):
                merged.pop(gone, None)
            owner, _ = build(kind, merged, existing)
            await save(kind, owner, creating=False)
            return _json({"message": f"{singular.replace('_', ' ')} updated", singular: present(kind, owner)})

        async def delete(request: Request) -> Response:
            r = repo()
            guard_id(request.path_params["id"])
            await refresh()
            owner = get_or_404(request.path_params["id"])
            try:
                async with r.db.transaction() as tx:
                    await r.delete(tx, kind, owner.id)
            except Conflict:
                raise ConflictError(f"{singular.replace('_', ' ')} {owner.id!r} is still in use (by a team or a virtual key)",
                                    param="id", code="in_use") from None
            await gateway.reload()
            gateway.announce_change()
            return _json({"message": f"{singular.replace('_', ' ')} deleted", "id": owner.id})

        base = f"/api/governance/{segment}"
        return [
            Route(base, list_all, methods=["GET"]),
            Route(base, create, methods=["POST"]),
            Route(base + "/{id}", get_one, methods=["GET"]),
            Route(base + "/{id}", update, methods=["PUT", "PATCH"]),
            Route(base + "/{id}", delete, methods=["DELETE"]),
        ]

    async def vk_usage(request: Request) -> Response:
        owner_id = request.path_params["id"]
        guard_id(owner_id)
        await refresh(writing=False)
        vk = gateway.governance.state.vks.get(owner_id)
        if vk is None:
            raise NotFound(f"no virtual key with id {owner_id!r}", param="id", code="not_found")
        return _json({"virtual_key_id": vk.id, "levels": gateway.governance.usage(vk, int(time.time() * 1000))})

    out = [Route("/api/governance/virtual-keys/{id}/usage", vk_usage, methods=["GET"])]
    for segment in KINDS:
        out += endpoints(segment)
    return out


def _grant(g: Any, grant_id: str, path: str, problems: list[Problem], existing: Owner | None, now: int) -> ProviderGrant:
    """A provider grant with its own inline budgets and rate limit (their counters are the
    grant's: ``<vk id>:<provider>:<budget id>``); an unchanged budget keeps its anchor."""
    old = {b.id: b for grant in getattr(existing, "provider_configs", ()) for b in grant.budgets}
    budgets = []
    inline = ([g.budget] if g.budget else []) + list(g.budgets)
    for i, b in enumerate(inline):
        where = f"{path}.budget" if g.budget and i == 0 else f"{path}.budgets[{i - (1 if g.budget else 0)}]"
        bid = f"{grant_id}:{b.id or f'b{i}'}"
        budgets.append(budget_from(b, bid, where, problems, old[bid].created_at if bid in old else now))
    rate_limit = rate_limit_from(g.rate_limit, f"{path}.rate_limit", problems) if g.rate_limit else None
    return ProviderGrant(provider=g.provider, weight=g.weight, allowed_models=g.allowed_models, key_ids=g.key_ids,
                         budgets=budgets, rate_limit=rate_limit)


def _conflict(kind: str, owner: Owner, detail: str) -> tuple[str, str]:
    """A store constraint violation as (message, field). SQLite names the column
    (``UNIQUE constraint failed: virtual_keys.value_hash``), PostgreSQL the constraint
    (``virtual_keys_value_hash_key``); a SQLite foreign key failure names nothing."""
    label = LABELS[kind]
    if "value_hash" in detail:
        return "this key value is already used by another virtual key; omit value to get a new one", "value"
    if "name" in detail:
        return f"a {label} named {owner.name!r} already exists", "name"
    if "budgets" in detail:
        return f"a budget id of this {label} is already used", "budgets"
    field = "team_id" if "team_id" in detail or getattr(owner, "team_id", None) else "customer_id"
    return f"the {label}'s {field} refers to something that no longer exists", field
