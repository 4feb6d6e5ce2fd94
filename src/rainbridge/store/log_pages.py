"""The request log's page: a batch of requests in one row (logs schema version 3).

A row per request made the database do a request's worth of work for every request:
binding sixteen values and inserting the row cost SQLite ~4.5 us of CPU here, ~7 % of what
the whole proxied request costs, and PostgreSQL's COPY a comparable share in psycopg. A page
holds a batch of entries as one JSON array of rows (``FIELDS``, written by orjson in one
call) and their bodies back to back in one blob, so the writer's work per request is a
memcpy and orjson's encoding, and the database's is per page (~2 us per request in all,
against ~7.5). Reads decode the pages they need (``request_log``); a page also carries what
a read skips pages by: its rows' time span, how many are errors, and (in
``request_log_page_keys``) the virtual keys it holds.

Entries come from ``gateway.record.log_entry`` as ``(fields, content)``: ``fields`` in
``FIELDS`` order, ``content`` the request body then the response body (their lengths are
the last two fields, -1 when not kept).
"""

from __future__ import annotations

import re
from bisect import bisect_right
from dataclasses import dataclass
from itertools import accumulate, islice
from operator import itemgetter, le
from typing import Any

import orjson

# A page holds requests that started within this span of each other: a read that wants the
# requests before some time looks only at the pages around it (a batch is written when its
# requests end, so a long stream would otherwise stretch a page over minutes).
PAGE_SPAN_MS = 250
PAGE_BYTES = 8 << 20  # and at most this much content (64 requests with both bodies at their
# 64 KiB cap): a read that wants one request's body loads its page's
FIELDS = ("wall_s", "seconds", "virtual_key_id", "provider", "model", "endpoint", "stream", "status",
          "prompt_tokens", "completion_tokens", "cost", "error_type", "request_bytes", "response_bytes")


@dataclass(slots=True)
class Page:
    id: str  # its first row's id; row i's id is id_prefix + hex(first_row + i)
    id_prefix: str
    first_row: int
    node_id: str
    min_ts: int  # ms: the earliest and latest request start in it
    max_ts: int
    row_count: int
    errors: int  # rows with status >= 400
    rows: str  # JSON: [[FIELDS...], ...]
    content: bytes
    keys: tuple[str, ...]  # the virtual key ids in it

    def record(self) -> tuple:
        """The page's columns in ``PAGE_COLUMNS`` order."""
        return (self.id, self.id_prefix, self.first_row, self.node_id, self.min_ts, self.max_ts, self.row_count,
                self.errors, self.rows, self.content)


PAGE_COLUMNS = ("id", "id_prefix", "first_row", "node_id", "min_ts", "max_ts", "row_count", "errors", "rows", "content")


_FIELDS = itemgetter(0)  # of an entry
_CONTENT = itemgetter(1)
_WALL = itemgetter(0)  # of its fields
_KEY = itemgetter(2)
_STATUS = itemgetter(7)
_IS_ERROR = (400).__le__
# A NUL character in a field, as orjson escapes it (not a literal backslash before "u0000"):
# PostgreSQL's JSON operators refuse it, and with it the page, in request_log_entries.
_NUL = re.compile(rb"(?<!\\)((?:\\\\)*)\\u0000")


