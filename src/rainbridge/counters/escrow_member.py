"""The member side of fleet-wide limits: admission against allowances (see ``escrow.py``).

A member admits locally while ``used + cost ≤ granted − returned``; short of that, the
admission waits (bounded) for the owner's grant. It asks for a top-up below its low-water
mark, hands unused units back when idle or reclaimed, and caches a refusal (backing off).
It sends through the callable it is given; ``EscrowNode`` owns the I/O contract.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass

from rainbridge.counters.escrow_messages import Ask, Deny, Grant, Message, Reclaim, Return
from rainbridge.counters.windows import window_for

WKey = tuple[str, int]  # (lid, window start)


@dataclass(frozen=True, slots=True)
class Limit:
    """One limit definition: ``lid`` names it with its duration (an edited limit is a new
    ``lid``, so it never shares a window with the old one)."""

    lid: str
    limit: int  # units per window
    duration: str  # "1m", "10s" … (see windows.py)
    aligned: bool = True  # calendar-aligned windows, else counted from ``anchor`` (epoch ms)
    anchor: int = 0

    def window_at(self, now: int) -> tuple[int, int]:
        """(start, end) of the window open at ``now``."""
        w = window_for(self.duration, now, self.aligned, self.anchor)
        return w.start_ms, w.end_ms


@dataclass(frozen=True, slots=True)
class EscrowConfig:
    """Timings of the protocol, in ms of the member's clock (defaults for a LAN)."""

    wait_ms: int = 50  # an admission short of allowance waits this long for a grant
    # Retries double from these up to ``retry_cap_ms`` (a partition costs few messages):
    ask_retry_ms: int = 15  # an unanswered Ask is sent again after this
    accept_retry_ms: int = 15  # an Accept not yet acked by a majority is sent again
    prepare_retry_ms: int = 100  # a failed Prepare is retried after 1-2× this
    retry_cap_ms: int = 1000
    sync_retry_ms: int = 200  # an unfinished SyncRequest is sent again
    reclaim_ms: int = 25  # how long a reclaim round waits for Returns before refusing
    deny_cache_ms: int = 500  # a member told "limit reached" refuses locally this long,
    deny_cache_max_ms: int = 4000  # doubling with every further refusal up to this
    idle_ms: int = 2000  # allowance unused this long is handed back
    gossip_ms: int = 1000  # usage deltas and one push-pull per interval
    skew_ms: int = 2000  # clock skew tolerated between members
    acceptors: int = 5  # members per limit that hold its ledger (majority: 3 of 5)
    # Members a new roster epoch dropped (dead for good, left, restarted) that never answer
    # count as answering empty after this long (see epochs.py, "Liveness").
    force_ms: int = 10000
    # A grant wakes waiting admissions without counting them as used; the caller admits
    # them again (the gateway: its slot is the one count of usage). The simulator counts
    # them at once.
    wake_only: bool = False


class Allowance:
    """A member's allowance of one window (its side of the ledger)."""

    __slots__ = (
        "ask_at",
        "ask_tries",
        "asked_want",
        "denied_at",
        "deny_ms",
        "end_ms",
        "granted",
        "last_grant",
        "last_use",
        "reported",
        "returned",
        "usage",
        "used",
        "waiters",
    )

    def __init__(self, end_ms: int) -> None:
        self.end_ms = end_ms
        self.granted = 0
        self.returned = 0
        self.used = 0  # units of the allowance taken (admitted, or reserved in flight)
        # What is reported as usage (monotone, merged by max): ``used`` unless the caller
        # keeps reservations apart (tokens: a reservation settled lower must never show in
        # the fleet's usage).
        self.usage: int | None = None
        self.reported = 0  # usage last sent to the owner
        self.last_grant = 0  # size of the last top-up (sets the low-water mark)
        self.last_use = 0
        self.ask_at: int | None = None  # an Ask is outstanding since then
        self.asked_want = 0
        self.ask_tries = 0  # unanswered asks in a row (their retries back off)
        self.denied_at: int | None = None
        self.deny_ms = 0  # how long the last refusal is cached
        self.waiters: deque[tuple[object, int, int]] = deque()  # (ticket, cost, deadline)

    def reported_usage(self) -> int:
        return self.used if self.usage is None else self.usage

    def spare(self) -> int:
        return self.granted - self.returned - self.used

    def low(self) -> bool:
        """Worth a top-up ahead of need: below half of the last top-up. Not when the last
        one was a single unit: that is the small-limit regime, where units are asked for
        request by request (a prefetched unit would sit idle on one member)."""
        return self.last_grant > 1 and self.spare() < (self.last_grant + 1) // 2


