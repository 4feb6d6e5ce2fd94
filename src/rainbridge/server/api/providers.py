"""``/api/providers`` and ``/api/providers/{name}/keys``: provider settings and their keys.

Key values are write-only: they are accepted on create/update, stored encrypted, and never
returned. Providers named in the config file are reset to the file's version at start.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import msgspec
import msgspec.inspect as mi
import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ...config.checks import _check_provider
from ...config.schema import KeyConfig, ProviderConfig
from ...config.validate import Problem, check
from ...errors import InvalidRequest, NotFound, Unavailable
from ...store import StoreUnavailable
from ...store.base import Conflict
from ...store.governance_repo import bump_version
from ...store.providers_repo import key_id
from .governance import ConflictError, _first_error
from .params import json_body

if TYPE_CHECKING:
    from ...gateway.gateway import Gateway

_PROVIDER = mi.type_info(ProviderConfig)
_KEY = mi.type_info(KeyConfig)


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status, media_type="application/json")


def _present_key(key: KeyConfig) -> dict:
    # Every key shows its routing fields, defaults included; the value only as set or not.
    out = {"id": key.id, "name": key.name, "models": key.models, "weight": key.weight, **msgspec.to_builtins(key)}
    out["value"] = "…" if key.value else ""
    azure = out.get("azure_key_config")
    if isinstance(azure, dict) and azure.get("client_secret"):
        azure["client_secret"] = "…"  # write-only, as the value
    # Cloud credentials are secrets too: shown only as set or not.
    for section, fields in (("bedrock_key_config", ("secret_key", "session_token")), ("vertex_key_config", ("auth_credentials",))):
        config = out.get(section)
        if isinstance(config, dict):
            config.update({f: "…" for f in fields if config.get(f)})
    return out


def _present(name: str, pc: ProviderConfig) -> dict:
    out = msgspec.to_builtins(msgspec.structs.replace(pc, keys=[]))
    out["name"] = name
    # Header values and proxy settings may hold credentials: shown masked, like key values.
    network = out.get("network_config") or {}
    if network.get("extra_headers"):
        network["extra_headers"] = {h: "…" for h in network["extra_headers"]}
    if out.get("proxy_config"):
        # url may carry user:password@; username alone is not secret, as in Bifrost's redaction
        out["proxy_config"] = {k: ("…" if k in ("password", "url") and v else v) for k, v in out["proxy_config"].items()}
    out["keys"] = [_present_key(k) for k in pc.keys]
    return out


def _merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396: objects merge recursively, null removes a field (its default applies), other
    values replace. So ``{"network_config": {"max_retries": 2}}`` keeps the base URL."""
    if not isinstance(patch, dict) or not isinstance(target, dict):
        return patch
    out = dict(target)
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = _merge_patch(out.get(k), v)
    return out


def _key_problems(problems: list[Problem], index: int) -> list[Problem]:
    """Problems of one key of a provider, with paths relative to the key's own body."""
    prefix = f"$.keys[{index}]"
    return [dataclasses.replace(p, path="$" + p.path[len(prefix):]) for p in problems if p.path.startswith(prefix)]


