"""Bifrost config forms at load time (issue 14): every setting that restricts access, spend
or routing is enforced or refused with its path, never warned about and dropped."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import pytest

from rainbridge.config.load import ConfigError, load_data
from rainbridge.gateway.rules import Facts
from rainbridge.gateway.rules_config import rules_from_config
from rainbridge.governance.normalize import normalize

ENV: dict[str, str] = {}
PROVIDER = {"keys": [{"name": "first", "value": "sk-a-0123456789"}, {"name": "second", "value": "sk-b-0123456789"}]}


def base() -> dict:
    return {"providers": {"openai": copy.deepcopy(PROVIDER)}}


def with_vk(**grant) -> dict:
    config = base()
    config["governance"] = {"virtual_keys": [
        {"id": "vk1", "name": "vk1", "value": "sk-bf-vk1-0123456789", "provider_configs": [{"provider": "openai", **grant}]},
    ]}
    return config


def errors_of(config: dict) -> dict[str, str]:
    with pytest.raises(ConfigError) as caught:
        load_data(config, ENV)
    return {p.path: p.message for p in caught.value.errors}


# --------------------------------------------------------------------------- enforced


def test_governance_plugin_list_form_makes_virtual_keys_mandatory():
    config = base() | {"plugins": [{"name": "governance", "enabled": True, "config": {"is_vk_mandatory": True}}]}
    assert load_data(config, ENV).config.governance.is_vk_mandatory is True


def test_governance_plugin_helm_map_form_makes_virtual_keys_mandatory():
    # The seed HA example's values: plugins.governance.{enabled, config.is_vk_mandatory}.
    config = base() | {"plugins": {"governance": {"enabled": True, "config": {"is_vk_mandatory": True}}}}
    assert load_data(config, ENV).config.governance.is_vk_mandatory is True


def test_governance_plugin_without_enabled_field_is_applied():
    config = base() | {"plugins": [{"name": "governance", "config": {"is_vk_mandatory": True}}]}
    assert load_data(config, ENV).config.governance.is_vk_mandatory is True


def test_disabled_governance_plugin_is_not_applied_and_says_so():
    config = base() | {"plugins": [{"name": "governance", "enabled": False, "config": {"is_vk_mandatory": True}}]}
    loaded = load_data(config, ENV)
    assert loaded.config.governance.is_vk_mandatory is False
    assert [p.path for p in loaded.warnings] == ["$.plugins[0].enabled"]


def test_governance_plugin_is_vk_mandatory_false_keeps_the_file_setting():
    config = base() | {"plugins": [{"name": "governance", "enabled": True, "config": {"is_vk_mandatory": False}}],
                       "governance": {"is_vk_mandatory": True}}
    assert load_data(config, ENV).config.governance.is_vk_mandatory is True


@pytest.mark.parametrize("where", ["top", "governance"])
def test_dashboard_login_on_inference_requires_a_virtual_key(where):
    auth = {"is_enabled": True, "admin_username": "admin", "admin_password": "pw"}
    config = base() | ({"auth_config": auth} if where == "top" else {"governance": {"auth_config": auth}})
    loaded = load_data(config, ENV)
    assert loaded.config.governance.is_vk_mandatory is True
    assert any("auth_config" in p.path for p in loaded.warnings)


def test_dashboard_login_with_inference_auth_disabled_leaves_inference_open():
    config = base() | {"auth_config": {"is_enabled": True, "disable_auth_on_inference": True}}
    assert load_data(config, ENV).config.governance.is_vk_mandatory is False


def test_unsupported_plugin_is_warned_about_by_name():
    config = base() | {"plugins": [{"name": "semantic_cache", "enabled": True, "config": {}}]}
    (warning,) = load_data(config, ENV).warnings
    assert warning.path == "$.plugins[0]" and "semantic_cache" in warning.message


def test_a_disabled_key_serves_nothing_and_a_provider_with_every_key_disabled_is_skipped():
    """Bifrost's per-key switch (a homelab deployment's gemini-key-01 has "enabled": false): the
    key must not be used, and a keyless provider whose only key is off must not serve."""
    config = {"providers": {
        "gemini": {"keys": [{"name": "off", "value": "g-1", "enabled": False}, {"name": "on", "value": "g-2", "enabled": True}]},
        "ollama": {"keys": [{"name": "local", "value": "", "enabled": False, "ollama_key_config": {"url": "http://127.0.0.1:11434"}}]}}}
    loaded = load_data(config, {})
    assert [k.name for k in loaded.config.providers["gemini"].keys] == ["on"]
    assert "ollama" not in loaded.config.providers
    assert [w.path for w in loaded.warnings] == ["$.providers.ollama"]
    with pytest.raises(ConfigError) as caught:
        load_data({"providers": {"gemini": {"keys": [{"name": "k", "value": "g", "enabled": "no"}]}}}, {})
    assert [p.path for p in caught.value.errors] == ["$.providers.gemini.keys[0].enabled"]


def test_usage_already_spent_is_refused_by_path_and_zero_usage_is_quiet():
    """Bifrost writes its counters into budgets and rate limits (a production-rag deployment
    carries current_usage 0.0): 0 changes nothing; more cannot be carried over, and starting
    from 0 would allow more spend than the file says."""
    def governance(usage):
        return {"budgets": [{"id": "b", "virtual_key_id": "vk", "max_limit": 10.0, "reset_duration": "1M", "current_usage": usage}],
                "rate_limits": [{"id": "r", "request_max_limit": 5, "request_reset_duration": "1m", "request_current_usage": 0}],
                "virtual_keys": [{"id": "vk", "name": "vk", "value": "sk-bf-vk-0123456789", "rate_limit_id": "r"}]}
    assert load_data({"governance": governance(0.0)}, {}).warnings == []
    with pytest.raises(ConfigError) as caught:
        load_data({"governance": governance(7.5)}, {})
    assert [p.path for p in caught.value.errors] == ["$.governance.budgets[0].current_usage"]


def test_a_comment_inside_allowed_requests_is_ignored_and_the_allow_list_still_holds():
    """A deployment documents its switches with "_comment_list_models": "…" inside
    allowed_requests; Bifrost ignores names it does not know, so the file starts, warned."""
    allowed = {"_comment_list_models": "MUST stay false", "list_models": False, "chat_completion": True}
    config = {"providers": {"local": {"keys": [{"name": "k", "value": "EMPTY"}], "network_config": {"base_url": "http://127.0.0.1:9"},
                                      "custom_provider_config": {"base_provider_type": "openai", "allowed_requests": allowed}}}}
    loaded = load_data(config, {})
    assert loaded.config.providers["local"].custom_provider_config.allowed_requests == {"list_models": False, "chat_completion": True}
    assert [w.path for w in loaded.warnings] == ["$.providers.local.custom_provider_config.allowed_requests._comment_list_models"]
    allowed["chat_completion"] = "yes"  # a request type's switch must still be a boolean
    with pytest.raises(ConfigError):
        load_data(config, {})


def test_mcp_servers_and_an_enabled_vector_store_are_warned_about_not_dropped_silently():
    """Bifrost's withpostgresmcpclientsinconfig and withlocalcache examples: rainbridge has
    neither MCP nor a cache, so each section is reported as ignored by its path."""
    config = base() | {
        "mcp": {"client_configs": [{"name": "WeatherService", "connection_type": "http", "http_url": "http://127.0.0.1:8080/mcp"}]},
        "vector_store": {"enabled": True, "type": "weaviate", "config": {"scheme": "http", "host": "localhost:9000"}}}
    assert sorted(w.path for w in load_data(config, ENV).warnings) == ["$.mcp.client_configs", "$.vector_store"]
    quiet = base() | {"mcp": {"client_configs": []}, "vector_store": {"enabled": False, "type": "weaviate"}}
    assert load_data(quiet, ENV).warnings == []


@pytest.mark.parametrize(("grant", "expected"), [
    ({"keys": [{"name": "second"}]}, ["second"]),
    ({"keys": [{"key_id": "k-2"}]}, ["k-2"]),
    ({"key_ids": ["first"], "keys": [{"name": "second"}]}, ["first", "second"]),
    ({"key_ids": ["*"]}, None),
    ({"keys": [{"name": "*"}]}, None),
    ({"key_ids": []}, []),
    ({}, None),
])
def test_virtual_key_provider_key_restriction_forms(grant, expected):
    config = load_data(with_vk(**grant), ENV).config
    (vk,) = normalize(config.governance, {"openai"}, 0).virtual_keys
    assert vk.provider_configs[0].key_ids == expected


def test_budget_that_names_its_owner_is_attached_to_that_owner():
    config = with_vk()
    config["governance"]["budgets"] = [{"max_limit": 5, "reset_duration": "1d", "virtual_key_id": "vk1"}]
    loaded = load_data(config, ENV).config
    (vk,) = normalize(loaded.governance, {"openai"}, 0).virtual_keys
    assert [(b.max_limit, b.reset_duration) for b in vk.budgets] == [(5, "1d")]


def test_postgres_port_as_digit_string_loads():
    config = base() | {"config_store": {"enabled": True, "type": "postgres",
                                        "config": {"host": "db", "port": "5432", "db_name": "bifrost"}}}
    assert load_data(config, ENV).config.config_store.config.port == 5432


@pytest.mark.parametrize("plugins", [
    [{"name": "governance", "enabled": True, "config": {"required_headers": ["X-Tenant-ID", "x-trace"]}}],
    {"governance": {"enabled": True, "config": {"required_headers": ["X-Tenant-ID", "x-trace"]}}},
], ids=["config.json list", "Helm map"])
def test_governance_plugin_required_headers_join_client_required_headers(plugins):
    config = base() | {"client": {"required_headers": ["X-Trace"]}, "plugins": plugins}
    loaded = load_data(config, ENV)
    assert loaded.config.client.required_headers == ["X-Trace", "X-Tenant-ID"]


def test_vk_per_provider_limits_inline_and_by_id_become_the_grants_own():
    config = with_vk(budget={"max_limit": 1, "reset_duration": "1d"}, rate_limit_id="r")
    config["governance"]["virtual_keys"][0]["provider_configs"].append({"provider": "azure", "budget_id": "shared"})
    config["governance"] |= {"budgets": [{"id": "shared", "max_limit": 2, "reset_duration": "1M"}],
                             "rate_limits": [{"id": "r", "request_max_limit": 5, "request_reset_duration": "1m"}]}
    loaded = load_data(config, ENV).config
    (vk,) = normalize(loaded.governance, {"openai", "azure"}, 0).virtual_keys
    openai_grant, azure_grant = vk.provider_configs
    assert [(b.id, b.max_limit, b.reset_duration) for b in openai_grant.budgets] == [("vk1:openai:b0", 1, "1d")]
    assert (openai_grant.rate_limit.request_max_limit, openai_grant.rate_limit.request_reset_duration) == (5, "1m")
    assert [(b.id, b.max_limit) for b in azure_grant.budgets] == [("vk1:azure:shared", 2)]
    assert azure_grant.rate_limit is None and vk.budgets == [] and vk.rate_limit is None


def test_a_provider_granted_twice_with_limits_is_refused():
    config = with_vk(rate_limit={"request_max_limit": 1, "request_reset_duration": "1m"})
    config["governance"]["virtual_keys"][0]["provider_configs"].append({"provider": "openai"})
    assert "$.governance.virtual_keys[0].provider_configs[0].provider" in errors_of(config)


def test_a_path_override_for_a_request_type_rainbridge_does_not_serve_is_a_warning():
    config = {"providers": {"mine": copy.deepcopy(PROVIDER) | {"network_config": {"base_url": "http://127.0.0.1:1"},
              "custom_provider_config": {"base_provider_type": "openai", "request_path_overrides": {
                  "responses": "/responses", "chat_completion": "/chat"}}}}}
    loaded = load_data(config, ENV)
    assert [w.path for w in loaded.warnings if "override" in w.message] == \
        ["$.providers.mine.custom_provider_config.request_path_overrides.responses"]
    assert loaded.config.providers["mine"].custom_provider_config.request_path_overrides["chat_completion"] == "/chat"


def test_required_header_values_from_the_environment_are_read_at_start():
    config = base() | {"client": {"required_headers": ["X-Proxy-Token=env.PROXY_SECRET", "X-Empty="]}}
    loaded = load_data(config, ENV | {"PROXY_SECRET": "s3cret"})
    assert loaded.config.client.required_headers == ["X-Proxy-Token=s3cret", "X-Empty="]


def test_required_header_from_an_unset_variable_stops_start_up_naming_the_path():
    config = base() | {"client": {"required_headers": ["X-Tenant-ID", "X-Proxy-Token=env.UNSET_PROXY_SECRET"]}}
    assert errors_of(config) == {"$.client.required_headers[1]": "environment variable UNSET_PROXY_SECRET is not set"}


def test_a_bad_required_header_name_is_refused_without_showing_its_value():
    problems = errors_of(base() | {"client": {"required_headers": ["X Token=hunter2"]}})
    assert "hunter2" not in problems["$.client.required_headers[0]"]


def test_model_configs_as_bifrosts_docs_write_them_become_model_limits():
    """The config.json example of Bifrost's docs/features/governance/model-limits.mdx."""
    config = with_vk()
    config["governance"]["virtual_keys"][0]["id"] = "vk-production"
    config["governance"] |= {
        "model_configs": [
            {"id": "mc-openai-global", "model_name": "*", "provider": "openai", "scope": "global",
             "budget_ids": ["b-openai-daily", "b-openai-monthly"]},
            {"id": "mc-gpt4o-vk", "model_name": "gpt-4o", "provider": "openai", "scope": "virtual_key",
             "scope_id": "vk-production", "budget_ids": ["b-gpt4o-daily"], "rate_limit_ids": ["rl-gpt4o-rpm", "rl-gpt4o-rpd"]}],
        "budgets": [{"id": "b-openai-daily", "max_limit": 50.00, "reset_duration": "1d"},
                    {"id": "b-openai-monthly", "max_limit": 1000.00, "reset_duration": "1M"},
                    {"id": "b-gpt4o-daily", "max_limit": 50.00, "reset_duration": "1d"}],
        "rate_limits": [{"id": "rl-gpt4o-rpm", "metric": "requests", "request_max_limit": 15, "request_reset_duration": "1m"},
                        {"id": "rl-gpt4o-rpd", "metric": "requests", "request_max_limit": 1500, "request_reset_duration": "1d"}]}
    loaded = load_data(config, ENV)
    assert not [w for w in loaded.warnings if "model_configs" in w.path or "rate_limits" in w.path]
    limits = normalize(loaded.config.governance, {"openai"}, 0).model_limits
    assert [(m.id, m.model_name, m.provider, m.vk_id) for m in limits] == [
        ("mc-openai-global", "*", "openai", None), ("mc-gpt4o-vk", "gpt-4o", "openai", "vk-production")]
    assert [(b.max_limit, b.reset_duration, b.created_at) for b in limits[0].budgets] == [(50, "1d", 0), (1000, "1M", 0)]
    assert [(r.request_max_limit, r.request_reset_duration) for r in limits[1].rate_limits] == [(15, "1m"), (1500, "1d")]
    assert limits[1].matches("openai", "gpt-4o", "vk-production") and not limits[1].matches("openai", "gpt-4o", "other")
    assert limits[0].matches("openai", "o3", None) and not limits[0].matches("azure", "o3", None)


