"""Real discovery servers for tests, each on loopback ports and a temporary directory:
dnsmasq (Debian ``dnsmasq-base``) and etcd (Debian ``etcd-server``). Both can be stopped and
started again on the same ports, so a test can take a backend away and bring it back."""

from __future__ import annotations

import shutil
import socket
import time
import urllib.request
from pathlib import Path

import pytest

from support import Proc


def free_tcp_udp_port(ip: str = "127.0.0.1") -> int:
    """A port free for TCP and UDP on ``ip`` (dnsmasq listens on both)."""
    for _ in range(20):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, socket.socket() as tcp:
            udp.bind((ip, 0))
            port = udp.getsockname()[1]
            try:
                tcp.bind((ip, port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port")


def need(binary: str, package: str) -> str:
    path = shutil.which(binary) or shutil.which(binary, path="/usr/sbin:/usr/bin")
    if path is None:
        pytest.skip(f"{binary} is not installed (Debian package {package})")
    return path


class Dnsmasq:
    """dnsmasq answering for ``*.test`` only (NXDOMAIN for unknown names, no upstream, no
    cache). A records: files in ``hosts_dir`` (``ip name`` lines), re-read by dnsmasq on
    change (inotify); SRV records: fixed at start (``srv``: (name, target, port))."""

    def __init__(self, tmp: Path, srv: list[tuple[str, str, int]] = ()) -> None:
        self.binary = need("dnsmasq", "dnsmasq-base")
        self.tmp = tmp
        self.hosts_dir = tmp / "dns-hosts"
        self.hosts_dir.mkdir(exist_ok=True)
        self.port = free_tcp_udp_port()
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
        self.client_port = free_tcp_udp_port()
        self.peer_port = free_tcp_udp_port()
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


TOKEN = "discovery-admin-token"
# lan profile with short probes (Bifrost mapping): failures are seen within seconds
GOSSIP_TIMING = {"timeout_seconds": 4, "success_threshold": 1, "failure_threshold": 10}


def gateway_config(mock_url: str, dsn: str, name: str, gossip_port: int, discovery: dict) -> dict:
    from support import provider_config

    return {
        **provider_config(mock_url),
        "config_store": {"enabled": True, "type": "postgres", "config": {"dsn": dsn}},
        "cluster_config": {
            "enabled": True,
            "node_name": name,
            "gossip": {"port": gossip_port, "profile": "lan", "config": GOSSIP_TIMING},
            "discovery": {"enabled": True, "interval_seconds": 0.5, "dial_timeout": "1s",
                          **discovery},
        },
    }


class Gateway:
    """One ``rainbridge serve`` on its own loopback IP (which is its gossip address too)."""

    def __init__(self, tmp: Path, name: str, host: str, config: dict) -> None:
        import json
        import sys

        self.name, self.host = name, host
        path = tmp / f"{name}.json"
        path.write_text(json.dumps(config))
        app_dir = tmp / f"{name}-data"
        app_dir.mkdir(exist_ok=True)
        self.proc = Proc([sys.executable, "-m", "rainbridge", "serve", "--host", host,
                          "--port", "0", "--app-dir", str(app_dir), "--config", str(path)],
                         tmp / f"{name}.log", env={"RAINBRIDGE_ADMIN_TOKEN": TOKEN})
        self.url = ""

    def ready(self) -> Gateway:
        from support import wait_http

        self.url = self.proc.wait_for(r"listening on (http://\S+)", timeout=30).group(1)
        wait_http(self.url + "/health", timeout=30, proc=self.proc)
        return self

    def status(self) -> dict:
        from support import http_json

        code, _, body = http_json("GET", self.url + "/api/cluster/status",
                                  headers={"authorization": f"Bearer {TOKEN}"}, timeout=3)
        assert code == 200, body
        return body

    def alive(self) -> set[str]:
        return {m["name"] for m in self.status()["members"] if m["state"] == "alive"}

    def stop(self) -> None:
        self.proc.stop()


def sees(gateways, names: set[str]):
    """For ``eventually``: True when every gateway sees exactly ``names`` alive."""
    views = {g.name: sorted(g.alive()) for g in gateways}
    return all(set(v) == names for v in views.values()) or views
