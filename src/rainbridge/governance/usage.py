"""Usage reports: what a key, its team, its customer and its per-provider limits used in
their current windows (the management API's ``/usage``), from the same counters admission
uses."""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING

from ..counters.windows import Window, window_for
from .model import Budget, Owner, RateLimit, VirtualKey
from .plan import plan_key

if TYPE_CHECKING:
    from .engine import Governance

LABELS = {"vk": "virtual key", "team": "team", "customer": "customer", "provider": "virtual key", "model": "model limit"}


class WindowCache:
    """The open window of each (duration, alignment, anchor), recomputed only when it ends."""

    def __init__(self) -> None:
        self._open: dict[tuple[str, bool, int], Window] = {}

    def get(self, duration: str, aligned: bool, anchor: int, now_ms: int) -> Window:
        key = (duration, aligned, anchor)
        w = self._open.get(key)
        if w is None or not (w.start_ms <= now_ms < w.end_ms):
            if len(self._open) > 10_000:
                self._open.clear()
            w = self._open[key] = window_for(duration, now_ms, aligned, anchor)
        return w


def key_usage(gov: Governance, vk: VirtualKey, now_ms: int) -> list[dict]:
    """Usage, limits and reset times of a key and every level above it."""
    # Bind the current windows to their fleet limits first, as an admission does: a
    # member that admitted nothing for the key yet would otherwise never merge the
    # fleet's usage of it and report what the store held when it started.
    plan = gov.state.plans.get(vk.id) or gov.state.plan(vk)
    if not (plan.valid_from <= now_ms < plan.valid_until):
        plan.refresh(now_ms, gov.counters)
    levels = [level_usage(gov, kind, owner, now_ms) for kind, owner in gov.state.levels(vk)]
    for grant in vk.provider_configs:  # the key's limits on single providers
        if grant.limited:
            plan = gov.state.plans.get(plan_key(vk, grant.provider)) or gov.state.plan(vk, grant)
            if not (plan.valid_from <= now_ms < plan.valid_until):
                plan.refresh(now_ms, gov.counters)
            entry = limits_usage(gov, f"{vk.id}:{grant.provider}", grant.budgets, grant.rate_limit, "provider", now_ms)
            levels.append({"level": "provider config", "id": vk.id, "name": vk.name, "provider": grant.provider, **entry})
    return levels


def level_usage(gov: Governance, kind: str, owner: Owner, now_ms: int) -> dict:
    entry = limits_usage(gov, owner.id, owner.budgets, owner.rate_limit, kind, now_ms)
    return {"level": LABELS[kind], "id": owner.id, "name": owner.name, **entry}


def limits_usage(gov: Governance, owner_id: str, budgets: list[Budget], rl: RateLimit | None, scope: str, now_ms: int) -> dict:
    """Budgets and one rate limit (counters ``scope``/``owner_id``) in their open windows."""
    entry: dict = {"budgets": [], "rate_limit": None}
    for b in budgets:
        w = gov.windows.get(b.reset_duration, b.calendar_aligned, b.created_at, now_ms)
        key = ("budget", b.id, "spend", w.start_ms)
        entry["budgets"].append({
            "id": b.id, "max_limit": b.max_limit, "reset_duration": b.reset_duration,
            "calendar_aligned": b.calendar_aligned, "current_usage": gov.counters.value(key),
            "reserved": gov.counters.reserved(key), "last_reset": iso(w.start_ms), "resets_at": iso(w.end_ms),
        })
    if rl is not None:
        rate: dict = {}
        for metric, limit, duration in (("request", rl.request_max_limit, rl.request_reset_duration),
                                        ("token", rl.token_max_limit, rl.token_reset_duration)):
            if limit is None or not duration:
                continue
            w = gov.windows.get(duration, True, 0, now_ms)
            key = (scope, owner_id, metric + "s", w.start_ms)
            rate[metric] = {"max_limit": limit, "reset_duration": duration, "current_usage": gov.counters.value(key),
                            "reserved": gov.counters.reserved(key), "last_reset": iso(w.start_ms), "resets_at": iso(w.end_ms)}
        entry["rate_limit"] = rate
    return entry


def iso(ms: int) -> str:
    return datetime.datetime.fromtimestamp(ms / 1000, datetime.UTC).isoformat().replace("+00:00", "Z")