def test_a_providers_own_budget_and_rate_limit_become_a_model_limit_on_all_its_models():
    config = {"providers": {"openai": copy.deepcopy(PROVIDER) | {"budget_id": "b", "rate_limit_id": "r"}},
              "governance": {"budgets": [{"id": "b", "max_limit": 100, "reset_duration": "1M"}],
                             "rate_limits": [{"id": "r", "request_max_limit": 60, "request_reset_duration": "1m"}]}}
    loaded = load_data(config, ENV)
    (limit,) = normalize(loaded.config.governance, {"openai"}, 0).model_limits
    assert (limit.id, limit.model_name, limit.provider, limit.vk_id) == ("provider:openai", "*", "openai", None)
    assert [(b.max_limit, b.reset_duration) for b in limit.budgets] == [(100, "1M")]
    assert [(r.request_max_limit, r.request_reset_duration) for r in limit.rate_limits] == [(60, "1m")]
    assert {n.path for n in loaded.notes} >= {"$.providers.openai.budget_id", "$.providers.openai.rate_limit_id"}


def test_governance_providers_rate_limits_are_enforced_as_provider_model_limits():
    """Bifrost's governance.providers[] (a deployment caps each upstream's requests per
    minute with {"name", "rate_limit_id"}): the limit must hold, not be dropped unread."""
    config = {"providers": {"openai": copy.deepcopy(PROVIDER)},
              "governance": {"rate_limits": [{"id": "rl-openai", "request_max_limit": 40, "request_reset_duration": "1m"}],
                             "providers": [{"name": "openai", "rate_limit_id": "rl-openai"}]}}
    loaded = load_data(config, ENV)
    (limit,) = normalize(loaded.config.governance, {"openai"}, 0).model_limits
    assert (limit.model_name, limit.provider, limit.vk_id) == ("*", "openai", None)
    assert [(r.request_max_limit, r.request_reset_duration) for r in limit.rate_limits] == [(40, "1m")]
    assert "$.governance.providers[0]" in {n.path for n in loaded.notes}
    config["governance"]["providers"] = [{"name": "openai", "rate_limit_id": "rl-openai", "max_concurrency": 3}]
    with pytest.raises(ConfigError) as caught:
        load_data(config, ENV)
    assert [p.path for p in caught.value.errors] == ["$.governance.providers[0].max_concurrency"]


