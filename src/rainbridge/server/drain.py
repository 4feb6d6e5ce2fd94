"""Drain as Kubernetes drives it: SIGTERM (after the pod's preStop sleep) to exit 0.

The order, from the signal on:
1. at once: ``/health/ready`` answers 503 ``draining`` and the cluster metadata says
   ``draining`` (``Gateway.begin_drain``), so endpoints and peers stop routing; ``/health``
   (liveness) stays 200 with status ``draining``, so no liveness probe restarts the pod mid-drain;
2. for ``accept_seconds`` the listener still accepts: a connection routed here before every
   kube-proxy and ingress saw the endpoint go is served, not refused;
3. then the listener closes (new connections are refused, never answered 5xx) and in-flight
   requests and SSE streams run on, until ``grace_seconds`` after the signal;
4. what still runs then is cut: a stream gets a final ``server_shutting_down`` error event
   (and ``[DONE]`` on OpenAI routes), so a client sees why it ended; every request is
   settled, usage flushed, the member leaves (peers see a leave, not a failure); exit 0.

Timings: env ``RAINBRIDGE_DRAIN_ACCEPT_SECONDS`` / ``RAINBRIDGE_DRAIN_GRACE_SECONDS``, then the
older ``RAINBRIDGE_GRACEFUL_TIMEOUT_SECONDS`` (grace), then config ``drain.*``, then defaults
(accept 0, grace 60: inside a 90 s terminationGracePeriod after a 20 s preStop sleep).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass

from ..config.schema import DrainConfig

log = logging.getLogger("rainbridge")

DEFAULT_GRACE_S = 60.0
SHUTTING_DOWN_TYPE = "server_shutting_down"
SHUTTING_DOWN_MESSAGE = "the gateway is shutting down; the stream was cut at the end of its drain grace period"


@dataclass(frozen=True, slots=True)
class DrainTimes:
    accept_s: float  # after the signal, the listener still accepts this long
    grace_s: float  # after the signal, in-flight work may run this long (>= accept_s)


def _env_seconds(environ: Mapping[str, str], name: str) -> float | None:
    raw = environ.get(name)
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 86400:  # also NaN
        log.warning("%s=%r is not a number of seconds in 0..86400; ignored", name, raw)
        return None
    return value


def drain_times(config: DrainConfig, environ: Mapping[str, str] | None = None) -> DrainTimes:
    env = os.environ if environ is None else environ
    accept = _env_seconds(env, "RAINBRIDGE_DRAIN_ACCEPT_SECONDS")
    if accept is None:
        accept = config.accept_seconds
    grace = _env_seconds(env, "RAINBRIDGE_DRAIN_GRACE_SECONDS")
    if grace is None:
        grace = _env_seconds(env, "RAINBRIDGE_GRACEFUL_TIMEOUT_SECONDS")
    if grace is None:
        grace = config.grace_seconds if config.grace_seconds is not None else DEFAULT_GRACE_S
    return DrainTimes(accept_s=min(accept, grace), grace_s=grace)


class ShutdownCut:
    """Set when the drain's grace is over and the server cancels what still runs: a stream
    cancelled then (not by its client leaving) ends with a ``server_shutting_down`` event.
    One per process: every worker is its own process."""

    active = False


def start_cut() -> None:
    ShutdownCut.active = True


def cutting() -> bool:
    return ShutdownCut.active
