"""Real discovery servers for tests, each on loopback ports and a temporary directory:
dnsmasq (Debian ``dnsmasq-base``) and etcd (Debian ``etcd-server``). Both can be stopped and
started again on the same ports, so a test can take a backend away and bring it back."""

from __future__ import annotations

import shutil
import time
import urllib.request
from pathlib import Path

import pytest

from support import Proc, free_port


def need(binary: str, package: str) -> str:
    path = shutil.which(binary) or shutil.which(binary, path="/usr/sbin:/usr/bin")
    if path is None:
        pytest.skip(f"{binary} is not installed (Debian package {package})")
    return path


def degraded(backend):
    """For ``until``: True once a discovery backend reports a failed round (degraded), else
    its health as last seen."""
    return (not backend.health.healthy and backend.health.failures >= 1) or backend.health


class Dnsmasq:
    """dnsmasq answering for ``*.test`` only (NXDOMAIN for unknown names, no upstream, no
    cache). A records: files in ``hosts_dir`` (``ip name`` lines), re-read by dnsmasq on
    change (inotify); SRV records: fixed at start (``srv``: (name, target, port))."""

    def __init__(self, tmp: Path, srv: list[tuple[str, str, int]] = ()) -> None:
        self.binary = need("dnsmasq", "dnsmasq-base")
        self.tmp = tmp
        self.hosts_dir = tmp / "dns-hosts"
        self.hosts_dir.mkdir(exist_ok=True)
        self.port = free_port()
        self.srv = list(srv)
        self.proc: Proc | None = None
        self.lives = 0

    @property
    def server(self) -> str:
        return f"127.0.0.1:{self.port}"

    def set_hosts(self, records: dict[str, list[str]]) -> None:
        """Replace every A record: name → IPs (written to a new file, then renamed, so
        dnsmasq never reads half a file)."""
        lines = [f"{ip} {name}" for name, ips in records.items() for ip in ips]
        tmp = self.tmp / "hosts.new"
        tmp.write_text("\n".join(lines) + "\n")
        for old in self.hosts_dir.iterdir():
            old.unlink()
        tmp.rename(self.hosts_dir / f"hosts-{time.monotonic_ns()}")

    def start(self) -> None:
        self.lives += 1
        args = [self.binary, "--no-daemon", f"--port={self.port}", "--listen-address=127.0.0.1",
                "--bind-interfaces", "--no-resolv", "--no-hosts", "--conf-file=/dev/null",
                "--pid-file=", "--user=root", f"--hostsdir={self.hosts_dir}", "--local=/test/",
                "--cache-size=0", "--log-queries"]
        args += [f"--srv-host={name},{target},{port}" for name, target, port in self.srv]
        self.proc = Proc(args, self.tmp / f"dnsmasq-{self.lives}.log")
        self.proc.wait_for(r"started, version", timeout=10)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
            self.proc = None


class Etcd:
    """One etcd member on two loopback ports with its own data directory."""

    def __init__(self, tmp: Path) -> None:
        self.binary = need("etcd", "etcd-server")
        self.tmp = tmp
        self.data = tmp / "etcd-data"
        self.client_port = free_port()
        self.peer_port = free_port()
        self.proc: Proc | None = None
        self.lives = 0

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    def start(self) -> None:
        self.lives += 1
        client = f"http://127.0.0.1:{self.client_port}"
        peer = f"http://127.0.0.1:{self.peer_port}"
        args = [self.binary, "--name", "t", "--data-dir", str(self.data),
                "--listen-client-urls", client, "--advertise-client-urls", client,
                "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                "--initial-cluster", f"t={peer}", "--log-level", "warn"]
        self.proc = Proc(args, self.tmp / f"etcd-{self.lives}.log")
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(self.endpoint + "/health", timeout=1) as resp:
                    if b'"true"' in resp.read():
                        return
            except OSError:
                pass
            if self.proc.popen.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"etcd did not start:\n{self.proc.output()}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
            self.proc = None
