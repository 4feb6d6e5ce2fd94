"""Open N chat streams at once, read every SSE event to ``data: [DONE]``, report timings.

    python bench/streams.py URL --streams 1000 [--chunks 20] [--delay-ms 5] [--prefix x-bf-eh-]

Prints one JSON object. ``--prefix x-bf-eh-`` sends the mock's controls through the gateway
(which forwards ``x-bf-eh-<name>`` as ``<name>``); use ``--prefix ''`` against the mock itself.
A stream counts as ok only if it ends with ``[DONE]``, carried no error event and finished
within ``--timeout`` seconds (the whole round is bounded by it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import time
from collections import Counter

import aiohttp

BODY = json.dumps(
    {
        "model": "openai/gpt-4o-mini",
        "messages": [{"role": "user", "content": "Hello, how are you today?"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
).encode()


class StreamFailed(Exception):
    pass


async def one_stream(
    session: aiohttp.ClientSession, url: str, headers: dict, gaps: list[float]
) -> tuple[float, float]:
    """(time to first event, total time) in seconds; inter-event gaps go to ``gaps``."""
    start = time.perf_counter()
    first = last = 0.0
    async with session.post(url, data=BODY, headers=headers) as resp:
        if resp.status != 200:
            raise StreamFailed(f"status {resp.status}")
        async for line in resp.content:
            if not line.startswith(b"data: "):
                continue
            now = time.perf_counter()
            if first:
                gaps.append(now - last)
            else:
                first = now
            last = now
            if line.startswith(b"data: [DONE]"):
                return first - start, now - start
            if line.startswith(b'data: {"error"'):
                raise StreamFailed("error event")
    raise StreamFailed("ended without [DONE]")


async def run_streams(
    url: str, streams: int, chunks: int, delay_ms: int, prefix: str, timeout_s: float
) -> dict:
    headers = {
        "content-type": "application/json",
        "authorization": "Bearer sk-bench",
        f"{prefix}x-mock-stream-chunks": str(chunks),
        f"{prefix}x-mock-chunk-delay-ms": str(delay_ms),
    }
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=timeout_s)
    gaps: list[float] = []
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        started = time.perf_counter()
        tasks = [
            asyncio.ensure_future(one_stream(session, url, headers, gaps)) for _ in range(streams)
        ]
        _, pending = await asyncio.wait(tasks, timeout=timeout_s)
        wall = time.perf_counter() - started
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    ttfb, total, errors = [], [], Counter()
    for task in tasks:
        if task in pending:
            errors["timeout"] += 1
        elif task.exception() is not None:
            exc = task.exception()
            errors[str(exc) if isinstance(exc, StreamFailed) else type(exc).__name__] += 1
        else:
            first, whole = task.result()
            ttfb.append(first)
            total.append(whole)
    ms = 1000.0
    return {
        "streams": streams,
        "ok": len(total),
        "errors": sum(errors.values()),
        "error_kinds": dict(errors),
        "wall_s": round(wall, 3),
        "ttfb_p50_ms": percentile(ttfb, 50) * ms,
        "ttfb_p99_ms": percentile(ttfb, 99) * ms,
        "total_p50_ms": percentile(total, 50) * ms,
        "total_p99_ms": percentile(total, 99) * ms,
        "gap_p50_ms": percentile(gaps, 50) * ms,
        "gap_p99_ms": percentile(gaps, 99) * ms,
        "gap_max_ms": max(gaps, default=0.0) * ms,
    }


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("url", help="chat completions URL")
    parser.add_argument("--streams", type=int, default=256)
    parser.add_argument("--chunks", type=int, default=20, help="content tokens per stream")
    parser.add_argument("--delay-ms", type=int, default=5, help="delay between tokens")
    parser.add_argument(
        "--prefix", default="x-bf-eh-", help="header prefix for the mock's controls"
    )
    parser.add_argument("--timeout", type=float, default=60.0, help="bound of the whole round, s")
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:
        runner = asyncio.run
    else:
        runner = uvloop.run
    result = runner(
        run_streams(args.url, args.streams, args.chunks, args.delay_ms, args.prefix, args.timeout)
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
