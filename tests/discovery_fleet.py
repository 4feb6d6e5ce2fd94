"""Real gateways finding each other through a discovery backend, as every backend's end-to-end
test runs them: four ``rainbridge serve`` processes on their own loopback IPs with one gossip
port, an address outside ``allowed_address_space`` that must never be contacted, three
gateways from nothing, a fourth by scale-up, one leaving, the backend going away and back."""

from __future__ import annotations

import json
import socket
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from support import Proc, eventually, free_port, http_json, provider_config, stop_all, wait_http

TOKEN = "discovery-admin-token"
# lan profile with short probes (Bifrost mapping): failures are seen within seconds
GOSSIP_TIMING = {"timeout_seconds": 4, "success_threshold": 1, "failure_threshold": 10}


def gateway_config(mock_url: str, dsn: str, name: str, gossip_port: int, discovery: dict) -> dict:
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
        self.url = self.proc.wait_for(r"listening on (http://\S+)", timeout=30).group(1)
        wait_http(self.url + "/health", timeout=30, proc=self.proc)
        return self

    def status(self) -> dict:
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


class DiscoveryFleet:
    """Gateways ``<prefix>0`` … on ``hosts``, one gossip port free on every host and on
    ``outside`` (else the test is skipped), where ``listener`` (TCP, and UDP with ``udp``)
    stands for a stranger the backend lists: it must see no connection and no packet.
    ``close`` stops every gateway side by side."""

    def __init__(self, tmp: Path, prefix: str, hosts: Sequence[str], outside: str,
                 mock_url: str, dsn: str, discovery: dict, udp: bool = False) -> None:
        self.tmp, self.prefix, self.hosts = tmp, prefix, list(hosts)
        self.mock_url, self.dsn, self.discovery = mock_url, dsn, discovery
        self.port = free_port(hosts[0])
        for host in [*hosts[1:], outside]:
            with socket.socket() as s:
                try:
                    s.bind((host, self.port))
                except OSError:
                    pytest.skip(f"gossip port {self.port} taken on {host}")
        self.listener = socket.socket()
        self.listener.bind((outside, self.port))
        self.listener.listen()
        self.listener.setblocking(False)
        self.udp: socket.socket | None = None
        if udp:
            self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.udp.bind((outside, self.port))
            self.udp.setblocking(False)
        self.gateways: list[Gateway] = []

    def launch(self, i: int) -> Gateway:
        name = f"{self.prefix}{i}"
        g = Gateway(self.tmp, name, self.hosts[i],
                    gateway_config(self.mock_url, self.dsn, name, self.port, self.discovery))
        self.gateways.append(g)
        return g

    def form(self, count: int = 3, on_ready: Callable[[int], None] = lambda i: None) -> list[Gateway]:
        """``count`` gateways started together find each other from nothing (``on_ready(i)``:
        once gateway i serves, e.g. its pod turns ready)."""
        first = [self.launch(i) for i in range(count)]
        for i, g in enumerate(first):
            g.ready()
            on_ready(i)
        eventually(lambda: sees(first, {g.name for g in first}), 30,
                   f"{count} members from nothing")
        return first

    def scale_up(self, running: list[Gateway], on_ready: Callable[[int], None] = lambda i: None) -> Gateway:
        """One more gateway joins the ones running."""
        i = len(self.gateways)
        added = self.launch(i).ready()
        on_ready(i)
        everyone = [*running, added]
        eventually(lambda: sees(everyone, {g.name for g in everyone}), 30, f"{added.name} joined")
        return added

    def leave(self, gateways: list[Gateway], leaver: Gateway) -> list[Gateway]:
        """``leaver`` stops gracefully; the rest see it gone (not back). Returns the rest."""
        leaver.stop()
        rest = [g for g in gateways if g is not leaver]
        eventually(lambda: sees(rest, {g.name for g in rest}), 30, f"{leaver.name} left")
        return rest

    def never_contacted(self) -> None:
        """Not one connection (or packet) reached the address outside the space."""
        with pytest.raises(BlockingIOError):
            self.listener.accept()
        if self.udp is not None:
            with pytest.raises(BlockingIOError):
                self.udp.recvfrom(2048)

    @staticmethod
    def outage(rest: list[Gateway], stop: Callable[[], None], start: Callable[[], None]) -> None:
        """The backend goes away: discovery degraded, the cluster stays as it was; the
        backend comes back: every gateway healthy again, the cluster still the same."""
        names = {g.name for g in rest}
        stop()
        eventually(lambda: rest[0].status()["discovery"]["status"] == "degraded", 15,
                   "degraded")
        assert rest[0].status()["health"]["discovery"] == "degraded"
        assert sees(rest, names) is True
        start()
        eventually(lambda: all(g.status()["discovery"]["status"] == "healthy" for g in rest),
                   40, "recovered")
        assert sees(rest, names) is True

    def __enter__(self) -> DiscoveryFleet:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        stop_all(g.proc for g in self.gateways)
        self.listener.close()
        if self.udp is not None:
            self.udp.close()
