"""rainbridge core benchmark: throughput, added latency, streams, memory and CPU in one run.

    .venv/bin/python bench/run.py [--upstream URL] [--runs 3] [--duration 5]
                                  [--server uvicorn|granian|both] [--baseline DIR]
                                  [--quick] [--out FILE]

Starts the fake provider (unless ``--upstream``), the reference proxy and one gateway per
server, all on loopback; measures them interleaved so drift hits every target alike; prints
medians [min..max] beside the targets and writes everything to ``--out`` as JSON.
See bench/README.md for what each number means.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import procs
import report
import wrkload

BENCH = Path(__file__).resolve().parent
CHAT_PATH = "/v1/chat/completions"
PACKAGES = ("rainbridge", "aiohttp", "uvicorn", "granian", "uvloop", "httptools", "orjson")
WRK_METRICS = ("rps", "p50_ms", "p99_ms", "non_2xx", "socket_errors", "cpu_ms_per_1k")
STREAM_METRICS = (
    "ok",
    "errors",
    "ttfb_p50_ms",
    "ttfb_p99_ms",
    "total_p50_ms",
    "total_p99_ms",
    "gap_p99_ms",
    "rss_peak_mb",
    "upstream_disconnects",
)


@dataclass
class Settings:
    runs: int
    duration_s: float
    servers: list[str]
    concurrency: tuple[int, ...] = (1, 32, 64)
    stream_rounds: tuple[int, ...] = (256, 1000)
    stream_chunks: int = 20
    stream_delay_ms: int = 5
    stream_timeout_s: float = 60.0
    warmup_s: float = 1.0
    upstream: str | None = None
    out: Path = BENCH / "results" / "core.json"
    baseline: Path | None = None  # a checkout of an earlier commit, run beside this one


@dataclass
class Target:
    name: str  # upstream | reference | uvicorn | granian
    url: str
    pids: list[int]  # whose CPU and memory we read; empty for an external upstream
    prefix: str  # header prefix that carries the mock's controls to it

    @property
    def is_gateway(self) -> bool:
        return self.name in ("uvicorn", "granian", "baseline")


def parse_args(argv: list[str] | None = None) -> Settings:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--upstream",
        help="use this OpenAI-compatible upstream instead of starting the fake provider",
    )
    parser.add_argument(
        "--runs", type=int, default=3, help="measurement runs; the table shows medians (default 3)"
    )
    parser.add_argument(
        "--duration", type=float, default=5.0, help="seconds per wrk run (default 5)"
    )
    parser.add_argument(
        "--server",
        choices=("uvicorn", "granian", "both"),
        default="both",
        help="gateway HTTP server(s) (default both)",
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        help="a checkout of an earlier commit (e.g. a git worktree): its gateway runs as one "
        "more uvicorn target, so before and after are measured side by side in one run",
    )
    parser.add_argument("--quick", action="store_true", help="smoke check: 1 run, 2 s, 100 streams")
    parser.add_argument(
        "--out", type=Path, default=BENCH / "results" / "core.json", help="JSON results file"
    )
    args = parser.parse_args(argv)
    servers = ["uvicorn", "granian"] if args.server == "both" else [args.server]
    settings = Settings(args.runs, args.duration, servers, upstream=args.upstream, out=args.out)
    if args.baseline:
        settings.baseline = args.baseline.resolve()
        if not (settings.baseline / "src" / "rainbridge").is_dir():
            parser.error(f"--baseline {args.baseline}: no src/rainbridge there")
    if args.quick:
        settings.runs, settings.duration_s, settings.stream_rounds = 1, 2.0, (100,)
    return settings


# --- measurements ----------------------------------------------------------------------------


def measure_wrk(target: Target, script: Path, connections: int, duration_s: float) -> dict:
    cpu_before = procs.cpu_seconds(target.pids)
    result = wrkload.run_wrk(target.url + CHAT_PATH, script, connections, duration_s)
    cpu = procs.cpu_seconds(target.pids) - cpu_before
    if target.pids and result["requests"]:
        result["cpu_ms_per_1k"] = cpu * 1e6 / result["requests"]
    return result


def measure_streams(target: Target, streams: int, settings: Settings, mock_url: str | None) -> dict:
    """Run bench/streams.py as its own process; sample the target's RSS while it runs."""
    argv = [
        sys.executable,
        str(BENCH / "streams.py"),
        target.url + CHAT_PATH,
        "--streams",
        str(streams),
        "--chunks",
        str(settings.stream_chunks),
        "--delay-ms",
        str(settings.stream_delay_ms),
        "--prefix",
        target.prefix,
        "--timeout",
        str(settings.stream_timeout_s),
    ]
    before = procs.get_json(mock_url + "/mock/stats") if mock_url else None
    peak = 0.0
    # Output goes to files, not pipes: a pipe nobody reads while we poll could fill and block.
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        driver = subprocess.Popen(argv, stdout=out, stderr=err)
        try:
            deadline = time.monotonic() + settings.stream_timeout_s + 30
            while driver.poll() is None:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"stream driver against {target.name} did not finish")
                peak = max(peak, procs.rss_mb(target.pids))
                time.sleep(0.02)
        finally:
            if driver.poll() is None:
                driver.kill()
                driver.wait()
        out.seek(0)
        err.seek(0)
        output, errors = out.read(), err.read().decode(errors="replace")
    if driver.returncode != 0:
        raise RuntimeError(f"stream driver failed against {target.name}: {errors.strip()[-1000:]}")
    result = json.loads(output)
    if target.pids:
        result["rss_peak_mb"] = peak
    after = procs.get_json(mock_url + "/mock/stats") if mock_url else None
    if before and after:
        result["upstream_disconnects"] = after["disconnects"] - before["disconnects"]
    return result


