"""Bifrost's routing rules through a running gateway, its config written as Bifrost's docs
write it (``governance.routing_rules``), with the official openai SDK against the fake
provider: a header rule sends the request to another provider, model and pinned key; a
team's rule beats a global one; a request no rule matches goes where it asked; a rule on
``request`` (use of the target's request limit) spills over once the limit is half used; a
rule never takes a virtual key to a provider it may not use.
"""

from __future__ import annotations

import anthropic
import openai
import pytest

from support import GatewayProcess, skip_window_edge

TEAM_VK = "sk-bf-routing-team-0123456789abc"
PLAIN_VK = "sk-bf-routing-plain-0123456789ab"
OPENAI_ONLY_VK = "sk-bf-routing-oponly-0123456789"
OPENAI_KEY = "sk-test-openai-0123456789"
BACKUP_KEYS = {"b1": "sk-backup-one-0123456789", "b2": "sk-backup-two-0123456789"}


def routing_config(mock_url: str) -> dict:
    net = {"base_url": mock_url}
    return {
        "providers": {
            "openai": {"keys": [{"name": "main", "value": OPENAI_KEY, "models": ["*"], "weight": 1}], "network_config": net},
            "backup": {"keys": [{"name": name, "value": value, "models": ["*"], "weight": 1} for name, value in BACKUP_KEYS.items()],
                       "network_config": net, "custom_provider_config": {"base_provider_type": "openai"}},
            # Its key makes the fake provider answer 500 to everything.
            "broken": {"keys": [{"name": "k", "value": "sk-status-500-broken", "models": ["*"]}],
                       "network_config": {**net, "max_retries": 0}, "custom_provider_config": {"base_provider_type": "openai"}},
        },
        "governance": {
            "customers": [{"id": "acme", "name": "acme"}],
            "model_configs": [{"id": "capped", "model_name": "capped", "provider": "openai",
                               "rate_limit": {"request_max_limit": 2, "request_reset_duration": "1h"}}],
            "teams": [{"id": "research", "name": "research", "customer_id": "acme"}],
            "virtual_keys": [
                {"id": "team-key", "name": "team-key", "value": TEAM_VK, "team_id": "research"},
                {"id": "plain-key", "name": "plain-key", "value": PLAIN_VK},
                {"id": "openai-only", "name": "openai-only", "value": OPENAI_ONLY_VK,
                 "provider_configs": [{"provider": "openai", "allowed_models": ["*"]}]},
            ],
            "routing_rules": [
                {"id": "premium", "name": "Premium Tier", "enabled": True, "cel_expression": 'headers["X-Tier"] == "premium"',
                 "targets": [{"provider": "backup", "model": "gpt-4o-mini", "key_id": "b2", "weight": 1}],
                 "fallbacks": ["openai/gpt-4o"], "scope": "global", "priority": 0},
                {"id": "global-alias", "name": "Global alias", "cel_expression": 'model == "smart"',
                 "targets": [{"provider": "openai", "model": "gpt-4o-global", "weight": 1}], "scope": "global", "priority": 1},
                # A higher priority number than the global rule: the team's scope comes first anyway.
                {"id": "team-alias", "name": "Research alias", "cel_expression": 'model == "smart" && team_name == "research"',
                 "targets": [{"provider": "backup", "model": "gpt-4o-team", "weight": 1}], "scope": "team",
                 "scope_id": "research", "priority": 50},
                {"id": "eu-customer", "name": "Acme EU", "cel_expression": 'customer_name == "acme" && model == "regional"',
                 "targets": [{"model": "gpt-4o-eu", "weight": 1}], "scope": "customer", "scope_id": "acme"},
                {"id": "broken", "name": "To a provider that fails", "cel_expression": 'headers["x-route"] == "broken"',
                 "targets": [{"provider": "broken", "model": "gpt-4o", "weight": 1}],
                 "fallbacks": [{"provider": "backup", "model": "fb-model", "provider_key_name": "b1"}, "openai/"]},
                {"id": "spill", "name": "Spill at half the limit", "cel_expression": 'model == "capped" && request >= 50',
                 "targets": [{"provider": "backup", "weight": 1}], "scope": "global", "priority": 2},
            ],
        },
    }


@pytest.fixture(scope="module")
def gateway(mock, tmp_path_factory):
    gw = GatewayProcess(tmp_path_factory.mktemp("routing"), routing_config(mock.url))
    yield gw
    gw.stop()


