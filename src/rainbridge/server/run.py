"""Run the gateway: one worker in this process, or N worker processes sharing the port.

Each worker binds the port itself with SO_REUSEPORT, so the kernel spreads connections
across them and a worker that dies takes only its own connections down. Every worker is a
full gateway with its own upstream pool and, in cluster mode, its own cluster member.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

from ..config.load import ConfigError, LoadedConfig, empty_config, load_file
from .drain import DrainTimes, drain_times, start_cut
from .protocol import Limits

log = logging.getLogger("rainbridge")

# uvicorn: uvicorn runs the server, our protocol (server/protocol.py) speaks HTTP/1.1;
# uvicorn-httptools: uvicorn's own httptools protocol (kept to compare and as a fallback).
SERVERS = ("uvicorn", "uvicorn-httptools", "granian")


@dataclass(slots=True)
class ServeOptions:
    config_path: str | None = None
    app_dir: str = "./data"
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    log_level: str = "info"
    server: str = "uvicorn"
    # SIGTERM: how long in-flight requests and streams may still run before they are cut.
    # None: from env and config (server/drain.py: drain_times); serve() fills it in.
    graceful_timeout: float | None = None
    run_migrations: bool = True  # False: --no-migrate (fail if the schema is behind)
    allow_unauthenticated_admin: bool = False  # /api/ without an admin token (development only)
    # How long to retry an unreachable PostgreSQL at start (RAINBRIDGE_STORE_WAIT_SECONDS).
    store_wait_s: float = float(os.environ.get("RAINBRIDGE_STORE_WAIT_SECONDS", "60"))
    worker_index: int = 0  # set by the Supervisor: each worker is its own cluster member
    # Set by the Supervisor: where the workers' metrics sockets live (telemetry/pod.py).
    metrics_dir: str | None = None
    # Request size limits and read timeouts of our HTTP/1.1 protocol (--server uvicorn only).
    http_limits: Limits = field(default_factory=Limits)


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )


def config_path(opts: ServeOptions) -> Path | None:
    if opts.config_path:
        return Path(opts.config_path)
    for name in ("config.json", "config.yaml", "config.yml"):
        candidate = Path(opts.app_dir) / name
        if candidate.exists():
            return candidate
    return None


def load_config(opts: ServeOptions, announce: bool = True) -> LoadedConfig:
    """Load and validate; a broken file raises ``ConfigError`` with every problem."""
    path = config_path(opts)
    if path is None:
        if announce:
            log.info(
                "no config file (%s/config.json): starting with no providers and a SQLite store in %s",
                opts.app_dir,
                opts.app_dir,
            )
        return empty_config()
    if opts.config_path and not path.exists():
        from ..config.validate import Problem

        raise ConfigError([Problem("$", "file not found")], str(path))
    loaded = load_file(path)
    if announce:
        for warning in loaded.warnings:
            log.warning("config %s: %s", path, warning)
        log.info("config %s: %d provider(s): %s", path, len(loaded.config.providers), ", ".join(loaded.config.providers) or "none")
    return loaded


def bind_socket(host: str, port: int, reuse_port: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


def build_app(opts: ServeOptions, loaded: LoadedConfig):
    from ..cluster.service import ClusterEnv
    from ..gateway.gateway import Gateway
    from .app import create_app

    cluster_env = ClusterEnv(opts.host, opts.port, opts.worker_index, opts.workers)
    gateway = Gateway(loaded, opts.app_dir, opts.run_migrations, opts.store_wait_s, cluster_env)
    if opts.metrics_dir is not None:  # --workers N: a scrape answers for the whole pod
        from ..telemetry.pod import PodMetrics

        gateway.pod_metrics = PodMetrics(opts.metrics_dir, opts.worker_index, gateway.metrics)
    if opts.worker_index != 0:
        gateway.pusher = None  # worker 0 pushes the whole pod's numbers, once
    return create_app(gateway, opts.allow_unauthenticated_admin)


def run_worker(opts: ServeOptions, loaded: LoadedConfig | None = None, sock: socket.socket | None = None) -> None:
    """Serve on this process until SIGINT/SIGTERM."""
    import faulthandler

    faulthandler.register(signal.SIGUSR1, all_threads=True)  # `kill -USR1 <pid>`: every thread's stack to stderr
    if loaded is None:
        loaded = load_config(opts, announce=False)
    if sock is None:
        sock = bind_socket(opts.host, opts.port, reuse_port=True)
    app = build_app(opts, loaded)
    port = sock.getsockname()[1]
    times = drain_times(loaded.config.drain)
    if opts.graceful_timeout is not None:
        times = DrainTimes(min(times.accept_s, opts.graceful_timeout), opts.graceful_timeout)
    if opts.server == "granian":
        _run_granian(app, opts, sock)
        return
    import uvicorn

    from .protocol import HttpProtocol

    config = uvicorn.Config(
        app,
        loop="uvloop" if _has_uvloop() else "asyncio",
        http="httptools" if opts.server == "uvicorn-httptools" else partial(HttpProtocol, limits=opts.http_limits),
        lifespan="on",
        access_log=False,
        server_header=False,
        proxy_headers=False,
        date_header=False,
        log_config=None,
        log_level=opts.log_level,
        timeout_graceful_shutdown=times.grace_s,
        backlog=4096,
    )
    server = _uvicorn_server_class()(config, on_exit=app.gateway.begin_drain, times=times)
    log.info("worker %d serving on http://%s:%d", os.getpid(), _display_host(opts.host), port)
    server.run(sockets=[sock])
    if not server.started:
        sys.exit(3)


def _uvicorn_server_class():
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn re-raises SIGINT/SIGTERM after its graceful shutdown; we exit 0 instead.
        The first signal also starts the gateway's drain (see ``Gateway.begin_drain``), and
        the drain's accept window and grace (server/drain.py) time the shutdown."""

        def __init__(self, config, on_exit, times: DrainTimes):
            super().__init__(config)
            self._on_exit = on_exit
            self._times = times
            self._signalled: float | None = None

        async def shutdown(self, sockets=None):
            signalled = self._signalled if self._signalled is not None else time.monotonic()
            accept_until = signalled + self._times.accept_s
            if accept_until > time.monotonic() and not self.force_exit:
                log.info("draining: still accepting connections for %.1fs", accept_until - time.monotonic())
            # Bounded by the window; a second signal (force_exit) ends it early.
            while not self.force_exit and (left := accept_until - time.monotonic()) > 0:
                await asyncio.sleep(min(0.1, left))
            self.config.timeout_graceful_shutdown = max(0.0, signalled + self._times.grace_s - time.monotonic())
            start_cut()  # from here a stream cancelled by the server is cut with a final event
            await super().shutdown(sockets)

        def handle_exit(self, sig, frame):
            if self._signalled is None:
                self._signalled = time.monotonic()
            # A signal handler runs between two bytecodes of whatever the loop was doing:
            # hand the drain notice to the loop instead of sending packets from here.
            try:
                asyncio.get_running_loop().call_soon_threadsafe(self._on_exit)
            except RuntimeError:  # no loop running (startup or shutdown already over)
                pass
            super().handle_exit(sig, frame)
            self._captured_signals.clear()

    return Server