def test_calendar_aligned_rate_limits_start_and_false_is_warned_about():
    """A deployment's daily caps say "calendar_aligned": true, which is how rate limit windows
    work here (snapped to UTC midnight); false asks for windows this gateway does not have."""
    def config(aligned):
        return {"governance": {"rate_limits": [{"id": "day", "request_max_limit": 1000, "request_reset_duration": "1d",
                                                "calendar_aligned": aligned}]}}
    loaded = load_data(config(True), {})
    assert loaded.warnings == [] and "$.governance.rate_limits[0].calendar_aligned" in {n.path for n in loaded.notes}
    assert [w.path for w in load_data(config(False), {}).warnings] == ["$.governance.rate_limits[0].calendar_aligned"]


def test_enforced_restrictions_are_listed_as_used():
    config = with_vk(rate_limit={"request_max_limit": 1, "request_reset_duration": "1m"})
    config["client"] = {"required_headers": ["X-Tenant-ID"], "header_filter_config": {"denylist": ["x-internal"]}}
    notes = {n.path: n.message for n in load_data(config, ENV).notes}
    assert notes["$.client.required_headers"].startswith("enforced: ")
    assert notes["$.client.header_filter_config"].startswith("enforced: ")
    assert notes["$.governance.virtual_keys[0].provider_configs[0].rate_limit"].startswith("enforced: ")


