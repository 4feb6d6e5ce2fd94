"""SQLite store (aiosqlite, WAL, one connection = one writer)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import aiosqlite

from .base import StoreUnavailable


class SQLiteStore:
    kind = "sqlite"

    def __init__(self, path: Path):
        self.path = Path(path)
        self._db: aiosqlite.Connection | None = None

    @property
    def location(self) -> str:
        return str(self.path)

    async def open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = await aiosqlite.connect(self.path, timeout=5.0)
            await self._db.execute("PRAGMA journal_mode=WAL")
            await self._db.execute("PRAGMA busy_timeout=5000")
            await self._db.execute(
                "CREATE TABLE IF NOT EXISTS rainbridge_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
            )
            await self._db.commit()
        except (OSError, sqlite3.Error) as exc:
            raise StoreUnavailable(f"sqlite store {self.path}: {exc}") from exc

    async def ping(self) -> None:
        if self._db is None:
            raise StoreUnavailable(f"sqlite store {self.path} is not open")
        if not self.path.exists():
            raise StoreUnavailable(f"sqlite store {self.path}: database file is gone")
        try:
            async with self._db.execute("SELECT count(*) FROM rainbridge_meta") as cur:
                await cur.fetchone()
        except (OSError, sqlite3.Error, ValueError) as exc:
            raise StoreUnavailable(f"sqlite store {self.path}: {exc}") from exc

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None
