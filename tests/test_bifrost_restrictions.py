"""Bifrost restrictions once refused at start-up, now enforced through a running gateway
(issue 14): the governance plugin's ``required_headers`` (and ``client.required_headers``);
a custom provider's ``allowed_requests``; a virtual key's per-provider budgets and rate limits
(``provider_configs[].rate_limit`` / ``budget``, inline and by id), counted by the same
governance engine and counters as the key's own limits; a custom provider's
``request_path_overrides`` (paths under the base URL, and whole URLs); the client's
``header_filter_config`` on forwarded x-bf-eh-* headers.

One gateway, its config written as Bifrost's docs write it; clients are the official
openai SDK (and plain HTTP where the exact error body matters).
"""

from __future__ import annotations

import openai
import pytest

from support import GatewayProcess, http_json, provider_config, skip_window_edge
from tcp_proxy import TcpProxy

VK = "sk-bf-restrict-0123456789abcdef"
PER_PROVIDER = "sk-bf-perprov-0123456789abcdef"
PROVIDER_BUDGET = "sk-bf-provbudget-0123456789abcd"
SPILL = "sk-bf-spill-0123456789abcdef012"
TOKEN = "bifrost-restrict-admin-token"
PROXY_TOKEN = "proxy-secret-0123456789"


def bifrost_config(mock_url: str, elsewhere_url: str) -> dict:
    config = provider_config(mock_url)
    config["providers"]["chatonly"] = {
        "keys": [{"name": "k", "value": "sk-chatonly-0123456789", "models": ["*"], "weight": 1}],
        "network_config": {"base_url": mock_url},
        "custom_provider_config": {"base_provider_type": "openai", "allowed_requests": {"chat_completion": True, "embedding": False}},
    }
    config["providers"]["pathy"] = {
        "keys": [{"name": "k", "value": "sk-pathy-0123456789", "models": ["*"], "weight": 1}],
        "network_config": {"base_url": mock_url},
        "custom_provider_config": {"base_provider_type": "openai", "request_path_overrides": {
            "chat_completion": "chat/completions",  # Bifrost adds the leading slash
            "chat_completion_stream": "/v1/chat/completions",
            "embedding": elsewhere_url + "/v1/embeddings",  # a whole URL: another origin
            "text_completion": "",  # empty: the default path
        }},
    }
    return config | {
        "client": {"required_headers": ["X-Correlation-ID", "X-Proxy-Token=env.RESTRICT_PROXY_TOKEN"],
                   "header_filter_config": {"denylist": ["X-Mock-Fail-Status"]}},
        "plugins": [{"name": "governance", "enabled": True,
                     "config": {"is_vk_mandatory": True, "required_headers": ["X-Tenant-ID", "x-correlation-id"]}}],
        "pricing_overrides": {"anthropic/claude-3-5-haiku": {"input_cost_per_token": 1.0, "output_cost_per_token": 1.0}},
        "governance": {
            "rate_limits": [{"id": "two-per-hour", "request_max_limit": 2, "request_reset_duration": "1h"},
                            {"id": "one-per-hour", "metric": "requests", "request_max_limit": 1, "request_reset_duration": "1h"}],
            # Bifrost's model limits: one key's requests for one model.
            "model_configs": [{"id": "restrict-gpt-4.1", "model_name": "gpt-4.1", "provider": "openai", "scope": "virtual_key",
                               "scope_id": "restrict", "rate_limit_ids": ["one-per-hour"]}],
            "budgets": [{"id": "micro", "max_limit": 0.000001, "reset_duration": "1d"}],
            "virtual_keys": [
                {"id": "restrict", "name": "restrict", "value": VK},
                # The key's own limit counts every provider; openai has a tighter one of its own.
                {"id": "perprov", "name": "perprov", "value": PER_PROVIDER,
                 "rate_limit": {"request_max_limit": 4, "request_reset_duration": "1h"},
                 "provider_configs": [{"provider": "openai", "allowed_models": ["*"], "rate_limit_id": "two-per-hour"},
                                      {"provider": "anthropic", "allowed_models": ["*"]}]},
                # A bare model goes to openai while its own limit has room, then to anthropic.
                {"id": "spill", "name": "spill", "value": SPILL,
                 "provider_configs": [{"provider": "openai", "weight": 1, "allowed_models": ["*"],
                                       "rate_limit": {"request_max_limit": 1, "request_reset_duration": "1h"}},
                                      {"provider": "anthropic", "weight": 0, "allowed_models": ["*"]}]},
                {"id": "provbudget", "name": "provbudget", "value": PROVIDER_BUDGET,
                 "provider_configs": [{"provider": "openai", "allowed_models": ["*"]},
                                      {"provider": "anthropic", "allowed_models": ["*"], "budget_id": "micro"}]},
            ]},
    }


