"""Customers, teams, virtual keys (with their budgets and rate limits) and model limits in the
config store.

Every write happens inside the caller's transaction and bumps ``config_version`` in
``rb_meta``, which the other workers poll to reload; a failed write leaves nothing behind.
"""

from __future__ import annotations

import secrets

import msgspec

from ..governance.model import (
    Budget,
    Customer,
    ModelLimit,
    Owner,
    ProviderGrant,
    RateLimit,
    Team,
    VirtualKey,
)
from .db import Database, Executor
from .providers_repo import now_ms

_KINDS = {"customer": ("customers", Customer), "team": ("teams", Team), "vk": ("virtual_keys", VirtualKey)}
# File syncs run one at a time across processes (next to the store's other locks: migrate.py,
# secrets.py, fleet_epochs.py): workers and replicas starting together each sync the same
# file, and each reads the creation times it keeps before it writes.
FILE_SYNC_LOCK_ID = 7_351_005


async def bump_version(tx: Executor) -> None:
    await tx.execute(
        "INSERT INTO rb_meta (key, value) VALUES ('config_version', $1) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        f"{now_ms()}:{secrets.token_hex(4)}",
    )


async def config_version(db: Database) -> str | None:
    return await db.fetchval("SELECT value FROM rb_meta WHERE key = 'config_version'")