def rotated(targets: list[Target], index: int) -> list[Target]:
    shift = index % len(targets)
    return targets[shift:] + targets[:shift]  # so no target always goes first


def wrk_run(
    index: int, targets: list[Target], script: Path, settings: Settings, ps: procs.Procs
) -> dict:
    """Every concurrency against every target: ``{"C": {target: result}}``."""
    results: dict[str, dict] = {}
    for c in settings.concurrency:
        results[str(c)] = {}
        for target in rotated(targets, index):
            print(f"  run {index + 1}: wrk c={c:<3} {report.LABELS[target.name]}", flush=True)
            results[str(c)][target.name] = measure_wrk(target, script, c, settings.duration_s)
            ps.check_alive()
    return results


def stream_run(
    index: int,
    targets: list[Target],
    script: Path,
    settings: Settings,
    mock_url: str | None,
    ps: procs.Procs,
) -> dict:
    """The stream rounds, then c=32 again: a burst leaves the gateway a big upstream pool."""
    results: dict[str, dict] = {"streams": {}, "wrk_after_streams": {"32": {}}}
    order = rotated(targets, index)
    for n in settings.stream_rounds:
        results["streams"][str(n)] = {}
        for target in order:
            if target.name == "reference":  # it does not stream
                continue
            print(f"  run {index + 1}: {n} streams  {report.LABELS[target.name]}", flush=True)
            results["streams"][str(n)][target.name] = measure_streams(target, n, settings, mock_url)
            ps.check_alive()
            time.sleep(0.5)  # let the closed connections drain before the next round
    for target in order:
        if target.name != "upstream":
            print(
                f"  run {index + 1}: wrk c=32  {report.LABELS[target.name]} (after streams)",
                flush=True,
            )
            result = measure_wrk(target, script, 32, settings.duration_s)
            results["wrk_after_streams"]["32"][target.name] = result
            ps.check_alive()
    return results


# --- aggregation -----------------------------------------------------------------------------


