"""Where the log writer's thread puts pages: SQLite or PostgreSQL, over a synchronous connection.

Each sink is used by one thread only and owns its connection (the gateway's async
``Database`` keeps serving ``/api/logs``). ``write`` puts pages (``log_pages``) and their
virtual keys in one transaction, all or nothing; it raises ``Unreachable`` when the
database cannot take them (then nothing was written and they are retried). A page already
there (a retry after a commit whose answer was lost) is skipped: ``ON CONFLICT DO NOTHING``
on its unique ``(max_ts, id)``. Pages the database refuses for what they hold (too big, say)
raise ``Refused``: dropped and counted, never retried forever. ``delete_older`` is the
retention: pages, their keys and the rows of the request-per-row table of schema 1-2.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..config.schema import StoreSettings
from .log_pages import PAGE_COLUMNS, Page


class Unreachable(Exception):
    """The database could not take the pages (connection, lock, disk): keep them, retry."""


class Refused(Exception):
    """The database will not store these pages, whenever asked: drop them."""


_SQLITE_REFUSED = (sqlite3.DataError, sqlite3.IntegrityError, sqlite3.ProgrammingError, sqlite3.InterfaceError,
                   OverflowError, ValueError)


class Sink:
    def write(self, pages: Sequence[Page]) -> None:
        """Write ``pages`` in one transaction."""
        raise NotImplementedError

    def delete_older(self, cutoff_ms: int) -> int:
        """Remove what started before ``cutoff_ms`` (whole pages: their latest start); the
        number of requests removed."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


def _insert_page(placeholder: str) -> str:
    return (f"INSERT INTO request_log_pages ({', '.join(PAGE_COLUMNS)}) VALUES ({', '.join([placeholder] * len(PAGE_COLUMNS))}) "
            "ON CONFLICT (max_ts, id) DO NOTHING")


def _insert_key(placeholder: str) -> str:
    return (f"INSERT INTO request_log_page_keys (virtual_key_id, max_ts, page_id) VALUES ({placeholder}, {placeholder}, "
            f"{placeholder}) ON CONFLICT DO NOTHING")


def _keys(pages: Sequence[Page]) -> list[tuple]:
    return [(key, page.max_ts, page.id) for page in pages for key in page.keys]


# (SQL, the count of requests it removes) for the retention; $1 is the cutoff in ms
_RETENTION = (
    ("DELETE FROM request_log_page_keys WHERE max_ts < {0}", None),
    ("DELETE FROM request_log_pages WHERE max_ts < {0}", "SELECT coalesce(sum(row_count), 0) FROM request_log_pages WHERE max_ts < {0}"),
    ("DELETE FROM request_logs WHERE ts < {0}", "SELECT count(*) FROM request_logs WHERE ts < {0}"),
)


# --------------------------------------------------------------------------- SQLite

_SQLITE_PAGE = _insert_page("?")
_SQLITE_KEY = _insert_key("?")


class SQLiteSink(Sink):
    def __init__(self, path: Path | str):
        self.path = str(path)
        try:
            # isolation_level=None: we issue BEGIN/COMMIT ourselves; the file is in WAL mode
            # (set by the gateway's connection), so /api/logs reads while a page is written.
            self.conn = sqlite3.connect(self.path, timeout=5.0, isolation_level=None, check_same_thread=False)
            self.conn.execute("PRAGMA busy_timeout=5000")
            self.conn.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.Error as exc:
            raise Unreachable(f"sqlite logs store {self.path}: {exc}") from None

    def write(self, pages: Sequence[Page]) -> None:
        conn = self.conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(_SQLITE_PAGE, [page.record() for page in pages])
            conn.executemany(_SQLITE_KEY, _keys(pages))
            conn.execute("COMMIT")
        except _SQLITE_REFUSED as exc:
            self._rollback()
            raise Refused(f"sqlite logs store {self.path}: {exc}") from None
        except sqlite3.Error as exc:  # locked, disk full or I/O, file gone: nothing was written
            self._rollback()
            raise Unreachable(f"sqlite logs store {self.path}: {exc}") from None

    def _rollback(self) -> None:
        try:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # the connection is closed and reopened by the writer anyway

    def delete_older(self, cutoff_ms: int) -> int:
        conn = self.conn
        try:
            removed = 0
            conn.execute("BEGIN IMMEDIATE")
            for delete, counted in _RETENTION:
                if counted:
                    removed += conn.execute(counted.format("?"), (cutoff_ms,)).fetchone()[0]
                conn.execute(delete.format("?"), (cutoff_ms,))
            conn.execute("COMMIT")
            return removed
        except sqlite3.Error as exc:
            self._rollback()
            raise Unreachable(f"sqlite logs store {self.path}: {exc}") from None

    def close(self) -> None:
        self.conn.close()


# --------------------------------------------------------------------------- PostgreSQL

# Binary parameters: the blob and the JSON go as they are (as text they would be escaped
# by the driver and unescaped by the server).
_PG_PAGE = _insert_page("%b")
_PG_KEY = _insert_key("%b")


def pg_conninfo(settings: StoreSettings) -> dict[str, Any]:
    """psycopg's connection arguments for the logs store's settings."""
    if settings.dsn:
        return {"conninfo": settings.dsn}
    args = {"host": settings.host, "port": settings.port, "user": settings.user, "password": settings.password,
            "dbname": settings.db_name, "sslmode": settings.ssl_mode}
    return {k: v for k, v in args.items() if v is not None}


class PostgresSink(Sink):
    def __init__(self, settings: StoreSettings, location: str, connect_timeout: float = 5.0):
        import psycopg

        self.location = location  # for messages: never the DSN (it may carry a password)
        self._psycopg = psycopg
        try:
            self.conn = psycopg.connect(**pg_conninfo(settings), autocommit=True, connect_timeout=max(1, int(connect_timeout)))
            self.cur = self.conn.cursor()
        except psycopg.Error as exc:
            raise Unreachable(f"postgres logs store {location}: {type(exc).__name__}") from None

    def _unreachable(self, exc: BaseException) -> Unreachable:
        return Unreachable(f"postgres logs store {self.location}: {type(exc).__name__}")

    def write(self, pages: Sequence[Page]) -> None:
        pg = self._psycopg
        try:
            with self.conn.transaction():
                self.cur.executemany(_PG_PAGE, [page.record() for page in pages])
                keys = _keys(pages)
                if keys:
                    self.cur.executemany(_PG_KEY, keys)
        except (pg.OperationalError, pg.InterfaceError) as exc:  # connection lost, server gone
            raise self._unreachable(exc) from None
        except (pg.DataError, pg.IntegrityError, pg.ProgrammingError, OverflowError, ValueError) as exc:
            raise Refused(f"postgres logs store {self.location}: {type(exc).__name__}") from None

    def delete_older(self, cutoff_ms: int) -> int:
        pg = self._psycopg
        try:
            removed = 0
            with self.conn.transaction():
                for delete, counted in _RETENTION:
                    if counted:
                        removed += self.cur.execute(counted.format("%s"), (cutoff_ms,)).fetchone()[0]
                    self.cur.execute(delete.format("%s"), (cutoff_ms,))
            return removed
        except (pg.OperationalError, pg.InterfaceError) as exc:
            raise self._unreachable(exc) from None

    def close(self) -> None:
        self.conn.close()
