"""The config store and the logs store: SQLite (single node, default) or PostgreSQL.

``open_database`` picks the engine from ``config_store`` / ``logs_store``;
``ConfigStore.open`` connects (retrying PostgreSQL for a bounded time), migrates, checks
the encryption key and hands out the repositories.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path

from ..config.schema import Config, StoreConfig
from .base import StoreUnavailable
from .db import Database, PostgresDatabase, SQLiteDatabase
from .migrate import SchemaError, check, migrate
from .providers_repo import ProvidersRepo
from .secrets import EncryptionKeyError, Secrets, setup_encryption

__all__ = [
    "ConfigStore", "Database", "EncryptionKeyError", "SchemaError", "StoreUnavailable",
    "connect", "encryption_passphrase", "open_database",
]

log = logging.getLogger("rainbridge.store")


def open_database(config: StoreConfig | None, app_dir: Path, default_file: str) -> Database | None:
    """The database ``config`` describes (None: SQLite in the app dir); None when disabled."""
    if config is None:
        return SQLiteDatabase(Path(app_dir) / default_file)
    if not config.enabled:
        return None
    if config.type == "postgres":
        return PostgresDatabase(config.config)
    return SQLiteDatabase(Path(config.config.path) if config.config.path else Path(app_dir) / default_file)


def encryption_passphrase(config: Config) -> str | None:
    return config.encryption_key or os.environ.get("RAINBRIDGE_ENCRYPTION_KEY") or os.environ.get("BIFROST_ENCRYPTION_KEY") or None


async def connect(db: Database, wait_s: float) -> None:
    """Open ``db``, retrying with backoff for up to ``wait_s`` seconds."""
    deadline = time.monotonic() + wait_s
    delay = 0.5
    attempt = 1
    while True:
        try:
            await db.open()
            if attempt > 1:
                log.info("store %s reachable after %d attempts", db.location, attempt)
            return
        except StoreUnavailable as exc:
            left = deadline - time.monotonic()
            if left <= 0:
                raise StoreUnavailable(f"{exc} (gave up after {attempt} attempts in {wait_s:g}s)") from None
            wait = min(delay, left)
            log.warning("store %s unreachable (attempt %d): %s; retrying in %.1fs", db.location, attempt, exc, wait)
            await asyncio.sleep(wait)
            delay = min(delay * 2, 5.0)
            attempt += 1


class ConfigStore:
    def __init__(self, db: Database, secrets: Secrets):
        self.db = db
        self.secrets = secrets
        self.providers = ProvidersRepo(db, secrets)

    @property
    def kind(self) -> str:
        return self.db.kind

    @classmethod
    async def open(cls, db: Database, passphrase: str | None, run_migrations: bool = True, wait_s: float = 60.0) -> ConfigStore:
        await connect(db, wait_s)
        try:
            if run_migrations:
                applied = await migrate(db, "config")
                if applied:
                    log.info("config store %s migrated to version %d", db.location, applied[-1])
            else:
                await check(db, "config")
            secrets = await setup_encryption(db, passphrase)
        except BaseException:
            await db.close()
            raise
        return cls(db, secrets)

    async def ping(self) -> None:
        await self.db.ping()

    async def close(self) -> None:
        await self.db.close()