def backoff(base_ms: int, tries: int, cap_ms: int) -> int:
    """The wait before retry number ``tries + 1``: ``base_ms`` doubling, at most ``cap_ms``."""
    return min(cap_ms, base_ms << min(tries, 20))


class MemberSide:
    """One member's allowances, keyed by (limit, window start)."""

    def __init__(
        self,
        me: str,
        limits: dict[str, Limit],
        config: EscrowConfig,
        send: Callable[[str, Message], None],
        owner_of: Callable[[str], str | None],
        stats: Counter[str],
    ) -> None:
        self.me = me
        self.limits = limits
        self.config = config
        self._send = send
        self._owner_of = owner_of
        self.stats = stats
        self.allow: dict[WKey, Allowance] = {}
        self.results: list[tuple[object, bool, str, int]] = []
        self._windows: dict[str, tuple[int, int]] = {}

    def deadlines(self) -> list[int]:
        times = []
        for a in self.allow.values():
            if a.waiters:
                times.append(a.waiters[0][2])
            if a.ask_at is not None:
                times.append(a.ask_at + self._ask_wait(a))
        return times

    def tick(self, now: int) -> None:
        for key, a in list(self.allow.items()):
            self._member_tick(key, a, now)

    def owner_moved(self) -> None:
        """The view changed: whoever owns a limit now gets the next ask promptly."""
        for a in self.allow.values():
            a.ask_tries = 0

    def moved_usage(self) -> list[tuple[str, int, int]]:
        """(lid, window, used) of every allowance whose usage the owner has not heard of
        (marked as reported)."""
        out = []
        for (lid, ws), a in self.allow.items():
            usage = a.reported_usage()
            if usage > a.reported:
                a.reported = usage
                out.append((lid, ws, usage))
        return out

    def give_back_all(self) -> None:
        for (lid, ws), a in self.allow.items():
            if a.spare() > 0:
                self._give_back(lid, ws, a)

    def forget(self, ended: Callable[[int], bool]) -> None:
        """Drop allowances whose window ``ended(end_ms)`` (their waiters are refused)."""
        for key in [k for k, a in self.allow.items() if ended(a.end_ms)]:
            self._refuse_waiters(key[0], key[1], self.allow[key])
            del self.allow[key]

    def admit(self, lid: str, now: int, ticket: object, cost: int = 1) -> bool | None:
        """True: admitted; False: refused; None: waiting for a grant (the verdict comes
        out of ``take_results`` within ``wait_ms``)."""
        ws, end = self.window(lid, now)
        a = self.allow.get((lid, ws))
        if a is None:
            a = self.allow[(lid, ws)] = Allowance(end)
        a.last_use = now
        if not a.waiters and a.used + cost <= a.granted - a.returned:
            a.used += cost
            if a.ask_at is None and a.low() and not self._denied(a, now):
                self._ask(lid, ws, a, now)
            return True
        if self._denied(a, now):
            self.stats["refused"] += 1
            return False
        a.waiters.append((ticket, cost, now + self.config.wait_ms))
        self.stats["waits"] += 1
        self._ask(lid, ws, a, now)
        return None

    def window(self, lid: str, now: int) -> tuple[int, int]:
        """The window of ``lid`` open at ``now`` (by this member's clock)."""
        w = self._windows.get(lid)
        if w is None or not w[0] <= now < w[1]:
            w = self._windows[lid] = self.limits[lid].window_at(now)
        return w

    def windows_changed(self, lid: str) -> None:
        """The limit's definition changed (its value, or its windows' anchor): the next
        admission computes its window again."""
        self._windows.pop(lid, None)

    def _ask_wait(self, a: Allowance) -> int:
        return backoff(self.config.ask_retry_ms, a.ask_tries, self.config.retry_cap_ms)

    def _denied(self, a: Allowance, now: int) -> bool:
        return a.denied_at is not None and now - a.denied_at < a.deny_ms

    def _ask(self, lid: str, ws: int, a: Allowance, now: int) -> None:
        if a.ask_at is not None and now - a.ask_at < self._ask_wait(a):
            return  # one ask at a time: the grant answers with at least what waits by then
        want = sum(w[1] for w in a.waiters)
        owner = self._owner_of(lid)
        if owner is None:
            return
        a.ask_at, a.asked_want = now, want
        a.reported = a.reported_usage()
        self.stats["asks"] += 1
        self._send(owner, Ask(lid, ws, self.me, want, a.granted, a.returned, a.reported, a.used))

    def _drain_waiters(self, lid: str, ws: int, a: Allowance) -> None:
        """Admit the waiters the allowance now covers; with ``wake_only`` wake them without
        counting their units (the caller admits them again: usage is never counted for an
        admission that has not happened)."""
        woken = 0
        while a.waiters and a.used + woken + a.waiters[0][1] <= a.granted - a.returned:
            ticket, cost, _ = a.waiters.popleft()
            if self.config.wake_only:
                woken += cost
            else:
                a.used += cost
            self.results.append((ticket, True, lid, ws))

    def _refuse_waiters(self, lid: str, ws: int, a: Allowance, before: int | None = None) -> None:
        while a.waiters and (before is None or a.waiters[0][2] <= before):
            ticket, _, _ = a.waiters.popleft()
            self.stats["refused"] += 1
            self.results.append((ticket, False, lid, ws))

    def _member_tick(self, key: WKey, a: Allowance, now: int) -> None:
        lid, ws = key
        self._refuse_waiters(lid, ws, a, before=now)
        if a.ask_at is not None and now >= a.ask_at + self._ask_wait(a):
            a.ask_at = None
            a.ask_tries += 1
            if a.waiters or (a.low() and now < a.end_ms and not self._denied(a, now)):
                self._ask(lid, ws, a, now)
        spare = a.spare()
        if spare > 0 and not a.waiters and now - a.last_use >= self.config.idle_ms:
            self._give_back(lid, ws, a)

    def _give_back(self, lid: str, ws: int, a: Allowance, owner: str | None = None) -> None:
        """Hand every unused unit back (idle, or ``owner`` reclaims)."""
        a.returned += max(0, a.spare())
        owner = owner or self._owner_of(lid)
        if owner is not None:
            a.reported = a.reported_usage()
            self._send(owner, Return(lid, ws, self.me, a.returned, a.reported, a.used))

    def on_grant(self, m: Grant, sender: str, now: int) -> None:
        a = self.allow.get((m.lid, m.window))
        if a is None or m.member != self.me or m.granted <= a.granted:
            return
        a.last_grant = m.granted - a.granted
        a.granted = m.granted
        a.ask_at = None
        a.ask_tries = 0
        a.denied_at = None
        a.deny_ms = 0
        self._drain_waiters(m.lid, m.window, a)
        if a.waiters:
            self._ask(m.lid, m.window, a, now)

    def on_deny(self, m: Deny, sender: str, now: int) -> None:
        a = self.allow.get((m.lid, m.window))
        if a is None or m.member != self.me:
            return
        a.denied_at = now
        a.deny_ms = min(max(self.config.deny_cache_ms, 2 * a.deny_ms), self.config.deny_cache_max_ms)
        a.ask_at = None
        a.ask_tries = 0
        self._refuse_waiters(m.lid, m.window, a)

    def on_reclaim(self, m: Reclaim, sender: str, now: int) -> None:
        if m.member != self.me:
            return  # meant for an earlier incarnation: its allowance died with it
        a = self.allow.get((m.lid, m.window))
        if a is None:
            a = self.allow[(m.lid, m.window)] = Allowance(self.window(m.lid, m.window)[1])
        self._give_back(m.lid, m.window, a, owner=sender)

    # ------------------------------------------------------------------ owner