def client(gw, key: str, **headers: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0, timeout=20, default_headers=headers or None)


def ask(gw, key: str, model: str, **headers: str):
    return client(gw, key, **headers).chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])


def last_upstream(mock) -> tuple[str, str]:
    """The key and the model of the last request the fake provider served."""
    last = mock.stats()["recent"][-1]
    return last["key"], last["body"]["model"]


def test_header_rule_sends_the_request_to_another_provider_model_and_pinned_key(gateway, mock):
    for _ in range(4):  # the pinned key every time, though backup has two of equal weight
        answer = ask(gateway, PLAIN_VK, "openai/gpt-4o", **{"x-tier": "premium"})
        assert answer.model == "gpt-4o-mini"
        assert last_upstream(mock) == (BACKUP_KEYS["b2"], "gpt-4o-mini")


def test_request_no_rule_matches_goes_where_it_asked(gateway, mock):
    answer = ask(gateway, PLAIN_VK, "openai/gpt-4o", **{"X-Tier": "basic"})
    assert answer.model == "gpt-4o"
    assert last_upstream(mock) == (OPENAI_KEY, "gpt-4o")
    answer = ask(gateway, PLAIN_VK, "openai/gpt-4o")  # no such header at all: no match, no error
    assert last_upstream(mock) == (OPENAI_KEY, "gpt-4o")


def test_team_rule_beats_global_rule(gateway, mock):
    assert ask(gateway, TEAM_VK, "smart").model == "gpt-4o-team"
    assert last_upstream(mock)[0] in BACKUP_KEYS.values()
    assert ask(gateway, PLAIN_VK, "smart").model == "gpt-4o-global"
    assert last_upstream(mock) == (OPENAI_KEY, "gpt-4o-global")


def test_customer_rule_applies_through_the_keys_team_and_keeps_the_provider(gateway, mock):
    assert ask(gateway, TEAM_VK, "openai/regional").model == "gpt-4o-eu"
    assert last_upstream(mock) == (OPENAI_KEY, "gpt-4o-eu")
    assert ask(gateway, PLAIN_VK, "openai/regional").model == "regional"  # not acme's key


def test_rule_never_takes_a_key_to_a_provider_it_may_not_use(gateway, mock):
    with pytest.raises(openai.PermissionDeniedError) as err:
        ask(gateway, OPENAI_ONLY_VK, "openai/gpt-4o", **{"x-tier": "premium"})
    assert err.value.body["code"] == "provider_blocked", err.value.body
    assert ask(gateway, OPENAI_ONLY_VK, "openai/gpt-4o").model == "gpt-4o"


def test_capacity_rule_spills_to_another_provider_once_half_the_limit_is_used(gateway, mock):
    skip_window_edge()  # the model limit's window is the current hour
    served = []
    for _ in range(3):
        assert ask(gateway, PLAIN_VK, "openai/capped").model == "capped"
        served.append(last_upstream(mock)[0])
    assert served[0] == OPENAI_KEY  # 0 of 2 used: request == 0
    assert served[1] in BACKUP_KEYS.values() and served[2] in BACKUP_KEYS.values()  # 1 of 2: request == 50


def test_anthropic_route_follows_the_rules_too(gateway, mock):
    c = anthropic.Anthropic(base_url=gateway.url + "/anthropic", api_key=PLAIN_VK, max_retries=0,
                            default_headers={"X-Tier": "premium"})
    message = c.messages.create(model="openai/gpt-4o", max_tokens=16, messages=[{"role": "user", "content": "hi"}])
    assert message.content[0].text.startswith("This is a mock response from gpt-4o-mini")
    assert last_upstream(mock) == (BACKUP_KEYS["b2"], "gpt-4o-mini")


def test_rule_fallbacks_replace_the_requests_and_pin_their_key(gateway, mock):
    for _ in range(4):  # the pinned key every time, though backup has two of equal weight
        answer = client(gateway, PLAIN_VK, **{"x-route": "broken"}).chat.completions.create(
            model="openai/gpt-4o", messages=[{"role": "user", "content": "hi"}],
            extra_body={"fallbacks": ["openai/request-fallback"]})  # the rule's fallbacks win
        assert answer.model == "fb-model"
        recent = mock.stats()["recent"]
        assert [(r["key"], r["body"]["model"]) for r in recent[-2:]] == [("sk-status-500-broken", "gpt-4o"),
                                                                       (BACKUP_KEYS["b1"], "fb-model")]
