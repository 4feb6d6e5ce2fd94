"""Retry classification and backoff bounds (pure functions, table tests)."""

import pytest

from rainbridge.errors import InvalidRequest, UpstreamError, UpstreamTimeout, UpstreamUnreachable
from rainbridge.gateway.retry import Action, backoff_ms, classify


def upstream(status: int) -> UpstreamError:
    return UpstreamError("x", provider="p", status=status)


@pytest.mark.parametrize(
    ("error", "action"),
    [
        (upstream(500), Action.RETRY_SAME),
        (upstream(502), Action.RETRY_SAME),
        (upstream(503), Action.RETRY_SAME),
        (upstream(529), Action.RETRY_SAME),
        (UpstreamUnreachable("x", provider="p"), Action.RETRY_SAME),
        (UpstreamTimeout("x", provider="p"), Action.RETRY_SAME),
        (upstream(429), Action.ROTATE_BACKOFF),
        (upstream(401), Action.ROTATE_NOW),
        (upstream(403), Action.ROTATE_NOW),
        (upstream(400), Action.FAIL),
        (upstream(404), Action.FAIL),
        (upstream(422), Action.FAIL),
        (upstream(409), Action.FAIL),
        (InvalidRequest("bad"), Action.FAIL),
    ],
)
def test_classify(error, action):
    assert classify(error) is action


@pytest.mark.parametrize(
    ("attempt", "initial", "maximum", "base"),
    [
        (0, 500, 5000, 500),
        (1, 500, 5000, 1000),
        (2, 500, 5000, 2000),
        (3, 500, 5000, 4000),
        (4, 500, 5000, 5000),  # capped
        (10, 500, 5000, 5000),
        (200, 100, 2000, 2000),  # huge attempt numbers do not overflow
        (0, 0, 0, 0),
    ],
)
def test_backoff_is_doubling_capped_with_20_percent_jitter(attempt, initial, maximum, base):
    low = backoff_ms(attempt, initial, maximum, 0.0)
    mid = backoff_ms(attempt, initial, maximum, 0.5)
    high = backoff_ms(attempt, initial, maximum, 0.999999)
    assert low == pytest.approx(base * 0.8)
    assert mid == pytest.approx(base)
    assert high == pytest.approx(base * 1.2, rel=1e-5)
    assert low <= mid <= high