def flatten(run: dict, names: list[str], gateways: list[str]) -> dict[str, float]:
    """One run as flat ``metric -> number``, including the derived comparisons."""
    flat: dict[str, float] = {}
    for phase in ("wrk", "wrk_after_streams"):
        for c, per_target in run[phase].items():
            for name, result in per_target.items():
                for metric in WRK_METRICS:
                    if metric in result:
                        flat[f"{phase}.c{c}.{name}.{metric}"] = result[metric]
            for gw in gateways:
                ratio = per_target[gw]["rps"] / per_target["reference"]["rps"]
                flat[f"{phase}.c{c}.{gw}.vs_reference"] = ratio
    c1 = run["wrk"].get("1")
    if c1:
        for name in names:
            if name != "upstream":
                flat[f"wrk.c1.{name}.added_p50_ms"] = c1[name]["p50_ms"] - c1["upstream"]["p50_ms"]
                flat[f"wrk.c1.{name}.added_p99_ms"] = c1[name]["p99_ms"] - c1["upstream"]["p99_ms"]
    for n, per_target in run["streams"].items():
        for name, result in per_target.items():
            for metric in STREAM_METRICS:
                if metric in result:
                    flat[f"streams.{n}.{name}.{metric}"] = result[metric]
    return flat


def summarize(flats: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    keys = sorted({k for flat in flats for k in flat})
    summary = {}
    for key in keys:
        values = [flat[key] for flat in flats if key in flat]
        summary[key] = {"median": statistics.median(values), "min": min(values), "max": max(values)}
    return summary


# --- environment -----------------------------------------------------------------------------


def machine_info() -> dict:
    def version(package: str) -> str:
        try:
            return importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            return "missing"

    cpu_model = ""
    try:
        cpu_model = next(
            (
                line.split(":", 1)[1].strip()
                for line in open("/proc/cpuinfo")
                if line.startswith("model name")
            ),
            "",
        )
    except OSError:
        pass
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_avg_start": os.getloadavg(),
        "wrk": wrkload.wrk_version(),
        "commit": git_commit(),
        "packages": {p: version(p) for p in PACKAGES},
    }


def git_commit() -> str | None:
    """The checked-out commit, read from .git (no git command needed)."""
    git = BENCH.parent / ".git"
    try:
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref: "):
            return head
        ref = head[5:]
        if (git / ref).exists():
            return (git / ref).read_text().strip()
        for line in (git / "packed-refs").read_text().splitlines():
            if line.endswith(" " + ref):
                return line.split()[0]
    except OSError:
        pass
    return None


def raise_fd_limit() -> None:
    # 1,000 streams need ~3,000 sockets across the processes; children inherit the limit.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(
            resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 65536, hard)
        )


def _sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through the cleanup below


