"""Running the fake provider: in-process (`MockProvider`), as a task (`serve`), or as a process (`run`)."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from typing import Any

from .app import MockApp
from .http import HttpConnection
from .stats import MockStats


class MockProvider:
    """The fake upstream on a real socket. `port=0` picks a free port at `start()`."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self._port = port
        self.stats = MockStats()
        self._app = MockApp(self.stats)
        self._server: asyncio.base_events.Server | None = None
        self._connections: set[HttpConnection] = set()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._app.stopping = False
        self._server = await loop.create_server(
            lambda: HttpConnection(self._app, self._connections),
            self.host,
            self._port,
            reuse_address=True,
            backlog=4096,
        )
        self._port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is None:
            return
        self._app.stopping = True
        self._server.close()
        # Hanging and streaming responses would otherwise keep their connections open.
        for conn in list(self._connections):
            conn.abort()
        await self._server.wait_closed()
        self._server = None
        await asyncio.sleep(0)  # let connection_lost run and the cancelled tasks finish

    async def __aenter__(self) -> MockProvider:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self._port}"

    def reset(self) -> None:
        """Clear counters, recent requests, fail-first counts and the id sequence."""
        self._app.reset()


async def serve(
    host: str, port: int, ready: Callable[[str], Any] | asyncio.Future | None = None
) -> None:
    """Serve until cancelled. `ready` gets the URL once bound (a callable, or a Future's result)."""
    provider = MockProvider(host, port)
    await provider.start()
    try:
        if isinstance(ready, asyncio.Future):
            ready.set_result(provider.url)
        elif ready is not None:
            ready(provider.url)
        await asyncio.get_running_loop().create_future()
    finally:
        await provider.stop()


def run(host: str, port: int) -> None:
    """Blocking entry point for the CLI: serve until SIGINT/SIGTERM."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        provider = MockProvider(host, port)
        await provider.start()
        print(f"rainbridge mock-provider listening on {provider.url}", flush=True)
        try:
            await stop.wait()
        finally:
            await provider.stop()

    try:
        import uvloop
    except ImportError:
        asyncio.run(main())
    else:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(main())