class GovernanceRepo:
    def __init__(self, db: Database):
        self.db = db

    # -- reads ------------------------------------------------------------------------------

    async def load(self) -> tuple[list[Customer], list[Team], list[VirtualKey]]:
        async with self.db.transaction() as tx:  # one consistent snapshot
            budgets = await tx.fetch("SELECT * FROM budgets ORDER BY created_at, id")
            limits = await tx.fetch("SELECT * FROM rate_limits")
            customers = await tx.fetch("SELECT * FROM customers ORDER BY created_at, id")
            teams = await tx.fetch("SELECT * FROM teams ORDER BY created_at, id")
            vks = await tx.fetch("SELECT * FROM virtual_keys ORDER BY created_at, id")
        by_owner: dict[tuple[str, str], list[Budget]] = {}
        for b in budgets:
            by_owner.setdefault((b["owner_kind"], b["owner_id"]), []).append(Budget(
                id=b["id"], max_limit=float(b["max_limit"]), reset_duration=b["reset_duration"],
                calendar_aligned=bool(b["calendar_aligned"]), created_at=int(b["created_at"]),
            ))
        limit_of = {
            (r["owner_kind"], r["owner_id"]): RateLimit(
                request_max_limit=r["request_max_limit"], request_reset_duration=r["request_reset_duration"],
                token_max_limit=r["token_max_limit"], token_reset_duration=r["token_reset_duration"],
            )
            for r in limits
        }

        def common(kind: str, row: dict) -> dict:
            return {
                "id": row["id"], "name": row["name"], "budgets": by_owner.get((kind, row["id"]), []),
                "rate_limit": limit_of.get((kind, row["id"])), "created_at": int(row["created_at"]),
                "updated_at": int(row["updated_at"]),
            }

        return (
            [Customer(**common("customer", r)) for r in customers],
            [Team(**common("team", r), customer_id=r["customer_id"]) for r in teams],
            [
                VirtualKey(
                    **common("vk", r), value_hash=r["value_hash"], value_hint=r["value_hint"],
                    description=r["description"], is_active=bool(r["is_active"]), expires_at=r["expires_at"],
                    team_id=r["team_id"], customer_id=r["customer_id"],
                    provider_configs=msgspec.json.decode(r["provider_configs"], type=list[ProviderGrant]),
                    allow_all_providers=bool(r["allow_all_providers"]),
                )
                for r in vks
            ],
        )

    # -- writes (in the caller's transaction) ------------------------------------------------

    async def _limits(self, tx: Executor, kind: str, owner: Owner) -> None:
        await tx.execute("DELETE FROM budgets WHERE owner_kind = $1 AND owner_id = $2", kind, owner.id)
        await tx.execute("DELETE FROM rate_limits WHERE owner_kind = $1 AND owner_id = $2", kind, owner.id)
        for b in owner.budgets:
            await tx.execute(
                "INSERT INTO budgets (id, owner_kind, owner_id, max_limit, reset_duration, calendar_aligned, created_at) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7)",
                b.id, kind, owner.id, b.max_limit, b.reset_duration, b.calendar_aligned, b.created_at or now_ms(),
            )
        r = owner.rate_limit
        if r is not None:
            await tx.execute(
                "INSERT INTO rate_limits (owner_kind, owner_id, request_max_limit, request_reset_duration, "
                "token_max_limit, token_reset_duration) VALUES ($1, $2, $3, $4, $5, $6)",
                kind, owner.id, r.request_max_limit, r.request_reset_duration, r.token_max_limit, r.token_reset_duration,
            )

    async def save_customer(self, tx: Executor, c: Customer, source: str = "api") -> None:
        await tx.execute(
            "INSERT INTO customers (id, name, source, created_at, updated_at) VALUES ($1, $2, $3, $4, $5) "
            "ON CONFLICT (id) DO UPDATE SET name = excluded.name, source = excluded.source, updated_at = excluded.updated_at",
            c.id, c.name, source, c.created_at, c.updated_at,
        )
        await self._limits(tx, "customer", c)
        await bump_version(tx)

    async def save_team(self, tx: Executor, t: Team, source: str = "api") -> None:
        await tx.execute(
            "INSERT INTO teams (id, name, customer_id, source, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6) "
            "ON CONFLICT (id) DO UPDATE SET name = excluded.name, customer_id = excluded.customer_id, "
            "source = excluded.source, updated_at = excluded.updated_at",
            t.id, t.name, t.customer_id, source, t.created_at, t.updated_at,
        )
        await self._limits(tx, "team", t)
        await bump_version(tx)

    async def save_vk(self, tx: Executor, v: VirtualKey, source: str = "api") -> None:
        await tx.execute(
            "INSERT INTO virtual_keys (id, name, value_hash, value_hint, description, is_active, expires_at, team_id, "
            "customer_id, provider_configs, allow_all_providers, source, created_at, updated_at) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) "
            "ON CONFLICT (id) DO UPDATE SET name = excluded.name, value_hash = excluded.value_hash, "
            "value_hint = excluded.value_hint, description = excluded.description, is_active = excluded.is_active, "
            "expires_at = excluded.expires_at, team_id = excluded.team_id, customer_id = excluded.customer_id, "
            "provider_configs = excluded.provider_configs, allow_all_providers = excluded.allow_all_providers, "
            "source = excluded.source, updated_at = excluded.updated_at",
            v.id, v.name, v.value_hash, v.value_hint, v.description, v.is_active, v.expires_at, v.team_id,
            v.customer_id, msgspec.json.encode(v.provider_configs).decode(), v.allow_all_providers, source,
            v.created_at, v.updated_at,
        )
        await self._limits(tx, "vk", v)
        await bump_version(tx)

    async def delete(self, tx: Executor, kind: str, owner_id: str) -> bool:
        table = _KINDS[kind][0]
        await tx.execute("DELETE FROM budgets WHERE owner_kind = $1 AND owner_id = $2", kind, owner_id)
        await tx.execute("DELETE FROM rate_limits WHERE owner_kind = $1 AND owner_id = $2", kind, owner_id)
        removed = await tx.execute(f"DELETE FROM {table} WHERE id = $1", owner_id) > 0
        await bump_version(tx)
        return removed

    async def sync_from_file(self, customers: list[Customer], teams: list[Team], vks: list[VirtualKey]) -> None:
        """The file is authoritative for the entries it names (keeping their creation time, so
        budget windows do not move); entries it used to name are removed. One sync at a
        time: two that both found an entry new stamped its budgets each with its own time,
        and the last one's moved the budget's windows away from its owner's."""
        async with self.db.exclusive(FILE_SYNC_LOCK_ID) as tx:
            existing = {
                (kind, r["id"]): int(r["created_at"])
                for kind, (table, _) in _KINDS.items()
                for r in await tx.fetch(f"SELECT id, created_at FROM {table}")
            }
            stamp = now_ms()

            def keep_time(kind: str, owner: Owner) -> None:
                owner.created_at = existing.get((kind, owner.id), stamp)
                owner.updated_at = stamp
                for b in owner.budgets:
                    b.created_at = owner.created_at

            for c in customers:
                keep_time("customer", c)
                await self.save_customer(tx, c, "file")
            for t in teams:
                keep_time("team", t)
                await self.save_team(tx, t, "file")
            for v in vks:
                keep_time("vk", v)
                await self.save_vk(tx, v, "file")
            named = {("customer", c.id) for c in customers} | {("team", t.id) for t in teams} | {("vk", v.id) for v in vks}
            for kind in ("vk", "team", "customer"):  # children first
                table = _KINDS[kind][0]
                for r in await tx.fetch(f"SELECT id FROM {table} WHERE source = 'file'"):
                    if (kind, r["id"]) not in named:
                        await self.delete(tx, kind, r["id"])

    # -- model limits (governance.model_configs) ---------------------------------------------

    async def load_model_limits(self) -> list[ModelLimit]:
        rows = await self.db.fetch("SELECT * FROM model_configs ORDER BY created_at, id")
        return [
            ModelLimit(id=r["id"], name=r["id"], model_name=r["model_name"], provider=r["provider"], vk_id=r["vk_id"],
                       budgets=msgspec.json.decode(r["budgets"], type=list[Budget]),
                       rate_limits=msgspec.json.decode(r["rate_limits"], type=list[RateLimit]),
                       created_at=int(r["created_at"]), updated_at=int(r["updated_at"]))
            for r in rows
        ]

    async def save_model_limit(self, tx: Executor, m: ModelLimit, source: str = "api") -> None:
        await tx.execute(
            "INSERT INTO model_configs (id, model_name, provider, vk_id, budgets, rate_limits, source, created_at, updated_at) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) "
            "ON CONFLICT (id) DO UPDATE SET model_name = excluded.model_name, provider = excluded.provider, "
            "vk_id = excluded.vk_id, budgets = excluded.budgets, rate_limits = excluded.rate_limits, "
            "source = excluded.source, updated_at = excluded.updated_at",
            m.id, m.model_name, m.provider, m.vk_id, msgspec.json.encode(m.budgets).decode(),
            msgspec.json.encode(m.rate_limits).decode(), source, m.created_at, m.updated_at,
        )
        await bump_version(tx)

    async def delete_model_limit(self, tx: Executor, limit_id: str) -> bool:
        removed = await tx.execute("DELETE FROM model_configs WHERE id = $1", limit_id) > 0
        await bump_version(tx)
        return removed

    async def sync_model_limits_from_file(self, limits: list[ModelLimit]) -> None:
        """As ``sync_from_file``: the file's model limits replace those it used to name."""
        async with self.db.exclusive(FILE_SYNC_LOCK_ID) as tx:
            existing = {r["id"]: int(r["created_at"]) for r in await tx.fetch("SELECT id, created_at FROM model_configs")}
            stamp = now_ms()
            for m in limits:
                m.created_at, m.updated_at = existing.get(m.id, stamp), stamp
                await self.save_model_limit(tx, m, "file")
            named = {m.id for m in limits}
            for r in await tx.fetch("SELECT id FROM model_configs WHERE source = 'file'"):
                if r["id"] not in named:
                    await self.delete_model_limit(tx, r["id"])