@pytest.fixture(scope="module")
def elsewhere(mock):
    """Another origin (a TCP proxy to the fake provider) that only a whole-URL override names."""
    host, port = mock.url.removeprefix("http://").split(":")
    proxy = TcpProxy(host, int(port))
    proxy.start()
    yield proxy
    proxy.close()


@pytest.fixture(scope="module")
def gw(mock, elsewhere, tmp_path_factory):
    gateway = GatewayProcess(tmp_path_factory.mktemp("bifrost-restrict"),
                             bifrost_config(mock.url, f"http://{elsewhere.host}:{elsewhere.port}"),
                             env={"RAINBRIDGE_ADMIN_TOKEN": TOKEN, "RESTRICT_PROXY_TOKEN": PROXY_TOKEN})
    yield gateway
    gateway.stop()


def client(gw, headers: dict | None = None, key: str = VK) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0, timeout=20, default_headers=headers)


def chat(c: openai.OpenAI) -> str:
    reply = c.chat.completions.create(model="openai/gpt-4o", messages=[{"role": "user", "content": "hi"}])
    return reply.choices[0].message.content


TENANT = {"X-Tenant-ID": "acme", "X-Correlation-ID": "c-1", "X-Proxy-Token": PROXY_TOKEN}


def test_required_headers_present_in_any_case_serve_the_request(gw):
    assert chat(client(gw, {"x-tenant-id": "acme", "X-CORRELATION-ID": "c-1", "x-proxy-token": PROXY_TOKEN}))


def test_a_request_missing_required_headers_is_a_400_naming_them(gw):
    status, _, body = http_json("POST", gw.url + "/v1/chat/completions",
                                {"model": "openai/gpt-4o", "messages": [{"role": "user", "content": "hi"}]},
                                headers={"authorization": f"Bearer {VK}", "x-tenant-id": "acme", "x-proxy-token": PROXY_TOKEN})
    assert status == 400
    assert body["error"]["type"] == "missing_required_headers"
    assert body["error"]["message"] == "missing required headers: X-Correlation-ID"


def test_a_request_without_any_required_header_names_every_one(gw):
    with pytest.raises(openai.BadRequestError) as caught:
        chat(client(gw))
    assert caught.value.body["type"] == "missing_required_headers"
    assert caught.value.body["message"] == "missing required headers: X-Correlation-ID, X-Proxy-Token, X-Tenant-ID"


def test_an_empty_required_header_counts_as_missing(gw):
    status, _, body = http_json("POST", gw.url + "/v1/chat/completions",
                                {"model": "openai/gpt-4o", "messages": [{"role": "user", "content": "hi"}]},
                                headers={"authorization": f"Bearer {VK}", "x-tenant-id": "", "x-correlation-id": "c-1",
                                         "x-proxy-token": PROXY_TOKEN})
    assert status == 400 and body["error"]["message"] == "missing required headers: X-Tenant-ID"


def test_a_required_header_with_the_wrong_value_is_a_400_that_never_shows_the_value(gw):
    with pytest.raises(openai.BadRequestError) as caught:
        chat(client(gw, TENANT | {"X-Proxy-Token": "guess"}))
    assert caught.value.body["type"] == "missing_required_headers"
    assert caught.value.body["message"] == "invalid required header value: X-Proxy-Token"
    assert PROXY_TOKEN not in gw.log() and "guess" not in gw.log()


def test_required_headers_apply_to_the_anthropic_route_and_model_list(gw):
    status, _, body = http_json("POST", gw.url + "/anthropic/v1/messages",
                                {"model": "anthropic/claude-3-5-haiku", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]},
                                headers={"x-api-key": VK})
    assert status == 400 and body["error"]["type"] == "missing_required_headers"
    with pytest.raises(openai.BadRequestError):
        client(gw).models.list()
    assert client(gw, TENANT).models.list().data


def test_health_needs_no_required_header(gw):
    status, _, _ = http_json("GET", gw.url + "/health")
    assert status == 200


