"""A request that falls back is charged to the target that served it (issue 14).

A virtual key's per-provider limits (``provider_configs[].rate_limit`` / ``budget``) and the
model limits (``governance.model_configs``) belong to the target a request goes to: as in
Bifrost, whose governance hook runs again for each fallback and whose usage tracking counts
a provider's and a model's tokens and cost on the attempt that served them (and a request
only on success), the target a request leaves is charged nothing, and a fallback over one
of its own limits is skipped like one that does not allow the request type. All skipped:
the primary's error, as for any fallback chain (Bifrost returns the original error).

First the engine alone (``leave`` / ``enter`` / ``admit_route`` / ``settle``), then a real
gateway in front of the fake provider, with a provider that refuses connections first.
"""

from __future__ import annotations

import socket
from types import SimpleNamespace

import openai
import pytest

from rainbridge.counters.local import LocalCounters
from rainbridge.errors import RequestLimited, TokenLimited
from rainbridge.gateway.routing import Target
from rainbridge.governance.engine import Governance, GovernanceState
from rainbridge.governance.model import Budget, ModelLimit, ProviderGrant, RateLimit, VirtualKey
from rainbridge.governance.pricing import Price, Pricing
from support import GatewayProcess, http_json, provider_config, skip_window_edge

NOW = 1_800_000_000_000


def target(provider: str, model: str = "gpt-4o") -> Target:
    return Target(SimpleNamespace(name=provider), model)  # admission reads only the provider's name


def engine() -> tuple[Governance, VirtualKey]:
    gov = Governance(LocalCounters("node-a"), Pricing({"gpt-4o": Price(1.0, 1.0)}), False)
    limited = RateLimit(request_max_limit=1, request_reset_duration="1h", token_max_limit=1000, token_reset_duration="1h")
    vk = VirtualKey(id="vk", name="vk", value_hash="h", rate_limit=RateLimit(request_max_limit=10, request_reset_duration="1h"),
                    provider_configs=[
                        ProviderGrant(provider="a", rate_limit=limited, budgets=[Budget(id="vk:a:b0", max_limit=5.0, reset_duration="1d")]),
                        ProviderGrant(provider="b", rate_limit=limited, budgets=[Budget(id="vk:b:b0", max_limit=5.0, reset_duration="1d")]),
                        ProviderGrant(provider="c"),
                    ])
    gov.state = GovernanceState(vks=[vk])
    return gov, vk


def used(gov: Governance, scope: str, owner: str, metric: str, window_ms: int = 3_600_000) -> tuple[float, float]:
    """(committed, reserved) of one counter in the window that holds NOW."""
    start = NOW - NOW % window_ms if metric != "spend" else NOW - NOW % 86_400_000
    s = gov.counters.slot((scope, owner, metric, start), 0)
    return s.committed, s.reserved


def test_a_fallback_moves_the_targets_part_of_the_charge_and_leaves_the_keys_own():
    gov, vk = engine()
    admission = gov.admit(vk, 10, 20, NOW, target("a"))
    assert used(gov, "provider", "vk:a", "requests") == (0, 1)  # held until it answers
    assert used(gov, "provider", "vk:a", "tokens") == (0, 30)
    admission = gov.enter(gov.leave(admission), vk, 10, 20, NOW, target("b"))
    assert used(gov, "provider", "vk:a", "requests") == (0, 0) and used(gov, "provider", "vk:a", "tokens") == (0, 0)
    assert used(gov, "provider", "vk:b", "requests") == (0, 1) and used(gov, "provider", "vk:b", "tokens") == (0, 30)
    assert used(gov, "vk", "vk", "requests") == (1, 0)  # the key's own: counted once, at admission
    assert gov.settle(admission, "b", "gpt-4o", 7, 3) == 10.0
    assert used(gov, "provider", "vk:b", "requests") == (1, 0) and used(gov, "provider", "vk:b", "tokens") == (10, 0)
    assert used(gov, "budget", "vk:b:b0", "spend") == (10.0, 0)
    assert used(gov, "budget", "vk:a:b0", "spend") == (0, 0) and used(gov, "provider", "vk:a", "requests") == (0, 0)


def test_a_fallback_over_its_own_limit_is_refused_as_a_target_limit_and_the_next_one_admitted():
    gov, vk = engine()
    gov.settle(gov.admit(vk, 1, 1, NOW, target("b")), "b", "gpt-4o", 1, 1)  # b's one request per hour
    left = gov.leave(gov.admit(vk, 1, 1, NOW, target("a")))
    with pytest.raises(RequestLimited, match="virtual key 'vk' on provider 'b'") as refused:
        gov.enter(left, vk, 1, 1, NOW, target("b"))
    assert refused.value.target_limit
    admission = gov.enter(left, vk, 1, 1, NOW, target("c"))  # c has no limits of its own
    assert admission is not None and not admission[0]  # (held: none)
    assert used(gov, "provider", "vk:a", "requests") == (0, 0) and used(gov, "provider", "vk:b", "requests") == (1, 0)


