"""One small database interface over SQLite (aiosqlite) and PostgreSQL (asyncpg).

Repositories write SQL once with ``$1``-style placeholders; the SQLite side rewrites them to
``?1``. Where the dialects really differ (``GREATEST`` vs ``MAX``) a repository asks
``db.dialect``. Rows come back as dicts. SQLite has one connection (one writer), so every
operation and transaction on it is serialized by a lock.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sqlite3
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiosqlite

from ..config.schema import StoreSettings
from .base import Conflict, StoreUnavailable

_PLACEHOLDER = re.compile(r"\$(\d+)")

# Drivers whose DEBUG lines carry statement parameters (aiosqlite logs every call with its
# arguments: encrypted values, but also plaintext a repository may pass). asyncpg logs no
# parameters (its "asyncpg.pool" logger warns about connections only).
_CHATTY_DRIVERS = ("aiosqlite",)


def quiet_driver_logs() -> None:
    """Keep driver loggers at INFO or above, even under ``--log-level debug``: a secret
    bound to a statement must never reach a log."""
    level = max(logging.INFO, logging.getLogger().getEffectiveLevel())
    for name in _CHATTY_DRIVERS:
        logging.getLogger(name).setLevel(level)


class Executor:
    """What a transaction (and the database itself) can run."""

    dialect: str

    async def execute(self, sql: str, *args: Any) -> int:
        """Run a statement; return the number of rows it changed."""
        raise NotImplementedError

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        raise NotImplementedError

    async def fetch(self, sql: str, *args: Any) -> list[dict]:
        raise NotImplementedError

    async def fetchrow(self, sql: str, *args: Any) -> dict | None:
        rows = await self.fetch(sql, *args)
        return rows[0] if rows else None

    async def fetchval(self, sql: str, *args: Any) -> Any:
        row = await self.fetchrow(sql, *args)
        return next(iter(row.values())) if row else None

    async def script(self, sql: str) -> None:
        """Run several statements (a migration file)."""
        raise NotImplementedError

    def greatest(self, a: str, b: str) -> str:
        return f"GREATEST({a}, {b})" if self.dialect == "postgres" else f"MAX({a}, {b})"


class Database(Executor):
    kind: str

    @property
    def location(self) -> str:
        raise NotImplementedError

    async def open(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def ping(self) -> None:
        raise NotImplementedError

    def transaction(self) -> Any:
        """``async with db.transaction() as tx:`` — all or nothing."""
        raise NotImplementedError

    @asynccontextmanager
    async def exclusive(self, lock_id: int) -> AsyncIterator[Executor]:
        """A transaction that no other process runs at the same time (migrations)."""
        raise NotImplementedError
        yield  # pragma: no cover


# --------------------------------------------------------------------------- SQLite


def _sqlite_sql(sql: str) -> str:
    return _PLACEHOLDER.sub(r"?\1", sql)


def split_statements(script: str) -> list[str]:
    """Our migration files: statements end with ';' at the end of a line."""
    statements, current = [], []
    for line in script.splitlines():
        stripped = line.strip()
        if stripped.startswith("--") or not stripped:
            continue
        current.append(line)
        if stripped.endswith(";"):
            statements.append("\n".join(current))
            current = []
    if current:
        statements.append("\n".join(current))
    return statements


class _SQLiteTx(Executor):
    dialect = "sqlite"

    def __init__(self, conn: aiosqlite.Connection):
        self.conn = conn

    async def execute(self, sql: str, *args: Any) -> int:
        try:
            cursor = await self.conn.execute(_sqlite_sql(sql), args)
        except sqlite3.IntegrityError as exc:
            raise Conflict(str(exc)) from None
        return cursor.rowcount

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        await self.conn.executemany(_sqlite_sql(sql), list(rows))

    async def fetch(self, sql: str, *args: Any) -> list[dict]:
        async with self.conn.execute(_sqlite_sql(sql), args) as cursor:
            rows = await cursor.fetchall()
            names = [d[0] for d in cursor.description or ()]
        return [dict(zip(names, row, strict=True)) for row in rows]

    async def script(self, sql: str) -> None:
        for statement in split_statements(sql):
            await self.conn.execute(statement)


class SQLiteDatabase(Database):
    kind = "sqlite"
    dialect = "sqlite"

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self._conn: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()

    @property
    def location(self) -> str:
        return str(self.path)

    async def open(self) -> None:
        quiet_driver_logs()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: we issue BEGIN/COMMIT ourselves.
            self._conn = await aiosqlite.connect(self.path, timeout=5.0, isolation_level=None)
            await self._conn.execute("PRAGMA journal_mode=WAL")
            await self._conn.execute("PRAGMA busy_timeout=5000")
            await self._conn.execute("PRAGMA foreign_keys=ON")
            await self._conn.execute("PRAGMA synchronous=NORMAL")
        except (OSError, sqlite3.Error) as exc:
            raise StoreUnavailable(f"sqlite store {self.path}: {exc}") from exc

    def _tx(self) -> _SQLiteTx:
        if self._conn is None:
            raise StoreUnavailable(f"sqlite store {self.path} is not open")
        return _SQLiteTx(self._conn)

    async def _run(self, method: str, *args: Any) -> Any:
        async with self._lock:
            try:
                return await getattr(self._tx(), method)(*args)
            except sqlite3.OperationalError as exc:
                raise StoreUnavailable(f"sqlite store {self.path}: {exc}") from exc

    async def execute(self, sql: str, *args: Any) -> int:
        return await self._run("execute", sql, *args)

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        await self._run("executemany", sql, rows)

    async def fetch(self, sql: str, *args: Any) -> list[dict]:
        return await self._run("fetch", sql, *args)

    async def script(self, sql: str) -> None:
        async with self.transaction() as tx:
            await tx.script(sql)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Executor]:
        async with self._lock:
            tx = self._tx()
            try:
                await tx.conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise StoreUnavailable(f"sqlite store {self.path}: {exc}") from exc
            try:
                yield tx
            except BaseException:
                await tx.conn.execute("ROLLBACK")
                raise
            await tx.conn.execute("COMMIT")

    def exclusive(self, lock_id: int) -> Any:
        # BEGIN IMMEDIATE already excludes every other writer process.
        return self.transaction()

    async def ping(self) -> None:
        if not self.path.exists():
            raise StoreUnavailable(f"sqlite store {self.path}: database file is gone")
        await self.fetchval("SELECT 1")

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None


# --------------------------------------------------------------------------- PostgreSQL


class _PgTx(Executor):
    dialect = "postgres"

    def __init__(self, conn: Any):
        self.conn = conn

    async def execute(self, sql: str, *args: Any) -> int:
        import asyncpg

        try:
            status = await self.conn.execute(sql, *args)
        except asyncpg.IntegrityConstraintViolationError as exc:
            raise Conflict(f"{type(exc).__name__}: {exc.constraint_name or exc}") from None
        tail = status.rsplit(" ", 1)[-1] if isinstance(status, str) else ""
        return int(tail) if tail.isdigit() else 0

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        await self.conn.executemany(sql, list(rows))

    async def fetch(self, sql: str, *args: Any) -> list[dict]:
        return [dict(r) for r in await self.conn.fetch(sql, *args)]

    async def script(self, sql: str) -> None:
        await self.conn.execute(sql)


def _pg_errors() -> tuple[type[BaseException], ...]:
    import asyncpg

    return (OSError, asyncio.TimeoutError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
            asyncpg.CannotConnectNowError, asyncpg.TooManyConnectionsError)


class PostgresDatabase(Database):
    kind = "postgres"
    dialect = "postgres"

    def __init__(self, settings: StoreSettings, connect_timeout: float = 5.0):
        self.settings = settings
        self.connect_timeout = connect_timeout
        self._pool: Any = None

    @property
    def location(self) -> str:
        s = self.settings
        if s.dsn:
            parts = urlsplit(s.dsn)
            # a Unix socket directory comes as ?host=/path (the demo's embedded PostgreSQL)
            host = parts.hostname or parse_qs(parts.query).get("host", ["localhost"])[0]
            return f"postgres://{host}:{parts.port or 5432}{parts.path}"
        return f"postgres://{s.host}:{s.port}/{s.db_name or ''}"

    def _connect_args(self) -> dict:
        s = self.settings
        if s.dsn:
            return {"dsn": s.dsn}
        args = {"host": s.host, "port": s.port, "user": s.user, "password": s.password, "database": s.db_name}
        if s.ssl_mode and s.ssl_mode != "disable":
            args["ssl"] = s.ssl_mode
        return {k: v for k, v in args.items() if v is not None}

    async def open(self) -> None:
        import asyncpg

        s = self.settings
        try:
            self._pool = await asyncpg.create_pool(
                min_size=min(s.max_idle_conns, s.max_open_conns),
                max_size=s.max_open_conns,
                max_inactive_connection_lifetime=60.0,
                timeout=self.connect_timeout,
                command_timeout=30.0,
                **self._connect_args(),
            )
        except (*_pg_errors(), asyncpg.PostgresError) as exc:
            raise StoreUnavailable(f"postgres store {self.location}: {type(exc).__name__}: {_safe(exc)}") from None

    @asynccontextmanager
    async def _conn(self) -> AsyncIterator[Any]:
        if self._pool is None:
            raise StoreUnavailable(f"postgres store {self.location} is not open")
        try:
            async with self._pool.acquire(timeout=self.connect_timeout) as conn:
                yield conn
        except _pg_errors() as exc:
            raise StoreUnavailable(f"postgres store {self.location}: {type(exc).__name__}") from None

    async def execute(self, sql: str, *args: Any) -> int:
        async with self._conn() as conn:
            return await _PgTx(conn).execute(sql, *args)

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        async with self._conn() as conn:
            await _PgTx(conn).executemany(sql, rows)

    async def fetch(self, sql: str, *args: Any) -> list[dict]:
        async with self._conn() as conn:
            return await _PgTx(conn).fetch(sql, *args)

    async def script(self, sql: str) -> None:
        async with self.transaction() as tx:
            await tx.script(sql)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Executor]:
        async with self._conn() as conn, conn.transaction():
            yield _PgTx(conn)

    @asynccontextmanager
    async def exclusive(self, lock_id: int) -> AsyncIterator[Executor]:
        async with self._conn() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", lock_id)
            yield _PgTx(conn)

    async def ping(self) -> None:
        async with self._conn() as conn:
            try:
                async with asyncio.timeout(2.0):
                    await conn.fetchval("SELECT 1")
            except _pg_errors() as exc:
                raise StoreUnavailable(f"postgres store {self.location}: {type(exc).__name__}") from None

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            try:
                async with asyncio.timeout(5.0):
                    await pool.close()
            except TimeoutError:
                pool.terminate()


def _safe(exc: BaseException) -> str:
    """An error text without a password (asyncpg messages do not carry it, but a DSN might)."""
    text = str(exc)
    return re.sub(r"://[^@/\s]*@", "://***@", text)
