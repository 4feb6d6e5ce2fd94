"""Everything one worker owns: config, upstream client, providers, router, governance, stores.

There is no module-level state: each worker process builds one ``Gateway``; tests build
their own. A background task keeps the worker in step with the config store: it flushes
usage counters every few seconds and reloads providers and governance when another worker
(or node) changed them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from collections.abc import Mapping
from functools import partial
from pathlib import Path

from prometheus_client import CollectorRegistry

from ..cluster.appmessages import ClusterHandler
from ..cluster.events import MemberEvent
from ..cluster.service import ClusterEnv, ClusterService
from ..config.load import ConfigError, LoadedConfig
from ..config.validate import Problem
from ..counters.escrow import Limit
from ..counters.fleet import CHANNEL, AwaitGrant, FleetCounters, fleet_config
from ..counters.fleet_metrics import FleetCollector
from ..counters.local import LocalCounters
from ..errors import GatewayError, Unavailable
from ..governance.engine import LINES, Governance, GovernanceState
from ..governance.generated import GeneratedValues
from ..governance.normalize import normalize
from ..governance.pricing import Price, Pricing
from ..store import ConfigStore, StoreUnavailable, connect, encryption_passphrase, open_database
from ..store.db import Database, PostgresDatabase
from ..store.governance_repo import GovernanceRepo, config_version
from ..store.log_sinks import PostgresSink, SQLiteSink
from ..store.log_writer import LogWriter, flush_interval
from ..store.migrate import check, migrate
from ..store.routing_rules_repo import RoutingRulesRepo
from ..telemetry.health import GatewayCollector
from ..telemetry.push import Pusher, push_settings
from ..telemetry.requests import RequestMetrics, metrics_enabled
from ..telemetry.tracing import Tracing, settings_from_plugins
from ..upstream import UpstreamClient
from .propagation import ConfigPropagation, poll_interval
from .provider import Provider, build_providers
from .record import CANCELLED, RequestRecord, extract_usage, log_entry, log_id_prefix
from .router import Router
from .routing import Routes, Target, request_type, serving
from .rule_routing import apply_rules, pin_keys
from .rules import RuleSet
from .rules_config import rules_from_config, rules_from_store
from .traffic import Traffic

log = logging.getLogger("rainbridge.gateway")

MODELS_TTL_S = 60.0
STORE_CHECK_TTL_S = 2.0  # readiness pings the store at most this often
STORE_PING_TIMEOUT_S = 1.0  # a store that takes longer counts as unreachable
COMPLETION_ESTIMATE_ENV = "RAINBRIDGE_COMPLETION_ESTIMATE_TOKENS"
COMPLETION_ESTIMATE_DEFAULT = 256
# An admission short of fleet allowance waits for a grant (each wait ends after the escrow's
# wait_ms) and admits again: at most this many times, and this long in all.
MAX_GRANT_WAITS = 20
GRANT_WAIT_S = 3.0
FLUSH_INTERVAL_S = 2.0  # usage counters -> config store
POLL_INTERVAL_S = 1.0  # maintenance tick; the store poll: RAINBRIDGE_STORE_POLL_SECONDS


class Gateway:
    def __init__(self, loaded: LoadedConfig, app_dir: Path | str, run_migrations: bool = True, store_wait_s: float = 60.0,
                 cluster_env: ClusterEnv | None = None):
        self.loaded = loaded
        self.config = loaded.config
        self.app_dir = Path(app_dir)
        client = self.config.client
        self.max_body_bytes = client.max_request_body_size_mb * 1024 * 1024
        self.client = UpstreamClient()
        self.providers: dict[str, Provider] = {}
        self.routes = Routes({})
        self.router = Router()
        # governance.routing_rules, compiled once (checked when the file was loaded); None:
        # no rule, and requests pay one test for them.
        problems: list[Problem] = []
        self.rules: RuleSet | None = rules_from_config(
            self.config.governance, self.config.providers, problems,
            self.config.config_store is not None and self.config.config_store.enabled)
        if any(p.severity == "error" for p in problems):  # a config that skipped load_data's checks
            raise ConfigError([p for p in problems if p.severity == "error"], loaded.source)
        self.store: ConfigStore | None = None
        self.governance_repo: GovernanceRepo | None = None
        self.routing_repo: RoutingRulesRepo | None = None
        self.run_migrations = run_migrations
        self.store_wait_s = store_wait_s
        # A restarted process is a new node: it never reuses an earlier incarnation's slots.
        self.node_id = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self.metrics = CollectorRegistry(auto_describe=False)  # served at /metrics
        self.cluster: ClusterService | None = None  # this worker's cluster member (cluster mode)
        if self.config.cluster_config.enabled:
            self.cluster = ClusterService(self.config.cluster_config, cluster_env)
            self.node_id = self.cluster.node_id  # stable name + boot id
        # Cluster mode: one limit for the whole fleet (fleet.py); else this process's own.
        self.counters = (FleetCounters(self.node_id, fleet_config(os.environ)) if self.cluster is not None
                         else LocalCounters(self.node_id))
        overrides = {k: Price(v.input_cost_per_token, v.output_cost_per_token) for k, v in self.config.pricing_overrides.items()}
        mandatory = (
            self.config.governance.is_vk_mandatory
            or client.enforce_auth_on_inference
            or client.enforce_governance_header
        )
        self.governance = Governance(self.counters, Pricing(overrides), mandatory)
        self._store_check = (-STORE_CHECK_TTL_S, False)  # (monotonic time, reachable)
        self._store_ping: asyncio.Future[bool] | None = None
        # Traces (Bifrost's otel plugin): off unless configured; a bad config stops start-up.
        settings = settings_from_plugins(self.config.plugins)
        self.tracing = Tracing(settings, self.node_id) if settings is not None else None
        self.traffic = Traffic()  # requests, errors, latency: the dashboard's per-node numbers
        # Bifrost's request metrics (the telemetry plugin, on unless disabled in plugins[]).
        self.request_metrics = RequestMetrics(client.prometheus_labels, self.governance.pricing) if metrics_enabled(self.config.plugins) else None
        self.metrics.register(GatewayCollector(self))
        self.pod_metrics = None  # telemetry.pod.PodMetrics with --workers N (set by server/run.py)
        push = push_settings(self.config.plugins)  # a bad push_gateway config stops start-up
        self.pusher = Pusher(push, self.scrape_registry) if push is not None else None  # worker 0's only
        if isinstance(self.counters, FleetCounters):
            self.counters.resolve = self._fleet_limit
            self.counters.traffic = self.traffic.snapshot  # in every member's status row
            self.metrics.register(FleetCollector(self.counters))
        self._fleet_task: asyncio.Task | None = None
        self.logs_db: Database | None = None
        self.log_writer: LogWriter | None = None
        self._models_cache: tuple[float, list[dict]] | None = None
        self._version: str | None = None
        self._maintenance: asyncio.Task | None = None
        self.poll_interval_s = poll_interval(os.environ)  # config store changes -> this worker
        self.completion_estimate = completion_estimate(os.environ)
        self._reload_lock = asyncio.Lock()  # an older snapshot never overwrites a newer one
        self.propagation: ConfigPropagation | None = None  # changes announced on the cluster
        self.draining = False  # set on SIGTERM: see begin_drain
        self.counters_loaded = False  # the store's open windows are in memory (readiness)

    @property
    def wants_usage(self) -> bool:
        """Whether streams should ask the upstream for usage even when the client did not."""
        return self.log_writer is not None

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        normalized = normalize(self.config.governance, set(self.config.providers), int(time.time() * 1000),
                               GeneratedValues(self.app_dir).value)
        self.governance.model_limits = tuple(normalized.model_limits)
        db = open_database(self.config.config_store, self.app_dir, "config.db")
        if db is None:
            self._install(self.config.providers)
            self.governance.state = GovernanceState(normalized.customers, normalized.teams, normalized.virtual_keys)
        else:
            self.store = await ConfigStore.open(db, encryption_passphrase(self.config), self.run_migrations, self.store_wait_s)
            self.governance_repo = GovernanceRepo(db)
            await self.store.providers.sync_from_file(self.config.providers)
            await self.governance_repo.sync_from_file(normalized.customers, normalized.teams, normalized.virtual_keys)
            await self.governance_repo.sync_model_limits_from_file(normalized.model_limits)
            self.routing_repo = RoutingRulesRepo(db)
            await self.routing_repo.sync_from_file(self.config.governance.routing_rules)
            await self.reload()
            loaded = await self.counters.load(db)
            if loaded:
                log.info("restored %d usage counter(s) from the store", loaded)
            self._maintenance = asyncio.get_running_loop().create_task(self._maintain())
        self.counters_loaded = True  # loaded, or nothing to load (no store)
        if self.pod_metrics is not None:
            await self.pod_metrics.start()
        if self.pusher is not None:
            self.pusher.start()
        if self.config.client.enable_logging:
            await self._open_logs()
        if self.cluster is not None:
            if self.store is not None:
                self.propagation = ConfigPropagation(self.cluster, self.reload_if_changed, lambda: self._version)
            if isinstance(self.counters, FleetCounters):
                self.cluster.on_message(CHANNEL, self.counters.on_message)
                self.cluster.set_handler(_MembershipBridge(self.counters))
            await self.cluster.start(self.metrics)
            self._fleet_task = asyncio.get_running_loop().create_task(self._attach_fleet())

    async def _attach_fleet(self) -> None:
        """Fleet counters start once the member has synced with the cluster (joined and
        done a push-pull, or found nobody): a member that restarts into a running fleet
        must first learn who is there, or it would count itself alone."""
        assert self.cluster is not None and isinstance(self.counters, FleetCounters)
        while not self.cluster.synced:
            await asyncio.sleep(0.05)
        self.counters.attach(self.cluster, self.store.db if self.store is not None else None)
        self.counters.on_membership()

    def _fleet_limit(self, lid: str) -> Limit | None:
        found = self.governance.limit_for(lid)
        return Limit(lid, *found) if found is not None else None

    def _install(self, provider_configs: dict) -> None:
        self.providers = build_providers(provider_configs, self.config, self.client)
        self.routes = Routes(self.providers)
        self._models_cache = None

    async def reload(self) -> None:
        """Take providers and governance from the config store (after a change anywhere)."""
        assert self.store is not None and self.governance_repo is not None
        async with self._reload_lock:
            self._version = await config_version(self.store.db)
            self._install(await self.store.providers.all())
            customers, teams, vks = await self.governance_repo.load()
            model_limits = await self.governance_repo.load_model_limits()
            assert self.routing_repo is not None
            state = GovernanceState(customers, teams, vks)
            rules = rules_from_store([s.rule for s in await self.routing_repo.load()], state, self.providers,
                                     self.config.governance.routing_chain_max_depth)
            self.governance.state = state  # (no await between: one consistent snapshot)
            self.governance.model_limits = tuple(model_limits)
            self.rules = rules

    def announce_change(self) -> None:
        """This worker wrote to the config store and reloaded: tell every other member and
        worker to reload now rather than at its next poll (see propagation.py)."""
        if self.propagation is not None:
            self.propagation.announce(self._version)

    async def reload_if_changed(self) -> bool:
        """Reload when the config store changed since this worker last looked."""
        assert self.store is not None
        if await config_version(self.store.db) != self._version:
            await self.reload()
            return True
        return False

    async def _maintain(self) -> None:
        assert self.store is not None
        db = self.store.db
        last_flush = time.monotonic()
        tick = min(POLL_INTERVAL_S, self.poll_interval_s)
        slack = tick / 2  # a tick may wake a little early
        poll_due = time.monotonic() + self.poll_interval_s - slack
        while True:
            await asyncio.sleep(tick)
            try:
                if time.monotonic() >= poll_due:
                    poll_due = time.monotonic() + self.poll_interval_s - slack
                    if await self.reload_if_changed():
                        log.info("configuration changed in the store: reloaded providers and governance")
                if time.monotonic() - last_flush >= FLUSH_INTERVAL_S:
                    await self.counters.maintain(db)  # flush, prune, delete ended windows' rows
                    last_flush = time.monotonic()
            except StoreUnavailable as exc:
                log.warning("config store unreachable (%s): serving from memory, retrying", exc)
            except Exception:  # a bug here must not stop the worker's maintenance for good
                log.exception("maintenance task failed; retrying")

    async def _open_logs(self) -> None:
        db = open_database(self.config.logs_store, self.app_dir, "logs.db")
        if db is None:
            log.warning("client.enable_logging is on but logs_store is disabled: requests are not logged")
            return
        await connect(db, self.store_wait_s)
        if self.run_migrations:
            await migrate(db, "logs")
        else:
            await check(db, "logs")
        self.logs_db = db
        # The writer thread opens a connection of its own (and reopens it after a failure).
        if isinstance(db, PostgresDatabase):
            open_sink = partial(PostgresSink, db.settings, db.location)
        else:
            open_sink = partial(SQLiteSink, db.path)
        self.log_writer = LogWriter(open_sink, self.node_id, log_id_prefix(), interval_s=flush_interval(os.environ),
                                    retention_days=self.config.client.log_retention_days)
        self.log_writer.start()

    def begin_drain(self) -> None:
        """Shutdown was asked for (SIGTERM): in-flight requests and streams still finish, but
        tell the fleet and the load balancer now: the cluster metadata says ``draining``
        (gossiped at once) and ``/health/ready`` answers 503. ``/health`` (liveness) stays
        200, saying ``draining``: a liveness probe failing through a 60 s drain would make the
        kubelet restart the container and cut the very streams being drained.

        The whole order: this (readiness 503) → the server stops accepting connections →
        in-flight requests finish, up to the graceful timeout, then are cancelled → every
        one is settled (``App.settled``: ``finish`` runs in a ``finally``) → ``stop``: final
        flush, allowance release, leave → exit."""
        if self.draining:
            return
        self.draining = True
        log.info("draining: finishing in-flight requests before leaving")
        if self.cluster is not None:
            self.cluster.set_readiness("draining")
        if isinstance(self.counters, FleetCounters):
            self.counters.drain()  # stop owning limits, hand unused allowance back

    async def stop(self) -> None:
        """Called once every request is settled: write the final usage, then leave."""
        if self.pusher is not None:  # the pod is going: its group leaves the push gateway
            await self.pusher.stop()
        if self._fleet_task is not None:
            self._fleet_task.cancel()
        if self.propagation is not None:
            await self.propagation.close()
        if self._maintenance is not None:  # no periodic flush racing the final one
            self._maintenance.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._maintenance
        if self.store is not None:  # 1. final flush: the store has every settled request
            try:
                await self.counters.flush(self.store.db)
            except StoreUnavailable as exc:
                log.error("could not flush usage counters at shutdown: %s", exc)
        # 2. Allowance release (fleet-wide counters): hand the allowances this member holds
        #    unused back to their owners (done at begin_drain already; again here for a stop
        #    without drain), after the final flush, before the leave.
        if isinstance(self.counters, FleetCounters):
            self.counters.drain()
            self.counters.close()
        if self.cluster is not None:  # 3. leave, announced: others see "left", not failed
            await self.cluster.stop()
        if self.log_writer is not None:
            await self.log_writer.stop()
        if self.pod_metrics is not None:
            await self.pod_metrics.stop()
        if self.tracing is not None:  # export buffered spans (bounded by the SDK's timeout)
            await asyncio.get_running_loop().run_in_executor(None, self.tracing.shutdown)
            self.tracing = None
        if self.logs_db is not None:
            await self.logs_db.close()
        await self.client.close()
        if self.store is not None:
            await self.store.close()

    # -- per request ------------------------------------------------------------------------

    def plan(self, vk_value: str | None, req: dict, body_size: int, default: str, record: RequestRecord,
             scope: dict | None = None) -> tuple[list[Target], dict | None]:
        """Governance before routing: who is asking, where may it go, may it pass now.
        Routing rules (``scope``: the ASGI scope, for headers and params) come first.

        Returns the targets and the provider keys the virtual key may use (None: any).
        """
        gov = self.governance
        now_ms = int(time.time() * 1000)
        vk = gov.identify(vk_value, now_ms) if vk_value is not None or gov.mandatory else None
        model, fallbacks, pins = req.get("model"), req.pop("fallbacks", None), None
        if self.rules is not None:
            routed = apply_rules(self.rules, gov, self.routes, vk, req, scope, record.endpoint, default, fallbacks, now_ms)
            if routed is not None:
                model, fallbacks, pins = routed.model, routed.fallbacks, routed.pins or None
        targets = gov.targets(vk, model, fallbacks, default, self.routes, now_ms)
        targets = serving(targets, request_type(record.endpoint, record.stream))
        if vk is None and not gov.model_limits:
            return targets, pin_keys(None, pins, self.routes) if pins else None
        if vk is not None:
            record.virtual_key_id = vk.id
            if self.request_metrics is not None:
                record.vk_labels = self.request_metrics.vk_labels(vk, gov.state)
        max_tokens = req.get("max_tokens") or req.get("max_completion_tokens")
        if type(max_tokens) is not int or max_tokens <= 0:  # no bound given: reserve an estimate
            max_tokens = self.completion_estimate
        allowed = gov.allowed_keys(vk) if vk is not None and vk.provider_configs else None
        if pins:
            allowed = pin_keys(allowed, pins, self.routes)
        # ~4 bytes of JSON per prompt token: a reservation, corrected when the answer comes.
        try:
            return self._admit(vk, body_size // 4, max_tokens, now_ms, record, targets, allowed)
        except AwaitGrant as pending:  # near a fleet limit: the route awaits admit_later
            pending.retry = lambda: self._admit(vk, body_size // 4, max_tokens, int(time.time() * 1000), record,
                                                targets, allowed)
            raise

    def _admit(self, vk, prompt: int, max_tokens: int, now_ms: int, record: RequestRecord,
               targets: list[Target], allowed: dict | None) -> tuple[list[Target], dict | None]:
        """Admission for the first target with room (``Governance.admit_route``); with
        fallbacks left, ``record.fall_back`` moves the charge to the one the router tries."""
        if len(targets) == 1:
            record.admission = self.governance.admit(vk, prompt, max_tokens, now_ms, targets[0])
        else:
            record.admission, targets = self.governance.admit_route(vk, prompt, max_tokens, now_ms, targets)
        if record.admission is not None:  # None: no key, and no model limit matched
            record.head_lines = record.admission[LINES]
        if len(targets) > 1:
            record.fall_back = partial(self.fall_back, record, vk, prompt, max_tokens)
        return targets, allowed

    async def fall_back(self, record: RequestRecord, vk, prompt: int, max_tokens: int, target: Target) -> None:
        """The router falls back to ``target``: the target it leaves is charged nothing, the
        request's charge (and its x-ratelimit lines) move to ``target``'s own limits; raises
        their refusal when one has no room (the router then skips ``target``). Not the hot
        path: near a fleet limit it awaits the owner's grant, as ``admit_later``."""
        gov = self.governance
        if record.admission is not None:
            record.admission = gov.leave(record.admission)

        def enter() -> None:
            record.admission = gov.enter(record.admission, vk, prompt, max_tokens, int(time.time() * 1000), target)
            if record.admission is not None:
                record.head_lines = record.admission[LINES]

        try:
            enter()
        except AwaitGrant as pending:
            pending.retry = enter
            await self.admit_later(pending)

    async def admit_later(self, pending: AwaitGrant) -> tuple[list[Target], dict | None]:
        """An admission short of fleet allowance: wait for the owner's grant (bounded), then
        admit again; a refusal by the fleet raises its 429. Waits at most
        ``MAX_GRANT_WAITS`` times and ``GRANT_WAIT_S`` in all (a grant another request took
        first means waiting again); then 503 ``limit_coordination_timeout``."""
        retry = pending.retry
        deadline = time.monotonic() + GRANT_WAIT_S
        for _ in range(MAX_GRANT_WAITS):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                async with asyncio.timeout(left):
                    await pending.future
            except TimeoutError:
                break
            try:
                return retry()
            except AwaitGrant as again:
                pending = again
        raise Unavailable("the fleet-wide limit's owner did not answer in time; retry shortly",
                          code="limit_coordination_timeout", headers=[(b"retry-after", b"1")])

    def finish(self, record: RequestRecord) -> None:
        """The request is over (answered, refused, failed, cut or cancelled): settle its
        usage and log it, once per record (``App.http`` calls it in a ``finally``; a second
        call does nothing, so a cancellation racing the normal end never charges twice).

        An answered request is charged its usage; one cut before its usage arrived (client
        gone, upstream cut, shutdown cap) is charged an estimate, never nothing: see
        ``RequestRecord.charged_tokens``. The log keeps the tokens the provider reported."""
        if record.finished:
            return
        record.finished = True
        self.traffic.note(record.status, record.started)
        span = record.span
        admission = record.admission
        writer = self.log_writer
        metrics = self.request_metrics
        if admission is None and writer is None and span is None:
            if metrics is not None:  # tokens read from the answer in bulk, later (telemetry/requests.py)
                metrics.observe(record, time.perf_counter(), None)
            return
        if record.prompt_tokens is None and record.completion_tokens is None and record.response_body is not None:
            found = extract_usage(record.response_body)  # (streams saw theirs on the way)
            if found is not None:
                record.prompt_tokens, record.completion_tokens = found
        cost = None
        if admission is not None:
            record.admission = None  # settled once
            prompt, completion = record.charged_tokens()
            answered = record.status == 200 or record.error_type == CANCELLED  # (as charged_tokens)
            cost = self.governance.settle(admission, record.provider, record.model, prompt, completion, answered)
        if metrics is not None:
            metrics.observe(record, time.perf_counter(), cost)
        if writer is not None:
            writer.record(log_entry(record, time.perf_counter(), cost))
        if span is not None:
            record.span = None
            self.tracing.end_request(span, record, cost)  # type: ignore[union-attr]

    async def scrape_registry(self):
        """What ``GET /metrics`` renders: this worker's registry, or the whole pod's with
        ``--workers N`` (telemetry/pod.py)."""
        if self.pod_metrics is not None:
            return await self.pod_metrics.merged()
        return self.metrics

    # -- health and models ------------------------------------------------------------------

    async def health(self) -> tuple[bool, dict]:
        """``GET /health``, liveness: 503 only when this process cannot serve (its store ping
        fails, as Bifrost's does, unless ``disable_db_pings_in_health``; its gossip stopped).
        Draining is not a failure: 200 ``draining``; readiness is what turns 503."""
        components: dict[str, dict] = {}
        ok = True
        if self.store is None:
            components["store"] = {"status": "disabled"}
        elif self.config.client.disable_db_pings_in_health:
            components["store"] = {"status": "ok", "type": self.store.kind, "checked": False}
        else:
            try:
                await self.store.ping()
                components["store"] = {"status": "ok", "type": self.store.kind}
            except StoreUnavailable as exc:
                ok = False
                components["store"] = {"status": "failing", "type": self.store.kind, "error": str(exc)}
        components["providers"] = {"status": "ok", "configured": sorted(self.providers)}
        if self.cluster is not None:
            cluster = self.cluster.health()
            components["cluster"] = cluster
            ok = ok and cluster["status"] != "failing"
        status = ("draining" if self.draining else "ok") if ok else "failing"  # draining: still alive
        return ok, {"status": status, "components": components}

    async def readiness(self) -> tuple[bool, dict]:
        """``GET /health/ready``: ready (200) once the counters' open windows are loaded
        from the store, the store answers (a ping at most every ``STORE_CHECK_TTL_S``, not
        with ``disable_db_pings_in_health``) and, in cluster mode, the member has completed
        its first push-pull (or found no other member to sync with:
        ``ClusterService.synced``); 503 before, and 503 ``draining`` (check ``drain``) from
        SIGTERM on."""
        checks = {"counters": "loaded" if self.counters_loaded else "loading"}
        store_ok = True
        if self.store is not None and not self.config.client.disable_db_pings_in_health:
            store_ok = await self._store_reachable()
            checks["store"] = "reachable" if store_ok else "unreachable"
        synced = True
        if self.cluster is not None:
            synced = self.cluster.synced
            checks["cluster"] = "synced" if synced else "syncing"
        if isinstance(self.counters, FleetCounters):
            synced = synced and self.counters.ready
            checks["fleet_counters"] = "synced" if self.counters.ready else "syncing"
        if self.draining:
            checks["drain"] = "draining"
            return False, {"status": "draining", "checks": checks}
        ready = self.counters_loaded and synced and store_ok
        return ready, {"status": "ready" if ready else "not_ready", "checks": checks}

    async def _store_reachable(self) -> bool:
        """The store's last ping result, pinged again (once for all concurrent probes,
        bounded by ``STORE_PING_TIMEOUT_S``) when older than ``STORE_CHECK_TTL_S``."""
        now = time.monotonic()
        checked_at, ok = self._store_check
        if now - checked_at < STORE_CHECK_TTL_S:
            return ok
        if self._store_ping is None:
            self._store_ping = asyncio.ensure_future(self._ping_store())
        try:
            return await asyncio.shield(self._store_ping)
        finally:
            if self._store_ping is not None and self._store_ping.done():
                self._store_ping = None

    async def _ping_store(self) -> bool:
        assert self.store is not None
        try:
            await asyncio.wait_for(self.store.ping(), STORE_PING_TIMEOUT_S)
            ok = True
        except (StoreUnavailable, TimeoutError, OSError):
            ok = False
        self._store_check = (time.monotonic(), ok)
        return ok

    async def list_models(self) -> list[dict]:
        """Every configured provider's models as ``provider/model`` ids (cached for a minute)."""
        now = time.monotonic()
        if self._models_cache and now - self._models_cache[0] < MODELS_TTL_S:
            return self._models_cache[1]
        results = await asyncio.gather(*(self._provider_models(p) for p in self.providers.values()))
        models = [m for group in results for m in group]
        self._models_cache = (now, models)
        return models

    async def _provider_models(self, provider: Provider) -> list[dict]:
        if not provider.allows("list_models"):
            return []  # allowed_requests.list_models is not true: its models are not listed
        names: set[str] = set()
        wildcard_key = None
        for key in provider.keys.keys:
            if key.models is None:
                wildcard_key = wildcard_key or key
            else:
                names.update(key.models)
        if wildcard_key is not None:
            try:
                names.update(await provider.adapter.list_models(wildcard_key))  # type: ignore[attr-defined]
            except GatewayError as exc:
                log.warning("listing models of provider %s failed: %s", provider.name, exc.message)
        return [
            {"id": f"{provider.name}/{name}", "object": "model", "created": 0, "owned_by": provider.name}
            for name in sorted(names)
        ]


def completion_estimate(environ: Mapping[str, str]) -> int:
    """Completion tokens a governed request without ``max_tokens`` reserves against token
    limits and budgets until its real usage is known (``COMPLETION_ESTIMATE_ENV``, ≥ 0;
    default 256: about a typical chat answer). Too low lets requests in flight overshoot a
    limit by what they use beyond it; too high holds back room near a limit."""
    raw = environ.get(COMPLETION_ESTIMATE_ENV, "").strip()
    if not raw:
        return COMPLETION_ESTIMATE_DEFAULT
    if not raw.isdigit() or len(raw) > 9:
        log.warning("%s=%r is not a whole number of tokens; using %d", COMPLETION_ESTIMATE_ENV, raw,
                    COMPLETION_ESTIMATE_DEFAULT)
        return COMPLETION_ESTIMATE_DEFAULT
    return int(raw)


class _MembershipBridge(ClusterHandler):
    """Membership changes (joins, failures, leaves, draining) to the fleet counters."""

    def __init__(self, counters: FleetCounters) -> None:
        self.counters = counters

    def notify_event(self, event: MemberEvent) -> None:
        self.counters.on_membership()
