"""Kubernetes discovery: list + watch the pods of our Deployment through the API server.

- **Credentials**: the pod's service account (``token``, ``ca.crt``, ``namespace`` in
  ``/var/run/secrets/kubernetes.io/serviceaccount``, or the folder named by
  ``$RAINBRIDGE_K8S_SERVICEACCOUNT_DIR``) and ``$KUBERNETES_SERVICE_HOST`` /
  ``$KUBERNETES_SERVICE_PORT``. The token is re-read every minute (projected tokens
  rotate) and never logged. RBAC needed: ``pods: get, list, watch`` in the namespace.
- **Pods**: those in ``k8s_namespace`` (default: the service account's namespace) matching
  ``k8s_label_selector``; a candidate is a pod that is ``Running``, ``Ready`` (its Ready
  condition ``True``), not being deleted and has a pod IP, at our own gossip port (the
  replicas of one Deployment share the config).
- **Watch**: list once, then watch from the list's ``resourceVersion`` with bookmarks;
  a watch the server ends (``timeoutSeconds``) resumes from the last version seen; ``410
  Gone`` (the version was compacted) relists. The candidates are always current without
  polling.
- **Failures** (API down, 401/403, timeouts): the last list stands, the health says
  degraded, and list + watch start again after 0.5 s doubling to ``RETRY_MAX``.

Client: kubernetes_asyncio (extra ``k8s``), the asyncio port of the official client.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio import watch as k8s_watch
from kubernetes_asyncio.client.exceptions import ApiException
from kubernetes_asyncio.config.config_exception import ConfigException
from kubernetes_asyncio.config.incluster_config import InClusterConfigLoader

from .base import Address, Discovery, DiscoveryConfigError, cancel, dial_timeout_seconds

if TYPE_CHECKING:
    from rainbridge.config.schema import DiscoveryConfig

log = logging.getLogger("rainbridge.cluster.discovery")

SERVICEACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
WATCH_SECONDS = 240  # the server ends each watch after this; we resume from its version
RETRY_FIRST = 0.5
RETRY_MAX = 15.0
_FIELD = "$.cluster_config.discovery"


class _Relist(Exception):
    """The watch's resourceVersion is gone (410): list again, not a failure."""


def pod_address(pod: Any, port: int) -> Address | None:
    """The gossip address of a pod that may take traffic, else None."""
    status, meta = pod.status, pod.metadata
    if status is None or meta is None or meta.deletion_timestamp is not None:
        return None
    if status.phase != "Running" or not status.pod_ip:
        return None
    ready = any(c.type == "Ready" and c.status == "True" for c in status.conditions or ())
    return (status.pod_ip, port) if ready else None


