"""Boot ids: one per process start, so a restart under the same member name is a new
incarnation (new counter slots, a new roster entry).

A boot id is the start time in milliseconds (11 hex digits) and 16 random bits, so two boots
of one name order by start time. The order is what lets a member that hears of a newer boot
than the one its own membership list still shows (its view lags) tell that it lags, instead
of taking the newer one for a replaced one (``counters/fleet_epochs.RosterView``). Boots of
older builds (8 random hex digits) and two starts in the same millisecond have no order.
"""

from __future__ import annotations

import secrets
import time

_TIME_DIGITS = 11
_HEX = frozenset("0123456789abcdef")


def new_boot_id(now_ms: int | None = None) -> str:
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    return f"{ms:0{_TIME_DIGITS}x}{secrets.token_hex(2)}"


def boot_started_ms(boot: str) -> int | None:
    """When a boot started, or ``None`` for a boot id without a time (older builds, hostile)."""
    if len(boot) != _TIME_DIGITS + 4 or not all(c in _HEX for c in boot):
        return None  # (int(x, 16) alone would also take "+", "_" and spaces)
    return int(boot[:_TIME_DIGITS], 16)


def newer_boot(a: str, b: str) -> bool:
    """Surely ``a`` started after ``b`` (both carry a start time, and a's is later)."""
    ta, tb = boot_started_ms(a), boot_started_ms(b)
    return ta is not None and tb is not None and ta > tb
