"""Real gateways forming a cluster through Consul discovery: four ``rainbridge serve``
processes register with ``consul_api_server`` (one agent, ACL token from
``CONSUL_HTTP_TOKEN``), pass their TCP checks on the gossip port, find each other from
nothing (three), a fourth joins by scale-up, one leaves (deregistered), an instance outside
``allowed_address_space`` is never contacted, and the agent going away leaves the cluster
intact until it returns."""

from __future__ import annotations

import json
import urllib.request

import pytest

from consul_api_server import ConsulAgent
from discovery_fleet import DiscoveryFleet
from support import eventually

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
    monkeypatch.setenv("CONSUL_HTTP_TOKEN", ACL)
    discovery = {"type": "consul", "service_name": "rb-e2e", "consul_address": agent.address,
                 "allowed_address_space": ["127.0.0.112/29"]}
    with DiscoveryFleet(tmp_path, "c", HOSTS, OUTSIDE, mock.url, pg_database, discovery) as fleet:
        register_stranger(agent, fleet.port)
        first = fleet.form()
        fourth = fleet.scale_up(first)
        assert set(agent.statuses()) == {"stranger", "rb-e2e-c0", "rb-e2e-c1", "rb-e2e-c2",
                                         "rb-e2e-c3"}
        assert fourth.status()["discovery"]["backends"][0]["registered"] is True
        eventually(lambda: fourth.status()["discovery"]["rejected"].get("address_space", 0) >= 1,
                   10, "the stranger's address rejected")
        fleet.never_contacted()
        assert all(ok for _, _, _, ok in agent.requests if ok is not None)  # token sent

        rest = fleet.leave([*first, fourth], first[1])  # graceful: deregistered, memberlist leave
        assert "rb-e2e-c1" not in agent.statuses()

        fleet.outage(rest, agent.stop, agent.start)
        log = "".join((tmp_path / f"c{i}.log").read_text() for i in range(4))
        assert ACL not in log
