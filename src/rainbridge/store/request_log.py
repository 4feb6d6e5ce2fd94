"""The request log, read with filters and cursors (``GET /api/logs``).

Requests are written off the request path by ``log_writer.LogWriter`` (a thread of its own)
as pages (``log_pages``: a batch of requests per row). A read walks the pages newest first
by their latest request start (``max_ts``) and decodes them; a page whose latest start is
older than the ``limit + 1``-th newest request found so far cannot hold a newer one, so the
walk stops there (pages of different batches overlap in start time: a long stream is
written when it ends). Rows of the request-per-row table of schema versions 1-2
(``request_logs``) are read with SQL as before and merged. A walk decodes pages of at most
``SCAN_ROWS`` requests in all: a filter that matches little in a large log returns what it
found newer than where it stopped and a cursor to go on from there.
"""

from __future__ import annotations

import base64
from typing import Any

import orjson

from .db import Database
from .log_pages import page_row, page_rows

COLUMNS = (
    "id", "ts", "node_id", "virtual_key_id", "provider", "model", "endpoint", "stream", "status",
    "latency_ms", "prompt_tokens", "completion_tokens", "cost", "error_type", "request", "response",
)
PAGES_PER_FETCH = 8
SCAN_ROWS = 131_072  # requests decoded at most per read (the pages' sizes vary with the load)


def encode_cursor(ts: int, row_id: str) -> str:
    return base64.urlsafe_b64encode(f"{ts}:{row_id}".encode()).decode()


def decode_cursor(cursor: str) -> tuple[int, str]:
    try:
        ts, _, row_id = base64.urlsafe_b64decode(cursor.encode()).decode().partition(":")
        at = int(ts)
    except (ValueError, UnicodeDecodeError):
        raise ValueError("cursor is not one this API returned") from None
    if not 0 <= at < 2**62 or len(row_id) > 200:  # (a BIGINT column, an id of ours)
        raise ValueError("cursor is not one this API returned")
    return at, row_id


class _Where:
    """WHERE clauses with ``$n`` placeholders, numbered as values are added ("?" each)."""

    def __init__(self) -> None:
        self.clauses: list[str] = []
        self.args: list[Any] = []

    def add(self, clause: str, *values: Any) -> None:
        for value in values:
            self.args.append(value)
            clause = clause.replace("?", f"${len(self.args)}", 1)
        self.clauses.append(clause)

    def before(self, ts_column: str, id_column: str, ts: int, row_id: str) -> None:
        """Keyset: what sorts before (ts, id), newest first."""
        self.add(f"({ts_column} < ? OR ({ts_column} = ? AND {id_column} < ?))", ts, ts, row_id)

    def copy(self) -> _Where:
        other = _Where()
        other.clauses, other.args = list(self.clauses), list(self.args)
        return other

    def sql(self) -> str:
        return " WHERE " + " AND ".join(self.clauses) if self.clauses else ""


async def _legacy_rows(db: Database, filters: dict[str, Any], limit: int, before: tuple[int, str] | None,
                       with_content: bool) -> list[dict]:
    """The newest ``limit + 1`` matching rows of the request-per-row table (schema 1-2)."""
    where = _Where()
    if filters.get("start_ms") is not None:
        where.add("ts >= ?", filters["start_ms"])
    if filters.get("end_ms") is not None:
        where.add("ts < ?", filters["end_ms"])
    for column in ("provider", "model", "virtual_key_id", "status"):
        if filters.get(column) is not None:
            where.add(f"{column} = ?", filters[column])
    if filters.get("errors_only"):
        where.add("status >= 400")
    if before is not None:
        where.before("ts", "id", *before)
    columns = COLUMNS if with_content else COLUMNS[:-2]
    where.args.append(limit + 1)
    sql = f"SELECT {', '.join(columns)} FROM request_logs{where.sql()} ORDER BY ts DESC, id DESC LIMIT ${len(where.args)}"
    args = where.args
    rows = await db.fetch(sql, *args)
    for row in rows:
        row["stream"] = bool(row["stream"])
    return rows


def _matching(page: dict, filters: dict[str, Any], before: tuple[int, str] | None) -> list[dict]:
    """The rows of a page that pass ``filters`` and come before the cursor (only those
    become dicts: a walk looks at many more rows than it keeps)."""
    prefix, first, node = page["id_prefix"], page["first_row"], page["node_id"]
    start, end = filters.get("start_ms"), filters.get("end_ms")
    wanted = [(i, filters[name]) for i, name in ((2, "virtual_key_id"), (3, "provider"), (4, "model"), (7, "status"))
              if filters.get(name) is not None]
    errors_only = filters.get("errors_only")
    out = []
    for i, fields in enumerate(orjson.loads(page["rows"])):
        ts = int(fields[0] * 1000)
        if (start is not None and ts < start) or (end is not None and ts >= end):
            continue
        if (errors_only and fields[7] < 400) or any(fields[k] != v for k, v in wanted):
            continue
        if before is not None and ts >= before[0] and (ts, f"{prefix}{first + i:x}") >= before:
            continue
        row = page_row(prefix, first, i, node, fields)
        row["_page"], row["_max_ts"] = page["id"], page["max_ts"]  # (for its content)
        out.append(row)
    return out


