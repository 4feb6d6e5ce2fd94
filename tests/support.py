"""Real processes for tests: the fake provider and the gateway, each on a loopback port.

Output goes to a log file (a pipe nobody reads would block the child); ``wait_for`` polls
that file. Every wait is bounded in time.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from pathlib import Path

HOST = "127.0.0.1"


class Proc:
    def __init__(self, args: list[str], log_path: Path, env: dict | None = None, cwd: str | None = None):
        self.log_path = log_path
        self._log = open(log_path, "wb")
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.popen = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT, env=full_env, cwd=cwd)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for(self, pattern: str, timeout: float = 20.0) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = re.search(pattern, self.output())
            if m:
                return m
            if self.popen.poll() is not None:
                raise RuntimeError(f"process exited ({self.popen.returncode}):\n{self.output()}")
            time.sleep(0.05)
        raise TimeoutError(f"{pattern!r} not seen in {timeout}s:\n{self.output()}")

    def send_signal(self, sig: int = signal.SIGTERM) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        self.send_signal(sig)
        return self.reap(timeout)

    def reap(self, timeout: float) -> int:
        """Wait up to ``timeout`` s for the exit (killed after that); closes the log."""
        try:
            self.popen.wait(max(timeout, 0.0))
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(5)
        self._log.close()
        return self.popen.returncode


def stop_all(procs: Iterable[Proc], sig: int = signal.SIGTERM, timeout: float = 15.0) -> list[int]:
    """Stop a fleet side by side: signal every process first, then wait for them under one
    shared deadline (stopping one by one would add up each one's drain time). Returns the
    exit codes in order."""
    procs = list(procs)
    for proc in procs:
        proc.send_signal(sig)
    deadline = time.monotonic() + timeout
    return [proc.reap(deadline - time.monotonic()) for proc in procs]


async def read_request(reader) -> tuple[bytes, bytes]:
    """One HTTP/1.1 request (head, body) as a scripted upstream reads it: the gateway always
    sends a Content-Length body (none on a GET)."""
    head = await reader.readuntil(b"\r\n\r\n")
    found = re.search(rb"(?i)content-length: (\d+)", head)
    return head, await reader.readexactly(int(found.group(1))) if found else b""


def http_json(method: str, url: str, body: dict | None = None, headers: dict | None = None, timeout: float = 10.0) -> tuple[int, dict, dict]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"content-type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
            return resp.status, dict(resp.headers), json.loads(raw) if raw else {}
    except urllib.error.HTTPError as err:
        raw = err.read()
        try:
            parsed = json.loads(raw)
        except ValueError:
            parsed = {"raw": raw.decode(errors="replace")}
        return err.code, dict(err.headers), parsed


def wait_http(url: str, timeout: float = 20.0, proc: Proc | None = None) -> None:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status < 500:
                    return
        except urllib.error.HTTPError as err:
            if err.code < 500:
                return
            last = err
        except OSError as err:
            last = err
        if proc is not None and proc.popen.poll() is not None:
            raise RuntimeError(f"process exited:\n{proc.output()}")
        time.sleep(0.05)
    raise TimeoutError(f"{url} not ready: {last}")


def eventually(cond, timeout: float, what: str, interval: float = 0.05):
    """Poll ``cond()`` until it returns exactly ``True`` (bounded by ``timeout`` seconds);
    returns the seconds it took. Anything else it returns is the "last seen" value shown in
    the failure, so a condition can return what it saw instead of False. ``OSError`` and
    ``AssertionError`` raised by ``cond`` count as not yet (and are shown if they persist)."""
    start = time.monotonic()
    last: object = None
    while True:
        try:
            last = cond()
        except (OSError, AssertionError) as exc:
            last = exc
        if last is True:
            return time.monotonic() - start
        if time.monotonic() - start >= timeout:
            raise AssertionError(f"{what}: not within {timeout:.1f}s (last seen: {last!r})")
        time.sleep(interval)


async def until(cond, timeout: float, what: str, interval: float = 0.05) -> float:
    """``eventually`` for a test on an event loop: ``cond`` may be a coroutine function;
    sleeps with ``asyncio.sleep`` so the loop runs on. Returns the seconds it took."""
    start = time.monotonic()
    last: object = None
    while time.monotonic() - start < timeout:
        last = cond()
        if inspect.isawaitable(last):
            last = await last
        if last is True:
            return time.monotonic() - start
        await asyncio.sleep(interval)
    raise AssertionError(f"{what}: not within {timeout}s (last seen: {last!r})")


class MockProcess:
    def __init__(self, tmp: Path):
        self.proc = Proc([sys.executable, "-m", "rainbridge.mock", "--host", HOST, "--port", "0"], tmp / "mock.log")
        m = self.proc.wait_for(r"listening on (http://\S+)")
        self.url = m.group(1)

    def stats(self) -> dict:
        return http_json("GET", self.url + "/mock/stats")[2]

    def reset(self) -> None:
        http_json("POST", self.url + "/mock/reset", {})

    def stop(self) -> None:
        self.proc.stop()


class GatewayProcess:
    def __init__(self, tmp: Path, config: dict | None, *args: str, env: dict | None = None, workers: int = 1, name: str = "gw"):
        self.app_dir = tmp / f"{name}-data"
        self.app_dir.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "rainbridge", "serve", "--host", HOST, "--port", "0", "--app-dir", str(self.app_dir), "--workers", str(workers), *args]
        if config is not None:
            self.config_path = tmp / f"{name}-config.json"
            self.config_path.write_text(json.dumps(config))
            cmd += ["--config", str(self.config_path)]
        self.proc = Proc(cmd, tmp / f"{name}.log", env=env)
        m = self.proc.wait_for(r"listening on (http://\S+)")
        self.url = m.group(1)
        wait_http(self.url + "/health", proc=self.proc)

    def log(self) -> str:
        return self.proc.output()

    def stop(self, sig: int = signal.SIGTERM) -> int:
        return self.proc.stop(sig)


def provider_config(mock_url: str, **network) -> dict:
    """The usual test config: openai and anthropic providers, both on the fake provider."""
    net = {"base_url": mock_url, **network}
    return {
        "providers": {
            "openai": {"keys": [{"name": "main", "value": "sk-test-openai-0123456789", "models": ["*"], "weight": 1}], "network_config": net},
            "anthropic": {"keys": [{"name": "main", "value": "sk-ant-test-0123456789", "models": ["*"], "weight": 1}], "network_config": net},
        }
    }


def free_port(ip: str = HOST, udp: bool = True) -> int:
    """A port free on ``ip`` for TCP and, with ``udp``, for UDP too (a gossip port, or
    dnsmasq's, which listens on both)."""
    for _ in range(20):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe, socket.socket() as tcp:
            if not udp:
                tcp.bind((ip, 0))
                return tcp.getsockname()[1]
            probe.bind((ip, 0))
            port = probe.getsockname()[1]
            try:
                tcp.bind((ip, port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port")


def free_port_at(ip: str, port: int) -> bool:
    """Whether ``port`` is free for both UDP and TCP on ``ip`` (worker i gossips on port + i)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, socket.socket() as tcp:
        try:
            udp.bind((ip, port))
            tcp.bind((ip, port))
        except OSError:
            return False
    return True


def skip_window_edge(length_s: int = 3600, margin_s: float = 60.0) -> None:
    """Calendar-aligned windows of ``length_s`` seconds must not end during what comes next:
    with less than ``margin_s`` left in the current one, wait for the next (a clock boundary,
    nothing to poll for)."""
    left = length_s - time.time() % length_s
    if left < margin_s:
        time.sleep(left + 1)
