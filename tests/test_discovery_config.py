"""Discovery misconfiguration stops start-up naming the field, for every type: in the config
loader (``$.cluster_config.discovery...``) and in the cluster service."""

from __future__ import annotations

import msgspec
import pytest

from rainbridge.cluster.addresses import ClusterConfigError
from rainbridge.cluster.service import ClusterEnv, ClusterService
from rainbridge.config.load import ConfigError, load_data
from rainbridge.config.schema import ClusterConfig

STORE = {"enabled": True, "type": "postgres", "config": {"dsn": "postgresql://u@127.0.0.1:5432/db"}}
D = "$.cluster_config.discovery"


def problems(discovery: dict, peers: list[str] = ()) -> list[tuple[str, str]]:
    raw = {"config_store": STORE, "cluster_config": {
        "enabled": True, "peers": list(peers), "gossip": {"port": 10101},
        "discovery": {"enabled": True, **discovery}}}
    try:
        load_data(raw, {"RB_UDP_SECRET": "a-secret-from-the-environment"})
    except ConfigError as exc:
        return [(p.path, p.message) for p in exc.problems if p.severity == "error"]
    return []


@pytest.mark.parametrize(("discovery", "path", "words"), [
    ({}, f"{D}.type", "required when discovery is enabled"),
    ({"type": "kubernetes"}, f"{D}.k8s_label_selector", "required for kubernetes"),
    ({"type": "dns"}, f"{D}.dns_names", "required for dns"),
    ({"type": "consul"}, f"{D}.service_name", "required for consul"),
    ({"type": "etcd", "etcd_endpoints": ["127.0.0.1:2379"]}, f"{D}.service_name",
     "required for etcd"),
    ({"type": "etcd", "service_name": "rb"}, f"{D}.etcd_endpoints", "required for etcd"),
    ({"type": "mdns"}, f"{D}.mdns_service", "mdns_service or service_name is required"),
    ({"type": "udp", "allowed_address_space": ["10.0.0.0/8"], "udp_broadcast_port": 7947,
      "udp_secret": "s3cret-value"}, f"{D}.service_name", "required for udp"),
    ({"type": "udp", "service_name": "rb", "udp_broadcast_port": 7947, "udp_secret": "x"},
     f"{D}.allowed_address_space", "required for udp"),
    ({"type": "udp", "service_name": "rb", "allowed_address_space": ["10.0.0.0/8"],
      "udp_secret": "x"}, f"{D}.udp_broadcast_port", "required for udp"),
    ({"type": "udp", "service_name": "rb", "allowed_address_space": ["10.0.0.0/8"],
      "udp_broadcast_port": 7947}, f"{D}.udp_secret", "required for udp"),
    ({"type": "static"}, "$.cluster_config.peers", "static discovery needs peers"),
    ({"type": "dns", "dns_names": ["gw"], "dial_timeout": "soon"}, f"{D}.dial_timeout",
     "expected seconds or a duration"),
    ({"type": "dns", "dns_names": ["gw"], "dns_server": "dns.local:53"}, f"{D}.dns_server",
     "expected ip, ip:port or [v6]:port"),
    ({"type": "etcd", "service_name": "rb", "etcd_endpoints": ["127.0.0.1:2379", "https://e:2379"]},
     f"{D}.etcd_endpoints[1]", "TLS endpoints are not supported"),
    ({"type": "udp", "service_name": "rb", "allowed_address_space": ["fd00::/8"],
      "udp_broadcast_port": 7947, "udp_secret": "x"}, f"{D}.allowed_address_space",
     "needs an IPv4 network"),
])
def test_a_type_without_its_required_field_is_refused_naming_it(discovery, path, words):
    got = problems(discovery)
    assert len(got) == 1, got
    assert got[0][0] == path and words in got[0][1]


@pytest.mark.parametrize("discovery", [
    {"type": "dns", "dns_names": ["gw.default.svc"]},
    {"type": "kubernetes", "k8s_label_selector": "app=rainbridge"},
    {"type": "consul", "service_name": "rb"},
    {"type": "etcd", "service_name": "rb", "etcd_endpoints": ["http://etcd:2379"]},
    {"type": "mdns", "service_name": "rb"},
    {"type": "mdns", "mdns_service": "_bifrost._tcp"},
    {"type": "udp", "service_name": "rb", "allowed_address_space": ["10.0.0.0/8"],
     "udp_broadcast_port": 7947, "udp_secret": "env.RB_UDP_SECRET"},
])
def test_a_complete_discovery_block_passes(discovery):
    assert problems(discovery) == []


async def test_the_service_refuses_a_bad_block_too_and_opens_no_socket():
    cfg = msgspec.convert({"enabled": True, "node_name": "x", "gossip": {"port": 0},
                           "discovery": {"enabled": True, "type": "etcd", "service_name": "rb",
                                         "etcd_endpoints": ["https://etcd:2379"]}},
                          ClusterConfig)
    service = ClusterService(cfg, ClusterEnv(http_host="127.0.0.66"), environ={})
    with pytest.raises(ClusterConfigError, match=r"discovery\.etcd_endpoints\[0\]: TLS"):
        await service.start()
    assert service.node is None


def test_a_missing_client_library_is_refused_at_load_naming_the_extra(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "aetcd", None)  # as if the etcd extra were not installed
    monkeypatch.delitem(sys.modules, "rainbridge.cluster.discovery.etcd", raising=False)
    got = problems({"type": "etcd", "service_name": "rb", "etcd_endpoints": ["127.0.0.1:2379"]})
    assert got == [(f"{D}.type", "etcd discovery needs the optional dependency aetcd: "
                    "pip install 'rainbridge[etcd]'")]