def round_floats(value):
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, dict):
        return {k: round_floats(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [round_floats(v) for v in value]
    return value


# --- main ------------------------------------------------------------------------------------


def start_targets(settings: Settings, ps: procs.Procs) -> tuple[list[Target], str | None, dict]:
    """Upstream, reference and gateways, ready; plus the mock's URL and each gateway's idle RSS."""
    mock_url = None
    if settings.upstream:
        upstream = Target("upstream", settings.upstream.rstrip("/"), [], "")
    else:
        mock = ps.start_mock()
        mock_url = mock.url
        upstream = Target("upstream", mock.url, [mock.pid], "")
    ref = ps.start_reference(upstream.url)
    targets = [upstream, Target("reference", ref.url, [ref.pid], "")]
    memory: dict[str, dict] = {}
    for server in settings.servers:
        gw = ps.start_gateway(upstream.url, server)
        pids = procs.process_tree(gw.pid)  # one process with --workers 1; a tree otherwise
        targets.append(Target(server, gw.url, pids, "x-bf-eh-"))
        time.sleep(0.5)
        memory[server] = {"pids": len(pids), "rss_idle_mb": procs.rss_mb(pids)}
    if settings.baseline:  # the earlier commit's code, imported first through PYTHONPATH
        src = str(settings.baseline / "src")
        gw = ps.start_gateway(upstream.url, "uvicorn", name="gateway-baseline", env={"PYTHONPATH": src})
        pids = procs.process_tree(gw.pid)
        targets.append(Target("baseline", gw.url, pids, "x-bf-eh-"))
        time.sleep(0.5)
        memory["baseline"] = {"pids": len(pids), "rss_idle_mb": procs.rss_mb(pids)}
    return targets, mock_url, memory


def main(argv: list[str] | None = None) -> int:
    settings = parse_args(argv)
    signal.signal(signal.SIGTERM, _sigterm)
    raise_fd_limit()
    machine = machine_info()
    started = time.monotonic()
    with (
        tempfile.TemporaryDirectory(prefix="rainbridge-bench-") as tmp,
        procs.Procs(Path(tmp)) as ps,
    ):
        workdir = Path(tmp)
        targets, mock_url, memory = start_targets(settings, ps)
        names = [t.name for t in targets]
        print(
            f"rainbridge bench: {' / '.join(report.LABELS[n] for n in names)}; "
            f"{settings.runs} run(s) x {settings.duration_s:g} s",
            flush=True,
        )

        script = wrkload.write_script(workdir)
        for target in targets:  # warm-up: fill connection pools, first-call paths; not recorded
            wrkload.run_wrk(
                target.url + CHAT_PATH, script, max(settings.concurrency), settings.warmup_s
            )
        mock_before = procs.get_json(mock_url + "/mock/stats") if mock_url else None

        # All wrk runs first: after a stream round the gateway keeps a large upstream pool
        # that slows it down (measured separately, as "after streams").
        runs = [{"wrk": wrk_run(i, targets, script, settings, ps)} for i in range(settings.runs)]
        for i, run in enumerate(runs):
            run.update(stream_run(i, targets, script, settings, mock_url, ps))

        for target in targets:
            if target.is_gateway:
                memory[target.name]["rss_end_mb"] = procs.rss_mb(target.pids)
                memory[target.name]["rss_hwm_mb"] = procs.status_mb(target.pids, "VmHWM")
        mock_after = procs.get_json(mock_url + "/mock/stats") if mock_url else None
        gateways = [t.name for t in targets if t.is_gateway]
        gateway_logs = {s: procs.tail(workdir / f"gateway-{s}.log", 30) for s in gateways}

    flats = [flatten(run, names, gateways) for run in runs]
    summary = summarize(flats)
    for server, mem in memory.items():
        summary[f"memory.{server}.rss_idle_mb"] = {
            "median": mem["rss_idle_mb"],
            "min": mem["rss_idle_mb"],
            "max": mem["rss_idle_mb"],
        }
    checks = report.checks(summary, settings, gateways)
    table = report.render(summary, settings, names, machine, checks)
    print()
    print(table)
    notes = report.notes(gateway_logs, mock_before, mock_after)
    if notes:
        print("\n" + notes)

    machine["load_avg_end"] = os.getloadavg()
    result = {
        "machine": machine,
        "config": {
            **asdict(settings),
            "out": str(settings.out),
            "baseline": str(settings.baseline) if settings.baseline else None,
            "command": sys.argv,
            "wall_s": time.monotonic() - started,
        },
        "memory": memory,
        "summary": summary,
        "checks": checks,
        "runs": runs,
        "upstream_stats": _stats_delta(mock_before, mock_after),
        "gateway_log_tail": gateway_logs,
    }
    settings.out.parent.mkdir(parents=True, exist_ok=True)
    settings.out.write_text(json.dumps(round_floats(result), indent=1) + "\n")
    print(f"\nresults: {settings.out}")
    return 0


def _stats_delta(before: dict | None, after: dict | None) -> dict | None:
    if not before or not after:
        return None
    keys = (
        "requests",
        "disconnects",
        "streams_started",
        "streams_completed",
        "streams_errored",
        "streams_cut",
    )
    return {k: after.get(k, 0) - before.get(k, 0) for k in keys}


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print(
            "\ninterrupted; every process the benchmark started has been stopped", file=sys.stderr
        )
        sys.exit(130)
    except (procs.StartError, wrkload.WrkError, RuntimeError) as exc:
        print(f"\nbenchmark failed: {exc}", file=sys.stderr)
        sys.exit(1)
