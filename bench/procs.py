"""The benchmark's processes: start each with a bounded wait, stop them all, read /proc.

Every process gets its own session (process group), so Ctrl-C in the terminal reaches only
the harness, which then stops its children in order; ``killpg`` also takes any grandchild
(a multi-worker supervisor's workers) down with its parent.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parent
PYTHON = sys.executable
CLK_TCK = os.sysconf("SC_CLK_TCK")
START_TIMEOUT_S = 30.0


class StartError(RuntimeError):
    """A process did not become ready in time (its log tail is in the message)."""


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    url: str
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid


class Procs:
    """Starts processes and stops every one of them on ``close()`` (a context manager)."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.started: list[Proc] = []

    def __enter__(self) -> Procs:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> tuple[subprocess.Popen, Path]:
        log = self.workdir / f"{name}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                cwd=self.workdir,
                env={**os.environ, **env} if env else None,
            )
        return popen, log

    def start_mock(self, host: str = "127.0.0.1") -> Proc:
        argv = [PYTHON, "-m", "rainbridge.mock", "--host", host, "--port", "0"]
        popen, log = self._spawn("mock", argv)
        proc = Proc("mock", popen, "", log)
        self.started.append(proc)
        match = _wait(proc, lambda: re.search(r"listening on (http://\S+)", log.read_text()))
        proc.url = match.group(1)
        return proc

    def start_reference(self, upstream: str, host: str = "127.0.0.1") -> Proc:
        port = free_port(host)
        popen, log = self._spawn(
            "reference", [PYTHON, str(BENCH / "reference_proxy.py"), upstream, str(port)]
        )
        proc = Proc("reference", popen, f"http://{host}:{port}", log)
        self.started.append(proc)
        _wait(proc, lambda: _accepts(host, port))
        return proc

    def start_gateway(self, upstream: str, server: str, host: str = "127.0.0.1", config_json: str | None = None, name: str | None = None,
                      wrapper: list[str] | None = None, start_timeout_s: float = START_TIMEOUT_S,
                      env: dict[str, str] | None = None) -> Proc:
        # The port is chosen here: at --log-level warning the gateway logs no "listening on".
        name = name or f"gateway-{server}"
        app_dir = self.workdir / name
        app_dir.mkdir(exist_ok=True)
        config = app_dir / "config.json"
        config.write_text(config_json or gateway_config(upstream))
        port = free_port(host)
        argv = [
            *(wrapper or []),
            PYTHON,
            "-m",
            "rainbridge",
            "serve",
            "--config",
            str(config),
            "--app-dir",
            str(app_dir),
            "--host",
            host,
            "--port",
            str(port),
            "--workers",
            "1",
            "--server",
            server,
            "--log-level",
            "warning",
        ]
        popen, log = self._spawn(name, argv, env)
        proc = Proc(name, popen, f"http://{host}:{port}", log)
        self.started.append(proc)
        _wait(proc, lambda: http_ok(proc.url + "/health"), start_timeout_s)
        return proc

    def check_alive(self) -> None:
        """Raise if a process we started has exited (a crash mid-benchmark)."""
        for proc in self.started:
            if proc.popen.poll() is not None:
                raise StartError(
                    f"{proc.name} exited with code {proc.popen.returncode}:\n{tail(proc.log)}"
                )

    def close(self) -> None:
        for proc in reversed(self.started):
            _signal(proc, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for proc in reversed(self.started):
            try:
                proc.popen.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal(proc, signal.SIGKILL)
                proc.popen.wait(5)
        self.started.clear()


def gateway_config(upstream: str) -> str:
    key = {"name": "bench", "value": "sk-bench", "models": ["*"], "weight": 1}
    provider = {"keys": [key], "network_config": {"base_url": upstream}}
    return json.dumps({"providers": {"openai": provider}}, indent=2)


def _signal(proc: Proc, sig: int) -> None:
    if proc.popen.poll() is not None:
        return
    try:
        os.killpg(proc.pid, sig)  # our child leads its own group (start_new_session)
    except ProcessLookupError:
        pass


def _wait(proc: Proc, ready, timeout_s: float = START_TIMEOUT_S):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            raise StartError(
                f"{proc.name} exited with code {proc.popen.returncode}:\n{tail(proc.log)}"
            )
        result = ready()
        if result:
            return result
        time.sleep(0.05)
    raise StartError(f"{proc.name} not ready after {timeout_s:.0f} s:\n{tail(proc.log)}")


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return resp.status == 200
    except OSError:
        return False


def get_json(url: str) -> dict | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return json.loads(resp.read())
    except (OSError, ValueError):
        return None


# --- /proc readers (Linux) -----------------------------------------------------------------


def _stat_fields(pid: int) -> list[str]:
    # The command name may hold spaces and parentheses: split after the last ')'.
    text = Path(f"/proc/{pid}/stat").read_text()
    return text.rsplit(")", 1)[1].split()


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(_stat_fields(int(entry))[1])
            except (OSError, IndexError):
                continue
            parents.setdefault(ppid, []).append(int(entry))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(parents.get(current, []))
    return tree


def status_mb(pids: list[int], field: str = "VmRSS") -> float:
    """A memory field of /proc/PID/status (VmRSS, VmHWM …) summed over ``pids``, in MiB.

    A process that has gone counts 0.
    """
    total_kb = 0
    prefix = field + ":"
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith(prefix):
                    total_kb += int(line.split()[1])
                    break
        except OSError:
            pass
    return total_kb / 1024


def rss_mb(pids: list[int]) -> float:
    return status_mb(pids, "VmRSS")


def wait_idle(pids: list[int], quiet_s: float = 0.3, timeout_s: float = 10.0, busy_share: float = 0.05) -> float:
    """Until ``pids`` use under ``busy_share`` of a core for ``quiet_s`` (bounded by
    ``timeout_s``): what a previous load left them to do (a log writer's backlog, say) is
    done. Returns the seconds waited."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        before = cpu_seconds(pids)
        time.sleep(quiet_s)
        if cpu_seconds(pids) - before <= busy_share * quiet_s:
            break
    return time.monotonic() - started


def cpu_seconds(pids: list[int]) -> float:
    """Summed user + system CPU time of ``pids``."""
    ticks = 0
    for pid in pids:
        try:
            fields = _stat_fields(pid)
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / CLK_TCK
