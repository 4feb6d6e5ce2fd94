"""A small HTTP/1.1 load generator for machines without ``wrk``: keep-alive connections on
asyncio streams, one prepared chat POST, latencies per request.

    python bench/httpload.py URL --key VK [--connections 32] [--duration 5]

Closed loop: each connection sends its next request when the previous answer has been
read. Prints one JSON line shaped like ``wrkload.run_wrk``'s result. ``Client`` is also
used by ``cluster_limits.py`` for paced (open-loop) requests.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from urllib.parse import urlsplit

CHAT_PATH = "/v1/chat/completions"
BODY = json.dumps({
    "model": "openai/gpt-4o-mini",
    "messages": [{"role": "user", "content": "Hello, how are you today?"}],
}).encode()


def request_bytes(host: str, key: str) -> bytes:
    head = (
        f"POST {CHAT_PATH} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {key}\r\nContent-Length: {len(BODY)}\r\n\r\n"
    )
    return head.encode() + BODY


class Client:
    """Keep-alive connections to one gateway; ``chat()`` → (status, latency s, body)."""

    def __init__(self, url: str, key: str, timeout_s: float = 30.0) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.request = request_bytes(f"{self.host}:{self.port}", key)
        self.timeout_s = timeout_s
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def chat(self) -> tuple[int, float, bytes]:
        conn = self._idle.pop() if self._idle else None
        t0 = time.perf_counter()
        try:
            if conn is None:
                conn = await asyncio.open_connection(self.host, self.port)
            reader, writer = conn
            writer.write(self.request)
            status, body, keep = await asyncio.wait_for(_read_response(reader), self.timeout_s)
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError):
            if conn is not None:
                conn[1].close()
            return 0, time.perf_counter() - t0, b""
        if keep:
            self._idle.append(conn)
        else:
            writer.close()
        return status, time.perf_counter() - t0, body

    def close(self) -> None:
        for _, writer in self._idle:
            writer.close()
        self._idle.clear()


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length, keep = 0, True
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value)
        elif name == "connection" and value.strip().lower() == "close":
            keep = False
        elif name == "transfer-encoding":
            raise ValueError("chunked answers are not expected here")
    body = await reader.readexactly(length) if length else b""
    return status, body, keep


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


async def closed_loop(url: str, key: str, connections: int, duration_s: float) -> dict:
    client = Client(url, key)
    latencies: list[float] = []
    statuses = {"ok": 0, "non_2xx": 0, "errors": 0}
    end = time.perf_counter() + duration_s

    async def worker() -> None:
        while time.perf_counter() < end:
            status, latency, _ = await client.chat()
            if status == 0:
                statuses["errors"] += 1
                await asyncio.sleep(0.01)  # a refused connection must not spin
                continue
            latencies.append(latency)
            statuses["ok" if status < 400 else "non_2xx"] += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    seconds = time.perf_counter() - t0
    client.close()
    return {
        "requests": len(latencies), "rps": len(latencies) / seconds,
        "p50_ms": 1000 * percentile(latencies, 0.5), "p99_ms": 1000 * percentile(latencies, 0.99),
        "non_2xx": statuses["non_2xx"], "socket_errors": statuses["errors"],
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("url")
    p.add_argument("--key", required=True)
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--duration", type=float, default=5.0)
    args = p.parse_args()
    result = asyncio.run(closed_loop(args.url, args.key, args.connections, args.duration))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
