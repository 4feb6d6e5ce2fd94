"""Consul discovery through py-consul against ``consul_api_server`` (an agent's service
register/deregister, health with blocking queries and ACL tokens, as documented): members
register with a TCP check on their gossip port, see each other once the check passes,
follow changes by blocking queries, deregister on stop; the token is sent and never
logged; the agent going away leaves the last list (degraded) and coming back heals."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket

import pytest

from consul_api_server import ConsulAgent
from discovery_support import degraded
from rainbridge.cluster.discovery.base import DiscoveryConfigError
from rainbridge.cluster.discovery.consul import make
from rainbridge.config.schema import DiscoveryConfig
from support import free_port, until

TOKEN = "b1gs3cr3t-acl-token"


@pytest.fixture
def agent():
    server = ConsulAgent()
    server.start()
    yield server
    server.close()


@pytest.fixture
def acl_agent():
    server = ConsulAgent(acl_token=TOKEN)
    server.start()
    yield server
    server.close()


@contextlib.contextmanager
def gossip_listener(ip: str):
    """A TCP listener standing in for a member's gossip port (what the TCP check dials)."""
    sock = socket.socket()
    sock.bind((ip, 0))
    sock.listen(8)
    try:
        yield sock.getsockname()
    finally:
        sock.close()


def member(agent: ConsulAgent, name: str, address, environ=None, service="gateway"):
    config = DiscoveryConfig(enabled=True, type="consul", service_name=service,
                             consul_address=agent.address, dial_timeout="2s")
    return make(config, address, name, environ or {})


async def sees(d, expected: set):
    got = set(await d.candidates())
    return got == expected or got


def test_service_name_is_required_and_the_address_is_checked():
    with pytest.raises(DiscoveryConfigError, match=r"discovery\.service_name: required"):
        make(DiscoveryConfig(enabled=True, type="consul"), ("127.0.0.1", 1), "a", {})
    config = DiscoveryConfig(enabled=True, type="consul", service_name="gw",
                             consul_address="consul:eighty")
    with pytest.raises(DiscoveryConfigError, match=r"discovery\.consul_address: expected"):
        make(config, ("127.0.0.1", 1), "a", {})
    https = make(DiscoveryConfig(enabled=True, type="consul", service_name="gw",
                                 consul_address="https://10.0.0.5:8501"), ("127.0.0.1", 1), "a", {})
    assert (https.agent, https.scheme) == (("10.0.0.5", 8501), "https")


async def test_members_register_with_a_tcp_check_and_see_each_other_once_passing(agent):
    with gossip_listener("127.0.0.91") as addr_a, gossip_listener("127.0.0.92") as addr_b:
        a, b = member(agent, "a", addr_a), member(agent, "b", addr_b)
        await a.start()
        await b.start()
        try:
            await until(lambda: sees(a, {addr_b}), 10, "a sees b")
            await until(lambda: sees(b, {addr_a}), 10, "b sees a")
            reg = agent.registered()["gateway-a"]
            assert (reg["name"], reg["address"], reg["port"]) == ("gateway", *addr_a)
            [check] = reg["checks"]
            assert check["tcp"] == f"{addr_a[0]}:{addr_a[1]}"
            assert check["deregistercriticalserviceafter"] == "1m"
            # an instance whose gossip port does not answer stays critical: not a candidate
            addr_c = ("127.0.0.93", free_port("127.0.0.93", udp=False))
            c = member(agent, "c", addr_c)
            await c.start()
            await until(lambda: asyncio.to_thread(
                lambda: agent.statuses().get("gateway-c") == "critical"), 10, "c registered")
            assert addr_c not in await a.candidates()
            # its port opens: the check passes and the blocking queries bring it at once
            with socket.socket() as listener:
                listener.bind(addr_c)
                listener.listen(8)
                await until(lambda: sees(a, {addr_b, addr_c}), 10, "a sees c passing")
                await until(lambda: sees(c, {addr_a, addr_b}), 10, "c sees a and b")
            await c.stop()
            assert "gateway-c" not in agent.registered()
            health = [q for m, p, q, _ in agent.requests if p == "/v1/health/service/gateway"]
            assert all(q.get("passing") == "1" for q in health)
            assert any(int(q.get("index", 0)) > 0 and q.get("wait") for q in health)
        finally:
            await a.stop()
            await b.stop()


