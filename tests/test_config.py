"""Config loading: Bifrost's shape, env references, every problem with its JSON path."""

import json
import subprocess
import sys

import pytest

from rainbridge.config.load import ConfigError, load_data, load_file

BIFROST_EXAMPLE = {
    "$schema": "https://www.getbifrost.ai/schema",
    "encryption_key": "env.BIFROST_ENCRYPTION_KEY",
    "client": {
        "initial_pool_size": 300,
        "drop_excess_requests": False,
        "enable_logging": True,
        "max_request_body_size_mb": 50,
        "allowed_origins": ["*"],
    },
    "providers": {
        "openai": {
            "keys": [{"name": "openai-primary", "value": "env.OPENAI_API_KEY", "models": ["*"], "weight": 1.0}],
            "network_config": {
                "default_request_timeout_in_seconds": 30,
                "max_retries": 1,
                "retry_backoff_initial_ms": 100,
                "retry_backoff_max_ms": 2000,
            },
            "concurrency_and_buffer_size": {"concurrency": 3, "buffer_size": 10},
        },
        "azure": {
            "keys": [
                {
                    "name": "az",
                    "value": "env.AZURE_KEY",
                    "models": ["gpt-4o"],
                    "weight": 1.0,
                    "azure_key_config": {
                        "endpoint": "https://example.openai.azure.com",
                        "deployments": {"gpt-4o": "gpt4o-prod"},
                        "api_version": "2024-08-01-preview",
                    },
                }
            ]
        },
        "anthropic": {"keys": [{"value": "env.ANTHROPIC_API_KEY", "models": ["claude-3-5-sonnet"], "weight": 1}]},
        "local-vllm": {
            "custom_provider_config": {"base_provider_type": "openai", "is_key_less": True},
            "network_config": {"base_url": "http://127.0.0.1:8000"},
            "keys": [],
        },
    },
    "config_store": {"enabled": True, "type": "sqlite", "config": {"path": "./config.db"}},
    "logs_store": {"enabled": True, "type": "postgres", "config": {"host": "localhost", "port": 5432, "user": "bifrost", "password": "env.PG_PASSWORD", "db_name": "logs", "ssl_mode": "disable"}},
    "governance": {"virtual_keys": []},
    "plugins": [{"enabled": True, "name": "telemetry", "config": {}}],
    "cluster_config": {"enabled": False, "gossip": {"port": 10101, "config": {"timeout_seconds": 10, "success_threshold": 3, "failure_threshold": 3}}},
}
ENV = {
    "BIFROST_ENCRYPTION_KEY": "k" * 32,
    "OPENAI_API_KEY": "sk-openai-secret",
    "AZURE_KEY": "az-secret",
    "ANTHROPIC_API_KEY": "sk-ant-secret",
    "PG_PASSWORD": "pw",
}


def problems_of(raw, env=ENV):
    with pytest.raises(ConfigError) as info:
        load_data(raw, env)
    return [(p.severity, p.path, p.message) for p in info.value.problems]


def test_bifrost_example_loads_without_warnings():
    loaded = load_data(json.loads(json.dumps(BIFROST_EXAMPLE)), ENV)
    cfg = loaded.config
    assert loaded.warnings == []
    assert cfg.providers["openai"].keys[0].value == "sk-openai-secret"
    net = cfg.providers["openai"].network_config
    assert (net.retry_backoff_initial, net.retry_backoff_max, net.max_retries) == (100, 2000, 1)
    assert cfg.providers["azure"].keys[0].azure_key_config.deployments == {"gpt-4o": "gpt4o-prod"}
    assert cfg.logs_store.config.password == "pw"
    assert cfg.client.max_request_body_size_mb == 50


def test_defaults_follow_bifrost():
    cfg = load_data({"providers": {"openai": {"keys": [{"value": "k"}]}}}, {}).config
    net = cfg.providers["openai"].network_config
    assert net.default_request_timeout_in_seconds == 30
    assert net.max_retries == 0
    assert (net.retry_backoff_initial, net.retry_backoff_max) == (500, 5000)
    assert net.stream_idle_timeout_in_seconds == 60
    cb = cfg.providers["openai"].concurrency_and_buffer_size
    assert (cb.concurrency, cb.buffer_size) == (1000, 5000)
    assert cfg.client.max_request_body_size_mb == 100
    assert cfg.cluster_config.gossip.port == 7946


def test_every_type_error_is_reported_with_its_path():
    raw = {
        "providers": {
            "openai": {
                "keys": [{"name": "a", "value": "k", "weight": "heavy", "models": "gpt-4o"}],
                "network_config": {"max_retries": -1, "base_url": 5},
            }
        },
        "client": {"drop_excess_requests": "yes"},
    }
    got = problems_of(raw)
    assert ("error", "$.providers.openai.keys[0].weight", "expected number, got string") in got
    assert ("error", "$.providers.openai.keys[0].models", "expected array or null, got string") in got
    assert ("error", "$.providers.openai.network_config.max_retries", "must be >= 0, got -1") in got
    assert ("error", "$.providers.openai.network_config.base_url", "expected string or null, got integer") in got
    assert ("error", "$.client.drop_excess_requests", "expected boolean, got string") in got


