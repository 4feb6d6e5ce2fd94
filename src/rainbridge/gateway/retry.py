"""Retry policy (Bifrost semantics) as pure functions: what to do after a failed attempt.

- 5xx and network errors: retry the same key after a backoff.
- 429: rotate to another key (when there is one) and back off.
- 401/403: the key is dead for this request; rotate at once, no backoff, no retry spent.
- 400/404/422 and other 4xx: not retried.
"""

from __future__ import annotations

import enum

from ..errors import GatewayError, UpstreamError, UpstreamUnreachable


class Action(enum.Enum):
    RETRY_SAME = "retry_same"  # same key, after backoff
    ROTATE_BACKOFF = "rotate_backoff"  # another key, after backoff
    ROTATE_NOW = "rotate_now"  # key is dead; another key, immediately
    FAIL = "fail"  # give up on this provider


def classify(error: GatewayError) -> Action:
    if isinstance(error, UpstreamUnreachable):
        return Action.RETRY_SAME
    if isinstance(error, UpstreamError):
        status = error.status
        if status >= 500:
            return Action.RETRY_SAME
        if status == 429:
            return Action.ROTATE_BACKOFF
        if status in (401, 403):
            return Action.ROTATE_NOW
    return Action.FAIL


def backoff_ms(attempt: int, initial_ms: float, max_ms: float, jitter: float) -> float:
    """Delay before retry number ``attempt`` (0-based): min(initial·2^attempt, max) ±20 %.

    ``jitter`` is a uniform random number in [0, 1); passing it in keeps this pure.
    """
    base = min(initial_ms * (2 ** min(attempt, 62)), max_ms)
    return base * (0.8 + 0.4 * jitter)