# --------------------------------------------------------------------------- refused

ALL_SERVED = ["list_models", "text_completion", "text_completion_stream", "chat_completion", "chat_completion_stream", "embedding"]
PLUGIN_HEADERS = {"plugins": [{"name": "governance", "enabled": True, "config": {"required_headers": {"X-Tenant-ID": "*"}}}]}

# (case, config additions or a full config, the path the refusal names)
REFUSED = [
    ("governance plugin required_headers not a list", base() | PLUGIN_HEADERS, "$.plugins[0].config.required_headers"),
    ("required header that is no header name", base() | {"client": {"required_headers": ["X Tenant"]}},
     "$.client.required_headers[0]"),
    *[(f"routing rule: {case}", base() | {"governance": {"routing_rules": [{"name": "r", "cel_expression": "true"} | rule]}},
       f"$.governance.routing_rules[0].{field}") for case, rule, field in [
        ("no target", {}, "targets"),
        ("weights summing to 0.9", {"targets": [{"provider": "openai", "weight": 0.6}, {"weight": 0.3}]}, "targets"),
        ("negative weight", {"targets": [{"weight": -1}, {"weight": 2}]}, "targets[0].weight"),
        ("CEL that does not parse", {"cel_expression": 'headers["x-tier"', "targets": [{"weight": 1}]}, "cel_expression"),
        ("CEL reading an unknown variable", {"cel_expression": 'modle == "gpt-4o"', "targets": [{"weight": 1}]},
         "cel_expression"),
        ("CEL over 4 KB", {"cel_expression": " || ".join(['model == "x"'] * 400), "targets": [{"weight": 1}]},
         "cel_expression"),
        ("unknown scope", {"scope": "org", "targets": [{"weight": 1}]}, "scope"),
        ("team scope without its id", {"scope": "team", "targets": [{"weight": 1}]}, "scope_id"),
        ("pinned key the provider lacks", {"targets": [{"provider": "openai", "key_id": "third", "weight": 1}]},
         "targets[0].key_id"),
        ("pinned key without provider", {"targets": [{"key_id": "first", "weight": 1}]}, "targets[0].key_id"),
        ("fallback without provider", {"targets": [{"weight": 1}], "fallbacks": ["/gpt-4o"]}, "fallbacks[0]"),
        ("priority strategy", {"strategy": "priority", "targets": [{"provider": "openai", "weight": 1}]}, "strategy"),
    ]],
    ("model limit naming no budget", base() | {"governance": {"model_configs": [{"model_name": "gpt-4o", "budget_id": "b"}]}},
     "$.governance.model_configs[0].budget_id"),
    ("model limit of an unknown virtual key",
     base() | {"governance": {"model_configs": [{"model_name": "*", "scope": "virtual_key", "scope_id": "ghost",
                                                  "rate_limit": {"request_max_limit": 1, "request_reset_duration": "1m"}}]}},
     "$.governance.model_configs[0].scope_id"),
    ("model limit with an unknown scope", base() | {"governance": {"model_configs": [{"model_name": "*", "scope": "team"}]}},
     "$.governance.model_configs[0].scope"),
    ("provider-level budget naming no budget", {"providers": {"openai": copy.deepcopy(PROVIDER) | {"budget_id": "b"}}},
     "$.governance.model_configs[0].budget_id"),
    ("request path overrides on a non-OpenAI provider",
     {"providers": {"mine": copy.deepcopy(PROVIDER) | {"network_config": {"base_url": "http://127.0.0.1:1"},
      "custom_provider_config": {"base_provider_type": "anthropic", "request_path_overrides": {"chat_completion": "/x"}}}}},
     "$.providers.mine.custom_provider_config.request_path_overrides"),
    ("request path override that is no http(s) URL",
     {"providers": {"mine": copy.deepcopy(PROVIDER) | {"network_config": {"base_url": "http://127.0.0.1:1"},
      "custom_provider_config": {"base_provider_type": "openai", "request_path_overrides": {"embedding": "ftp://h/x"}}}}},
     "$.providers.mine.custom_provider_config.request_path_overrides.embedding"),
    ("socks5 upstream proxy without its URL", {"providers": {"openai": copy.deepcopy(PROVIDER) | {"proxy_config": {"type": "socks5"}}}},
     "$.providers.openai.proxy_config.url"),
    ("http upstream proxy without its URL", {"providers": {"openai": copy.deepcopy(PROVIDER) | {"proxy_config": {"type": "http"}}}},
     "$.providers.openai.proxy_config.url"),
    ("https upstream proxy (TLS to the proxy)",
     {"providers": {"openai": copy.deepcopy(PROVIDER) | {"proxy_config": {"type": "http", "url": "https://proxy:3128"}}}},
     "$.providers.openai.proxy_config.url"),
    ("guardrails", base() | {"guardrails_config": {"guardrail_rules": [{"id": 1, "name": "pii"}]}}, "$.guardrails_config"),
    ("VK per-provider budget id naming no budget", with_vk(budget_id="b"), "$.governance.virtual_keys[0].provider_configs[0].budget_id"),
    ("VK per-provider rate limit id naming no rate limit", with_vk(rate_limit_id="r"),
     "$.governance.virtual_keys[0].provider_configs[0].rate_limit_id"),
    ("VK per-provider budget with a bad duration", with_vk(budget={"max_limit": 1, "reset_duration": "soon"}),
     "$.governance.virtual_keys[0].provider_configs[0].budget.reset_duration"),
    ("VK per-provider rate limit without its duration", with_vk(rate_limit={"request_max_limit": 1}),
     "$.governance.virtual_keys[0].provider_configs[0].rate_limit.request_reset_duration"),
    ("VK keys entry naming no key", with_vk(keys=[{}]), "$.governance.virtual_keys[0].provider_configs[0].keys[0]"),
    ("budget owned by an unknown virtual key",
     base() | {"governance": {"budgets": [{"max_limit": 1, "reset_duration": "1d", "virtual_key_id": "ghost"}]}},
     "$.governance.budgets[0].virtual_key_id"),
]


