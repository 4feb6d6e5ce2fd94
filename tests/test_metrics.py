"""Bifrost's request metrics at /metrics: a real gateway serves real requests through the fake
provider, is scraped, and prometheus_client's own parser reads the answer; names, types,
labels and values are checked against what the requests did."""

from __future__ import annotations

import json
import urllib.request

import pytest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from rainbridge.governance.pricing import Pricing
from support import GatewayProcess, http_json

VK = "sk-rb-metrics-" + "a" * 20
NET = {"max_retries": 1, "retry_backoff_initial": 10, "retry_backoff_max": 20}


def config(mock_url: str, **client) -> dict:
    net = {"base_url": mock_url, **NET}
    return {
        "client": {"prometheus_labels": ["env"], **client},
        "providers": {
            "openai": {"keys": [{"name": "good", "value": "sk-good-metrics"}], "network_config": net},
            "flaky": {"type": "openai", "keys": [{"name": "broken", "value": "sk-status-500-metrics"}], "network_config": net},
        },
        "governance": {
            "customers": [{"name": "acme"}],
            "teams": [{"name": "research", "customer_id": "acme"}],
            "virtual_keys": [{"name": "alice", "value": VK, "team_id": "research"}],
        },
    }


def scrape(url: str, accept: str | None = None) -> tuple[str, str]:
    req = urllib.request.Request(url + "/metrics", headers={"accept": accept} if accept else {})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.headers["content-type"], resp.read().decode()


def samples(text: str) -> dict[str, list]:
    """sample name -> [(labels, value)], through the official text parser."""
    out: dict[str, list] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def types(text: str) -> dict[str, str]:
    return {f.name: f.type for f in text_string_to_metric_families(text)}


def chat(url: str, model: str, headers: dict | None = None, **body) -> tuple[int, dict]:
    status, _, reply = http_json("POST", url + "/v1/chat/completions",
                                 {"model": model, "messages": [{"role": "user", "content": "hello there"}], **body}, headers)
    return status, reply


def stream(url: str, model: str, headers: dict) -> dict:
    body = json.dumps({"model": model, "stream": True, "stream_options": {"include_usage": True},
                       "messages": [{"role": "user", "content": "tell me a story"}]}).encode()
    req = urllib.request.Request(url + "/v1/chat/completions", body, {"content-type": "application/json", **headers})
    usage = None
    with urllib.request.urlopen(req, timeout=10) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith("data: {") and '"usage":{' in line:
                usage = json.loads(line[6:])["usage"]
    assert usage is not None
    return usage


def one(found: dict[str, list], name: str, **labels) -> float:
    hits = [v for lab, v in found.get(name, []) if all(lab.get(k) == want for k, want in labels.items())]
    assert len(hits) == 1, (name, labels, found.get(name))
    return hits[0]


@pytest.fixture
def gateway(mock, tmp_path):
    gw = GatewayProcess(tmp_path, config(mock.url))
    yield gw
    gw.stop()


def test_metric_names_types_and_labels_are_bifrosts(gateway):
    assert chat(gateway.url, "openai/gpt-4o-mini")[0] == 200
    content_type, text = scrape(gateway.url)
    assert content_type.startswith("text/plain; version=0.0.4")
    kinds = types(text)
    for name in ("http_requests", "bifrost_upstream_requests", "bifrost_success_requests", "bifrost_error_requests",
                 "bifrost_input_tokens", "bifrost_output_tokens", "bifrost_cost", "bifrost_cache_hits",
                 "rainbridge_governance_decisions", "rainbridge_log_writer_written"):
        assert kinds[name] == "counter", name
    for name in ("http_request_duration_seconds", "http_request_size_bytes", "http_response_size_bytes",
                 "bifrost_upstream_latency_seconds", "bifrost_stream_first_token_latency_seconds",
                 "bifrost_stream_inter_token_latency_seconds"):
        assert kinds[name] == "histogram", name
    for name in ("rainbridge_provider_queue_depth", "rainbridge_provider_active_requests", "rainbridge_store_up"):
        assert kinds[name] == "gauge", name
    found = samples(text)
    [(labels, _)] = found["bifrost_upstream_requests_total"]
    assert set(labels) == {"provider", "model", "method", "virtual_key_id", "virtual_key_name", "selected_key_id",
                           "selected_key_name", "number_of_retries", "fallback_index", "team_id", "team_name",
                           "customer_id", "customer_name", "env"}
    [(labels, _)] = found["http_requests_total"]
    assert set(labels) == {"path", "method", "status", "env"}
    assert {lab["is_success"] for lab, _ in found["bifrost_upstream_latency_seconds_count"]} == {"true"}


