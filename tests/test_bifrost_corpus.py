"""Real Bifrost configurations (tests/data/bifrost/corpus.json, each with its source repo,
path and commit), each asserted accepted or refused as issue 14 says rainbridge must.

An accepted file's restrictions are asserted enforced, in the objects the request path
uses: required headers as the app checks them, each provider's allowed request types,
upstream paths and proxy, each virtual key's per-provider limits as governance counts them, where each
routing rule sends a request."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from rainbridge.config.load import ConfigError, load_data
from rainbridge.gateway.provider import build_providers
from rainbridge.gateway.routing import REQUEST_TYPES
from rainbridge.gateway.rules import Facts
from rainbridge.gateway.rules_config import rules_from_config
from rainbridge.governance.normalize import normalize
from rainbridge.server.app import required_headers
from rainbridge.upstream import UpstreamClient

OPS = {"chat_completion": ("chat/completions", False), "chat_completion_stream": ("chat/completions", True),
       "embedding": ("embeddings", False), "text_completion": ("completions", False), "list_models": ("models", False)}

CORPUS = json.loads((Path(__file__).parent / "data" / "bifrost" / "corpus.json").read_text())["cases"]
ENV_REF = re.compile(r'"env\.([A-Za-z_][A-Za-z0-9_]*)"')


def env_for(case: dict) -> dict[str, str]:
    """Every env.VAR the config names, with a placeholder value (the case's own env wins)."""
    names = ENV_REF.findall(json.dumps(case["config"]))
    return {**{name: f"placeholder-{name.lower()}-0123456789" for name in names}, **case.get("env", {})}


def test_every_case_names_its_source():
    for case in CORPUS:
        assert set(case["source"]) == {"repo", "path", "commit"} and all(case["source"].values()), case["name"]


@pytest.mark.parametrize("case", [c for c in CORPUS if c["expect"]["outcome"] == "accepted"], ids=lambda c: c["name"])
def test_accepted_bifrost_config(case):
    loaded = load_data(case["config"], env_for(case))
    expect = case["expect"]
    skipped = {w.path.removeprefix("$.providers.") for w in loaded.warnings if ": skipped (requests for its models answer 404)" in w.message}
    assert skipped == set(expect["skipped"])
    assert not set(expect["skipped"]) & set(loaded.config.providers)
    assert loaded.config.governance.is_vk_mandatory is expect["is_vk_mandatory"]
    config = loaded.config
    if "required_headers" in expect:
        assert [f"{name}={value.decode()}" if value is not None else name
                for name, _, value in required_headers(config.client.required_headers)] == expect["required_headers"]
    providers = build_providers(config.providers, config, UpstreamClient())
    for name, allowed in expect.get("allowed_requests", {}).items():
        assert providers[name].allowed_requests == frozenset(allowed)
    for name, paths in expect.get("paths", {}).items():
        adapter = providers[name].adapter
        for kind, path in paths.items():
            op, stream = OPS[kind]
            assert adapter.where(op, None, "m", stream)[1] == adapter.base_path + path
    for name, shown in expect.get("proxies", {}).items():  # every upstream URL goes through it, with credentials
        adapter = providers[name].adapter
        proxy = adapter.proxy_for(adapter.base_url)
        assert proxy.shown == shown and adapter.origin_for(adapter.base_url).proxy == proxy
        assert getattr(proxy, "authorization", None) or getattr(proxy, "password", None)
    for vk_name, grants in expect.get("provider_limits", {}).items():
        (vk,) = [v for v in normalize(config.governance, set(config.providers), 0).virtual_keys if v.name == vk_name]
        for provider, limits in grants.items():
            grant = vk.grant(provider)
            rl = grant.rate_limit
            assert [[b.max_limit, b.reset_duration] for b in grant.budgets] == limits["budgets"]
            assert [rl.request_max_limit, rl.request_reset_duration] == limits["requests"]
            assert (None if rl.token_max_limit is None else [rl.token_max_limit, rl.token_reset_duration]) == limits["tokens"]


    if "routes" in expect:
        check_routes(config, expect["routes"])


def check_routes(config, routes: list[dict]) -> None:
    """Each request of ``routes`` goes where the case's routing rules send it (``to``: None
    when no rule matches), with the rule's fallbacks."""
    teams = {t.id or t.name: t.name for t in config.governance.teams}
    rules = rules_from_config(config.governance, config.providers, [])
    for r in routes:
        provider, _, model = r["model"].rpartition("/")  # bare: the only provider's, as Routes.resolve
        provider = provider or (next(iter(config.providers)) if len(config.providers) == 1 else "")
        team = r.get("team")
        facts = Facts(team_id=team or "", team_name=teams.get(team, "")) if team else Facts()
        headers = {k.lower(): v for k, v in r.get("headers", {}).items()}
        variables = rules.variables(facts, REQUEST_TYPES[r["endpoint"]], headers, {})
        capacity = tuple(float(x) for x in r.get("capacity", (0, 0, 0)))
        decision = rules.decide(facts, provider, model, variables, lambda p, m, c=capacity: c)
        if r["to"] is None:
            assert decision is None, r
            continue
        assert decision is not None, r
        assert f"{decision.provider}/{decision.model}" == r["to"]
        assert [f"{fb.provider}/{fb.model or model}" for fb in decision.fallbacks] == r.get("fallbacks", [])


@pytest.mark.parametrize("case", [c for c in CORPUS if c["expect"]["outcome"] == "refused"], ids=lambda c: c["name"])
def test_refused_bifrost_config_names_the_paths(case):
    with pytest.raises(ConfigError) as caught:
        load_data(case["config"], env_for(case))
    assert {p.path for p in caught.value.errors} == set(case["expect"]["paths"])
