"""Routing rules in the config store (``routing_rules``), as the JSON Bifrost's API takes.

Writes happen in the caller's transaction and bump ``config_version``, so every worker and
member reloads (and recompiles) them; the file's rules replace those it named at start-up.
"""

from __future__ import annotations

from typing import NamedTuple

import msgspec

from ..config.schema import RoutingRuleConfig
from ..gateway.rules_config import rule_id
from .db import Database, Executor
from .governance_repo import bump_version
from .providers_repo import now_ms


class StoredRule(NamedTuple):
    rule: RoutingRuleConfig  # its id is set
    source: str  # file | api
    created_at: int
    updated_at: int


class RoutingRulesRepo:
    def __init__(self, db: Database):
        self.db = db

    async def load(self) -> list[StoredRule]:
        rows = await self.db.fetch("SELECT * FROM routing_rules ORDER BY created_at, id")
        return [StoredRule(msgspec.json.decode(r["body"], type=RoutingRuleConfig), r["source"], int(r["created_at"]),
                           int(r["updated_at"])) for r in rows]

    async def exists(self, tx: Executor, rid: str) -> bool:
        return await tx.fetchval("SELECT 1 FROM routing_rules WHERE id = $1", rid) is not None

    async def save(self, tx: Executor, rule: RoutingRuleConfig, source: str, created_at: int, updated_at: int) -> None:
        rule.id = rule_id(rule)
        await tx.execute(
            "INSERT INTO routing_rules (id, body, source, created_at, updated_at) VALUES ($1, $2, $3, $4, $5) "
            "ON CONFLICT (id) DO UPDATE SET body = excluded.body, source = excluded.source, updated_at = excluded.updated_at",
            rule.id, msgspec.json.encode(rule).decode(), source, created_at, updated_at,
        )
        await bump_version(tx)

    async def delete(self, tx: Executor, rid: str) -> bool:
        removed = await tx.execute("DELETE FROM routing_rules WHERE id = $1", rid) > 0
        await bump_version(tx)
        return removed

    async def sync_from_file(self, rules: list[RoutingRuleConfig]) -> None:
        """The file's rules replace those it named before (rules made through the API stay)."""
        async with self.db.transaction() as tx:
            existing = {r["id"]: int(r["created_at"]) for r in await tx.fetch("SELECT id, created_at FROM routing_rules")}
            stamp = now_ms()
            for rule in rules:
                await self.save(tx, msgspec.structs.replace(rule), "file", existing.get(rule_id(rule), stamp), stamp)
            named = {rule_id(r) for r in rules}
            for r in await tx.fetch("SELECT id FROM routing_rules WHERE source = 'file'"):
                if r["id"] not in named:
                    await self.delete(tx, r["id"])