@pytest.mark.parametrize(("case", "config", "path"), REFUSED, ids=[case for case, _, _ in REFUSED])
def test_unenforced_restriction_is_refused_with_its_path(case, config, path):
    assert path in errors_of(copy.deepcopy(config))


@pytest.mark.parametrize("config", [
    base() | {"plugins": [{"name": "governance", "enabled": False, "config": {"required_headers": ["X-Tenant-ID"]}}]},
    base() | {"plugins": [{"name": "governance", "enabled": True, "config": {"required_headers": []}}]},
    base() | {"governance": {"routing_rules": []}},
    {"providers": {"openai": copy.deepcopy(PROVIDER) | {"proxy_config": {"type": "none"}}}},
    {"providers": {"mine": copy.deepcopy(PROVIDER) | {"network_config": {"base_url": "http://127.0.0.1:1"},
      "custom_provider_config": {"base_provider_type": "openai", "allowed_requests": dict.fromkeys(ALL_SERVED, True)}}}},
    {"providers": {"mine": copy.deepcopy(PROVIDER) | {"network_config": {"base_url": "http://127.0.0.1:1"},
      "custom_provider_config": {"base_provider_type": "openai", "allowed_requests": {"chat_completion": True}}}}},
    base() | {"client": {"header_filter_config": {"allowlist": [], "denylist": []}}},
    base() | {"guardrails_config": {"guardrail_rules": [], "guardrail_providers": []}},
], ids=["disabled plugin", "empty headers", "empty rules", "proxy type none", "all request types allowed",
        "some request types allowed (enforced)",
        "empty header filter", "empty guardrails"])
