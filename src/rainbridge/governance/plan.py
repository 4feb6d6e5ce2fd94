"""A key's limits compiled for admission: one ``Check`` per limit, gathered in a ``Plan``.

A plan holds, for the current windows, the (slot, limit) pairs admission compares against,
recomputed only when a window ends, and the x-ratelimit-* header lines of its rate limits
(``ratelimit_headers.py``) for the current tenth of a second.
"""

from __future__ import annotations

from ..counters.base import Counters, Slot
from ..counters.windows import Window, window_for
from .model import Budget, Owner, RateLimit, VirtualKey
from .pricing import Price
from .ratelimit_headers import check_lines

# The levels whose limits belong to the target a request goes to (a key's limits on one
# provider, model limits), not to the key itself: checked and charged on the target that
# answers, so a request that falls back is charged to its fallback (Governance.enter).
TARGET_LEVELS = frozenset(("provider", "model"))


class Check:
    """One limit a key's requests count against: compiled once per key, with its open window
    and the slot of that window's counter."""

    __slots__ = ("aligned", "anchor", "duration", "level", "limit", "lines", "metric", "owner",
                 "owner_id", "provider", "scope", "slot", "window")

    def __init__(self, level: str, owner: Owner, metric: str, scope: str, owner_id: str,
                 duration: str, aligned: bool, anchor: int, limit: float, provider: str | None = None):
        self.level = level  # vk | team | customer | provider (a key's limit on one provider)
        self.provider = provider
        self.owner = owner
        self.metric = metric  # requests | tokens | spend
        self.scope = scope
        self.owner_id = owner_id
        self.duration = duration
        self.aligned = aligned
        self.anchor = anchor
        self.limit = limit
        self.window: Window | None = None
        self.slot: Slot | None = None
        # The x-ratelimit-* lines of a rate limit, with %d where the remaining count goes: the
        # limit never changes, the reset text only every tenth of a second (Plan.refresh).
        self.lines = b""

    @property
    def lid(self) -> str:
        """The fleet-wide limit's id: what it counts and over which duration."""
        return f"{self.scope}/{self.owner_id}/{self.metric}/{self.duration}"

    def current(self, now_ms: int) -> Window:
        w = self.window
        if w is None or not (w.start_ms <= now_ms < w.end_ms):
            w = self.window = window_for(self.duration, now_ms, self.aligned, self.anchor)
        return w