def test_values_after_success_error_stream_and_governed_requests(gateway):
    url = gateway.url
    vk = {"authorization": f"Bearer {VK}", "x-bf-dim-env": "prod"}
    status, first = chat(url, "openai/gpt-4o-mini", vk)
    status2, second = chat(url, "openai/gpt-4o-mini", vk)
    assert status == status2 == 200
    streamed = stream(url, "openai/gpt-4o-mini", vk)
    assert chat(url, "flaky/gpt-4o", {"x-bf-dim-env": "test"})[0] == 500  # 1 retry, then the error
    assert chat(url, "openai/gpt-4o-mini", {"authorization": "Bearer sk-rb-unknown-key-000000"})[0] == 403
    found = samples(scrape(url)[1])

    governed = {"provider": "openai", "model": "gpt-4o-mini", "virtual_key_name": "alice", "team_name": "research",
                "customer_name": "acme", "env": "prod", "selected_key_name": "good"}
    plain = {**governed, "method": "chat_completion"}
    assert one(found, "bifrost_upstream_requests_total", **plain) == 2
    assert one(found, "bifrost_success_requests_total", **plain) == 2
    assert one(found, "bifrost_input_tokens_total", **plain) == first["usage"]["prompt_tokens"] + second["usage"]["prompt_tokens"]
    assert one(found, "bifrost_output_tokens_total", **plain) == (first["usage"]["completion_tokens"]
                                                                  + second["usage"]["completion_tokens"])
    price = Pricing().price("openai", "gpt-4o-mini")
    tokens_in = first["usage"]["prompt_tokens"] + second["usage"]["prompt_tokens"]
    tokens_out = first["usage"]["completion_tokens"] + second["usage"]["completion_tokens"]
    assert one(found, "bifrost_cost_total", **plain) == pytest.approx(
        tokens_in * price.input_per_token + tokens_out * price.output_per_token)
    assert one(found, "bifrost_upstream_latency_seconds_count", **plain, is_success="true") == 2

    streaming = {**governed, "method": "chat_completion_stream"}
    assert one(found, "bifrost_input_tokens_total", **streaming) == streamed["prompt_tokens"]
    assert one(found, "bifrost_output_tokens_total", **streaming) == streamed["completion_tokens"]
    assert one(found, "bifrost_stream_first_token_latency_seconds_count", **streaming) == 1
    assert one(found, "bifrost_stream_inter_token_latency_seconds_count", **streaming) >= 2

    failed = {"provider": "flaky", "model": "gpt-4o", "selected_key_name": "broken", "number_of_retries": "1",
              "virtual_key_id": "", "env": "test"}
    assert one(found, "bifrost_upstream_requests_total", **failed) == 1
    [(labels, count)] = found["bifrost_error_requests_total"]
    assert count == 1 and labels["provider"] == "flaky", labels
    assert labels["reason"] == "server_error"  # the error type the client got, labels
    assert one(found, "bifrost_success_requests_total", **failed) == 0
    assert one(found, "bifrost_upstream_latency_seconds_count", **failed, is_success="false") == 1

    path = "/v1/chat/completions"
    assert one(found, "http_requests_total", path=path, method="POST", status="200", env="prod") == 3
    assert one(found, "http_requests_total", path=path, status="500", env="test") == 1
    assert one(found, "http_requests_total", path=path, status="403", env="") == 1
    assert one(found, "http_response_size_bytes_count", path=path, status="200", env="prod") == 2  # streams: no size
    assert one(found, "http_request_size_bytes_count", path=path, status="200", env="prod") == 3

    assert one(found, "rainbridge_governance_decisions_total", decision="allowed") == 3
    assert one(found, "rainbridge_governance_decisions_total", decision="virtual_key_not_found") == 1
    # The refused request reached no provider: no bifrost_* series of its own.
    assert sum(v for _, v in found["bifrost_upstream_requests_total"]) == 4
    assert one(found, "rainbridge_provider_active_requests", provider="openai") == 0
    assert one(found, "rainbridge_provider_queue_depth", provider="flaky") == 0