def test_a_request_that_fails_everywhere_counts_no_request_on_its_target():
    gov, vk = engine()
    admission = gov.admit(vk, 1, 1, NOW, target("a"))
    gov.settle(admission, "a", "gpt-4o", 0, 0, answered=False)
    assert used(gov, "provider", "vk:a", "requests") == (0, 0)
    assert used(gov, "vk", "vk", "requests") == (1, 0)


def test_admission_skips_a_first_target_over_its_own_limit_but_not_the_keys_own():
    gov, vk = engine()
    gov.settle(gov.admit(vk, 1, 1, NOW, target("a")), "a", "gpt-4o", 1, 1)
    admission, targets = gov.admit_route(vk, 1, 1, NOW, [target("a"), target("b")])
    assert [t.provider.name for t in targets] == ["b"] and admission is not None and admission[0]  # held on b
    with pytest.raises(RequestLimited, match="provider 'a'"):  # all over their limits: the first one's refusal
        gov.admit_route(vk, 1, 1, NOW, [target("a"), target("b")])
    vk.rate_limit = RateLimit(token_max_limit=1, token_reset_duration="1h")  # the key's own: no fallback helps
    gov.state = GovernanceState(vks=[vk])
    with pytest.raises(TokenLimited, match=r"for virtual key 'vk' \("):
        gov.admit_route(vk, 5, 5, NOW, [target("c"), target("a")])


def test_without_a_key_a_fallback_counts_against_the_model_limits_it_matches():
    gov, _ = engine()
    gov.model_limits = (ModelLimit(id="m", name="m", model_name="mini", provider="b",
                                   rate_limits=[RateLimit(request_max_limit=1, request_reset_duration="1h")]),)
    assert gov.admit(None, 1, 1, NOW, target("a")) is None  # a's model has no limit
    admission = gov.enter(None, None, 1, 1, NOW, target("b", "mini"))
    assert admission is not None and used(gov, "model", "m", "requests") == (0, 1)
    gov.settle(admission, "b", "mini", 1, 1)
    with pytest.raises(RequestLimited, match="model limit 'm'"):
        gov.enter(None, None, 1, 1, NOW, target("b", "mini"))


# -- through a gateway ------------------------------------------------------------------------

FB = "sk-bf-fallback-charging-0123456789"
FBS = "sk-bf-fallback-streaming-0123456789"
TOKEN = "fallback-charging-admin-token"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when we return: connections are refused


@pytest.fixture(scope="module")
def gw(mock, tmp_path_factory):
    config = provider_config(mock.url)
    config["providers"]["broken"] = {"type": "openai", "keys": [{"value": "sk-broken-0123456789"}],
                                     "network_config": {"base_url": f"http://127.0.0.1:{closed_port()}"}}
    limits = {"request_max_limit": 1, "request_reset_duration": "1h", "token_max_limit": 100_000, "token_reset_duration": "1h"}
    config |= {
        "pricing_overrides": {m: {"input_cost_per_token": 1.0, "output_cost_per_token": 1.0}
                              for m in ("openai/gpt-4o-mini", "broken/gpt-4o")},
        "governance": {
            "virtual_keys": [{"id": "fb", "name": "fb", "value": FB, "provider_configs": [
                {"provider": "broken", "allowed_models": ["*"], "rate_limit": limits,
                 "budget": {"max_limit": 1000, "reset_duration": "1d"}},
                {"provider": "openai", "allowed_models": ["*"], "rate_limit": limits,
                 "budget": {"max_limit": 1000, "reset_duration": "1d"}},
                {"provider": "anthropic", "allowed_models": ["*"]}]},
                # Streams: the first target counts nothing, the fallback tokens and spend.
                {"id": "fbs", "name": "fbs", "value": FBS, "provider_configs": [
                    {"provider": "broken", "allowed_models": ["*"]},
                    {"provider": "openai", "allowed_models": ["*"],
                     "rate_limit": limits | {"request_max_limit": 100},
                     "budget": {"max_limit": 1000, "reset_duration": "1d"}}]}],
            "model_configs": [
                {"id": "haiku-once", "model_name": "claude-3-5-haiku", "provider": "anthropic",
                 "rate_limit": {"request_max_limit": 1, "request_reset_duration": "1h"}},
                {"id": "gpt41-once", "model_name": "gpt-4.1", "provider": "openai",
                 "rate_limit": {"request_max_limit": 1, "request_reset_duration": "1h"}}],
        },
    }
    gateway = GatewayProcess(tmp_path_factory.mktemp("fallback-charging"), config, env={"RAINBRIDGE_ADMIN_TOKEN": TOKEN})
    yield gateway
    gateway.stop()


