"""Counter windows: which window is open at a given time, computed only from the duration.

Every node computes the same window for the same instant, with no "first request seen":

- ``calendar_aligned``: windows snap to UTC calendar boundaries: the minute, hour, day,
  ISO week (Monday 00:00), month, quarter or year that contains the instant; ``Nu`` windows
  count N units from the start of the enclosing larger unit (``15m``: :00, :15, :30, :45;
  ``2M``: Jan–Feb, Mar–Apr …).
- otherwise: windows are counted from an ``anchor`` (the budget's or limit's creation time):
  ``[anchor + k·len, anchor + (k+1)·len)``; months, quarters and years keep the anchor's
  day of month and time, clamped to shorter months (anchored on Jan 31: Feb 28/29, Mar 31).

Durations: a positive integer and a unit ``s m h d w M Q Y`` (``30s``, ``1m``, ``1h``,
``1d``, ``1w``, ``1M``, ``1Q``, ``1Y``).
"""

from __future__ import annotations

import calendar
import datetime
import re
from typing import NamedTuple

_DURATION = re.compile(r"^([1-9][0-9]{0,5})([smhdwMQY])$")
_FIXED_MS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 7 * 86_400_000}
_MONTHS = {"M": 1, "Q": 3, "Y": 12}
UTC = datetime.UTC
_MONDAY_EPOCH_MS = 4 * 86_400_000  # 1970-01-05, the first Monday after the epoch


class Duration(NamedTuple):
    count: int
    unit: str

    def __str__(self) -> str:
        return f"{self.count}{self.unit}"

    @property
    def months(self) -> int:
        return self.count * _MONTHS[self.unit] if self.unit in _MONTHS else 0


class Window(NamedTuple):
    start_ms: int
    end_ms: int


def parse_duration(text: str) -> Duration:
    """``"1h"`` → Duration(1, "h"); ValueError naming the accepted forms otherwise."""
    m = _DURATION.match(text) if isinstance(text, str) else None
    if m is None:
        raise ValueError(f"invalid duration {text!r}: use a number and one of s m h d w M Q Y, e.g. 1m, 1h, 1d, 1w, 1M, 1Q, 1Y")
    return Duration(int(m.group(1)), m.group(2))


def _ms(dt: datetime.datetime) -> int:
    return int(dt.timestamp() * 1000)


def _dt(ms: int) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(ms / 1000, UTC)


def add_months(anchor: datetime.datetime, months: int, day: int | None = None) -> datetime.datetime:
    """``anchor`` moved by ``months``, keeping ``day`` (default: the anchor's) clamped to the month."""
    total = anchor.year * 12 + (anchor.month - 1) + months
    year, month = divmod(total, 12)
    month += 1
    last = calendar.monthrange(year, month)[1]
    return anchor.replace(year=year, month=month, day=min(day or anchor.day, last))


def window(duration: Duration, now_ms: int, calendar_aligned: bool, anchor_ms: int = 0) -> Window:
    if duration.unit in _FIXED_MS:
        length = duration.count * _FIXED_MS[duration.unit]
        if not calendar_aligned:
            k = (now_ms - anchor_ms) // length
            start = anchor_ms + k * length
            return Window(start, start + length)
        base, limit = _calendar_unit_fixed(duration, now_ms)
        start = base + ((now_ms - base) // length) * length
        # The last window of an enclosing unit ends with it (7d windows restart each month).
        return Window(start, min(start + length, limit))
    months = duration.months
    now = _dt(now_ms)
    if calendar_aligned:
        # Count from January of the current year (a ``5M`` window still restarts each year).
        year_start = datetime.datetime(now.year, 1, 1, tzinfo=UTC)
        index = (now.month - 1) // months if months <= 12 else 0
        if months > 12:  # multi-year windows count from year 1 … like 2Y: 2024-2025, 2026-2027
            years = months // 12
            year0 = now.year - ((now.year - 1) % years)
            start = datetime.datetime(year0, 1, 1, tzinfo=UTC)
            return Window(_ms(start), _ms(add_months(start, months)))
        start = add_months(year_start, index * months)
        end = add_months(year_start, (index + 1) * months)
        if end.year > now.year:  # the last window of the year ends at the year's end
            end = datetime.datetime(now.year + 1, 1, 1, tzinfo=UTC)
        return Window(_ms(start), _ms(end))
    anchor = _dt(anchor_ms)
    # Estimate the index from the month difference, then correct by one either way.
    diff = (now.year - anchor.year) * 12 + (now.month - anchor.month)
    k = diff // months
    for _ in range(3):
        start = add_months(anchor, k * months)
        if start > now:
            k -= 1
            continue
        end = add_months(anchor, (k + 1) * months)
        if end <= now:
            k += 1
            continue
        return Window(_ms(start), _ms(end))
    raise AssertionError("window search did not converge")  # pragma: no cover


def _calendar_unit_fixed(duration: Duration, now_ms: int) -> tuple[int, int]:
    """The enclosing unit aligned fixed-length windows are counted in: (start, end) in ms."""
    unit = duration.unit
    if unit == "w":
        return _MONDAY_EPOCH_MS, 2**62
    now = _dt(now_ms)
    if unit == "s":
        start = now.replace(second=0, microsecond=0)
        return _ms(start), _ms(start) + 60_000
    if unit == "m":
        start = now.replace(minute=0, second=0, microsecond=0)
        return _ms(start), _ms(start) + 3_600_000
    if unit == "h":
        start = now.replace(hour=0, minute=0, second=0, microsecond=0)
        return _ms(start), _ms(start) + 86_400_000
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)  # days: the month
    return _ms(start), _ms(add_months(start, 1))


def window_for(duration_text: str, now_ms: int, calendar_aligned: bool, anchor_ms: int = 0) -> Window:
    return window(parse_duration(duration_text), now_ms, calendar_aligned, anchor_ms)


def human_reset(ms: int) -> str:
    """A reset interval the way OpenAI's headers write it: ``20ms``, ``1.5s``, ``6m0s``, ``2h3m``."""
    if ms < 1000:
        return f"{max(ms, 0)}ms"
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.3g}s"
    minutes, sec = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{sec}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{minutes}m"
    return f"{hours // 24}d{hours % 24}h"