def test_a_request_type_the_provider_allows_is_served(gw):
    reply = client(gw, TENANT).chat.completions.create(model="chatonly/gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content


@pytest.mark.parametrize("call", [
    lambda c: c.embeddings.create(model="chatonly/text-embedding-3-small", input="hi"),
    lambda c: list(c.chat.completions.create(model="chatonly/gpt-4o", messages=[{"role": "user", "content": "hi"}], stream=True)),
    lambda c: c.completions.create(model="chatonly/gpt-3.5-turbo-instruct", prompt="hi"),
], ids=["embedding set false", "chat stream omitted", "text completion omitted"])
def test_a_request_type_the_provider_does_not_allow_is_a_400(gw, call):
    with pytest.raises(openai.BadRequestError) as caught:
        call(client(gw, TENANT))
    assert caught.value.body["code"] == "request_type_not_allowed"
    assert "'chatonly'" in caught.value.body["message"]


def test_a_provider_without_list_models_is_left_out_of_the_model_list(gw):
    owners = {m.owned_by for m in client(gw, TENANT).models.list().data}
    assert "openai" in owners and "chatonly" not in owners


def test_a_fallback_that_does_not_allow_the_type_is_skipped(gw, mock):
    """The first attempt fails once (the fake provider's fail-first); the stream then skips
    chatonly (no chat_completion_stream) and goes to the next fallback."""
    keys = ("sk-chatonly-0123456789", "sk-ant-test-0123456789")
    before = [mock.stats()["by_key"].get(k, 0) for k in keys]
    c = client(gw, TENANT | {"x-bf-eh-x-mock-fail-first": "1", "x-bf-eh-x-mock-id": "skip-fallback"})
    chunks = list(c.chat.completions.create(model="openai/gpt-4o", messages=[{"role": "user", "content": "hi"}], stream=True,
                                            extra_body={"fallbacks": ["chatonly/gpt-4o", "anthropic/claude-3-5-haiku"]}))
    assert chunks
    after = [mock.stats()["by_key"].get(k, 0) for k in keys]
    assert after[0] == before[0] and after[1] == before[1] + 1


def ask(gw, key: str, model: str) -> str:
    reply = client(gw, TENANT, key).chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
    return reply.choices[0].message.content


def test_a_per_provider_rate_limit_refuses_that_provider_only_and_the_keys_own_limit_counts_all(gw):
    skip_window_edge(3600, 30)
    assert ask(gw, PER_PROVIDER, "openai/gpt-4o") and ask(gw, PER_PROVIDER, "openai/gpt-4o")
    with pytest.raises(openai.RateLimitError) as caught:
        ask(gw, PER_PROVIDER, "openai/gpt-4o")  # openai's own limit: 2 per hour
    assert caught.value.body["code"] == "request_limited"
    assert "virtual key 'perprov' on provider 'openai'" in caught.value.body["message"]
    assert ask(gw, PER_PROVIDER, "anthropic/claude-3-5-haiku") and ask(gw, PER_PROVIDER, "anthropic/claude-3-5-haiku")
    with pytest.raises(openai.RateLimitError) as caught:
        ask(gw, PER_PROVIDER, "anthropic/claude-3-5-haiku")  # the key's own limit: 4 per hour, all providers
    assert "virtual key 'perprov';" in caught.value.body["message"]
    status, _, usage = http_json("GET", gw.url + "/api/governance/virtual-keys/perprov/usage",
                                 headers={"authorization": f"Bearer {TOKEN}"})
    assert status == 200
    (own,) = [level for level in usage["levels"] if level["level"] == "virtual key"]
    (per,) = [level for level in usage["levels"] if level["level"] == "provider config"]
    assert own["rate_limit"]["request"]["current_usage"] == 4
    assert per["provider"] == "openai" and per["rate_limit"]["request"] == per["rate_limit"]["request"] | {
        "max_limit": 2, "current_usage": 2}


def test_a_per_provider_budget_spent_refuses_that_provider_only(gw):
    assert ask(gw, PROVIDER_BUDGET, "anthropic/claude-3-5-haiku")  # costs far more than the $0.000001 budget
    with pytest.raises(openai.APIStatusError) as caught:
        ask(gw, PROVIDER_BUDGET, "anthropic/claude-3-5-haiku")
    assert caught.value.status_code == 402 and caught.value.body["code"] == "budget_exceeded"
    assert "on provider 'anthropic'" in caught.value.body["message"]
    assert ask(gw, PROVIDER_BUDGET, "openai/gpt-4o")  # the key's other provider has no budget


def paths_used(mock, before: dict) -> dict:
    after = mock.stats()["by_path"]
    return {p: n - before.get(p, 0) for p, n in after.items() if n != before.get(p, 0)}


def test_a_request_path_override_sends_the_request_to_that_path(gw, mock):
    before = mock.stats()["by_path"]
    assert ask(gw, VK, "pathy/gpt-4o")
    assert paths_used(mock, before) == {"/chat/completions": 1}


def test_a_streams_own_override_wins_over_the_plain_types(gw, mock):
    before = mock.stats()["by_path"]
    chunks = list(client(gw, TENANT).chat.completions.create(model="pathy/gpt-4o", stream=True,
                                                             messages=[{"role": "user", "content": "hi"}]))
    assert chunks
    assert paths_used(mock, before) == {"/v1/chat/completions": 1}


def test_an_empty_override_keeps_the_default_path(gw, mock):
    before = mock.stats()["by_path"]
    assert client(gw, TENANT).completions.create(model="pathy/gpt-3.5-turbo-instruct", prompt="hi").choices
    assert paths_used(mock, before) == {"/v1/completions": 1}


def test_a_whole_url_override_sends_the_request_to_that_origin(gw, mock, elsewhere):
    embed = client(gw, TENANT).embeddings.create
    before = mock.stats()["by_path"]
    assert embed(model="pathy/text-embedding-3-small", input="hi").data
    assert paths_used(mock, before) == {"/v1/embeddings": 1}
    elsewhere.cut()  # the other origin gone: the request fails, though the default URL still answers
    with pytest.raises(openai.APIStatusError) as caught:
        embed(model="pathy/text-embedding-3-small", input="hi")
    assert caught.value.status_code >= 500
    assert embed(model="openai/text-embedding-3-small", input="hi").data


def test_a_denylisted_extra_header_is_not_forwarded_and_the_request_is_served(gw):
    # Forwarded, the fake provider would answer 500 (the positive control: fail-first above).
    c = client(gw, TENANT | {"x-bf-eh-x-mock-fail-status": "500"})
    assert c.chat.completions.create(model="openai/gpt-4o", messages=[{"role": "user", "content": "hi"}]).choices


def test_an_allowlist_forwards_only_the_extra_headers_it_names(mock, start_gateway):
    gateway = start_gateway(provider_config(mock.url) | {"client": {"header_filter_config": {"allowlist": ["x-mock-id"]}}})
    mock_id = "allowlisted-extra-header"
    before = mock.stats()["by_mock_id"].get(mock_id, 0)
    c = openai.OpenAI(base_url=gateway.url + "/v1", api_key="unused", max_retries=0, timeout=20,
                      default_headers={"x-bf-eh-x-mock-id": mock_id, "x-bf-eh-x-mock-fail-status": "500"})
    assert c.chat.completions.create(model="openai/gpt-4o", messages=[{"role": "user", "content": "hi"}]).choices
    assert mock.stats()["by_mock_id"].get(mock_id, 0) == before + 1  # named: forwarded; fail-status: dropped


def test_a_bare_model_goes_past_a_provider_whose_own_limit_is_spent(gw, mock):
    skip_window_edge(3600, 30)
    keys = ("sk-test-openai-0123456789", "sk-ant-test-0123456789")
    before = [mock.stats()["by_key"].get(k, 0) for k in keys]
    assert ask(gw, SPILL, "gpt-4o") and ask(gw, SPILL, "gpt-4o")
    after = [mock.stats()["by_key"].get(k, 0) for k in keys]
    assert [a - b for a, b in zip(after, before, strict=True)] == [1, 1]
    with pytest.raises(openai.RateLimitError):
        ask(gw, SPILL, "openai/gpt-4o")  # named, the spent provider is refused


def test_a_virtual_key_scoped_model_limit_counts_that_keys_requests_for_that_model_only(gw):
    skip_window_edge(3600, 30)
    assert ask(gw, VK, "openai/gpt-4.1")
    with pytest.raises(openai.RateLimitError) as caught:
        ask(gw, VK, "openai/gpt-4.1")
    assert "model limit 'restrict-gpt-4.1'" in caught.value.body["message"]
    assert ask(gw, VK, "openai/gpt-4o")  # another model
    assert ask(gw, PROVIDER_BUDGET, "openai/gpt-4.1") and ask(gw, PROVIDER_BUDGET, "openai/gpt-4.1")  # another key


def test_a_global_model_limit_counts_requests_without_a_virtual_key(mock, start_gateway):
    skip_window_edge(3600, 30)
    config = provider_config(mock.url) | {"governance": {
        "rate_limits": [{"id": "rpm", "metric": "requests", "request_max_limit": 1, "request_reset_duration": "1h"}],
        "model_configs": [{"id": "mini-global", "model_name": "gpt-4o-mini", "provider": "openai", "rate_limit_ids": ["rpm"]}]}}
    gateway = start_gateway(config)
    c = openai.OpenAI(base_url=gateway.url + "/v1", api_key="no-virtual-key", max_retries=0, timeout=20)

    def ask_anonymously(model: str):
        return c.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])

    assert ask_anonymously("openai/gpt-4o-mini").choices
    with pytest.raises(openai.RateLimitError) as caught:
        ask_anonymously("openai/gpt-4o-mini")
    assert "model limit 'mini-global'" in caught.value.body["message"]
    assert ask_anonymously("openai/gpt-4o").choices  # other models are not counted