async def test_stop_deregisters_and_the_others_see_it_by_blocking_query(agent):
    with gossip_listener("127.0.0.91") as addr_a, gossip_listener("127.0.0.92") as addr_b:
        a, b = member(agent, "a", addr_a), member(agent, "b", addr_b)
        await a.start()
        await b.start()
        try:
            await until(lambda: sees(a, {addr_b}), 10, "a sees b")
            await b.stop()
            assert set(agent.registered()) == {"gateway-a"}
            await until(lambda: sees(a, set()), 5, "b gone from a's list")
            assert ("PUT", "/v1/agent/service/deregister/gateway-b") in {
                (m, p) for m, p, _, _ in agent.requests}
            # quiet period: a waits in its blocking query instead of polling
            before = len(agent.requests)
            await asyncio.sleep(0.5)
            assert len(agent.requests) - before <= 1
        finally:
            await a.stop()


async def test_the_acl_token_comes_from_the_environment_and_is_never_logged(acl_agent, caplog):
    caplog.set_level(logging.DEBUG)
    with gossip_listener("127.0.0.91") as addr_a, gossip_listener("127.0.0.92") as addr_b:
        a = member(acl_agent, "a", addr_a, {"CONSUL_HTTP_TOKEN": TOKEN})
        b = member(acl_agent, "b", addr_b, {"CONSUL_HTTP_TOKEN": TOKEN})
        anonymous = member(acl_agent, "c", ("127.0.0.93", 7946))
        wrong = member(acl_agent, "d", ("127.0.0.94", 7946), {"CONSUL_HTTP_TOKEN": "guess"})
        for d in (a, b, anonymous, wrong):
            await d.start()
        try:
            await until(lambda: sees(a, {addr_b}), 10, "a sees b with the token")
            assert all(ok for m, p, _, ok in acl_agent.requests if p.endswith("gateway-a"))

            async def refused():
                return ("403" in (anonymous.health.last_error or "")
                        and "403" in (wrong.health.last_error or "")) or (
                    anonymous.health.last_error, wrong.health.last_error)

            await until(refused, 10, "no token and a wrong token refused")
            assert set(acl_agent.registered()) == {"gateway-a", "gateway-b"}
            assert not anonymous.health.healthy and await anonymous.candidates() == []
            await a.stop()
            assert TOKEN not in caplog.text and "guess" not in caplog.text
            assert all(TOKEN not in str(d.health) for d in (a, b, anonymous, wrong))
        finally:
            for d in (b, anonymous, wrong):
                await d.stop()


async def test_the_agent_going_down_keeps_the_list_and_coming_back_registers_again(agent):
    with gossip_listener("127.0.0.91") as addr_a, gossip_listener("127.0.0.92") as addr_b:
        a, b = member(agent, "a", addr_a), member(agent, "b", addr_b)
        await a.start()
        await b.start()
        try:
            await until(lambda: sees(a, {addr_b}), 10, "a sees b")
            agent.stop()

            await until(lambda: degraded(a), 10, "a degraded")
            assert await a.candidates() == [addr_b]  # the last good list stands
            agent.app.call(agent.services.clear)  # the agent comes back without its state
            agent.start()
            await until(lambda: asyncio.to_thread(
                lambda: set(agent.registered()) == {"gateway-a", "gateway-b"}), 20,
                "both registered again")
            async def healed():
                return (a.health.healthy and a.health.failures == 0
                        and await a.candidates() == [addr_b]) or a.health

            await until(healed, 10, "a healthy again, seeing b")
        finally:
            await a.stop()
            await b.stop()
