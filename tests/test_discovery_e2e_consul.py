"""Real gateways forming a cluster through Consul discovery: four ``rainbridge serve``
processes register with ``consul_api_server`` (one agent, ACL token from
``CONSUL_HTTP_TOKEN``), pass their TCP checks on the gossip port, find each other from
nothing (three), a fourth joins by scale-up, one leaves (deregistered), an instance outside
``allowed_address_space`` is never contacted, and the agent going away leaves the cluster
intact until it returns."""

from __future__ import annotations

import json
import socket
import urllib.request

import pytest

from consul_api_server import ConsulAgent
from discovery_support import Gateway, gateway_config, sees
from support import eventually, free_port

HOSTS = ["127.0.0.113", "127.0.0.114", "127.0.0.115", "127.0.0.116"]
OUTSIDE = "127.0.0.121"
ACL = "e2e-consul-acl-token"


@pytest.fixture
def agent():
    server = ConsulAgent(acl_token=ACL)
    server.start()
    yield server
    server.close()


def register_stranger(agent: ConsulAgent, port: int) -> None:
    """An instance of the service without checks (Consul counts it passing) at an address
    outside the allowed space: its check would dial it, a gateway must not."""
    body = json.dumps({"Name": "rb-e2e", "ID": "stranger", "Address": OUTSIDE, "Port": port})
    request = urllib.request.Request(f"http://{agent.address}/v1/agent/service/register",
                                     data=body.encode(), method="PUT",
                                     headers={"X-Consul-Token": ACL})
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200


def test_gateways_form_a_cluster_through_consul(tmp_path, agent, pg_database, mock,
                                                monkeypatch):
    port = free_port(HOSTS[0])
    for h in [*HOSTS[1:], OUTSIDE]:
        with socket.socket() as s:
            try:
                s.bind((h, port))
            except OSError:
                pytest.skip(f"gossip port {port} taken on {h}")
    listener = socket.socket()
    listener.bind((OUTSIDE, port))
    listener.listen()
    listener.setblocking(False)
    monkeypatch.setenv("CONSUL_HTTP_TOKEN", ACL)
    discovery = {"type": "consul", "service_name": "rb-e2e", "consul_address": agent.address,
                 "allowed_address_space": ["127.0.0.112/29"]}
    register_stranger(agent, port)
    gateways: list[Gateway] = []

    def launch(i: int) -> Gateway:
        g = Gateway(tmp_path, f"c{i}", HOSTS[i],
                    gateway_config(mock.url, pg_database, f"c{i}", port, discovery))
        gateways.append(g)
        return g

    try:
        first = [launch(i) for i in range(3)]
        for g in first:
            g.ready()
        eventually(lambda: sees(first, {"c0", "c1", "c2"}), 30, "three members from nothing")
        fourth = launch(3).ready()
        everyone = [*first, fourth]
        eventually(lambda: sees(everyone, {"c0", "c1", "c2", "c3"}), 30, "the fourth joined")
        assert set(agent.statuses()) == {"stranger", "rb-e2e-c0", "rb-e2e-c1", "rb-e2e-c2",
                                         "rb-e2e-c3"}
        assert fourth.status()["discovery"]["backends"][0]["registered"] is True
        eventually(lambda: fourth.status()["discovery"]["rejected"].get("address_space", 0) >= 1,
                   10, "the stranger's address rejected")
        with pytest.raises(BlockingIOError):
            listener.accept()  # not one connection to the address outside the space
        assert all(ok for _, _, _, ok in agent.requests if ok is not None)  # token sent

        first[1].stop()  # graceful: deregistered, memberlist leave
        rest = [first[0], first[2], fourth]
        eventually(lambda: sees(rest, {"c0", "c2", "c3"}), 30, "c1 left")
        assert "rb-e2e-c1" not in agent.statuses()

        agent.stop()
        eventually(lambda: rest[0].status()["discovery"]["status"] == "degraded", 15,
                   "degraded")
        assert rest[0].status()["health"]["discovery"] == "degraded"
        assert sees(rest, {"c0", "c2", "c3"}) is True
        agent.start()
        eventually(lambda: all(g.status()["discovery"]["status"] == "healthy" for g in rest),
                   40, "recovered")
        assert sees(rest, {"c0", "c2", "c3"}) is True
        log = "".join((tmp_path / f"c{i}.log").read_text() for i in range(4))
        assert ACL not in log
    finally:
        for g in gateways:  # all drain at once, then each is waited for
            if g.proc.popen.poll() is None:
                g.proc.popen.terminate()
        for g in gateways:
            g.stop()
        listener.close()
