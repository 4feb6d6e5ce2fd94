"""PostgreSQL store (asyncpg pool). The password comes from config or env, never logged."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

from ..config.schema import StoreSettings
from .base import StoreUnavailable


class PostgresStore:
    kind = "postgres"

    def __init__(self, settings: StoreSettings, connect_timeout: float = 5.0):
        self.settings = settings
        self.connect_timeout = connect_timeout
        self._pool = None

    @property
    def location(self) -> str:
        s = self.settings
        if s.dsn:
            parts = urlsplit(s.dsn)
            return f"postgres://{parts.hostname}:{parts.port or 5432}{parts.path}"
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
        import asyncpg  # optional until cluster mode; imported only when configured

        s = self.settings
        try:
            self._pool = await asyncpg.create_pool(
                min_size=min(1, s.max_open_conns),
                max_size=s.max_open_conns,
                timeout=self.connect_timeout,
                **self._connect_args(),
            )
        except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
            raise StoreUnavailable(f"postgres store {self.location}: {type(exc).__name__}: {exc}") from exc

    async def ping(self) -> None:
        import asyncpg

        if self._pool is None:
            raise StoreUnavailable(f"postgres store {self.location} is not open")
        try:
            async with asyncio.timeout(2.0):
                await self._pool.fetchval("SELECT 1")
        except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StoreUnavailable(f"postgres store {self.location}: {type(exc).__name__}") from exc

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
