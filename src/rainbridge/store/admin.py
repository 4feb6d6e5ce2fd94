"""``rainbridge migrate`` and ``rainbridge store rotate-key``: run against the stores, then exit."""

from __future__ import annotations

import asyncio
import logging
import sys

from ..config.load import ConfigError
from ..server.run import ServeOptions, load_config
from . import StoreUnavailable, connect, open_database
from .migrate import SchemaError, migrate
from .secrets import EncryptionKeyError, rotate_key

log = logging.getLogger("rainbridge.store")


def _loaded(opts: ServeOptions):
    try:
        return load_config(opts, announce=False)
    except ConfigError as exc:
        print(f"rainbridge: {exc}:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem.severity}: {problem}", file=sys.stderr)
        return None


def run_migrate(opts: ServeOptions) -> int:
    loaded = _loaded(opts)
    if loaded is None:
        return 2

    async def go() -> int:
        config = loaded.config
        targets = [("config", open_database(config.config_store, opts.app_dir, "config.db"))]
        if config.client.enable_logging:
            targets.append(("logs", open_database(config.logs_store, opts.app_dir, "logs.db")))
        for component, db in targets:
            if db is None:
                log.info("%s store disabled; nothing to migrate", component)
                continue
            await connect(db, opts.store_wait_s)
            try:
                applied = await migrate(db, component)
            finally:
                await db.close()
            if applied:
                log.info("%s store %s: applied version(s) %s", component, db.location, ", ".join(map(str, applied)))
            else:
                log.info("%s store %s: up to date", component, db.location)
        return 0

    try:
        return asyncio.run(go())
    except (StoreUnavailable, SchemaError) as exc:
        log.error("%s", exc)
        return 1


def run_rotate_key(opts: ServeOptions, old: str | None, new: str) -> int:
    loaded = _loaded(opts)
    if loaded is None:
        return 2

    async def go() -> int:
        db = open_database(loaded.config.config_store, opts.app_dir, "config.db")
        if db is None:
            log.error("the config store is disabled; there is nothing to re-encrypt")
            return 1
        await connect(db, opts.store_wait_s)
        try:
            await migrate(db, "config")
            count = await rotate_key(db, old, new)
        finally:
            await db.close()
        log.info("re-encrypted %d secret(s) in %s; start the gateway with the new key", count, db.location)
        return 0

    try:
        return asyncio.run(go())
    except (StoreUnavailable, SchemaError, EncryptionKeyError) as exc:
        log.error("%s", exc)
        return 1
