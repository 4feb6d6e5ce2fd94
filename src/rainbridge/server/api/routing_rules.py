"""``/api/routing/rules``: routing rules (Bifrost's shape; ``/api/governance/routing-rules`` is
the deprecated alias Bifrost keeps).

Kept in the config store; a write is checked exactly as the config file's rules are (CEL,
weights, scope, pinned keys: a rule in error is refused with its field named), then the
writing worker reloads and announces the change (``gateway/propagation.py``), so every
worker recompiles. Rules from the config file are listed and may be edited; the file wins
again at restart. Without a config store, the file's rules are listed and writes answer 503.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import msgspec
import msgspec.inspect as mi
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ...config.schema import RoutingRuleConfig
from ...config.validate import Problem, check
from ...errors import InvalidRequest, NotFound, Unavailable
from ...gateway.rules_config import compile_rules, rule_id
from ...governance.model import VK_PREFIXES, new_id
from ...governance.usage import iso
from ...store import StoreUnavailable
from ...store.routing_rules_repo import RoutingRulesRepo, StoredRule
from .governance import ConflictError, _first_error, _json
from .params import json_body

if TYPE_CHECKING:
    from ...gateway.gateway import Gateway

BASES = ("/api/routing/rules", "/api/governance/routing-rules")
_INFO = mi.type_info(RoutingRuleConfig)


class RoutingRules:
    def __init__(self, gateway: Gateway):
        self.gateway = gateway

    def routes(self) -> list[Route]:
        out = []
        for base in BASES:
            out += [Route(base, self.list_all, methods=["GET"]), Route(base, self.create, methods=["POST"]),
                    Route(base + "/{id}", self.get_one, methods=["GET"]),
                    Route(base + "/{id}", self.update, methods=["PUT", "PATCH"]),
                    Route(base + "/{id}", self.delete, methods=["DELETE"])]
        return out

    # -- endpoints ----------------------------------------------------------------------------

    async def list_all(self, request: Request) -> Response:
        scope, scope_id = request.query_params.get("scope"), request.query_params.get("scope_id")
        items = [_present(s) for s in await self._stored()
                 if (not scope or s.rule.scope == scope) and (not scope_id or s.rule.scope_id == scope_id)]
        return _json({"rules": items, "count": len(items)})

    async def get_one(self, request: Request) -> Response:
        return _json({"rule": _present(self._find(await self._stored(), request.path_params["id"]))})

    async def create(self, request: Request) -> Response:
        body = await json_body(request)
        repo = self._repo()
        rule = self._build(body)
        if not rule.id:
            rule.id = new_id("rr")
        now = int(time.time() * 1000)
        await self._write(repo, rule, creating=True, created_at=now)
        return _json({"message": "Routing rule created successfully", "rule": _present(StoredRule(rule, "api", now, now))}, 201)

    async def update(self, request: Request) -> Response:
        patch = await json_body(request)
        repo = self._repo()
        existing = self._find(await self._stored(), request.path_params["id"])
        if "id" in patch and patch["id"] != existing.rule.id:
            raise InvalidRequest("an id cannot be changed", param="id", code="invalid_field")
        rule = self._build({**msgspec.to_builtins(existing.rule), **patch})
        await self._write(repo, rule, creating=False, created_at=existing.created_at)
        now = int(time.time() * 1000)
        return _json({"message": "Routing rule updated successfully", "rule": _present(StoredRule(rule, "api", existing.created_at, now))})

    async def delete(self, request: Request) -> Response:
        repo = self._repo()
        rid = request.path_params["id"]
        try:
            async with repo.db.transaction() as tx:
                if not await repo.delete(tx, rid):
                    raise NotFound(f"no routing rule with id {rid!r}", param="id", code="not_found")
        except StoreUnavailable as exc:
            raise Unavailable(f"config store unavailable: {exc}", code="store_unavailable") from None
        await self.gateway.reload()
        self.gateway.announce_change()
        return _json({"message": "Routing rule deleted successfully"})

    # -- helpers ------------------------------------------------------------------------------

    def _repo(self) -> RoutingRulesRepo:
        repo = self.gateway.routing_repo
        if repo is None:
            raise Unavailable("the config store is disabled: routing rules are read-only (from the config file)",
                              code="store_disabled")
        return repo

    async def _stored(self) -> list[StoredRule]:
        repo = self.gateway.routing_repo
        if repo is None:
            return [StoredRule(r, "file", 0, 0) for r in self.gateway.config.governance.routing_rules]
        try:
            return await repo.load()
        except StoreUnavailable as exc:
            raise Unavailable(f"config store unavailable: {exc}", code="store_unavailable") from None

    @staticmethod
    def _find(stored: list[StoredRule], rid: str) -> StoredRule:
        for s in stored:
            if rule_id(s.rule) == rid:
                return s
        raise NotFound(f"no routing rule with id {rid!r}", param="id", code="not_found")

    def _build(self, body: dict) -> RoutingRuleConfig:
        """A rule checked as the config file's are: an error refuses it, naming the field."""
        body.pop("created_at", None)
        body.pop("updated_at", None)
        problems: list[Problem] = []
        check(body, _INFO, "$", problems)
        _first_error(problems)
        rule = msgspec.convert(body, RoutingRuleConfig)
        if rule.id and ("/" in rule.id or rule.id.startswith(VK_PREFIXES)):
            problems.append(Problem("$.id", "an id goes into URLs: no '/', and not a key value (sk-rb-...)"))
        state = self.gateway.governance.state
        owners = {"virtual_key": set(state.vks), "team": set(state.teams), "customer": set(state.customers)}
        keys = {name: {k for key in p.keys.keys for k in (key.id, key.name) if k}
                for name, p in self.gateway.providers.items()}
        if rule.scope in owners and rule.scope_id and rule.scope_id not in owners[rule.scope]:
            problems.append(Problem("$.scope_id", f"no {rule.scope.replace('_', ' ')} with id {rule.scope_id!r}"))
        compile_rules([("$", msgspec.structs.replace(rule, enabled=True))], owners, keys, problems)
        _first_error(problems)
        return rule

    async def _write(self, repo: RoutingRulesRepo, rule: RoutingRuleConfig, creating: bool, created_at: int) -> None:
        try:
            async with repo.db.transaction() as tx:
                # Re-checked in the transaction: a create never overwrites, an update never
                # brings back a rule deleted a moment ago.
                exists = await repo.exists(tx, rule_id(rule))
                if creating and exists:
                    raise ConflictError(f"a routing rule with id {rule_id(rule)!r} exists", param="id", code="duplicate")
                if not creating and not exists:
                    raise NotFound(f"no routing rule with id {rule_id(rule)!r}", param="id", code="not_found")
                await repo.save(tx, rule, "api", created_at, int(time.time() * 1000))
        except StoreUnavailable as exc:
            raise Unavailable(f"config store unavailable: {exc}", code="store_unavailable") from None
        await self.gateway.reload()
        self.gateway.announce_change()


def _present(s: StoredRule) -> dict[str, Any]:
    out: dict[str, Any] = {"id": rule_id(s.rule), "description": "", "enabled": True, "chain_rule": False,
                           "cel_expression": "", "fallbacks": [], "scope": "global", "scope_id": None, "priority": 0,
                           **msgspec.to_builtins(s.rule)}
    out["id"] = rule_id(s.rule)
    out["source"] = s.source
    if s.created_at:
        out["created_at"], out["updated_at"] = iso(s.created_at), iso(s.updated_at)
    return out


def routes(gateway: Gateway) -> list[Route]:
    return RoutingRules(gateway).routes()