def routes(gateway: Gateway) -> list[Route]:
    def store():
        if gateway.store is None:
            raise Unavailable("the config store is disabled: providers come from the config file", code="store_disabled")
        return gateway.store

    async def load() -> dict[str, ProviderConfig]:
        try:
            return await store().providers.all()
        except StoreUnavailable as exc:
            raise Unavailable(f"config store unavailable: {exc}", code="store_unavailable") from None

    def validated(name: str, body: dict) -> ProviderConfig:
        problems: list[Problem] = []
        check(body, _PROVIDER, "$", problems)
        _first_error(problems)
        pc = msgspec.convert(body, ProviderConfig)
        _check_provider(name, pc, "$", problems)
        # The one problem about the provider as a whole: a name we do not know, without a type.
        _first_error([dataclasses.replace(p, path="$.type") if p.path == "$" else p for p in problems])
        return pc

    async def write(name: str, pc: ProviderConfig | None) -> None:
        s = store()
        try:
            async with s.db.transaction() as tx:
                if pc is None:
                    await s.providers.delete(tx, name)
                else:
                    await s.providers.upsert(tx, name, pc, "api")
                await bump_version(tx)
        except Conflict as exc:
            raise ConflictError(f"provider {name!r}: {exc}", code="duplicate") from None
        except StoreUnavailable as exc:
            raise Unavailable(f"config store unavailable: {exc}", code="store_unavailable") from None
        await gateway.reload()
        gateway.announce_change()

    async def get_or_404(name: str) -> ProviderConfig:
        providers = await load()
        if name not in providers:
            raise NotFound(f"no provider named {name!r}", param="name", code="not_found")
        return providers[name]

    async def list_all(request: Request) -> Response:
        providers = await load()
        return _json({"providers": [_present(n, pc) for n, pc in providers.items()], "count": len(providers)})

    async def create(request: Request) -> Response:
        body = await json_body(request)
        name = body.pop("name", None)
        if not isinstance(name, str) or not name:
            raise InvalidRequest("missing required field 'name'", param="name", code="missing_field")
        if "/" in name:
            raise InvalidRequest("a provider name must not contain '/' (it prefixes model names)", param="name", code="invalid_field")
        if name in await load():
            raise ConflictError(f"a provider named {name!r} exists", param="name", code="duplicate")
        pc = validated(name, body)
        await write(name, pc)
        return _json({"message": "provider created", "provider": _present(name, pc)}, 201)

    async def get_one(request: Request) -> Response:
        name = request.path_params["name"]
        return _json({"provider": _present(name, await get_or_404(name))})

    async def update(request: Request) -> Response:
        name = request.path_params["name"]
        existing = await get_or_404(name)
        patch = await json_body(request)
        patch.pop("name", None)
        keys = patch.pop("keys", None)
        if keys is not None:
            raise InvalidRequest("change keys with /api/providers/{name}/keys", param="keys", code="invalid_field")
        merged = _merge_patch(msgspec.to_builtins(msgspec.structs.replace(existing, keys=[])), patch)
        pc = msgspec.structs.replace(validated(name, merged), keys=existing.keys)
        await write(name, pc)
        return _json({"message": "provider updated", "provider": _present(name, pc)})

    async def delete(request: Request) -> Response:
        name = request.path_params["name"]
        await get_or_404(name)
        await write(name, None)
        return _json({"message": "provider deleted", "name": name})

    async def list_keys(request: Request) -> Response:
        pc = await get_or_404(request.path_params["name"])
        return _json({"keys": [_present_key(k) for k in pc.keys], "count": len(pc.keys)})

    def validated_key(body: dict) -> KeyConfig:
        problems: list[Problem] = []
        check(body, _KEY, "$", problems)
        _first_error(problems)
        return msgspec.convert(body, KeyConfig)

    async def add_key(request: Request) -> Response:
        name = request.path_params["name"]
        pc = await get_or_404(name)
        key = validated_key(await json_body(request))
        if not key.name:
            raise InvalidRequest("missing required field 'name'", param="name", code="missing_field")
        if any(k.name == key.name for k in pc.keys):
            raise ConflictError(f"provider {name!r} already has a key named {key.name!r}", param="name", code="duplicate")
        key = msgspec.structs.replace(key, id=key.id or key_id(name, key, len(pc.keys)))
        if any(k.id == key.id for p in (await load()).values() for k in p.keys):
            raise ConflictError(f"a key with id {key.id!r} exists", param="id", code="duplicate")
        updated = msgspec.structs.replace(pc, keys=[*pc.keys, key])
        problems: list[Problem] = []
        _check_provider(name, updated, "$", problems)
        _first_error(_key_problems(problems, len(pc.keys)))
        await write(name, updated)
        return _json({"message": "key added", "key": _present_key(key)}, 201)

    def find_key(pc: ProviderConfig, kid: str) -> int:
        for i, k in enumerate(pc.keys):
            if k.id == kid or k.name == kid:
                return i
        raise NotFound(f"no key {kid!r}", param="key_id", code="not_found")

    async def update_key(request: Request) -> Response:
        name, kid = request.path_params["name"], request.path_params["key_id"]
        pc = await get_or_404(name)
        i = find_key(pc, kid)
        current = msgspec.to_builtins(pc.keys[i])
        patch = await json_body(request)
        key = validated_key({**current, **patch})
        key = msgspec.structs.replace(key, id=pc.keys[i].id)
        if not key.name:
            raise InvalidRequest("a key's name must not be empty", param="name", code="invalid_field")
        if any(k.name == key.name for j, k in enumerate(pc.keys) if j != i):
            raise ConflictError(f"provider {name!r} already has a key named {key.name!r}", param="name", code="duplicate")
        keys = list(pc.keys)
        keys[i] = key
        updated = msgspec.structs.replace(pc, keys=keys)
        problems: list[Problem] = []
        _check_provider(name, updated, "$", problems)
        _first_error(_key_problems(problems, i))
        await write(name, updated)
        return _json({"message": "key updated", "key": _present_key(key)})

    async def delete_key(request: Request) -> Response:
        name, kid = request.path_params["name"], request.path_params["key_id"]
        pc = await get_or_404(name)
        i = find_key(pc, kid)
        keys = [k for j, k in enumerate(pc.keys) if j != i]
        await write(name, msgspec.structs.replace(pc, keys=keys))
        return _json({"message": "key deleted", "id": pc.keys[i].id})

    return [
        Route("/api/providers", list_all, methods=["GET"]),
        Route("/api/providers", create, methods=["POST"]),
        Route("/api/providers/{name}", get_one, methods=["GET"]),
        Route("/api/providers/{name}", update, methods=["PUT", "PATCH"]),
        Route("/api/providers/{name}", delete, methods=["DELETE"]),
        Route("/api/providers/{name}/keys", list_keys, methods=["GET"]),
        Route("/api/providers/{name}/keys", add_key, methods=["POST"]),
        Route("/api/providers/{name}/keys/{key_id}", update_key, methods=["PUT", "PATCH"]),
        Route("/api/providers/{name}/keys/{key_id}", delete_key, methods=["DELETE"]),
    ]
