"""Bifrost's ``cluster_config.type`` / ``grpc`` / ``broker`` knobs: mesh and the grpc block
are accepted (grpc with a warning: sync rides the gossip port), broker is refused at start-up
with a message naming the path, in the config loader, in ``serve`` and in the service."""

import json
import subprocess
import sys

import msgspec
import pytest

from rainbridge.cluster.addresses import ClusterConfigError
from rainbridge.cluster.service import ClusterEnv, ClusterService
from rainbridge.config.load import ConfigError, load_data
from rainbridge.config.schema import ClusterConfig

TOKEN = "broker-secret-token-123"
STORE = {"enabled": True, "type": "postgres", "config": {"dsn": "postgresql://u@127.0.0.1:5432/db"}}


def config(**cluster) -> dict:
    block = {"enabled": True, "peers": ["127.0.0.1:10101"], "gossip": {"port": 10101}, **cluster}
    return {"config_store": STORE, "cluster_config": block}


def problems(raw: dict) -> list[tuple[str, str, str]]:
    with pytest.raises(ConfigError) as info:
        load_data(raw, {})
    return [(p.severity, p.path, p.message) for p in info.value.problems]


BROKER = {"address": "broker.internal:7000", "tls": {"enabled": True}, "auth_token": TOKEN, "listen_port": 7001}


def test_mesh_and_the_grpc_block_are_accepted_with_a_warning_naming_the_gossip_port():
    loaded = load_data(config(type="mesh", grpc={"port": 10102, "dial_timeout_seconds": 5}), {})
    cluster = loaded.config.cluster_config
    assert cluster.type == "mesh" and cluster.grpc is not None
    assert (cluster.grpc.port, cluster.grpc.dial_timeout_seconds) == (10102, 5)
    warnings = {w.path: w.message for w in loaded.warnings}
    assert "gossip port (gossip.port 10101, UDP and TCP)" in warnings["$.cluster_config.grpc"]
    assert "grpc.port 10102 is not opened" in warnings["$.cluster_config.grpc"]


def test_grpc_defaults_are_bifrosts_and_no_grpc_block_means_no_warning():
    assert msgspec.convert({"grpc": {}}, ClusterConfig).grpc.port == 10102
    assert msgspec.convert({"grpc": {}}, ClusterConfig).grpc.dial_timeout_seconds == 5
    loaded = load_data(config(), {})
    assert loaded.config.cluster_config.type == "mesh"
    assert not [w for w in loaded.warnings if w.path.startswith("$.cluster_config")]


def test_broker_type_is_an_error_naming_the_path():
    got = problems(config(type="broker", broker=BROKER))
    assert [(s, p) for s, p, _ in got] == [("error", "$.cluster_config.type")]
    assert "broker mode is not supported" in got[0][2] and 'set it to "mesh"' in got[0][2]
    assert TOKEN not in repr(got)


def test_a_broker_block_in_mesh_mode_is_ignored_with_a_warning():
    loaded = load_data(config(broker=BROKER), {})
    assert {w.path for w in loaded.warnings} >= {"$.cluster_config.broker"}


def test_bad_knob_values_are_refused_by_type():
    got = problems(config(type="ring", grpc={"port": 70000, "dial_timeout_seconds": 0}))
    assert got == [
        ("error", "$.cluster_config.type", "expected one of 'broker', 'mesh', got 'ring'"),
        ("error", "$.cluster_config.grpc.port", "must be <= 65535, got 70000"),
        ("error", "$.cluster_config.grpc.dial_timeout_seconds", "must be >= 1, got 0"),
    ]


def test_broker_is_not_checked_while_cluster_mode_is_off():
    raw = config(type="broker", broker=BROKER)
    raw["cluster_config"]["enabled"] = False
    load_data(raw, {})  # Bifrost's OSS build ignores the section: so do we


async def test_the_service_refuses_broker_at_start():
    cluster = msgspec.convert({"enabled": True, "type": "broker", "broker": BROKER}, ClusterConfig)
    service = ClusterService(cluster, ClusterEnv(http_host="127.0.0.31"), environ={})
    with pytest.raises(ClusterConfigError, match=r"^cluster_config\.type: broker mode is not supported"):
        await service.start()
    assert service.node is None  # nothing was bound


def test_serve_refuses_broker_and_names_the_path(tmp_path):
    f = tmp_path / "broker.json"
    f.write_text(json.dumps(config(type="broker", broker=BROKER)))
    out = subprocess.run(
        [sys.executable, "-m", "rainbridge", "serve", "--config", str(f), "--port", "0", "--app-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 2, out.stdout + out.stderr
    assert "$.cluster_config.type: broker mode is not supported" in out.stderr
    assert TOKEN not in out.stdout + out.stderr