class Plan:
    """A key's checks in the shape admission wants: (slot, limit) pairs per metric for the
    current windows, recomputed only when one of those windows ends.

    Requests are strict (the request must fit) and counted at admission; tokens are strict
    and reserved (an estimate, corrected at settlement); budgets only need room left, since
    a request's cost is known only afterwards: a budget is overshot at most by the requests
    in flight when it filled up (their cost is not reserved: an estimate from the prompt
    alone would hold back little, and the request path would pay for it every time)."""

    __slots__ = ("checks", "header_groups", "held", "own", "pair", "price", "priced_model", "priced_provider", "requests",
                 "spend", "templates", "tokens", "valid_from", "valid_until", "windows_until")

    def __init__(self, checks: list[Check]):
        self.checks = checks
        # The rate limits that answer in x-ratelimit-* headers: per metric (non-empty groups
        # only), the first check and the others (the tightest of a group answers).
        self.header_groups = [(group[0], tuple(group[1:])) for metric in ("requests", "tokens")
                              if (group := [c for c in checks if c.metric == metric])]
        self.requests: list[tuple[Slot, float]] = []  # the key's own: counted at admission
        # A target's request limits: one request held at admission, counted at settlement
        # if it answered (Bifrost counts a provider's and a model's requests on success).
        self.held: list[tuple[Slot, float]] = []
        self.tokens: list[tuple[Slot, float]] = []
        self.spend: list[tuple[Slot, float]] = []
        # How many of ``tokens`` and ``spend`` are the key's own (they come first: ``checks``
        # lists the key's levels before its target's); the rest are the target's.
        self.own = (sum(1 for c in checks if c.metric == "tokens" and c.level not in TARGET_LEVELS),
                    sum(1 for c in checks if c.metric == "spend" and c.level not in TARGET_LEVELS))
        self.valid_from = 0
        self.windows_until = 0  # the first end of a check's window
        self.valid_until = 0  # ... or of the tenth of a second the header lines were written for
        # The header lines of each combination of answering checks, for this tenth.
        self.templates: dict[tuple[Check, ...], bytes] = {}
        # Exactly one request limit and one token limit (the usual): the lines' template
        # and the (slot, limit) of each, so admission formats them without a search.
        self.pair: tuple[bytes, Slot, float, Slot, float] | None = None
        # The price of the last model settled (the same model, request after request).
        self.priced_provider: str | None = None
        self.priced_model: str | None = None
        self.price: Price | None = None

    def refresh(self, now_ms: int, counters: Counters) -> None:
        """The slots of the current windows (when one ended) and the header lines of this
        tenth of a second (rate limit windows end on whole seconds, so the time left in the
        reset headers changes only with the tenth)."""
        if not (self.valid_from <= now_ms < self.windows_until):
            lists: dict[str, list[tuple[Slot, float]]] = {"requests": [], "held": [], "tokens": [], "spend": []}
            valid_from, valid_until = 0, 2**62
            for c in self.checks:
                w = c.current(now_ms)
                c.slot = counters.slot((c.scope, c.owner_id, c.metric, w.start_ms), w.end_ms)
                kind = c.metric
                if kind == "spend":  # USD in the slot, micro-USD in a fleet's escrow
                    counters.bind(c.slot, c.lid, c.limit, c.duration, True, 1_000_000, c.aligned, c.anchor)
                else:  # a held request is reserved until settled, as tokens are
                    if kind == "requests" and c.level in TARGET_LEVELS:
                        kind = "held"
                    counters.bind(c.slot, c.lid, c.limit, c.duration, kind != "requests")
                lists[kind].append((c.slot, c.limit))
                valid_from = max(valid_from, w.start_ms)
                valid_until = min(valid_until, w.end_ms)
            # New lists, never changed in place: an admission keeps the ones it reserved on.
            self.requests, self.held, self.tokens, self.spend = lists["requests"], lists["held"], lists["tokens"], lists["spend"]
            self.valid_from, self.windows_until = valid_from, valid_until
        self.valid_until = self.windows_until
        if self.header_groups:
            tenth = now_ms // 100 + 1
            self.valid_until = min(self.windows_until, tenth * 100)
            for c, others in self.header_groups:
                for check in (c, *others):
                    assert check.window is not None and check.slot is not None
                    check.lines = check_lines(check.metric, check.limit, check.window.end_ms, tenth)
            self.templates = {}
            if len(self.header_groups) == 2 and not self.header_groups[0][1] and not self.header_groups[1][1]:
                r, t = self.header_groups[0][0], self.header_groups[1][0]
                self.pair = (r.lines + t.lines, r.slot, r.limit, t.slot, t.limit)  # type: ignore[assignment]


def plan_key(vk: VirtualKey, provider: str) -> str:
    return f"{vk.id}\x00{provider}"


def owner_checks(checks: list[Check], level: str, owner: Owner, scope: str, owner_id: str, rl: RateLimit | None,
                  budgets: list[Budget], provider: str | None = None) -> None:
    if rl is not None:
        if rl.request_max_limit is not None and rl.request_reset_duration:
            checks.append(Check(level, owner, "requests", scope, owner_id, rl.request_reset_duration, True, 0,
                                rl.request_max_limit, provider))
        if rl.token_max_limit is not None and rl.token_reset_duration:
            checks.append(Check(level, owner, "tokens", scope, owner_id, rl.token_reset_duration, True, 0,
                                rl.token_max_limit, provider))
    for b in budgets:
        checks.append(Check(level, owner, "spend", "budget", b.id, b.reset_duration, b.calendar_aligned, b.created_at,
                            b.max_limit, provider))


# What one admitted request holds until it is settled, as a plain tuple (made on every
