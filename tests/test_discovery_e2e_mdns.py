"""Real gateways forming a cluster through mDNS discovery, each ``rainbridge serve`` in a
network namespace of its own on one bridged link the test makes (multicast never reaches
the host's network): three find each other from nothing, a fourth joins by scale-up, one
leaves; a stranger on the same link announcing the same service from outside
``allowed_address_space`` is never contacted (not one TCP connection or UDP packet). They share the test's PostgreSQL database through a Unix socket relayed to it (the
host's loopback is not reachable from the namespaces); status is read from inside each
namespace."""

from __future__ import annotations

import json
import subprocess
import sys
from urllib.parse import urlsplit

import pytest

from backend_support import MdnsMember, NetnsLan, UnixForwarder, netns_available
from discovery_fleet import GOSSIP_TIMING, TOKEN, sees
from support import Proc, eventually, stop_all

GOSSIP = 7946
HTTP = 8080


@pytest.fixture
def lan():
    why = netns_available()
    if why:
        pytest.skip(why)
    # members in 10.78.0.0/24 (the allowed space), a stranger at 10.78.9.9 on the same /16
    net = NetnsLan("me", 5, prefix_len=16,
                   ips=[*(f"10.78.0.{i}" for i in range(1, 5)), "10.78.9.9"]).up()
    yield net
    net.down()


@pytest.fixture
def namespaced_dsn(tmp_path, pg_database):
    """The test database's DSN through a Unix socket relay (reachable from namespaces)."""
    url = urlsplit(pg_database)
    relay = UnixForwarder(tmp_path / "pg", url.hostname or "127.0.0.1", url.port or 5432).start()
    yield f"postgresql://{url.username or 'postgres'}@{url.path}?host={relay.folder}&port={relay.port}"
    relay.close()


class NsGateway:
    def __init__(self, tmp, lan: NetnsLan, index: int, dsn: str) -> None:
        self.lan, self.index = lan, index
        self.name, self.ip = f"m{index}", lan.ips[index]
        config = {
            "config_store": {"enabled": True, "type": "postgres", "config": {"dsn": dsn}},
            "cluster_config": {
                "enabled": True, "node_name": self.name,
                "gossip": {"port": GOSSIP, "profile": "lan", "config": GOSSIP_TIMING},
                "discovery": {"enabled": True, "type": "mdns", "mdns_service": "_bifrost._tcp",
                              "interval_seconds": 0.5,
                              "allowed_address_space": ["10.78.0.0/24"]},
            },
        }
        path = tmp / f"{self.name}.json"
        path.write_text(json.dumps(config))
        app_dir = tmp / f"{self.name}-data"
        app_dir.mkdir(exist_ok=True)
        self.proc = Proc(lan.command(index, sys.executable, "-m", "rainbridge", "serve",
                                     "--host", self.ip, "--port", str(HTTP), "--app-dir",
                                     str(app_dir), "--config", str(path)),
                         tmp / f"{self.name}.log", env={"RAINBRIDGE_ADMIN_TOKEN": TOKEN})

    def status(self) -> dict:
        """GET /api/cluster/status from inside the gateway's namespace."""
        probe = ("import json,sys,urllib.request as u;"
                 f"r=u.Request('http://{self.ip}:{HTTP}/api/cluster/status',"
                 f"headers={{'authorization':'Bearer {TOKEN}'}});"
                 "sys.stdout.write(u.urlopen(r,timeout=3).read().decode())")
        out = subprocess.run(self.lan.command(self.index, sys.executable, "-c", probe),
                             capture_output=True, timeout=10)
        if out.returncode != 0:
            raise AssertionError(out.stderr.decode()[-300:])
        return json.loads(out.stdout)

    def alive(self) -> set[str]:
        return {m["name"] for m in self.status()["members"] if m["state"] == "alive"}

    def stop(self) -> None:
        self.proc.stop()


def test_gateways_in_namespaces_form_a_cluster_through_mdns(tmp_path, lan, namespaced_dsn):
    gateways: list[NsGateway] = []
    stranger = MdnsMember(lan, 4, "stranger", "_bifrost._tcp", GOSSIP)
    try:
        first = [NsGateway(tmp_path, lan, i, namespaced_dsn) for i in range(3)]
        gateways += first
        eventually(lambda: sees(first, {"m0", "m1", "m2"}), 40, "three members from nothing")
        fourth = NsGateway(tmp_path, lan, 3, namespaced_dsn)
        gateways.append(fourth)
        everyone = [*first, fourth]
        eventually(lambda: sees(everyone, {"m0", "m1", "m2", "m3"}), 30, "the fourth joined")
        # The fourth may join by browsing before its own probe-and-announce (about a second
        # in zeroconf) has finished, so its announcement is awaited, not assumed.
        def announced() -> bool:
            backend = fourth.status()["discovery"]["backends"][0]
            return backend["status"] == "healthy" and backend["announced"] is True
        eventually(announced, 10, "the fourth announced itself on mDNS")
        eventually(lambda: fourth.status()["discovery"]["rejected"].get("address_space", 0) >= 1,
                   10, "the stranger's address rejected")
        assert stranger.candidates() == {f"10.78.0.{i}:{GOSSIP}" for i in range(1, 5)}
        assert stranger.seen["contacts"] == 0  # it sees them; none of them dialled it
        first[1].stop()  # goodbye on mDNS, leave on gossip
        rest = [first[0], first[2], fourth]
        eventually(lambda: sees(rest, {"m0", "m2", "m3"}), 30, "m1 left")
    finally:
        stop_all(g.proc for g in gateways)
        stranger.stop()