def test_settings_that_restrict_nothing_load(config):
    load_data(copy.deepcopy(config), ENV)


def test_config_check_groups_refused_ignored_and_used(tmp_path):
    f = tmp_path / "bifrost.json"
    f.write_text(json.dumps(base() | {
        "plugins": [{"name": "governance", "enabled": True, "config": {"is_vk_mandatory": True}},
                    {"name": "maxim", "enabled": True, "config": {}}],
        "governance": {"routing_rules": [{"name": "r"}]},
    }))
    out = subprocess.run([sys.executable, "-m", "rainbridge", "config", "check", str(f)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    lines = out.stdout.splitlines()
    refused, ignored, used = (next(i for i, line in enumerate(lines) if line.startswith(word)) for word in ("refused", "ignored", "used"))
    assert refused < ignored < used
    assert lines[refused + 1].startswith("  error: $.governance.routing_rules[0].targets: ")
    assert lines[ignored + 1].startswith("  warning: $.plugins[1]: plugin 'maxim'")
    assert lines[used + 1] == "  note: $.plugins[0].config.is_vk_mandatory: enforced as governance.is_vk_mandatory"


@pytest.mark.parametrize(("name", "entry"), [
    ("replicate", {"keys": [{"value": "r8-key"}]}),
    ("speech", {"custom_provider_config": {"base_provider_type": "replicate"}, "keys": [{"value": "r-key"}]}),
    ("my-runway", {"custom_provider_config": {"base_provider_type": "runway"}, "keys": []}),
    ("voice", {"type": "elevenlabs", "keys": [{"value": "k"}]}),
])
def test_unsupported_bifrost_provider_is_skipped_with_a_warning_naming_it(name, entry):
    loaded = load_data({"providers": {"openai": copy.deepcopy(PROVIDER), name: entry}}, ENV)
    assert list(loaded.config.providers) == ["openai"]
    (warning,) = [w for w in loaded.warnings if w.path == f"$.providers.{name}" or w.path == f"$.providers[{name!r}]"]
    assert f"provider {name!r}" in warning.message and "skipped" in warning.message


def test_unknown_non_bifrost_provider_is_still_refused():
    assert "$.providers.mystery" in errors_of({"providers": {"mystery": {"keys": [{"value": "k"}]}}})


def test_key_alias_object_form_becomes_its_model_id():
    config = base()
    config["providers"]["openai"]["keys"][0]["aliases"] = {
        "fast-model": "gpt-4o-mini",
        "best-model": {"model_id": "gpt-4o-2024-11-20", "model_name": "gpt-4o", "description": "ours"},
    }
    loaded = load_data(config, ENV)
    assert loaded.config.providers["openai"].keys[0].aliases == {"fast-model": "gpt-4o-mini", "best-model": "gpt-4o-2024-11-20"}
    assert {w.path for w in loaded.warnings} == {
        "$.providers.openai.keys[0].aliases['best-model'].model_name",
        "$.providers.openai.keys[0].aliases['best-model'].description",
    }


@pytest.mark.parametrize(("alias", "path"), [
    ({"model_id": "dep-1", "endpoint": "https://other.openai.azure.com"}, "$.providers.openai.keys[0].aliases.best.endpoint"),
    ({"model_name": "gpt-4o"}, "$.providers.openai.keys[0].aliases.best.model_id"),
])
def test_key_alias_object_routing_override_or_missing_model_id_is_refused(alias, path):
    config = base()
    config["providers"]["openai"]["keys"][0]["aliases"] = {"best": alias}
    assert path in errors_of(config)


@pytest.mark.parametrize(("base", "expected"), [("openai", "https://api.openai.com"), ("anthropic", "https://api.anthropic.com")])
def test_custom_provider_without_base_url_falls_back_to_its_base_providers_endpoint(base, expected):
    from rainbridge.config.checks import default_base_url

    config = {"providers": {"mine": {"custom_provider_config": {"base_provider_type": base}, "keys": [{"value": "sk-x-0123456789"}]}}}
    loaded = load_data(config, ENV).config
    assert default_base_url("mine", loaded.providers["mine"]) == expected


def test_rainbridge_type_extension_still_needs_base_url():
    config = {"providers": {"mine": {"type": "openai", "keys": [{"value": "sk-x-0123456789"}]}}}
    assert "$.providers.mine.network_config.base_url" in errors_of(config)


def test_vllm_server_url_per_key_becomes_the_providers_base_url_and_model_name_its_models():
    config = {"providers": {"vllm": {"keys": [
        {"name": "a", "value": "", "vllm_key_config": {"url": "http://127.0.0.1:8000/v1", "model_name": "llama-3"}},
        {"name": "b", "value": "", "vllm_key_config": {"url": "http://127.0.0.1:8000", "model_name": "llama-3"}},
    ]}}}
    loaded = load_data(config, ENV)
    provider = loaded.config.providers["vllm"]
    assert provider.network_config.base_url == "http://127.0.0.1:8000"
    assert [k.models for k in provider.keys] == [["llama-3"], ["llama-3"]]
    assert loaded.warnings == []


def test_ollama_url_in_key_config_is_used():
    config = {"providers": {"ollama": {"keys": [{"value": "", "ollama_key_config": {"url": "http://127.0.0.1:11434"}}]}}}
    assert load_data(config, ENV).config.providers["ollama"].network_config.base_url == "http://127.0.0.1:11434"


def test_keys_of_one_provider_on_different_servers_are_refused():
    config = {"providers": {"sgl": {"keys": [
        {"name": "a", "value": "", "sgl_key_config": {"url": "http://127.0.0.1:30000"}},
        {"name": "b", "value": "", "sgl_key_config": {"url": "http://127.0.0.1:30001"}},
    ]}}}
    errors = errors_of(config)
    assert "$.providers.sgl.keys[0].sgl_key_config.url" in errors and "$.providers.sgl.keys[1].sgl_key_config.url" in errors


def azure(key: dict) -> dict:
    return {"providers": {"azure": {"keys": [{"name": "a", **key, "azure_key_config": {
        "endpoint": "https://x.openai.azure.com", "client_id": "c", "client_secret": "s", "tenant_id": "t"}}]}}}


def test_azure_entra_id_key_without_api_key_loads_and_says_it_uses_entra_id():
    loaded = load_data(azure({"value": ""}), ENV)
    assert loaded.warnings == []
    assert [n.path for n in loaded.notes] == ["$.providers.azure.keys[0].azure_key_config.client_id"]
    assert loaded.config.providers["azure"].keys[0].azure_key_config.tenant_id == "t"


def test_azure_entra_id_fields_beside_an_api_key_win_as_in_bifrost_with_a_warning():
    loaded = load_data(azure({"value": "azure-api-key-0123456789"}), ENV)
    (warning,) = loaded.warnings
    assert warning.path == "$.providers.azure.keys[0].azure_key_config.client_id" and "value is not" in warning.message


@pytest.mark.parametrize("missing", ["client_id", "client_secret", "tenant_id"])
def test_a_partial_entra_id_service_principal_is_refused_naming_what_is_missing(missing):
    config = azure({"value": "azure-api-key-0123456789"})
    del config["providers"]["azure"]["keys"][0]["azure_key_config"][missing]
    assert list(errors_of(config)) == [f"$.providers.azure.keys[0].azure_key_config.{missing}"]


def test_clickhouse_logs_store_is_refused_clearly():
    errors = errors_of(base() | {"logs_store": {"enabled": True, "type": "clickhouse", "config": {"host": "ch"}}})
    assert list(errors) == ["$.logs_store.type"] and "clickhouse is not supported" in errors["$.logs_store.type"]


def test_disabled_clickhouse_logs_store_loads():
    load_data(base() | {"logs_store": {"enabled": False, "type": "clickhouse"}}, ENV)


def test_virtual_key_with_only_an_id_takes_it_as_its_name():
    # Bifrost's examples/configs/withconfigstore form: {"id": "vk-gpt", "value": ..., "provider_configs": [...]}.
    config = base() | {"governance": {"virtual_keys": [{"id": "vk-gpt", "value": "vk-gpt", "provider_configs": [
        {"provider": "openai", "key_ids": ["*"], "allowed_models": ["gpt-4o"]}]}]}}
    loaded = load_data(config, ENV).config
    (vk,) = normalize(loaded.governance, {"openai"}, 0).virtual_keys
    assert (vk.id, vk.name, vk.provider_configs[0].key_ids) == ("vk-gpt", "vk-gpt", None)


def test_telemetry_push_gateway_without_its_url_stops_start_up_naming_the_field():
    config = base() | {"plugins": [{"name": "telemetry", "enabled": True, "config": {"push_gateway": {"enabled": True}}}]}
    with pytest.raises(ConfigError) as err:
        load_data(config, ENV)
    assert [p.path for p in err.value.problems if p.severity == "error"] == ["$.plugins[0].config.push_gateway.push_gateway_url"]


def test_telemetry_push_gateway_is_used_and_noted():
    push = {"enabled": True, "push_gateway_url": "http://127.0.0.1:9091", "push_interval": 5, "instance_id": "pod-a"}
    config = base() | {"plugins": [{"name": "telemetry", "enabled": True, "config": {"push_gateway": push}}]}
    loaded = load_data(config, ENV)
    assert loaded.warnings == []
    assert any(n.path == "$.plugins[0].config.push_gateway" and "every 5s" in str(n) for n in loaded.notes)


def test_governance_plugin_routing_chain_max_depth_bounds_rule_chains():
    rules = [{"name": f"s{i}", "chain_rule": True, "cel_expression": f'model == "m{i}"',
              "targets": [{"model": f"m{i + 1}", "weight": 1}]} for i in range(6)]
    config = base() | {"plugins": [{"name": "governance", "enabled": True, "config": {"routing_chain_max_depth": 2}}],
                       "governance": {"routing_rules": rules}}
    loaded = load_data(copy.deepcopy(config), ENV)
    assert loaded.config.governance.routing_chain_max_depth == 2
    ruleset = rules_from_config(loaded.config.governance, loaded.config.providers, [])
    variables = ruleset.variables(Facts(), "chat_completion", {}, {})
    assert ruleset.decide(Facts(), "openai", "m0", variables).model == "m2"
    assert "$.plugins[0].config.routing_chain_max_depth" in errors_of(
        base() | {"plugins": [{"name": "governance", "config": {"routing_chain_max_depth": 0}}]})


def test_routing_rule_scoped_to_a_team_the_file_lacks_loads_with_a_warning():
    config = base() | {"governance": {"routing_rules": [{"name": "r", "scope": "team", "scope_id": "ghost",
                                                         "targets": [{"weight": 1}]}]}}
    loaded = load_data(copy.deepcopy(config), ENV)
    assert [w.path for w in loaded.warnings] == ["$.governance.routing_rules[0].scope_id"]


def test_socks5_proxy_without_python_socks_is_refused_naming_the_extra(monkeypatch):
    monkeypatch.setattr("rainbridge.config.checks.socks_available", lambda: False)
    config = {"providers": {"openai": copy.deepcopy(PROVIDER) | {"proxy_config": {"type": "socks5", "url": "socks5://p:1080"}}}}
    assert "pip install 'rainbridge[socks]'" in errors_of(config)["$.providers.openai.proxy_config.type"]