def _run_granian(app, opts: ServeOptions, sock: socket.socket) -> None:
    # Granian binds its own socket; release ours first so it can take the port.
    try:
        from granian.constants import HTTPModes, Interfaces
        from granian.server.embed import Server
    except ImportError:
        log.error("--server granian needs granian: pip install 'rainbridge[granian]'")
        sys.exit(1)

    port = sock.getsockname()[1]
    sock.close()
    server = Server(app, address=opts.host, port=port, interface=Interfaces.ASGI, http=HTTPModes.http1, backlog=4096, websockets=False)
    if _has_uvloop():
        import uvloop

        uvloop.run(server.serve())
    else:
        asyncio.run(server.serve())


def _has_uvloop() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def _display_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _worker_main(opts: ServeOptions, supervisor_pid: int) -> None:
    setup_logging(opts.log_level)
    _drain_when_orphaned(supervisor_pid)
    run_worker(opts)


def _drain_when_orphaned(supervisor_pid: int) -> None:
    """Ask the kernel for a SIGTERM when the supervisor dies (Linux ``PR_SET_PDEATHSIG``), so
    a supervisor killed with SIGKILL or by the OOM killer does not leave workers serving the
    port with nobody to stop them: they drain and exit as on a normal stop."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    PR_SET_PDEATHSIG = 1
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        return
    if os.getppid() != supervisor_pid:  # it died before we asked
        os.kill(os.getpid(), signal.SIGTERM)


def serve(opts: ServeOptions) -> int:
    """Entry point of ``rainbridge serve``; returns the exit code."""
    try:
        loaded = load_config(opts)
    except ConfigError as exc:
        print(f"rainbridge: {exc}:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem.severity}: {problem}", file=sys.stderr)
        return 2
    try:
        sock = bind_socket(opts.host, opts.port, reuse_port=True)
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", opts.host, opts.port, exc.strerror)
        return 1
    opts.port = sock.getsockname()[1]
    if opts.graceful_timeout is None:
        opts.graceful_timeout = drain_times(loaded.config.drain).grace_s
    log.info(
        "rainbridge listening on http://%s:%d (%d worker%s, %s)",
        _display_host(opts.host), opts.port, opts.workers, "s" if opts.workers != 1 else "", opts.server,
    )
    if opts.workers <= 1:
        run_worker(opts, loaded, sock)
        return 0
    return Supervisor(opts, sock).run()


class Supervisor:
    """Starts N worker processes, restarts one that dies, stops them all on a signal."""

    MAX_RESTARTS = 5  # within RESTART_WINDOW_S, then give up
    RESTART_WINDOW_S = 60.0

    def __init__(self, opts: ServeOptions, reserved: socket.socket):
        self.opts = opts
        self.reserved = reserved  # bound, never listening: keeps the port ours
        self.ctx = multiprocessing.get_context("spawn")
        self.workers: list[multiprocessing.Process] = []
        self.stopping = False
        self.restarts: list[float] = []
        self.metrics_dir = tempfile.mkdtemp(prefix="rainbridge-metrics-")  # the workers' sockets (pod.py)

    def _spawn(self, index: int) -> multiprocessing.Process:
        opts = replace(self.opts, worker_index=index, metrics_dir=self.metrics_dir)
        proc = self.ctx.Process(target=_worker_main, args=(opts, os.getpid()), daemon=False)
        proc.start()
        return proc

    def _stop(self, signum: int, _frame: object) -> None:
        self.stopping = True

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        self.workers = [self._spawn(i) for i in range(self.opts.workers)]
        code = 0
        while not self.stopping:
            time.sleep(0.2)
            for i, proc in enumerate(self.workers):
                if proc.is_alive() or self.stopping:
                    continue
                log.error("worker %d exited with code %s", proc.pid, proc.exitcode)
                now = time.monotonic()
                self.restarts = [t for t in self.restarts if now - t < self.RESTART_WINDOW_S] + [now]
                if len(self.restarts) > self.MAX_RESTARTS:
                    log.error("workers keep dying; stopping")
                    self.stopping = True
                    code = 1
                    break
                self.workers[i] = self._spawn(i)
        for proc in self.workers:
            if proc.is_alive() and proc.pid is not None:
                os.kill(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + (self.opts.graceful_timeout or 0.0) + 5
        for proc in self.workers:
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
                proc.join()
        self.reserved.close()
        shutil.rmtree(self.metrics_dir, ignore_errors=True)
        return code
