"""Server-sent events out to the client: one ``send`` per event, nothing buffered.

While the stream runs a small task waits on ``receive()``; when the client disconnects it
cancels the handler at once, so the upstream request is closed (and its queue slot
released) immediately instead of at the next chunk.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from time import perf_counter
from typing import Any

from ..gateway.record import RequestRecord
from ..governance.engine import needs_usage
from ..providers.base import StreamError, UpstreamStream
from .drain import SHUTTING_DOWN_MESSAGE, SHUTTING_DOWN_TYPE, cutting
from .http import HEAD_LINES

log = logging.getLogger("rainbridge.sse")

SSE_HEADERS = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),  # nginx: do not buffer
]


async def _watch_disconnect(receive: Any, handler: asyncio.Task, state: dict) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            state["disconnected"] = True
            handler.cancel()
            return


async def stream_events(
    receive: Any,
    send: Any,
    upstream: UpstreamStream,
    frames: AsyncIterator[bytes],
    error_frame: Callable[[StreamError], bytes],
    record: RequestRecord,
    head_lines: bytes = b"",
    final_frame: bytes = b"",
) -> bool:
    """Send ``frames`` as an SSE response. Returns False when the client went away.

    A governed stream that needs usage counts the text it relays: if the stream is cut
    before the provider's usage arrives, that text is what it is charged for. A stream the
    server cuts at the end of its drain (server/drain.py) ends with a ``server_shutting_down``
    error event and then ``final_frame`` (``[DONE]`` on OpenAI routes)."""
    admission = record.admission
    count_text = admission is not None and needs_usage(admission)
    timed = record.job is not None  # frame latencies for the metrics (routes set job)
    state = {"disconnected": False}
    handler = asyncio.current_task()
    assert handler is not None
    watcher = asyncio.get_running_loop().create_task(_watch_disconnect(receive, handler, state))
    try:
        start = {"type": "http.response.start", "status": 200, "headers": [*SSE_HEADERS]}
        if head_lines:
            start[HEAD_LINES] = head_lines
        await send(start)
        try:
            async for frame in frames:
                if count_text:
                    record.count_text(frame)
                if timed:
                    record.see_frame(perf_counter())
                await send({"type": "http.response.body", "body": frame, "more_body": True})
            record.stream_done = True
        except StreamError as exc:
            log.warning("upstream stream failed: %s", exc.message)
            record.error_type = exc.type
            await send({"type": "http.response.body", "body": error_frame(exc), "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return True
    except asyncio.CancelledError:
        if state["disconnected"]:
            handler.uncancel()
            record.error_type = "client_disconnected"
            return False
        if cutting() and handler.uncancel() == 0:
            record.error_type = SHUTTING_DOWN_TYPE
            try:
                cut = error_frame(StreamError(SHUTTING_DOWN_MESSAGE, SHUTTING_DOWN_TYPE)) + final_frame
                await send({"type": "http.response.body", "body": cut, "more_body": False})
            except OSError:
                return False
            return True
        raise
    except OSError:  # the server reports a closed client socket this way
        record.error_type = "client_disconnected"
        return False
    finally:
        watcher.cancel()
        await upstream.close()
