"""Providers and their keys in the config store (key values and secret settings sealed by ``Secrets``)."""

from __future__ import annotations

import time
from typing import Any

import msgspec

from ..config.schema import KeyConfig, ProviderConfig
from .db import Database, Executor
from .secrets import (
    Secrets,
    open_key_fields,
    open_provider_fields,
    seal_key_fields,
    seal_provider_fields,
)

_KEY_ROW_FIELDS = {"id", "name", "value", "models", "weight"}


def now_ms() -> int:
    return int(time.time() * 1000)


def key_id(provider: str, key: KeyConfig, index: int) -> str:
    return key.id or f"{provider}:{key.name or f'key-{index}'}"


class ProvidersRepo:
    def __init__(self, db: Database, secrets: Secrets):
        self.db = db
        self.secrets = secrets

    # -- reads ------------------------------------------------------------------------------

    async def all(self) -> dict[str, ProviderConfig]:
        """Every provider with its keys (values in plaintext: for building the runtime)."""
        providers = await self.db.fetch("SELECT name, config FROM providers ORDER BY created_at, name")
        keys = await self.db.fetch("SELECT * FROM provider_keys ORDER BY created_at, name")
        by_provider: dict[str, list[dict]] = {}
        for row in keys:
            by_provider.setdefault(row["provider"], []).append(row)
        out = {}
        for row in providers:
            config = open_provider_fields(self.secrets, msgspec.json.decode(row["config"]), row["name"])
            config["keys"] = [self._key_dict(k) for k in by_provider.get(row["name"], [])]
            out[row["name"]] = msgspec.convert(config, ProviderConfig)
        return out

    def _key_dict(self, row: dict) -> dict[str, Any]:
        extra = open_key_fields(self.secrets, msgspec.json.decode(row["config"]), row["id"])
        return {
            **extra,
            "id": row["id"],
            "name": row["name"],
            "value": self.secrets.open(row["value"], "provider_keys", row["id"]),
            "models": msgspec.json.decode(row["models"]) if row["models"] is not None else None,
            "weight": row["weight"],
        }

    async def names(self) -> list[str]:
        return [r["name"] for r in await self.db.fetch("SELECT name FROM providers ORDER BY name")]

    # -- writes -----------------------------------------------------------------------------

    async def upsert(self, tx: Executor, name: str, pc: ProviderConfig, source: str) -> None:
        """Write a provider and replace its keys (in the caller's transaction)."""
        ts = now_ms()
        plain = msgspec.to_builtins(msgspec.structs.replace(pc, keys=[]))
        config = msgspec.json.encode(seal_provider_fields(self.secrets, plain, name)).decode()
        await tx.execute(
            "INSERT INTO providers (name, config, source, created_at, updated_at) VALUES ($1, $2, $3, $4, $4) "
            "ON CONFLICT (name) DO UPDATE SET config = excluded.config, source = excluded.source, "
            "updated_at = excluded.updated_at",
            name, config, source, ts,
        )
        await tx.execute("DELETE FROM provider_keys WHERE provider = $1", name)
        for i, key in enumerate(pc.keys):
            await self.insert_key(tx, name, key, i, ts)

    async def insert_key(self, tx: Executor, provider: str, key: KeyConfig, index: int, ts: int | None = None) -> str:
        ts = ts or now_ms()
        kid = key_id(provider, key, index)
        raw = msgspec.to_builtins(key)
        extra = seal_key_fields(self.secrets, {k: v for k, v in raw.items() if k not in _KEY_ROW_FIELDS}, kid)
        await tx.execute(
            "INSERT INTO provider_keys (id, provider, name, value, models, weight, config, created_at, updated_at) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)",
            kid, provider, key.name or f"key-{index}", self.secrets.seal(key.value, "provider_keys", kid),
            msgspec.json.encode(key.models).decode() if key.models is not None else None,
            float(key.weight), msgspec.json.encode(extra).decode(), ts,
        )
        return kid

    async def delete(self, tx: Executor, name: str) -> bool:
        return await tx.execute("DELETE FROM providers WHERE name = $1", name) > 0

    async def sync_from_file(self, providers: dict[str, ProviderConfig]) -> None:
        """The config file is authoritative for the providers it names; providers it used to
        name and no longer does are removed; providers created through the API stay."""
        async with self.db.transaction() as tx:
            for name, pc in providers.items():
                await self.upsert(tx, name, pc, "file")
            rows = await tx.fetch("SELECT name FROM providers WHERE source = 'file'")
            for row in rows:
                if row["name"] not in providers:
                    await self.delete(tx, row["name"])
