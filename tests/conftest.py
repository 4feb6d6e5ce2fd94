import asyncio
import contextlib
import os
import uuid
from urllib.parse import urlsplit, urlunsplit

import pytest

from support import GatewayProcess, MockProcess, stop_all

PG_DSN = os.environ.get("RAINBRIDGE_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture(scope="session")
def mock(tmp_path_factory):
    m = MockProcess(tmp_path_factory.mktemp("mock"))
    yield m
    m.stop()


@pytest.fixture
def start_gateway(tmp_path):
    started: list[GatewayProcess] = []

    def start(config, *args, **kw):
        gw = GatewayProcess(tmp_path, config, *args, name=f"gw{len(started)}", **kw)
        started.append(gw)
        return gw

    yield start
    stop_all(gw.proc for gw in started)


# --------------------------------------------------------------------------- databases


def _with_db(dsn: str, name: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path="/" + name))


async def _admin(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_DSN)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@contextlib.contextmanager
def _fresh_database():
    name = f"rb_test_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    try:
        yield _with_db(PG_DSN, name)
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def pg_database():
    """A fresh PostgreSQL database for one test, dropped afterwards; yields its DSN."""
    with _fresh_database() as dsn:
        yield dsn


@pytest.fixture(scope="module")
def module_pg_database():
    """One fresh database for a whole module: for a fleet its tests share."""
    with _fresh_database() as dsn:
        yield dsn


@pytest.fixture(params=["sqlite", "postgres"])
def store_config(request, tmp_path):
    """A config_store block for each engine: the same behavioural tests run on both."""
    if request.param == "sqlite":
        return {"enabled": True, "type": "sqlite", "config": {"path": str(tmp_path / "config.db")}}
    return {"enabled": True, "type": "postgres", "config": {"dsn": request.getfixturevalue("pg_database")}}


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def module_store_config(request, tmp_path_factory):
    """``store_config`` for a gateway a module's tests share (tests that write nothing)."""
    if request.param == "sqlite":
        path = tmp_path_factory.mktemp("store") / "config.db"
        return {"enabled": True, "type": "sqlite", "config": {"path": str(path)}}
    return {"enabled": True, "type": "postgres", "config": {"dsn": request.getfixturevalue("module_pg_database")}}