def build_pages(entries: list[tuple], id_prefix: str, first_row: int, node_id: str) -> tuple[list[Page], int]:
    """(the pages of ``entries``, how many were refused): in start order, a page for each
    ``PAGE_SPAN_MS`` of starts. Rows are numbered from ``first_row`` in that order. (Each
    step over a batch is one C call — map, sort, join, orjson — so the writer thread holds
    the GIL in short stretches and runs little Python per request.)"""
    fields = list(map(_FIELDS, entries))
    walls = list(map(_WALL, fields))
    if not all(map(le, walls, islice(walls, 1, None))):  # (mostly in order already: they end as they start)
        order = sorted(range(len(walls)), key=walls.__getitem__)
        entries = list(map(entries.__getitem__, order))
        fields = list(map(_FIELDS, entries))
        walls = list(map(_WALL, fields))
    sizes = list(accumulate(map(len, map(_CONTENT, entries)), initial=0))  # content before each
    pages = []
    refused = 0
    start = 0
    while start < len(walls):
        end = bisect_right(walls, walls[start] + PAGE_SPAN_MS / 1000, lo=start)
        end = min(end, max(start + 1, bisect_right(sizes, sizes[start] + PAGE_BYTES, lo=start) - 1))
        page, lost = _build_page(entries[start:end], fields[start:end], id_prefix, first_row + start, node_id)
        refused += lost
        if page is not None:
            pages.append(page)
        start = end
    return pages, refused


def _build_page(entries: list[tuple], fields: list[tuple], id_prefix: str, first_row: int,
                node_id: str) -> tuple[Page | None, int]:
    """(the page of ``entries``, how many were refused). An entry orjson cannot encode (a
    string with a lone surrogate, an integer beyond 64 bits) is refused and counted; the
    rest make the page (None when none is left)."""
    refused = 0
    try:
        rows = orjson.dumps(fields)
    except TypeError:  # (orjson.JSONEncodeError is one) the slow path, only for such a batch
        kept = []
        for entry in entries:
            try:
                orjson.dumps(entry[0])
            except TypeError:
                refused += 1
            else:
                kept.append(entry)
        if not kept:
            return None, refused
        entries = kept
        fields = list(map(_FIELDS, entries))
        rows = orjson.dumps(fields)
    if b"\\u0000" in rows:  # (rare: a fast scan first) stored as U+FFFD, on either store
        rows = _NUL.sub(rb"\1\\ufffd", rows)
    keys = set(map(_KEY, fields))
    keys.discard(None)
    page = Page(
        id=f"{id_prefix}{first_row:x}", id_prefix=id_prefix, first_row=first_row, node_id=node_id,
        min_ts=int(fields[0][0] * 1000), max_ts=int(fields[-1][0] * 1000), row_count=len(fields),
        errors=sum(map(_IS_ERROR, map(_STATUS, fields))), rows=rows.decode(),
        content=b"".join(map(_CONTENT, entries)), keys=tuple(keys),
    )
    return page, refused


def _text(content: bytes | memoryview, start: int, length: int) -> tuple[str | None, int]:
    if length < 0:
        return None, start
    end = start + length
    return str(content[start:end], "utf-8", "replace"), end


def page_row(id_prefix: str, first_row: int, i: int, node_id: str, fields: list) -> dict[str, Any]:
    """Row ``i`` of a page (its ``FIELDS``) as ``/api/logs`` lists it, without content."""
    wall, seconds, vk, provider, model, endpoint, stream, status, prompt, completion, cost, error, _, _ = fields
    return {"id": f"{id_prefix}{first_row + i:x}", "ts": int(wall * 1000), "node_id": node_id, "virtual_key_id": vk,
            "provider": provider, "model": model, "endpoint": endpoint, "stream": bool(stream), "status": status,
            "latency_ms": seconds * 1000.0, "prompt_tokens": prompt, "completion_tokens": completion, "cost": cost,
            "error_type": error}


def page_rows(id_prefix: str, first_row: int, node_id: str, rows: str | bytes, content: bytes | None = None) -> list[dict[str, Any]]:
    """A page's rows as ``/api/logs`` lists them (``request_log.COLUMNS``), in page order;
    with ``content``, the bodies as text (bytes that are not UTF-8: replaced)."""
    out = []
    at = 0
    view = memoryview(content) if content is not None else None
    for i, fields in enumerate(orjson.loads(rows)):
        row = page_row(id_prefix, first_row, i, node_id, fields)
        if view is not None:
            row["request"], at = _text(view, at, fields[12])
            row["response"], at = _text(view, at, fields[13])
        out.append(row)
    return out
