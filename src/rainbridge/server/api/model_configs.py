"""``/api/governance/model-configs``: model limits (Bifrost's ``governance.model_configs``).

Bifrost's shape: ``{"model_name", "provider", "budget", "rate_limit"}``, with its ``scope``
(``global`` | ``virtual_key``) and ``scope_id``. Stored in the config store like the other
governance objects (a rejected write leaves nothing behind), then reloaded by the writing
worker and announced to the fleet (``gateway/propagation.py``), the store poll as fallback.
Limits from the config file are listed and may be edited; the file wins again at restart.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import msgspec
import msgspec.inspect as mi
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ...config.schema import ModelConfigConfig
from ...config.validate import Problem, check
from ...errors import InvalidRequest, NotFound, Unavailable
from ...governance.model import VK_PREFIXES, ModelLimit, new_id
from ...governance.normalize import budget_from, rate_limit_from
from ...governance.usage import iso, limits_usage
from ...store import StoreUnavailable
from .governance import ConflictError, _first_error, _json
from .params import json_body

if TYPE_CHECKING:
    from ...gateway.gateway import Gateway

BASE = "/api/governance/model-configs"
_INFO = mi.type_info(ModelConfigConfig)
_BUDGET_KEYS = ("budget", "budgets", "budget_id", "budget_ids")


class ModelConfigs:
    """The endpoints, on one gateway (its governance state and config store)."""

    def __init__(self, gateway: Gateway):
        self.gateway = gateway

    def routes(self) -> list[Route]:
        return [
            Route(BASE, self.list_all, methods=["GET"]),
            Route(BASE, self.create, methods=["POST"]),
            Route(BASE + "/{id}", self.get_one, methods=["GET"]),
            Route(BASE + "/{id}", self.update, methods=["PUT", "PATCH"]),
            Route(BASE + "/{id}", self.delete, methods=["DELETE"]),
        ]

    # -- endpoints ----------------------------------------------------------------------------

    async def list_all(self, request: Request) -> Response:
        await self._refresh(writing=False)
        items = [self._present(m) for m in self.gateway.governance.model_limits]
        return _json({"model_configs": items, "count": len(items)})

    async def get_one(self, request: Request) -> Response:
        await self._refresh(writing=False)
        return _json({"model_config": self._present(self._get_or_404(request.path_params["id"]))})

    async def create(self, request: Request) -> Response:
        body = await json_body(request)
        await self._refresh()
        limit = self._build(body, None)
        if any(m.id == limit.id for m in self.gateway.governance.model_limits):
            raise ConflictError(f"a model config with id {limit.id!r} exists", param="id", code="duplicate")
        await self._save(limit, creating=True)
        return _json({"message": "model config created", "model_config": self._present(limit)}, 201)

    async def update(self, request: Request) -> Response:
        patch = await json_body(request)
        await self._refresh()
        existing = self._get_or_404(request.path_params["id"])
        if "id" in patch and patch["id"] != existing.id:
            raise InvalidRequest("an id cannot be changed", param="id", code="invalid_field")
        limit = self._build({**_as_body(existing), **patch}, existing, patch)
        await self._save(limit, creating=False)
        return _json({"message": "model config updated", "model_config": self._present(limit)})

    async def delete(self, request: Request) -> Response:
        repo = self._repo()
        await self._refresh()
        limit = self._get_or_404(request.path_params["id"])
        try:
            async with repo.db.transaction() as tx:
                await repo.delete_model_limit(tx, limit.id)
        except StoreUnavailable as exc:
            raise Unavailable(f"config store unavailable: {exc}", code="store_unavailable") from None
        await self.gateway.reload()
        self.gateway.announce_change()
        return _json({"message": "model config deleted", "id": limit.id})

    # -- helpers ------------------------------------------------------------------------------

    def _repo(self):
        repo = self.gateway.governance_repo
        if repo is None:
            raise Unavailable("the config store is disabled: governance is read-only (from the config file)",
                              code="store_disabled")
        return repo

    async def _refresh(self, writing: bool = True) -> None:
        """Answer from the store's current state (another worker may have just changed it)."""
        if not writing and self.gateway.governance_repo is None:
            return
        self._repo()
        try:
            await self.gateway.reload_if_changed()
        except StoreUnavailable as exc:
            raise Unavailable(f"config store unavailable: {exc}", code="store_unavailable") from None

    def _get_or_404(self, limit_id: str) -> ModelLimit:
        for m in self.gateway.governance.model_limits:
            if m.id == limit_id:
                return m
        raise NotFound(f"no model config with id {limit_id!r}", param="id", code="not_found")

    def _build(self, body: dict, existing: ModelLimit | None, patch: dict | None = None) -> ModelLimit:
        """Validate a body (Bifrost's shape) and make the limit; on update, what the patch
        leaves out is kept (budgets, rate limit windows)."""
        problems: list[Problem] = []
        check(body, _INFO, "$", problems)
        _first_error(problems)
        conf = msgspec.convert(body, ModelConfigConfig)
        given = patch if patch is not None else body
        now = int(time.time() * 1000)
        mid = existing.id if existing else (conf.id or new_id("mc"))
        if not existing and conf.id and ("/" in conf.id or conf.id.startswith(VK_PREFIXES)):
            problems.append(Problem("$.id", "an id goes into URLs: no '/', and not a key value (sk-rb-...)"))
        if conf.scope not in ("global", "virtual_key"):
            problems.append(Problem("$.scope", f"unknown scope {conf.scope!r}: use global or virtual_key"))
        elif conf.scope == "virtual_key" and conf.scope_id not in self.gateway.governance.state.vks:
            problems.append(Problem("$.scope_id", f"no virtual key with id {conf.scope_id!r}"))
        if conf.provider is not None and conf.provider not in self.gateway.providers:
            problems.append(Problem("$.provider", f"no provider {conf.provider!r} is configured"))
        for name in ("budget_id", "budget_ids", "rate_limit_id", "rate_limit_ids"):
            if getattr(conf, name):  # a limit that silently does nothing lets traffic spend past it
                problems.append(Problem(f"$.{name}", "shared budgets and rate limits by id exist only in the config "
                                        "file; give the budget / rate_limit inline"))
        budgets = existing.budgets if existing and not any(k in given for k in _BUDGET_KEYS) else []
        if not budgets:
            inline = ([conf.budget] if conf.budget else []) + list(conf.budgets)
            for i, b in enumerate(inline):
                path = "$.budget" if conf.budget and i == 0 else f"$.budgets[{i - (1 if conf.budget else 0)}]"
                budget = budget_from(b, f"model:{mid}:{b.id or f'b{i}'}", path, problems, 0)  # epoch windows, as the file's
                budget.calendar_aligned = budget.calendar_aligned or conf.calendar_aligned
                budgets.append(budget)
        windows = existing.rate_limits if existing and "rate_limit" not in given else []
        if "rate_limit" in given and conf.rate_limit is not None:
            windows = [rate_limit_from(conf.rate_limit, "$.rate_limit", problems)]
        if not budgets and not windows:
            problems.append(Problem("$.rate_limit", "a model config needs a budget or a rate limit (else it limits nothing)"))
        _first_error(problems)
        return ModelLimit(id=mid, name=mid, model_name=conf.model_name, provider=conf.provider,
                          vk_id=conf.scope_id if conf.scope == "virtual_key" else None, budgets=budgets,
                          rate_limits=windows, created_at=existing.created_at if existing else now, updated_at=now)

    async def _save(self, limit: ModelLimit, creating: bool) -> None:
        repo = self._repo()
        try:
            async with repo.db.transaction() as tx:
                # Re-checked in the transaction: a create never overwrites, an update never
                # brings back a row deleted a moment ago.
                exists = await tx.fetchval("SELECT 1 FROM model_configs WHERE id = $1", limit.id) is not None
                if creating and exists:
                    raise ConflictError(f"a model config with id {limit.id!r} exists", param="id", code="duplicate")
                if not creating and not exists:
                    raise NotFound(f"no model config with id {limit.id!r}", param="id", code="not_found")
                await repo.save_model_limit(tx, limit)
        except StoreUnavailable as exc:
            raise Unavailable(f"config store unavailable: {exc}", code="store_unavailable") from None
        await self.gateway.reload()
        self.gateway.announce_change()

    def _present(self, m: ModelLimit) -> dict:
        """Bifrost's shape (``budget``, ``rate_limit`` with current usage), and every budget
        and rate limit window (``budgets``, ``rate_limits``: a file's limit may have several)."""
        now_ms = int(time.time() * 1000)
        gov = self.gateway.governance
        budgets = limits_usage(gov, m.id, m.budgets, None, "model", now_ms)["budgets"]
        windows = []
        for rl in m.rate_limits:
            out: dict[str, Any] = msgspec.to_builtins(rl)
            usage = limits_usage(gov, m.id, [], rl, "model", now_ms)["rate_limit"]
            for metric in ("request", "token"):
                if metric in usage:
                    out[f"{metric}_current_usage"] = usage[metric]["current_usage"]
                    out[f"{metric}_last_reset"] = usage[metric]["last_reset"]
            windows.append(out)
        return {
            "id": m.id, "model_name": m.model_name, "provider": m.provider,
            "scope": "virtual_key" if m.vk_id else "global", "scope_id": m.vk_id,
            "budget": budgets[0] if budgets else None, "rate_limit": windows[0] if windows else None,
            "budgets": budgets, "rate_limits": windows,
            "created_at": iso(m.created_at), "updated_at": iso(m.updated_at),
        }


def _as_body(m: ModelLimit) -> dict:
    """An existing limit in the input shape (the base of a partial update)."""
    body: dict[str, Any] = {"model_name": m.model_name, "provider": m.provider,
                            "scope": "virtual_key" if m.vk_id else "global"}
    if m.vk_id:
        body["scope_id"] = m.vk_id
    return body


def routes(gateway: Gateway) -> list[Route]:
    return ModelConfigs(gateway).routes()
