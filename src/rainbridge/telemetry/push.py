"""Bifrost's ``plugins.telemetry.config.push_gateway``: push the metrics to a Prometheus
Pushgateway every ``push_interval`` seconds, for fleets whose pods a scraper cannot reach one
by one (behind a load balancer).

The group is ``job=<job_name>/instance=<instance_id>`` (default: the host name, the pod's
name on Kubernetes), one per pod: with ``--workers N`` only worker 0 pushes, and it pushes the
whole pod's numbers (telemetry/pod.py). The samples are collected on the event loop (a
snapshot, no lock on the request path); the HTTP PUT runs in a thread, so a slow or dead
gateway never holds up a request. A failed push is retried with exponential backoff (from
``RETRY_INITIAL_S`` up to the interval); on graceful shutdown the group is deleted, so the
Pushgateway does not keep serving a gone pod's last numbers forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import orjson
from prometheus_client.exposition import (
    basic_auth_handler,
    default_handler,
    delete_from_gateway,
    push_to_gateway,
)

from .pod import Merged, snapshot

log = logging.getLogger("rainbridge.telemetry")

RETRY_INITIAL_S = 0.5
PUSH_TIMEOUT_S = 10.0  # one PUT, at most (and at most the interval)
DELETE_TIMEOUT_S = 5.0  # the delete at shutdown


class PushConfigError(ValueError):
    """A push_gateway setting that can never work; the message starts with its JSON path."""


@dataclass(frozen=True)
class PushSettings:
    url: str
    job: str = "bifrost"
    instance: str = ""
    interval_s: float = 15.0
    username: str | None = None
    password: str | None = None

    @property
    def grouping_key(self) -> dict[str, str]:
        return {"instance": self.instance}


def push_settings(plugins: Any, environ: Mapping[str, str] = os.environ) -> PushSettings | None:
    """The push gateway settings of an enabled telemetry plugin, or None (not configured,
    or ``enabled: false``). Field meanings and defaults as in Bifrost's docs."""
    from ..config.bifrost import plugin_entries

    for path, name, entry in plugin_entries(plugins):
        if name != "telemetry" or entry.get("enabled") is False:
            continue
        config = entry.get("config")
        push = config.get("push_gateway") if isinstance(config, dict) else None
        if push is None:
            continue
        where = f"{path}.config.push_gateway"
        if not isinstance(push, dict):
            raise PushConfigError(f"{where}: expected an object")
        if not push.get("enabled"):
            continue
        url = _env(push.get("push_gateway_url"), environ)
        if not isinstance(url, str) or not url.strip():
            raise PushConfigError(f"{where}.push_gateway_url: required (e.g. http://pushgateway:9091)")
        url = url.strip()
        if not url.startswith(("http://", "https://")):
            raise PushConfigError(f"{where}.push_gateway_url: must be an http:// or https:// URL")
        job = push.get("job_name") or "bifrost"
        instance = _env(push.get("instance_id"), environ) or socket.gethostname()
        if not isinstance(job, str) or not isinstance(instance, str):
            raise PushConfigError(f"{where}: job_name and instance_id must be strings")
        interval = push.get("push_interval", 15)
        if type(interval) not in (int, float) or not 1 <= interval <= 300:
            raise PushConfigError(f"{where}.push_interval: a number of seconds from 1 to 300")
        auth = push.get("basic_auth")
        username = password = None
        if auth is not None:
            if not isinstance(auth, dict) or not isinstance(auth.get("username"), str):
                raise PushConfigError(f"{where}.basic_auth: expected {{\"username\", \"password\"}}")
            username, password = _env(auth["username"], environ), _env(auth.get("password") or "", environ)
        return PushSettings(url.rstrip("/"), job, instance, float(interval), username, password)
    return None


def _env(value: Any, environ: Mapping[str, str]) -> Any:
    """Bifrost's ``env.VAR`` values."""
    if isinstance(value, str) and value.startswith("env."):
        return environ.get(value[4:], "")
    return value


class Pusher:
    """Pushes ``source()`` (an async callable returning a registry-like object, collected on
    the event loop) on the configured interval until ``stop``."""

    def __init__(self, settings: PushSettings, source: Any) -> None:
        self.settings = settings
        self.source = source
        self.pushes = 0  # successful pushes (tests, logs)
        self.failures = 0
        self._task: asyncio.Task | None = None

    def _handler(self) -> Any:
        s = self.settings
        if s.username is None:
            return default_handler
        return partial(_basic_auth, s.username, s.password or "")

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        interval = self.settings.interval_s
        delay = interval
        while True:
            await asyncio.sleep(delay)
            try:
                await self.push_once()
                delay = interval
            except (OSError, ValueError) as exc:  # URLError and HTTPError are OSErrors
                self.failures += 1  # retry sooner, backing off up to the interval
                delay = min(interval, RETRY_INITIAL_S * 2 ** min(self.failures - 1, 10))
                log.warning("push to %s failed (%s); retrying in %.1fs", self.settings.url, exc, delay)

    async def push_once(self) -> None:
        registry = await self.source()
        frozen = Merged([orjson.loads(snapshot(registry))])  # collected here, on the loop
        s = self.settings
        push = partial(push_to_gateway, s.url, s.job, frozen, grouping_key=s.grouping_key,
                       timeout=min(PUSH_TIMEOUT_S, s.interval_s), handler=self._handler())
        await asyncio.get_running_loop().run_in_executor(None, push)
        if self.failures:
            log.info("push to %s works again", s.url)
        self.failures = 0
        self.pushes += 1

    async def stop(self) -> None:
        """Stop pushing and delete this instance's group (bounded by ``DELETE_TIMEOUT_S``)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        s = self.settings
        delete = partial(delete_from_gateway, s.url, s.job, grouping_key=s.grouping_key, timeout=DELETE_TIMEOUT_S,
                         handler=self._handler())
        try:
            await asyncio.get_running_loop().run_in_executor(None, delete)
        except (OSError, ValueError) as exc:
            log.warning("could not delete the metrics group %s/%s from %s: %s", s.job, s.instance, s.url, exc)


def _basic_auth(username: str, password: str, url: str, method: str, timeout: float | None,
                headers: list, data: bytes) -> Any:
    return basic_auth_handler(url, method, timeout, headers, data, username, password)
