"""How late does the event loop wake while the request log writer works? (issue 17, c=1 tail)

    PYTHONPATH=src .venv/bin/python bench/log_gil_wait.py [--rate 10000] [--seconds 3]

In one process, as in the gateway: an asyncio loop queues ``--rate`` log entries a second
(one request's entry, content included) to a ``LogWriter`` writing to a SQLite file, and
sleeps 1 ms at a time; how late each wake-up comes is the time the loop waited, mostly for
the GIL held by the writer thread. Prints p50/p99/max lateness in ms; no network, no wrk:
only the writer beside the loop. (Until schema version 3 the writer paused every 32 rows
for the loop, ``--pauses``; a page is one orjson call now, with nothing to pause in.)
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from log_pages_writer import REQUEST, RESPONSE, migrated
from rainbridge.store import log_sinks, log_writer


async def run(path: Path, rate: int, seconds: float) -> list[float]:
    await migrated(path)
    writer = log_writer.LogWriter(lambda: log_sinks.SQLiteSink(path), "node", "p-", queue_size=10**6)
    entry = ((time.time(), 0.0003, None, "openai", "gpt-4o-mini", "/v1/chat/completions", False, 200, 12, 14,
              None, None, len(REQUEST), len(RESPONSE)), REQUEST + RESPONSE)
    per_ms = max(1, rate // 1000)
    late = []
    writer.start()
    for _ in range(int(seconds * 1000)):
        for _ in range(per_ms):
            writer.record(entry)
        started = time.perf_counter()
        await asyncio.sleep(0.001)
        late.append((time.perf_counter() - started - 0.001) * 1000)
    await writer.stop()
    return sorted(late)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=int, default=10_000, help="entries a second")
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rainbridge-gil-wait-") as tmp:
        late = asyncio.run(run(Path(tmp) / "logs.db", args.rate, args.seconds))
    print(f"loop wake-up late: p50 {late[len(late) // 2]:.3f} ms  "
          f"p99 {late[int(len(late) * 0.99)]:.3f} ms  max {late[-1]:.3f} ms")


if __name__ == "__main__":
    main()
