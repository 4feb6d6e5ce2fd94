"""Where the log writer's thread puts rows: SQLite or PostgreSQL, over a synchronous connection.

Each sink is used by one thread only and owns its connection (the gateway's async
``Database`` keeps serving ``/api/logs``). ``write`` is all or nothing per batch and returns
how many rows the database refused (those are dropped); it raises ``Unreachable`` when the
database cannot take the batch at all (then nothing of it was written and it is retried).

- SQLite: one ``BEGIN IMMEDIATE`` ... ``COMMIT`` per batch, the rows inserted
  ``SQLITE_CHUNK`` at a time by one multi-row ``INSERT`` (``executemany`` steps a statement
  per row, and lets go of the GIL and takes it back each time: a hand-off to the event
  loop per row when it waits).
- PostgreSQL (psycopg 3): one binary ``COPY`` per batch (autocommit: the statement is the
  transaction); content goes as the UTF-8 bytes the request came with (the server checks
  them). When COPY is refused (bytes that are not UTF-8, (a duplicate
  id of a batch whose commit was lost, a value PostgreSQL will not store: a NUL byte, a
  number out of range) the batch is written again in one transaction, each row an
  ``INSERT ... ON CONFLICT DO NOTHING`` under its own savepoint, so one bad row costs only
  itself.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from functools import lru_cache
from itertools import chain
from pathlib import Path
from typing import Any

from ..config.schema import StoreSettings
from .request_log import COLUMNS

# Values a driver cannot bind or the database will not store: the row is refused, the
# writer goes on. (Lone surrogates fail to encode, ints overflow, PostgreSQL refuses NUL.)
_BAD_VALUE = (ValueError, OverflowError, TypeError)  # UnicodeEncodeError is a ValueError

# The writer thread's pure-Python loops over a batch pause this often, so the event loop
# waiting for the GIL gets it within ~0.1 ms, not after the whole batch (or the interpreter's
# 5 ms switch interval): the c=1 tail. A real pause, not sleep(0): a thread that lets go of
# the GIL may take it straight back.
YIELD_ROWS = 32
YIELD_S = 0.00005


class Unreachable(Exception):
    """The database could not take the batch (connection, lock, disk): keep it, retry."""


class Sink:
    fallbacks = 0  # batches refused as a whole, then written row by row
    text_content = True  # rows carry request/response as str (False: as UTF-8 bytes)

    def write(self, rows: Sequence[tuple]) -> int:
        """Write ``rows`` (``COLUMNS`` order) in one transaction; the number refused."""
        raise NotImplementedError

    def delete_older(self, cutoff_ms: int) -> int:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


# --------------------------------------------------------------------------- SQLite

_SQLITE_ROW = f"({', '.join('?' * len(COLUMNS))})"
_SQLITE_INSERT = f"INSERT INTO request_logs ({', '.join(COLUMNS)}) VALUES {_SQLITE_ROW} ON CONFLICT (ts, id) DO NOTHING"
SQLITE_CHUNK = 32  # rows per INSERT (512 parameters; binding them holds the GIL ~0.1 ms)


@lru_cache(maxsize=SQLITE_CHUNK)
def _sqlite_insert(rows: int) -> str:
    """One INSERT of ``rows`` rows (sqlite3 caches the statement by its text)."""
    return (f"INSERT INTO request_logs ({', '.join(COLUMNS)}) VALUES {', '.join([_SQLITE_ROW] * rows)} "
            "ON CONFLICT (ts, id) DO NOTHING")


def _bind_fast() -> None:
    """Make sqlite3 bind None and bool without its adaptation search. Without an adapter
    registered for their type, each such value costs a protocol lookup that fails (about a
    third of ``executemany``'s own work on a log row, which has four of them); with one, a
    dict hit and a C call. The stored values are the same (NULL; 0 and 1), for every
    connection of the process."""
    sqlite3.register_adapter(type(None), {}.get)  # a C callable that answers None
    sqlite3.register_adapter(bool, int)


class SQLiteSink(Sink):
    def __init__(self, path: Path | str):
        self.path = str(path)
        _bind_fast()
        try:
            # isolation_level=None: we issue BEGIN/COMMIT ourselves; the file is in WAL mode
            # (set by the gateway's connection), so /api/logs reads while a batch is written.
            self.conn = sqlite3.connect(self.path, timeout=5.0, isolation_level=None, check_same_thread=False)
            self.conn.execute("PRAGMA busy_timeout=5000")
            self.conn.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.Error as exc:
            raise Unreachable(f"sqlite logs store {self.path}: {exc}") from None

    def write(self, rows: Sequence[tuple]) -> int:
        conn = self.conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                for start in range(0, len(rows), SQLITE_CHUNK):
                    chunk = rows[start:start + SQLITE_CHUNK]
                    conn.execute(_sqlite_insert(len(chunk)), list(chain.from_iterable(chunk)))
            except (sqlite3.IntegrityError, sqlite3.InterfaceError, sqlite3.ProgrammingError, sqlite3.DataError, *_BAD_VALUE):
                conn.execute("ROLLBACK")
                return self._one_by_one(rows)
            conn.execute("COMMIT")
            return 0
        except sqlite3.Error as exc:  # locked, disk full or I/O, file gone: nothing was written
            self._rollback()
            raise Unreachable(f"sqlite logs store {self.path}: {exc}") from None

    def _one_by_one(self, rows: Sequence[tuple]) -> int:
        """The batch again, each row under a savepoint: the good ones all or nothing."""
        conn = self.conn
        refused = 0
        self.fallbacks += 1
        conn.execute("BEGIN IMMEDIATE")
        for row in rows:
            conn.execute("SAVEPOINT log_row")
            try:
                conn.execute(_SQLITE_INSERT, row)
            except (sqlite3.IntegrityError, sqlite3.InterfaceError, sqlite3.ProgrammingError, sqlite3.DataError, *_BAD_VALUE):
                conn.execute("ROLLBACK TO log_row")
                refused += 1
            conn.execute("RELEASE log_row")
        conn.execute("COMMIT")
        return refused

    def _rollback(self) -> None:
        try:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # the connection is closed and reopened by the writer anyway

    def delete_older(self, cutoff_ms: int) -> int:
        try:
            return self.conn.execute("DELETE FROM request_logs WHERE ts < ?", (cutoff_ms,)).rowcount
        except sqlite3.Error as exc:
            raise Unreachable(f"sqlite logs store {self.path}: {exc}") from None

    def close(self) -> None:
        self.conn.close()


# --------------------------------------------------------------------------- PostgreSQL

_PG_COPY = f"COPY request_logs ({', '.join(COLUMNS)}) FROM STDIN (FORMAT BINARY)"
# Content as bytea: its binary form is the bytes themselves, which the server reads as text
# (COPY's binary rows carry no type, the column's decides) and checks are valid UTF-8.
_PG_TYPES = ("text", "int8", "text", "text", "text", "text", "text", "bool", "int4", "float8",
             "int8", "int8", "float8", "text", "bytea", "bytea")
_PG_INSERT = (f"INSERT INTO request_logs ({', '.join(COLUMNS)}) VALUES ({', '.join(['%s'] * len(COLUMNS))}) "
              "ON CONFLICT (ts, id) DO NOTHING")


def pg_conninfo(settings: StoreSettings) -> dict[str, Any]:
    """psycopg's connection arguments for the logs store's settings."""
    if settings.dsn:
        return {"conninfo": settings.dsn}
    args = {"host": settings.host, "port": settings.port, "user": settings.user, "password": settings.password,
            "dbname": settings.db_name, "sslmode": settings.ssl_mode}
    return {k: v for k, v in args.items() if v is not None}


def _as_text(row: tuple) -> tuple:
    """A row with its content (UTF-8 bytes) as text for an INSERT; not UTF-8: replaced."""
    request, response = row[-2:]
    if type(request) is bytes:
        request = request.decode("utf-8", "replace")
    if type(response) is bytes:
        response = response.decode("utf-8", "replace")
    return (*row[:-2], request, response)


class PostgresSink(Sink):
    text_content = False

    def __init__(self, settings: StoreSettings, location: str, connect_timeout: float = 5.0):
        import psycopg
        from psycopg.types.string import BytesBinaryDumper

        self.location = location  # for messages: never the DSN (it may carry a password)
        self._psycopg = psycopg
        try:
            # autocommit: one COPY is one transaction already (all or nothing), and saves the
            # BEGIN and COMMIT round trips that cost as much as the COPY for a small batch.
            self.conn = psycopg.connect(**pg_conninfo(settings), autocommit=True, connect_timeout=max(1, int(connect_timeout)))
            # bytea by oid is otherwise psycopg.dbapi20's dumper (Python, for its Binary
            # wrapper: a Python call per value); this one is psycopg's C dumper for bytes.
            self.conn.adapters.register_dumper(bytes, BytesBinaryDumper)
            self.cur = self.conn.cursor()
        except psycopg.Error as exc:
            raise Unreachable(f"postgres logs store {location}: {type(exc).__name__}") from None

    def _unreachable(self, exc: BaseException) -> Unreachable:
        return Unreachable(f"postgres logs store {self.location}: {type(exc).__name__}")

    def write(self, rows: Sequence[tuple]) -> int:
        pg = self._psycopg
        try:
            try:
                with self.cur.copy(_PG_COPY) as copy:
                    copy.set_types(_PG_TYPES)
                    write_row = copy.write_row
                    for n, row in enumerate(rows, 1):
                        write_row(row)
                        if not n % YIELD_ROWS:
                            time.sleep(YIELD_S)  # hand the GIL to the event loop (as log_writer._rows)
                return 0
            except (pg.DataError, pg.IntegrityError, pg.ProgrammingError, *_BAD_VALUE):
                return self._one_by_one(rows)
        except (pg.OperationalError, pg.InterfaceError) as exc:  # connection lost, server gone
            raise self._unreachable(exc) from None

    def _one_by_one(self, rows: Sequence[tuple]) -> int:
        pg = self._psycopg
        refused = 0
        self.fallbacks += 1
        cur = self.cur
        with self.conn.transaction():
            for row in rows:
                try:
                    with self.conn.transaction():  # a savepoint
                        cur.execute(_PG_INSERT, _as_text(row))
                except (pg.DataError, pg.IntegrityError, pg.ProgrammingError, *_BAD_VALUE):
                    refused += 1
        return refused

    def delete_older(self, cutoff_ms: int) -> int:
        pg = self._psycopg
        try:
            self.cur.execute("DELETE FROM request_logs WHERE ts < %s", (cutoff_ms,))
            return self.cur.rowcount
        except (pg.OperationalError, pg.InterfaceError) as exc:
            raise self._unreachable(exc) from None

    def close(self) -> None:
        self.conn.close()
