"""A request log writer without a gateway: pages written to SQLite at a request rate, in a
process of its own (``log_c1.py --beside``: what the write itself does to a request's
latency on this machine, wherever it runs).

    PYTHONPATH=src .venv/bin/python bench/log_pages_writer.py --rate 5000 --seconds 30 [--dir /dev/shm]

Every 0.25 s it builds and writes the pages of ``rate / 4`` entries like one request's
(content included), ``LogWriter.batch_rows`` (128) a transaction back to back — the
gateway's writer pauses 2 ms between transactions and makes at most 8 a gathering, so at
high rates this one commits more often — and exits after ``--seconds``.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from rainbridge.store.db import Database, SQLiteDatabase
from rainbridge.store.log_sinks import SQLiteSink
from rainbridge.store.log_writer import LogWriter
from rainbridge.store.migrate import migrate

REQUEST = b'{"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": "Hello, how are you today?"}]}'
RESPONSE = (b'{"id":"chatcmpl-1","object":"chat.completion","created":1700000000,"model":"gpt-4o-mini","choices":'
            b'[{"index":0,"message":{"role":"assistant","content":"Hello! I am fine."},"finish_reason":"stop"}],'
            b'"usage":{"prompt_tokens":12,"completion_tokens":14,"total_tokens":26}}')


async def migrated(path: Path | Database) -> None:
    """Migrate the logs schema into ``path`` (a SQLite file) or a ``Database``."""
    db = SQLiteDatabase(path) if isinstance(path, Path) else path
    await db.open()
    try:
        await migrate(db, "logs")
    finally:
        await db.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=int, default=5000, help="entries a second")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--dir", type=Path, help="where the file goes (default: a temporary directory)")
    parser.add_argument("--wal-autocheckpoint", type=int, help="SQLite's WAL checkpoint interval in pages (default 1,000)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rainbridge-pages-", dir=args.dir) as tmp:
        path = Path(tmp) / "logs.db"
        asyncio.run(migrated(path))
        sink = SQLiteSink(path)
        if args.wal_autocheckpoint is not None:
            sink.conn.execute(f"PRAGMA wal_autocheckpoint={args.wal_autocheckpoint}")
        writer = LogWriter(lambda: sink, "node", "p-")
        per_tick = max(1, args.rate // 4)
        deadline = time.monotonic() + args.seconds
        while time.monotonic() < deadline:
            now = time.time()
            entries = [((now + i / args.rate, 0.0003, None, "openai", "gpt-4o-mini", "chat", False, 200, 12, 14, None, None,
                         len(REQUEST), len(RESPONSE)), REQUEST + RESPONSE) for i in range(per_tick)]
            for start in range(0, per_tick, writer.batch_rows):
                sink.write(writer._pages(entries[start:start + writer.batch_rows]))
            time.sleep(0.25)
        sink.close()


if __name__ == "__main__":
    main()