def test_openmetrics_when_the_scraper_asks_for_it(gateway):
    assert chat(gateway.url, "openai/gpt-4o-mini")[0] == 200
    content_type, text = scrape(gateway.url, "application/openmetrics-text; version=1.0.0,text/plain;q=0.5")
    assert content_type.startswith("application/openmetrics-text")
    assert text.endswith("# EOF\n")
    names = {f.name: f.type for f in openmetrics_families(text)}
    assert names["bifrost_upstream_requests"] == "counter"
    assert names["bifrost_upstream_latency_seconds"] == "histogram"


def test_a_label_past_200_values_reads_other(gateway):
    for i in range(203):
        assert chat(gateway.url, "openai/gpt-4o-mini", {"x-bf-dim-env": f"env-{i}"})[0] == 200
    found = samples(scrape(gateway.url)[1])
    envs = {lab["env"]: v for lab, v in found["bifrost_upstream_requests_total"]}
    assert len(envs) == 201 and envs["other"] == 3
    assert sum(envs.values()) == 203  # nothing lost: only the split is coarser


def test_telemetry_plugin_disabled_serves_no_request_metrics(mock, tmp_path):
    gw = GatewayProcess(tmp_path, {**config(mock.url), "plugins": [{"name": "telemetry", "enabled": False}]})
    try:
        assert chat(gw.url, "openai/gpt-4o-mini")[0] == 200
        found = samples(scrape(gw.url)[1])
        assert "bifrost_upstream_requests_total" not in found and "http_requests_total" not in found
        assert "rainbridge_provider_queue_depth" in found
    finally:
        gw.stop()


@pytest.mark.parametrize("bodies", [
    [b'{"usage":{"prompt_tokens":12,"completion_tokens":30,"total_tokens":42}}'] * 3,
    [b'{"usage": {"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12}}',
     b'{"choices":[{"message":{"content":"say \\"prompt_tokens\\":99,"}}],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}'],
    [b'{"usage":{"prompt_tokens":3,"completion_tokens":4}}', b'{"usage":{"input_tokens":5,"output_tokens":6}}'],
    # long answers: only their tails are searched first, and a usage before the tail is still read
    [b'{"choices":[{"message":{"content":"' + b"x" * 5000 + b'"}}],"usage":{"prompt_tokens":8,"completion_tokens":900}}'] * 2,
    [b'{"choices":[{"message":{"content":"' + b"x" * 5000 + b'"}}],"usage":{"prompt_tokens":8,"completion_tokens":900}}',
     b'{"usage":{"prompt_tokens":10,"completion_tokens":20},"padding":"' + b"y" * 1000 + b'"}'],
])
def test_batched_token_counts_equal_reading_each_answer_alone(bodies):
    from rainbridge.gateway.record import extract_usage
    from rainbridge.telemetry.requests import _tokens

    want_in = sum(extract_usage(b)[0] for b in bodies)
    want_out = sum(extract_usage(b)[1] for b in bodies)
    none = [None] * len(bodies)
    assert _tokens(bodies, none, none, none) == (want_in, want_out, want_in, want_out)