class KubernetesDiscovery(Discovery):
    name = "kubernetes"

    def __init__(self, serviceaccount_dir: Path, namespace: str | None, selector: str,
                 self_address: Address, timeout: float, environ: Mapping[str, str]) -> None:
        super().__init__()
        self.serviceaccount_dir = serviceaccount_dir
        self.namespace = namespace
        self.selector = selector
        self.self_address = self_address
        self.port = self_address[1]
        self.timeout = timeout
        self.environ = dict(environ)
        self.pods: dict[str, Address] = {}  # pod uid -> address, ready pods only
        self.resource_version: str | None = None
        self.relists = 0
        self._task: asyncio.Task | None = None
        self._configuration: k8s.Configuration | None = None

    async def start(self) -> None:
        self._configuration = self._load_configuration()
        self._task = asyncio.get_running_loop().create_task(self._sessions())

    def _load_configuration(self) -> k8s.Configuration:
        """The in-cluster configuration; :class:`DiscoveryConfigError` when this process is
        not in a pod (no service host, no service account): that never heals by retrying."""
        folder = self.serviceaccount_dir
        loader = InClusterConfigLoader(str(folder / "token"), str(folder / "ca.crt"),
                                       environ=self.environ)
        configuration = k8s.Configuration()
        try:
            loader.load_and_set(configuration)
        except ConfigException as exc:
            raise DiscoveryConfigError(
                f"{_FIELD}.type: kubernetes discovery needs the pod's in-cluster service "
                f"account ({folder}) and $KUBERNETES_SERVICE_HOST/PORT: {exc}"
            ) from None
        if self.namespace is None:
            try:
                self.namespace = (folder / "namespace").read_text().strip()
            except OSError:
                self.namespace = ""
            if not self.namespace:
                raise DiscoveryConfigError(
                    f"{_FIELD}.k8s_namespace: required when the service account has no "
                    f"namespace file ({folder / 'namespace'})"
                )
        return configuration

    async def candidates(self) -> list[Address]:
        return self.report(self.pods.values(), self.self_address)

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel(task)

    async def _sessions(self) -> None:
        delay = RETRY_FIRST
        while True:
            try:
                async with k8s.ApiClient(self._configuration) as api:
                    await self._session(k8s.CoreV1Api(api))
                reason = "the session ended"
            except ApiException as exc:
                reason = f"HTTP {exc.status} {exc.reason or ''}".strip()
            except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
                reason = f"{type(exc).__name__}: {exc}".strip().rstrip(":")[:200]
            except Exception as exc:  # a client bug must not end discovery: log, retry
                log.exception("cluster discovery: kubernetes session failed")
                reason = type(exc).__name__
            if self.health.healthy and self.health.last_success is not None:
                delay = RETRY_FIRST  # it worked until now: retry soon
            h = self.health
            h.healthy, h.failures = False, h.failures + 1
            h.last_error = f"namespace {self.namespace}: {reason}"
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX)

    async def _session(self, api: k8s.CoreV1Api) -> None:
        """List, then watch until a failure raises; 410 relists in the same session."""
        while True:
            await self._list(api)
            try:
                while True:
                    await self._watch(api)
            except _Relist:
                self.relists += 1
                log.info("cluster discovery: kubernetes watch version expired; listing again")

    async def _list(self, api: k8s.CoreV1Api) -> None:
        listed = await api.list_namespaced_pod(
            self.namespace, label_selector=self.selector, _request_timeout=self.timeout)
        pods = {}
        for pod in listed.items:
            address = pod_address(pod, self.port)
            if address is not None:
                pods[pod.metadata.uid] = address
        self.pods = pods
        self.resource_version = listed.metadata.resource_version
        self._succeeded()

    def _succeeded(self) -> None:
        h = self.health
        h.healthy, h.failures, h.last_error = True, 0, None
        h.last_success = time.time()
        h.extra["resource_version"] = self.resource_version
        h.extra["relists"] = self.relists

    async def _watch(self, api: k8s.CoreV1Api) -> None:
        """One watch from ``resource_version`` until the server ends it (returns) or it
        fails (raises; :class:`_Relist` on 410 Gone)."""
        stream = k8s_watch.Watch()
        try:
            async for event in stream.stream(
                api.list_namespaced_pod, self.namespace, label_selector=self.selector,
                resource_version=self.resource_version, allow_watch_bookmarks=True,
                timeout_seconds=WATCH_SECONDS,
                _request_timeout=aiohttp.ClientTimeout(
                    total=WATCH_SECONDS + self.timeout, connect=self.timeout),
            ):
                kind, pod = event["type"], event["object"]
                if kind in ("ADDED", "MODIFIED", "DELETED"):
                    address = pod_address(pod, self.port) if kind != "DELETED" else None
                    if address is None:
                        self.pods.pop(pod.metadata.uid, None)
                    else:
                        self.pods[pod.metadata.uid] = address
                if stream.resource_version:
                    self.resource_version = stream.resource_version
                self._succeeded()
        except ApiException as exc:
            if exc.status == 410:
                raise _Relist from None
            raise
        finally:
            await stream.close()
        self._succeeded()  # the server ended the watch on time: resume from our version


def make(config: DiscoveryConfig, self_address: tuple[str, int], node_name: str,
         environ: Mapping[str, str]) -> Discovery:
    if not config.k8s_label_selector:
        raise DiscoveryConfigError(
            f"{_FIELD}.k8s_label_selector: required for kubernetes discovery (for example "
            "'app.kubernetes.io/name=bifrost'): without it every pod in the namespace "
            "would be a candidate")
    folder = Path(environ.get("RAINBRIDGE_K8S_SERVICEACCOUNT_DIR") or SERVICEACCOUNT_DIR)
    return KubernetesDiscovery(folder, config.k8s_namespace or None, config.k8s_label_selector,
                               self_address, dial_timeout_seconds(config.dial_timeout), environ)

