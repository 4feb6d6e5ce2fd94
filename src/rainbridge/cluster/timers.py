"""Every timer and count formula of the membership protocol, as pure functions.

Times are seconds (floats). Each function names the memberlist function it follows; the
table tests in ``tests/test_cluster_timers.py`` pin the values.
"""

from __future__ import annotations

import math

# memberlist's pushPullScaleThreshold: above this many members the push-pull interval grows.
PUSH_PULL_SCALE_THRESHOLD = 32


def suspicion_timeout(suspicion_mult: int, n: int, probe_interval: float) -> float:
    """Minimum suspicion timeout: mult · max(1, log10(N)) · interval (memberlist
    ``suspicionTimeout``; millisecond precision on the node scale, as there)."""
    node_scale = max(1.0, math.log10(max(1.0, float(n))))
    return suspicion_mult * math.floor(node_scale * 1000) / 1000 * probe_interval


def suspicion_bounds(
    suspicion_mult: int, max_timeout_mult: int, n: int, probe_interval: float
) -> tuple[float, float]:
    """(min, max) of a new suspicion timer: max = max_timeout_mult · min."""
    low = suspicion_timeout(suspicion_mult, n, probe_interval)
    return low, max_timeout_mult * low


def expected_confirmations(suspicion_mult: int, n: int) -> int:
    """Lifeguard's k: independent confirmations that drive the timer to its minimum.

    mult - 2 (so the minimum is reached two probe intervals short of the nominal timeout),
    or 0 when the cluster has too few other members (N - 2, excluding us and the suspect).
    """
    k = suspicion_mult - 2
    if n - 2 < k or k < 0:
        return 0
    return k


def suspicion_total_timeout(n_confirmations: int, k: int, low: float, high: float) -> float:
    """Total suspicion time after ``n_confirmations`` of ``k`` expected confirmations.

    Starts at ``high`` and falls logarithmically to ``low``: high - (high-low)·log(n+1)/log(k+1)
    (memberlist ``remainingSuspicionTime`` before subtracting the elapsed time; floored to
    the millisecond there too). With k = 0 the timer is simply ``low``.
    """
    if k < 1:
        return low
    frac = math.log(n_confirmations + 1.0) / math.log(k + 1.0)
    raw = high - frac * (high - low)
    timeout = math.floor(1000.0 * raw) / 1000.0
    return max(low, timeout)


def remaining_suspicion_time(
    n_confirmations: int, k: int, elapsed: float, low: float, high: float
) -> float:
    """Seconds left on a suspicion timer (may be negative: fire at once)."""
    return suspicion_total_timeout(n_confirmations, k, low, high) - elapsed


def retransmit_limit(retransmit_mult: int, n: int) -> int:
    """Transmissions per broadcast: mult · ceil(log10(N+1)) (memberlist ``retransmitLimit``)."""
    return retransmit_mult * math.ceil(math.log10(n + 1))


def push_pull_scale(interval: float, n: int) -> float:
    """Push-pull interval for N members (memberlist ``pushPullScale``): unchanged up to 32,
    then × (ceil(log2(N) - log2(32)) + 1): ×2 from 33, ×3 from 65, ..."""
    if n <= PUSH_PULL_SCALE_THRESHOLD:
        return interval
    multiplier = math.ceil(math.log2(n) - math.log2(PUSH_PULL_SCALE_THRESHOLD)) + 1.0
    return multiplier * interval


def health_multiplier(score: int) -> int:
    """Lifeguard: timeouts scale by (score + 1) (memberlist ``awareness.ScaleTimeout``)."""
    return score + 1


def clamp_health_score(score: int, max_multiplier: int) -> int:
    """Health scores live in [0, max_multiplier - 1] (memberlist ``awareness.ApplyDelta``)."""
    return min(max(score, 0), max_multiplier - 1)


def probe_timing(probe_interval: float, probe_timeout: float, score: int) -> tuple[float, float]:
    """(interval, timeout) of the next probe under health ``score``.

    Lifeguard's LHA-Probe scales both; memberlist scales only the interval (its deadline)
    and keeps probing at the base rate on success. We scale both, as the paper does, so an
    overloaded node probes less often and waits longer for acks it is slow to process.
    """
    m = health_multiplier(score)
    return probe_interval * m, probe_timeout * m


def failed_probe_health_delta(expected_nacks: int, nacks: int) -> int:
    """Health score change after a failed probe (memberlist ``probeNode``).

    With relays that send nacks, each missing nack counts (we did not hear from members
    we assume healthy, so we are likely the problem); without any, a plain +1.
    """
    if expected_nacks > 0:
        return max(expected_nacks - nacks, 0)
    return 1


def reconnect_probability(num_failed: int, num_alive: int) -> float:
    """Chance to try a reconnect this round (Serf ``reconnect``): failed / alive, so the
    cluster as a whole tries each failed member about once per reconnect interval."""
    if num_failed <= 0:
        return 0.0
    return min(1.0, num_failed / max(num_alive, 1))