def ask(gw, model: str, fallbacks: list[str] | None = None, key: str = FB) -> str:
    c = openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0, timeout=20)
    try:
        reply = c.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}],
                                          extra_body={"fallbacks": fallbacks} if fallbacks else None)
        return reply.choices[0].message.content
    finally:
        c.close()


def provider_usage(gw, vk_id: str = "fb") -> dict[str, dict]:
    status, _, usage = http_json("GET", gw.url + f"/api/governance/virtual-keys/{vk_id}/usage",
                                 headers={"authorization": f"Bearer {TOKEN}"})
    assert status == 200, usage
    return {level["provider"]: level for level in usage["levels"] if level["level"] == "provider config"}


def counts(level: dict) -> tuple[float, float, float]:
    """(requests, tokens, spend) a provider config counted."""
    rate = level["rate_limit"]
    return rate["request"]["current_usage"], rate["token"]["current_usage"], level["budgets"][0]["current_usage"]


def test_a_fallback_is_charged_to_the_provider_that_served_it_and_the_failed_one_nothing(gw):
    skip_window_edge(3600, 30)
    chain = ["openai/gpt-4o-mini", "anthropic/claude-3-5-haiku"]
    assert ask(gw, "broken/gpt-4o", chain).startswith("This is a mock response from gpt-4o-mini")
    per = provider_usage(gw)
    assert counts(per["broken"]) == (0, 0, 0)  # refused the connection: served nothing
    requests, tokens, spend = counts(per["openai"])
    assert requests == 1 and tokens > 0 and spend == pytest.approx(tokens)  # $1 a token

    # openai's own limit (1 an hour) is spent: that fallback is skipped, the next one serves.
    assert ask(gw, "broken/gpt-4o", chain).startswith("This is a mock response from claude-3-5-haiku")
    # ... and now the haiku model limit (1 an hour) too: nothing left, the primary's error.
    with pytest.raises(openai.InternalServerError) as failed:
        ask(gw, "broken/gpt-4o", chain)
    assert failed.value.status_code == 502 and failed.value.body["type"] == "upstream_unreachable"
    per = provider_usage(gw)
    assert counts(per["broken"]) == (0, 0, 0) and counts(per["openai"]) == (requests, tokens, spend)


def test_a_primary_over_its_own_limit_goes_to_its_fallback_or_is_refused_naming_it(gw):
    skip_window_edge(3600, 30)
    ask(gw, "openai/gpt-4o-mini", ["anthropic/claude-3-opus"])  # uses openai's hour, unless already used
    assert ask(gw, "openai/gpt-4o-mini", ["anthropic/claude-3-opus"]).startswith("This is a mock response from claude-3-opus")
    with pytest.raises(openai.RateLimitError) as refused:
        ask(gw, "openai/gpt-4o-mini")
    assert refused.value.body["code"] == "request_limited"
    assert "virtual key 'fb' on provider 'openai'" in refused.value.body["message"]


def test_without_a_key_a_fallback_counts_against_its_own_model_limit(gw):
    skip_window_edge(3600, 30)
    chain = ["openai/gpt-4.1", "anthropic/claude-3-5-sonnet"]
    assert ask(gw, "broken/gpt-4o", chain, key="no-virtual-key").startswith("This is a mock response from gpt-4.1")
    # gpt-4.1's model limit (1 an hour) counted that request, not broken's model: skipped now.
    assert ask(gw, "broken/gpt-4o", chain, key="no-virtual-key").startswith("This is a mock response from claude-3-5-sonnet")


def test_a_stream_that_falls_back_is_charged_to_the_fallbacks_tokens_and_budget(gw):
    skip_window_edge(3600, 30)
    c = openai.OpenAI(base_url=gw.url + "/v1", api_key=FBS, max_retries=0, timeout=20)
    try:
        chunks = list(c.chat.completions.create(model="broken/gpt-4o", messages=[{"role": "user", "content": "hi"}],
                                                stream=True, extra_body={"fallbacks": ["openai/gpt-4o-mini"]}))
    finally:
        c.close()
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text.startswith("This is a mock response from gpt-4o-mini")
    assert all(ch.choices for ch in chunks)  # the usage chunk rainbridge asked for is not passed on
    per = provider_usage(gw, "fbs")
    requests, tokens, spend = counts(per["openai"])
    assert requests == 1 and tokens > 0 and spend == pytest.approx(tokens)
