"""How fresh this member's view of the fleet counters is: the operator's sync health.

Fed by ``FleetCounters`` with every escrow message in and out (a dict write each), read by
``GET /api/cluster/status`` and the metrics; nothing here is on the request path.

- **last sync** of a member: seconds since the last escrow message from it (any kind).
- **view staleness** of a member-incarnation: the age of the oldest *first-hand* report of
  its usage among the open windows this member holds usage of it for: when this member
  last heard that usage from the member itself (``UsageDelta``, ``Ask``, ``Return``: the
  limit's owner hears those; ``FullState``: every member, from the escrow's periodic
  push-pull with a random peer, so about ``N × gossip_ms`` apart in a fleet of N). Usage
  relayed by a third member is of unknown age and refreshes nothing.
- **sync bytes**: escrow frames (msgpack, channel byte excluded) sent and received.

Bounded: one entry per (limit, window, member-incarnation) the escrow holds usage of, and
one per member name; ``tidy`` drops what the escrow and the roster dropped.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Container, Iterable
from typing import TYPE_CHECKING, Any

import orjson

from .escrow import member_name
from .escrow_messages import Ask, FullState, Message, Return, UsageDelta
from .windows import window_for

if TYPE_CHECKING:
    from .fleet import FleetCounters

ReportKey = tuple[str, int, str]  # (limit id, window start, member-incarnation)


class SyncView:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.bytes_sent = 0
        self.bytes_received = 0
        self.heard: dict[str, float] = {}  # member name → when its last message came
        self.reports: dict[ReportKey, float] = {}  # → when last heard first-hand

    def sent(self, size: int) -> None:
        self.bytes_sent += size

    def received(self, sender: str, message: Message, size: int) -> None:
        now = self._clock()
        self.bytes_received += size
        self.heard[sender] = now
        if isinstance(message, (UsageDelta, Ask, Return)):
            if member_name(message.member) == sender:
                self.reports[(message.lid, message.window, message.member)] = now
        elif isinstance(message, FullState):
            for lid, ws, entries in message.usage:
                for member, _ in entries:
                    if member_name(member) == sender:
                        self.reports[(lid, ws, member)] = now

    def tidy(self, windows: Container[tuple[str, int]], members: Container[str]) -> None:
        """Forget reports of windows the escrow no longer holds and members gone from the
        roster."""
        for key in [k for k in self.reports if (k[0], k[1]) not in windows]:
            del self.reports[key]
        for name in [n for n in self.heard if n not in members]:
            del self.heard[name]

    def last_sync(self, name: str) -> float | None:
        at = self.heard.get(name)
        return None if at is None else self._clock() - at

    def staleness(self, is_open: Callable[[str, int], bool]) -> dict[str, float]:
        """Member-incarnation → age of its oldest first-hand report among open windows."""
        now = self._clock()
        oldest: dict[str, float] = {}
        for (lid, ws, member), at in self.reports.items():
            if is_open(lid, ws):
                age = now - at
                if age > oldest.get(member, -1.0):
                    oldest[member] = age
        return oldest


def open_windows(counters: FleetCounters) -> Callable[[str, int], bool]:
    """Whether a (limit, window) of ``counters`` is still open by this member's clock."""
    now = counters.now_ms()
    limits = counters.limits

    def is_open(lid: str, ws: int) -> bool:
        limit = limits.get(lid)
        return limit is not None and window_for(limit.duration, ws, True).end_ms > now

    return is_open


def add_to_members(rows: Iterable[dict[str, Any]], counters: FleetCounters) -> None:
    """``last_sync_s`` and ``view_staleness_s`` into the status's member rows (null: nothing
    heard / no report held; this member's own row: null)."""
    view = counters.sync
    ages = view.staleness(open_windows(counters))
    for row in rows:
        me = row.get("self", False)
        last = None if me else view.last_sync(row["name"])
        age = None if me else ages.get(f"{row['name']}:{row.get('boot', '')}")
        row["last_sync_s"] = None if last is None else round(last, 3)
        row["view_staleness_s"] = None if age is None else round(age, 3)


SUMMARY_FIELDS = ("keys", "owned", "allowances_outstanding", "windows", "state_bytes")
TRAFFIC_FIELDS = ("requests", "errors", "latency_ms_total", "uptime_s")  # gateway/traffic.py
SUMMARY_ASK_AT_MOST = 64  # members asked per status call; more answer null (ask them directly)
SUMMARY_TIMEOUT_S = 0.4  # per attempt; one retry: a status call waits under a second for this


async def add_summaries(rows: list[dict[str, Any]], counters: FleetCounters) -> None:
    """``counters`` into every member row: that member's ``FleetCounters.summary`` (keys
    held, keys owned, allowance outstanding, windows and bytes of usage state), asked of
    each live rainbridge member over the cluster's request/reply when the status is read
    (nothing is gossiped for it); null for a member that is not alive, not ours, past
    ``SUMMARY_ASK_AT_MOST`` or silent. A reply is another member's word, so only the known
    integer fields are kept."""
    from .fleet import SUMMARY_KIND

    service = counters.service
    asked: list[tuple[dict[str, Any], Any]] = []
    for row in rows:
        row["counters"] = None
        if row.get("self"):
            row["counters"] = counters.summary()
        elif (service is not None and row.get("state") == "alive" and row.get("role") == "rainbridge"
              and len(asked) < SUMMARY_ASK_AT_MOST):
            asked.append((row, service.request(row["name"], SUMMARY_KIND, b"", timeout=SUMMARY_TIMEOUT_S,
                                               retries=1)))
    if not asked:
        return
    replies = await asyncio.gather(*(call for _, call in asked), return_exceptions=True)
    for (row, _), reply in zip(asked, replies, strict=True):
        if isinstance(reply, BaseException):  # RequestError (timeout, no handler), gone member
            continue
        row["counters"] = _summary_of(reply)


def _summary_of(reply: bytes) -> dict[str, Any] | None:
    try:
        data = orjson.loads(reply)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict):
        return None
    out: dict[str, Any] = {"state": data["state"] if data.get("state") in ("synced", "syncing") else None}
    for name in SUMMARY_FIELDS:
        out[name] = _count(data.get(name))
    traffic = data.get("traffic")
    if isinstance(traffic, dict):
        out["traffic"] = {name: _count(traffic.get(name)) for name in TRAFFIC_FIELDS}
    return out


def _count(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None
