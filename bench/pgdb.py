"""A PostgreSQL database of its own for a benchmark's gateway: created fresh, dropped after."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit, urlunsplit

import asyncpg


def _run(dsn: str, sql: str) -> None:
    async def go() -> None:
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(go())


def fetchval(dsn: str, sql: str):
    async def go():
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            return await conn.fetchval(sql)
        finally:
            await conn.close()

    return asyncio.run(go())


def create(server_dsn: str, name: str) -> str:
    """A new, empty database ``name`` on the server of ``server_dsn``; its DSN."""
    _run(server_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    _run(server_dsn, f'CREATE DATABASE "{name}"')
    parts = urlsplit(server_dsn)
    return urlunsplit(parts._replace(path="/" + name))


def drop(dsn: str) -> None:
    """Drop the database ``create`` returned (connected to the server's own database)."""
    parts = urlsplit(dsn)
    _run(urlunsplit(parts._replace(path="/postgres")), f'DROP DATABASE IF EXISTS "{parts.path.lstrip("/")}" WITH (FORCE)')
