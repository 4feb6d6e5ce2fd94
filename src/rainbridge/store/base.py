"""What every store implementation offers."""

from __future__ import annotations

from typing import Protocol


class StoreUnavailable(Exception):
    """The store cannot be reached; the message names where (never a password)."""


class Store(Protocol):
    kind: str

    @property
    def location(self) -> str:
        """Where the store lives, safe to log."""

    async def open(self) -> None: ...

    async def ping(self) -> None:
        """Raise ``StoreUnavailable`` if the store does not answer."""

    async def close(self) -> None: ...
