"""The request log table, read with filters and cursors (``GET /api/logs``).

Rows are written off the request path by ``log_writer.LogWriter`` (a thread of its own).
"""

from __future__ import annotations

import base64
from typing import Any

from .db import Database

COLUMNS = (
    "id", "ts", "node_id", "virtual_key_id", "provider", "model", "endpoint", "stream", "status",
    "latency_ms", "prompt_tokens", "completion_tokens", "cost", "error_type", "request", "response",
)


def encode_cursor(ts: int, row_id: str) -> str:
    return base64.urlsafe_b64encode(f"{ts}:{row_id}".encode()).decode()


def decode_cursor(cursor: str) -> tuple[int, str]:
    try:
        ts, _, row_id = base64.urlsafe_b64decode(cursor.encode()).decode().partition(":")
        return int(ts), row_id
    except (ValueError, UnicodeDecodeError):
        raise ValueError("cursor is not one this API returned") from None


async def query_logs(db: Database, filters: dict[str, Any], limit: int, cursor: str | None, with_content: bool = False) -> tuple[list[dict], str | None]:
    """Newest first. ``filters``: start_ms, end_ms, provider, model, virtual_key_id, status, errors_only."""
    where, args = [], []

    def add(clause: str, value: Any) -> None:
        args.append(value)
        where.append(clause.replace("?", f"${len(args)}"))

    if filters.get("start_ms") is not None:
        add("ts >= ?", filters["start_ms"])
    if filters.get("end_ms") is not None:
        add("ts < ?", filters["end_ms"])
    for column in ("provider", "model", "virtual_key_id", "status"):
        if filters.get(column) is not None:
            add(f"{column} = ?", filters[column])
    if filters.get("errors_only"):
        where.append("status >= 400")
    if cursor:
        ts, row_id = decode_cursor(cursor)
        args.extend((ts, row_id))
        where.append(f"(ts < ${len(args) - 1} OR (ts = ${len(args) - 1} AND id < ${len(args)}))")
    columns = COLUMNS if with_content else COLUMNS[:-2]
    sql = f"SELECT {', '.join(columns)} FROM request_logs"
    if where:
        sql += " WHERE " + " AND ".join(where)
    args.append(limit + 1)
    sql += f" ORDER BY ts DESC, id DESC LIMIT ${len(args)}"
    rows = await db.fetch(sql, *args)
    more = len(rows) > limit
    rows = rows[:limit]
    for row in rows:
        row["stream"] = bool(row["stream"])
    next_cursor = encode_cursor(rows[-1]["ts"], rows[-1]["id"]) if more and rows else None
    return rows, next_cursor
