"""The config store: SQLite (single node, default) or PostgreSQL (cluster mode).

This slice opens the store and answers health pings; governance, providers and counters
build their repositories on it.
"""

from __future__ import annotations

from pathlib import Path

from ..config.schema import StoreConfig
from .base import Store, StoreUnavailable
from .postgres import PostgresStore
from .sqlite import SQLiteStore

__all__ = ["PostgresStore", "SQLiteStore", "Store", "StoreUnavailable", "open_store"]


def open_store(config: StoreConfig | None, app_dir: Path, default_file: str = "config.db") -> Store | None:
    """The store described by ``config`` (None: SQLite in the app dir); None when disabled."""
    if config is None:
        return SQLiteStore(app_dir / default_file)
    if not config.enabled:
        return None
    if config.type == "postgres":
        return PostgresStore(config.config)
    path = Path(config.config.path) if config.config.path else app_dir / default_file
    return SQLiteStore(path)
