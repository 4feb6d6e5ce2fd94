"""How long the request log writer works at a stretch: the bursts of CPU beside the requests.

    PYTHONPATH=src .venv/bin/python bench/log_bursts.py [--rate 3600] [--seconds 8] [--store sqlite|postgres]

On a machine with few cores a burst of CPU on the other core delays the requests it overlaps
in proportion to its length (``cpu_burst.py``, ``log_c1.py``: bench/README "Fourth look"),
and c=1 p99 on this shared VM drifts by 2-4x within an hour, so a before/after of the
writer's pacing is read better here than from latency: the real ``LogWriter`` thread, fed at
``--rate`` entries a second like the gateway's (content included), writing to a real
SQLite file or PostgreSQL database; every batch (page building + the transaction) timed in
the writer thread, with ``time.thread_time`` (CPU) and ``time.perf_counter`` (wall).
Batches less than ``MERGE_GAP_S`` apart are one stretch of work for the other core.

Configurations (each a fresh store): ``512`` — 512 entries a transaction, no pause (the
writer before 2026-12-06's change, as far as a rate this low goes); ``128-nopause``;
``128`` — the default now, 128 a transaction and ``BATCH_PAUSE_S`` between them;
``128+ckpt`` — also SQLite's WAL checkpointed every 128 pages instead of 1,000 (SQLite only). Prints and saves, per configuration: the
writer's CPU per entry (what the pacing costs in throughput) and the stretches' CPU p50/p99/max.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import statistics
import tempfile
import time
from pathlib import Path

import features
import pgdb
from log_pages_writer import REQUEST, RESPONSE, migrated
from rainbridge.config.schema import StoreSettings
from rainbridge.gateway.record import RequestRecord, log_entry
from rainbridge.store import log_writer
from rainbridge.store.db import PostgresDatabase
from rainbridge.store.log_sinks import PostgresSink, SQLiteSink

BENCH = Path(__file__).resolve().parent
MERGE_GAP_S = 0.0002
CONFIGS = {"512": (512, 0.0, None), "128-nopause": (128, 0.0, None), "128": (128, log_writer.BATCH_PAUSE_S, None),
           "128+ckpt": (128, log_writer.BATCH_PAUSE_S, 128)}


class TimedWriter(log_writer.LogWriter):
    """The writer, its batches timed: ``_pages`` starts one, the sink's ``write`` ends it."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.batches: list[tuple[float, float, float, float]] = []  # wall start, wall end, cpu start, cpu end
        self._began = (0.0, 0.0)

    def _pages(self, entries):
        self._began = (time.perf_counter(), time.thread_time())
        return super()._pages(entries)

    def batch_written(self) -> None:
        self.batches.append((self._began[0], time.perf_counter(), self._began[1], time.thread_time()))


def timed_sink(base: type, writer_ref: list, checkpoint_pages: int | None):
    class Timed(base):
        def __init__(self, *args):
            super().__init__(*args)
            if checkpoint_pages is not None:
                self.conn.execute(f"PRAGMA wal_autocheckpoint={checkpoint_pages}")

        def write(self, pages):
            try:
                return super().write(pages)
            finally:
                writer_ref[0].batch_written()
    return Timed


def an_entry() -> tuple:
    record = RequestRecord("chat", content=True)
    record.provider, record.model, record.status = "openai", "gpt-4o-mini", 200
    record.prompt_tokens, record.completion_tokens = 12, 14
    record.request_body, record.response_body = REQUEST, RESPONSE
    return log_entry(record, record.started + 0.0003, None)


def stretches(batches: list[tuple[float, float, float, float]]) -> list[float]:
    """CPU seconds of each run of batches closer than ``MERGE_GAP_S`` to the one before."""
    out: list[float] = []
    last_end = None
    for wall0, wall1, cpu0, cpu1 in batches:
        if last_end is not None and wall0 - last_end < MERGE_GAP_S:
            out[-1] += cpu1 - cpu0
        else:
            out.append(cpu1 - cpu0)
        last_end = wall1
    return out


def run(config: str, store: str, rate: int, seconds: float, work: Path, pg_dsn: str) -> dict:
    batch_rows, pause, checkpoint = CONFIGS[config]
    ref: list = []
    if store == "sqlite":
        path = work / f"logs-{config}.db"
        asyncio.run(migrated(path))
        sink_class = timed_sink(SQLiteSink, ref, checkpoint)
        open_sink = lambda: sink_class(path)  # noqa: E731
        dsn = None
    else:
        dsn = pgdb.create(pg_dsn, f"rainbridge_bench_bursts_{config.replace('+', '_')}")
        settings = StoreSettings(dsn=dsn)
        asyncio.run(migrated(PostgresDatabase(settings)))
        sink_class = timed_sink(PostgresSink, ref, None)
        open_sink = lambda: sink_class(settings, "bench")  # noqa: E731
    saved = log_writer.BATCH_PAUSE_S
    log_writer.BATCH_PAUSE_S = pause
    writer = TimedWriter(open_sink, "bench", "b-", batch_rows=batch_rows)
    ref.append(writer)
    try:
        writer.start()
        entry = an_entry()
        started = time.perf_counter()
        sent = 0
        while (now := time.perf_counter()) - started < seconds:  # bounded in time
            due = int((now - started) * rate)
            for _ in range(due - sent):
                writer.record(entry)
            sent = due
            time.sleep(0.001)
        asyncio.run(writer.stop(30))
    finally:
        log_writer.BATCH_PAUSE_S = saved
        if dsn is not None:
            pgdb.drop(dsn)
    spans = sorted(stretches(writer.batches))
    cpu = sum(b[3] - b[2] for b in writer.batches)

    def q(p: float) -> float:
        return spans[min(len(spans) - 1, int(p * len(spans)))] * 1000

    return {"entries": sent, "written": writer.written, "batches": len(writer.batches), "stretches": len(spans),
            "writer_cpu_us_per_entry": cpu / max(writer.written, 1) * 1e6,
            "stretch_cpu_ms": {"p50": q(0.5), "p99": q(0.99), "max": spans[-1] * 1000 if spans else 0.0,
                               "mean": statistics.fmean(spans) * 1000 if spans else 0.0}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=int, default=3600, help="entries a second (c=1 on this VM: ~3,000-3,600)")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--store", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--configs", default="512,128-nopause,128,128+ckpt")
    parser.add_argument("--pg-dsn", default=features.PG_DSN)
    parser.add_argument("--out", type=Path, default=BENCH / "results" / "log_bursts.json")
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory(prefix="rainbridge-log-bursts-") as tmp:
        for config in args.configs.split(","):
            if args.store == "postgres" and CONFIGS[config][2] is not None:
                continue
            r = results[config] = run(config, args.store, args.rate, args.seconds, Path(tmp), args.pg_dsn)
            s = r["stretch_cpu_ms"]
            print(f"{args.store} {config:<9} {r['written']:>7} written in {r['batches']:>5} batches, {r['stretches']:>5} stretches;"
                  f" writer {r['writer_cpu_us_per_entry']:.2f} CPU us/entry; stretch CPU ms p50 {s['p50']:.3f}"
                  f" p99 {s['p99']:.3f} max {s['max']:.3f}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"date": datetime.datetime.now(datetime.UTC).isoformat(), "rate": args.rate,
                                    "seconds": args.seconds, "store": args.store, "results": results}, indent=1))
    print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
