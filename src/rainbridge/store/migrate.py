"""Versioned SQL migrations per component (config, logs) and dialect.

Files ``migrations/<component>/<dialect>/NNNN_name.sql`` are applied in order, each in the
same transaction as its ``schema_migrations`` row. On PostgreSQL the whole run holds a
transaction-scoped advisory lock, and on SQLite a ``BEGIN IMMEDIATE`` transaction, so ten
replicas starting at once migrate exactly once. A database that has versions this code does
not know is refused: running old code on a newer schema could corrupt it.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from importlib import resources

from .db import Database, Executor

LOCK_IDS = {"config": 7_351_001, "logs": 7_351_002}
_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


class SchemaError(Exception):
    """The schema is behind (and migrations are off) or ahead of this code."""


def migrations(component: str, dialect: str) -> list[Migration]:
    folder = resources.files("rainbridge.store") / "migrations" / component / dialect
    found = []
    for entry in folder.iterdir():
        m = _FILE.match(entry.name)
        if m:
            found.append(Migration(int(m.group(1)), m.group(2), entry.read_text(encoding="utf-8")))
    return sorted(found, key=lambda m: m.version)


async def _ensure_table(tx: Executor) -> None:
    await tx.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " component TEXT NOT NULL, version INTEGER NOT NULL, name TEXT NOT NULL,"
        " applied_at BIGINT NOT NULL, PRIMARY KEY (component, version))"
    )


async def _applied(tx: Executor, component: str) -> set[int]:
    rows = await tx.fetch("SELECT version FROM schema_migrations WHERE component = $1", component)
    return {int(r["version"]) for r in rows}


def _check_not_ahead(component: str, applied: set[int], known: list[Migration]) -> None:
    newest = max((m.version for m in known), default=0)
    ahead = sorted(v for v in applied if v > newest)
    if ahead:
        raise SchemaError(
            f"the {component} schema is at version {max(ahead)}, newer than this rainbridge knows "
            f"({newest}); upgrade rainbridge instead of running an older version on this database"
        )


async def migrate(db: Database, component: str) -> list[int]:
    """Apply every missing migration; return the versions applied now."""
    known = migrations(component, db.dialect)
    async with db.exclusive(LOCK_IDS[component]) as tx:
        await _ensure_table(tx)
        applied = await _applied(tx, component)
        _check_not_ahead(component, applied, known)
        done = []
        for m in known:
            if m.version in applied:
                continue
            await tx.script(m.sql)
            await tx.execute(
                "INSERT INTO schema_migrations (component, version, name, applied_at) VALUES ($1, $2, $3, $4)",
                component, m.version, m.name, int(time.time() * 1000),
            )
            done.append(m.version)
    return done


async def check(db: Database, component: str) -> None:
    """Raise ``SchemaError`` unless the schema is exactly what this code expects."""
    known = migrations(component, db.dialect)
    async with db.exclusive(LOCK_IDS[component]) as tx:
        await _ensure_table(tx)
        applied = await _applied(tx, component)
    _check_not_ahead(component, applied, known)
    missing = [m.version for m in known if m.version not in applied]
    if missing:
        raise SchemaError(
            f"the {component} schema is behind (missing version(s) {', '.join(map(str, missing))}); "
            "run `rainbridge migrate` or start without --no-migrate"
        )