def test_unknown_keys_are_warnings_with_path():
    loaded = load_data({"client": {"colour": "blue"}, "extra_section": {}, "providers": {}}, {})
    got = {(w.severity, w.path) for w in loaded.warnings}
    assert got == {("warning", "$.client.colour"), ("warning", "$.extra_section")}


def test_missing_env_var_is_an_error_naming_the_variable_not_a_value():
    got = problems_of({"providers": {"openai": {"keys": [{"value": "env.NOT_SET_ANYWHERE"}]}}}, {})
    assert got == [("error", "$.providers.openai.keys[0].value", "environment variable NOT_SET_ANYWHERE is not set")]


@pytest.mark.parametrize(
    ("raw", "path", "fragment"),
    [
        ({"providers": {"mystery": {"keys": [{"value": "k"}]}}}, "$.providers.mystery", "unknown provider"),
        ({"providers": {"x": {"type": "cobol", "keys": [{"value": "k"}]}}}, "$.providers.x.type", "unknown provider type"),
        ({"providers": {"ollama": {}}}, "$.providers.ollama.network_config.base_url", "required"),
        ({"providers": {"mine": {"type": "openai", "keys": [{"value": "k"}]}}}, "$.providers.mine.network_config.base_url", "required"),
        ({"providers": {"openai": {"network_config": {"base_url": "ftp://x"}, "keys": [{"value": "k"}]}}}, "$.providers.openai.network_config.base_url", "not an http(s) URL"),
        ({"providers": {"openai": {"keys": [{"name": "a", "value": "k"}, {"name": "a", "value": "j"}]}}}, "$.providers.openai.keys[1].name", "duplicate key name"),
        ({"providers": {"openai": {"keys": [{"value": ""}]}}}, "$.providers.openai.keys[0].value", "empty API key"),
        ({"providers": {"azure": {"keys": [{"value": "k"}]}}}, "$.providers.azure.keys[0].azure_key_config.endpoint", "required for azure"),
        ({"providers": {"openai": {"keys": [{"value": "k"}], "network_config": {"retry_backoff_initial": 900, "retry_backoff_max": 100}}}}, "$.providers.openai.network_config.retry_backoff_max", "must be >="),
        ({"cluster_config": {"enabled": True, "peers": ["a:1"]}}, "$.cluster_config.enabled", "needs the PostgreSQL config store"),
        ({"cluster_config": {"discovery": {"allowed_address_space": ["10.0.0.0/8", "nope"]}}}, None, None),
        ({"config_store": {"type": "postgres", "config": {}}}, "$.config_store.config", "dsn or host"),
        ({"config_store": {"type": "mysql"}}, "$.config_store.type", "expected one of"),
    ],
)
def test_semantic_errors(raw, path, fragment):
    if path is None:  # cluster disabled: its details are still type-checked but not enforced
        load_data(raw, {})
        return
    got = problems_of(raw, {})
    assert any(p == path and fragment in m for _, p, m in got), got


def test_yaml_is_accepted(tmp_path):
    f = tmp_path / "config.yaml"
    f.write_text("providers:\n  openai:\n    keys:\n      - name: a\n        value: sk-x\n        models: ['*']\n")
    assert load_file(f, {}).config.providers["openai"].keys[0].value == "sk-x"


def test_invalid_json_is_one_clear_error(tmp_path):
    f = tmp_path / "config.json"
    f.write_text('{"providers": {')
    with pytest.raises(ConfigError) as info:
        load_file(f, {})
    assert info.value.problems[0].message.startswith("invalid JSON")


def run_cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "rainbridge", *args], capture_output=True, text=True, timeout=60, env=env)


def test_config_check_cli_lists_every_problem_and_exits_1(tmp_path):
    f = tmp_path / "bad.json"
    f.write_text(json.dumps({"providers": {"openai": {"keys": [{"value": "k", "weight": "x"}, {"value": 3}]}}, "nope": 1}))
    out = run_cli("config", "check", str(f))
    assert out.returncode == 1
    assert "error: $.providers.openai.keys[0].weight: expected number, got string" in out.stdout
    assert "error: $.providers.openai.keys[1].value: expected string, got integer" in out.stdout
    assert "warning: $.nope: unknown key (ignored)" in out.stdout


def test_config_check_cli_ok(tmp_path):
    f = tmp_path / "good.json"
    f.write_text(json.dumps({"providers": {"openai": {"keys": [{"value": "sk-secret-value"}]}}}))
    out = run_cli("config", "check", str(f))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "ok" in out.stdout
    assert "sk-secret-value" not in out.stdout + out.stderr


def test_serve_with_a_broken_config_lists_errors_and_exits_2(tmp_path):
    f = tmp_path / "bad.json"
    f.write_text(json.dumps({"providers": {"openai": {"keys": [{"value": "env.MISSING_FOR_SURE"}]}}, "client": {"max_request_body_size_mb": "big"}}))
    out = run_cli("serve", "--config", str(f), "--port", "0")
    assert out.returncode == 2
    assert "$.providers.openai.keys[0].value: environment variable MISSING_FOR_SURE is not set" in out.stderr
    assert "$.client.max_request_body_size_mb: expected integer, got string" in out.stderr


def test_version():
    out = run_cli("--version")
    assert out.returncode == 0 and "0.1.0" in out.stdout