def _newest_first(row: dict) -> tuple[int, str]:
    return row["ts"], row["id"]


async def _page_walk(db: Database, filters: dict[str, Any], limit: int, before: tuple[int, str] | None) -> tuple[list[dict], int | None]:
    """(the newest ``limit + 1`` matching rows of the pages, the ``max_ts`` the walk stopped
    at when it hit ``SCAN_ROWS`` first, else None: every row newer than that was seen)."""
    where = _Where()
    vk = filters.get("virtual_key_id")
    source = "request_log_pages p"
    if vk is not None:  # the key's pages, by their own index
        source += " JOIN request_log_page_keys k ON k.page_id = p.id AND k.max_ts = p.max_ts"
        where.add("k.virtual_key_id = ?", vk)
    if filters.get("start_ms") is not None:
        where.add("p.max_ts >= ?", filters["start_ms"])
    if filters.get("end_ms") is not None:
        where.add("p.min_ts < ?", filters["end_ms"])
    if before is not None:
        where.add("p.min_ts <= ?", before[0])
    status = filters.get("status")
    if filters.get("errors_only") or (status is not None and status >= 400):
        where.add("p.errors > 0")
    order = "k.max_ts DESC, k.page_id DESC" if vk is not None else "p.max_ts DESC, p.id DESC"
    found: list[dict] = []
    last: tuple[int, str] | None = None
    scanned = 0
    while True:
        step = where.copy()
        if last is not None:
            step.before("p.max_ts", "p.id", *last)
        sql = f"SELECT p.id, p.id_prefix, p.first_row, p.node_id, p.max_ts, p.row_count, p.rows FROM {source}{step.sql()}"
        params = step.args
        pages = await db.fetch(f"{sql} ORDER BY {order} LIMIT {PAGES_PER_FETCH}", *params)
        for page in pages:
            found.extend(_matching(page, filters, before))
            if before is None or page["max_ts"] <= before[0]:
                scanned += page["row_count"]  # (pages reaching past the cursor were read by the call before)
        if len(found) > limit:
            found.sort(key=_newest_first, reverse=True)
            del found[limit + 1:]
        if len(pages) < PAGES_PER_FETCH:
            return found, None  # every page looked at
        last = (pages[-1]["max_ts"], pages[-1]["id"])
        if len(found) > limit and last[0] < found[limit]["ts"]:
            return found, None  # the pages left hold only older requests
        if scanned >= SCAN_ROWS and (before is None or last[0] + 1 < before[0]):  # (and the next call gets further)
            return found, last[0]


async def _with_content(db: Database, rows: list[dict]) -> None:
    """Fill ``request`` and ``response`` of page rows (by their page: id prefix + first row)."""
    wanted: dict[str, list[dict]] = {}
    for row in rows:
        if "request" not in row:
            wanted.setdefault(row["_page"], []).append(row)
    for page_id, page_rows_wanted in wanted.items():
        page = await db.fetchrow("SELECT id_prefix, first_row, node_id, rows, content FROM request_log_pages "
                                 "WHERE max_ts = $1 AND id = $2", page_rows_wanted[0]["_max_ts"], page_id)
        by_id = {r["id"]: r for r in page_rows(page["id_prefix"], page["first_row"], page["node_id"], page["rows"],
                                                page["content"])} if page else {}
        for row in page_rows_wanted:
            full = by_id.get(row["id"], {})
            row["request"], row["response"] = full.get("request"), full.get("response")


async def query_logs(db: Database, filters: dict[str, Any], limit: int, cursor: str | None, with_content: bool = False) -> tuple[list[dict], str | None]:
    """Newest first. ``filters``: start_ms, end_ms, provider, model, virtual_key_id, status, errors_only."""
    before = decode_cursor(cursor) if cursor else None
    legacy = await _legacy_rows(db, filters, limit, before, with_content)
    paged, stopped_at = await _page_walk(db, filters, limit, before)
    rows = sorted(legacy + paged, key=_newest_first, reverse=True)
    if stopped_at is not None:  # only what is newer than where the walk stopped is complete
        rows = [row for row in rows if row["ts"] > stopped_at]
    more = len(rows) > limit
    rows = rows[:limit]
    if with_content:
        await _with_content(db, rows)
    for row in rows:
        row.pop("_page", None)
        row.pop("_max_ts", None)
    if more:
        return rows, encode_cursor(rows[-1]["ts"], rows[-1]["id"])
    if stopped_at is not None:
        return rows, encode_cursor(stopped_at + 1, "")  # older than the walk got to: go on from there
    return rows, None
