"""Everything one worker owns: config, the pooled upstream session, providers, router, store.

There is no module-level state: each worker process builds one ``Gateway``; tests build
their own.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from pathlib import Path

import orjson

from ..config.load import LoadedConfig
from ..errors import GatewayError
from ..store import ConfigStore, StoreUnavailable, connect, encryption_passphrase, open_database
from ..store.db import Database
from ..store.migrate import check, migrate
from ..store.request_log import LogWriter
from ..upstream import UpstreamClient
from .provider import Provider, build_providers
from .record import LogIds, RequestRecord, log_row
from .router import Router
from .routing import Routes

log = logging.getLogger("rainbridge.gateway")

MODELS_TTL_S = 60.0


class Gateway:
    def __init__(self, loaded: LoadedConfig, app_dir: Path | str, run_migrations: bool = True, store_wait_s: float = 60.0):
        self.loaded = loaded
        self.config = loaded.config
        self.app_dir = Path(app_dir)
        client = self.config.client
        self.max_body_bytes = client.max_request_body_size_mb * 1024 * 1024
        self.client = UpstreamClient()
        self.providers: dict[str, Provider] = {}
        self.routes = Routes({})
        self.router = Router()
        self.store: ConfigStore | None = None
        self.run_migrations = run_migrations
        self.store_wait_s = store_wait_s
        self.node_id = f"{socket.gethostname()}-{os.getpid()}"
        self.logs_db: Database | None = None
        self.log_writer: LogWriter | None = None
        self.log_ids = LogIds()
        self._models_cache: tuple[float, list[dict]] | None = None

    async def start(self) -> None:
        db = open_database(self.config.config_store, self.app_dir, "config.db")
        provider_configs = self.config.providers
        if db is not None:
            self.store = await ConfigStore.open(
                db, encryption_passphrase(self.config), self.run_migrations, self.store_wait_s
            )
            await self.store.providers.sync_from_file(self.config.providers)
            provider_configs = await self.store.providers.all()
        self.providers = build_providers(provider_configs, self.config, self.client)
        self.routes = Routes(self.providers)
        if self.config.client.enable_logging:
            await self._open_logs()

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
        self.log_writer = LogWriter(db, retention_days=self.config.client.log_retention_days)
        self.log_writer.start()

    def finish(self, record: RequestRecord) -> None:
        """The request is over (response sent): log it."""
        writer = self.log_writer
        if writer is None:
            return
        if record.usage is None and record.response_body is not None and record.status == 200:
            try:
                usage = orjson.loads(record.response_body).get("usage")
            except (orjson.JSONDecodeError, AttributeError):
                usage = None
            record.usage = usage if isinstance(usage, dict) else None
        writer.record(log_row(record, self.log_ids.next(), self.node_id, None))

    async def stop(self) -> None:
        if self.log_writer is not None:
            await self.log_writer.stop()
        if self.logs_db is not None:
            await self.logs_db.close()
        await self.client.close()
        if self.store is not None:
            await self.store.close()

    async def health(self) -> tuple[bool, dict]:
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
        components["providers"] = {
            "status": "ok",
            "configured": sorted(self.providers),
        }
        return ok, {"status": "ok" if ok else "failing", "components": components}

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
