"""Governance through the official openai SDK: every decision, exactness under concurrency,
budgets up the hierarchy, restarts, and charges once per request."""

import asyncio
import json
import time
import uuid

import aiohttp
import openai
import pytest

from support import http_json

TOKEN = "gov-admin-token"
ADMIN = {"authorization": f"Bearer {TOKEN}"}
PRICE = {"input_cost_per_token": 0.001, "output_cost_per_token": 0.001}  # $ per token: easy sums


def vk(name, **extra):
    return {"name": name, "value": f"sk-rb-{name}-" + "0" * 24, **extra}


def key_of(name):
    return f"sk-rb-{name}-" + "0" * 24


def base_config(mock_url, virtual_keys=(), teams=(), customers=(), store=None, **gov):
    config = {
        "providers": {
            "openai": {"keys": [{"name": "a", "value": "sk-prov-a"}, {"name": "b", "value": "sk-prov-b"}], "network_config": {"base_url": mock_url}},
            "anthropic": {"keys": [{"name": "main", "value": "sk-ant-prov"}], "network_config": {"base_url": mock_url}},
        },
        "pricing_overrides": {"gpt-4o": PRICE, "claude-3-haiku": PRICE},
        "governance": {"virtual_keys": list(virtual_keys), "teams": list(teams), "customers": list(customers), **gov},
    }
    if store is not None:
        config["config_store"] = store
    return config


def client(gw, key):
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0, timeout=20)


def chat(c, model="openai/gpt-4o", **kw):
    return c.chat.completions.create(model=model, messages=[{"role": "user", "content": "hello there"}], **kw)


# --------------------------------------------------------------------------- decisions


def test_each_decision_reaches_the_sdk(mock, start_gateway):
    past = "2020-01-01T00:00:00Z"
    gw = start_gateway(base_config(
        mock.url,
        [
            vk("ok"),
            vk("off", is_active=False),
            vk("old", expires_at=past),
            vk("only-anthropic", provider_configs=[{"provider": "anthropic", "allowed_models": ["claude-3-haiku"]}]),
            vk("broke", budget={"max_limit": 0, "reset_duration": "1d"}),
            vk("slow", rate_limit={"request_max_limit": 0, "request_reset_duration": "1h"}),
            vk("thin", rate_limit={"token_max_limit": 10, "token_reset_duration": "1h"}),
        ],
        is_vk_mandatory=True,
    ))
    assert chat(client(gw, key_of("ok"))).choices[0].message.content

    with pytest.raises(openai.AuthenticationError) as e:
        chat(client(gw, "not-a-virtual-key"))
    assert e.value.body["type"] == "virtual_key_required"

    cases = [
        (key_of("ghost"), "openai/gpt-4o", openai.PermissionDeniedError, "virtual_key_not_found", "virtual key not found"),
        (key_of("off"), "openai/gpt-4o", openai.PermissionDeniedError, "virtual_key_blocked", "'off' is inactive"),
        (key_of("old"), "openai/gpt-4o", openai.PermissionDeniedError, "virtual_key_blocked", "expired at 2020-01-01"),
        (key_of("only-anthropic"), "openai/gpt-4o", openai.PermissionDeniedError, "provider_blocked", "may not use provider 'openai'"),
        (key_of("only-anthropic"), "anthropic/claude-3-opus", openai.PermissionDeniedError, "model_blocked", "may not use model 'claude-3-opus'"),
        (key_of("broke"), "openai/gpt-4o", openai.APIStatusError, "budget_exceeded", "budget of $0 per 1d exhausted for virtual key 'broke'"),
        (key_of("slow"), "openai/gpt-4o", openai.RateLimitError, "request_limited", "request limit of 0 per 1h reached for virtual key 'slow'"),
        (key_of("thin"), "openai/gpt-4o", openai.RateLimitError, "token_limited", "token limit of 10 per 1h reached for virtual key 'thin'"),
    ]
    for key, model, exc, type_, fragment in cases:
        with pytest.raises(exc) as e:
            chat(client(gw, key), model)
        assert e.value.body["type"] == type_, (type_, e.value.body)
        assert fragment in e.value.body["message"], e.value.body
        assert key not in json.dumps(e.value.body)
    with pytest.raises(openai.APIStatusError) as e:
        chat(client(gw, key_of("broke")))
    assert e.value.status_code == 402
    with pytest.raises(openai.RateLimitError) as e:
        chat(client(gw, key_of("slow")))
    assert int(e.value.response.headers["retry-after"]) >= 1
    assert e.value.response.headers["x-ratelimit-remaining-requests"] == "0"
    # Anthropic-style and x-bf-vk headers carry the key too.
    status, _, _ = http_json("POST", gw.url + "/v1/chat/completions", {"model": "openai/gpt-4o", "messages": [{"role": "user", "content": "x"}]}, headers={"x-bf-vk": key_of("ok")})
    assert status == 200
    assert key_of("ok") not in gw.log()


@pytest.mark.parametrize("server", ["uvicorn", "uvicorn-httptools", "granian"])
def test_success_carries_rate_limit_headers_for_the_tightest_limit(mock, start_gateway, server):
    # Our own protocol takes the header lines rendered (server.http.HEAD_LINES); the other
    # servers get them as ordinary headers: the client sees the same either way.
    gw = start_gateway(base_config(
        mock.url,
        [vk("t", team_id="eng", rate_limit={"request_max_limit": 100, "request_reset_duration": "1m", "token_max_limit": 100000, "token_reset_duration": "1h"}),
         vk("one", rate_limit={"request_max_limit": 5, "request_reset_duration": "1m", "token_max_limit": 2000, "token_reset_duration": "1h"})],
        teams=[{"name": "eng", "rate_limit": {"request_max_limit": 7, "request_reset_duration": "1h"}}],
    ), "--server", server)
    raw = client(gw, key_of("t")).chat.completions.with_raw_response.create(model="openai/gpt-4o", messages=[{"role": "user", "content": "x"}])
    h = raw.headers
    assert h["x-ratelimit-limit-requests"] == "7" and h["x-ratelimit-remaining-requests"] == "6"
    assert h["x-ratelimit-reset-requests"].endswith(("m", "s"))
    assert h["x-ratelimit-limit-tokens"] == "100000" and int(h["x-ratelimit-remaining-tokens"]) < 100000

    # One limit per metric; the counts move request by request, streams carry them too.
    c = client(gw, key_of("one"))
    seen = []
    for stream in (False, True, False):
        raw = c.chat.completions.with_raw_response.create(model="openai/gpt-4o", messages=[{"role": "user", "content": "x"}], stream=stream)
        h = raw.headers
        assert h.get_list("x-ratelimit-remaining-requests") == [h["x-ratelimit-remaining-requests"]]  # once each
        assert h["x-ratelimit-limit-requests"] == "5" and h["x-ratelimit-limit-tokens"] == "2000"
        assert h["x-ratelimit-reset-tokens"].endswith(("m", "s"))
        seen.append((int(h["x-ratelimit-remaining-requests"]), int(h["x-ratelimit-remaining-tokens"])))
        list(raw.parse()) if stream else raw.parse()
    assert [r for r, _ in seen] == [4, 3, 2]
    assert seen[0][1] > seen[1][1] > seen[2][1]  # each reserved its estimate after the last settled


# --------------------------------------------------------------------------- exactness


async def burst(url, key, n, latency_ms=300, body=None):
    body = body or {"model": "openai/gpt-4o", "messages": [{"role": "user", "content": "hello there"}]}
    headers = {"authorization": f"Bearer {key}", "x-bf-eh-x-mock-latency-ms": str(latency_ms)}
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as s:
        async def one():
            async with s.post(url + "/v1/chat/completions", data=json.dumps(body), headers=headers) as resp:
                data = await resp.json()
                return resp.status, data
        return await asyncio.gather(*(one() for _ in range(n)))


async def test_200_concurrent_requests_against_a_limit_of_50_admit_exactly_50(mock, start_gateway):
    gw = start_gateway(base_config(mock.url, [vk("burst", rate_limit={"request_max_limit": 50, "request_reset_duration": "1h"})]))
    results = await burst(gw.url, key_of("burst"), 200)
    statuses = [s for s, _ in results]
    assert statuses.count(200) == 50
    assert statuses.count(429) == 150
    assert {b["error"]["type"] for s, b in results if s == 429} == {"request_limited"}


async def test_token_limit_reserves_the_estimate_and_settles_actual_usage(mock, start_gateway):
    body = {"model": "openai/gpt-4o", "max_tokens": 200, "messages": [{"role": "user", "content": "hello there"}]}
    estimate = len(json.dumps(body)) // 4 + 200  # what the gateway reserves: ~4 bytes a token + max_tokens
    limit = 5 * estimate + estimate // 2  # room for exactly 5 reservations
    gw = start_gateway(base_config(mock.url, [vk("tok", rate_limit={"token_max_limit": limit, "token_reset_duration": "1h"})]))
    results = await burst(gw.url, key_of("tok"), 20, body=body)
    assert [s for s, _ in results].count(200) == 5  # reservations, not actual usage, bound concurrency
    used = sum(b["usage"]["total_tokens"] for s, b in results if s == 200)
    assert used < 5 * estimate
    # Settled with the actual tokens (far below the estimates), so more requests fit again.
    more = await burst(gw.url, key_of("tok"), 1, latency_ms=0, body=body)
    assert more[0][0] == 200


async def test_budget_is_overshot_only_by_requests_in_flight(mock, start_gateway):
    gw = start_gateway(base_config(mock.url, [vk("spend", budget={"max_limit": 0.05, "reset_duration": "1d"})]), env={"RAINBRIDGE_ADMIN_TOKEN": TOKEN})
    c = client(gw, key_of("spend"))
    costs = []
    while True:
        try:
            r = chat(c)
        except openai.APIStatusError as e:
            assert e.status_code == 402
            break
        costs.append(r.usage.total_tokens * 0.001)
        assert len(costs) < 50
    assert sum(costs[:-1]) < 0.05 <= sum(costs)  # the last admitted request crossed the line, no later one
    status, _, report = http_json("GET", f"{gw.url}/api/governance/virtual-keys/spend/usage", headers=ADMIN)
    assert status == 200
    budget = report["levels"][0]["budgets"][0]
    assert budget["current_usage"] == pytest.approx(sum(costs)) and budget["reserved"] == 0


# --------------------------------------------------------------------------- hierarchy


def test_team_budget_blocks_every_key_of_the_team_and_customer_budget_its_teams(mock, start_gateway):
    gw = start_gateway(base_config(
        mock.url,
        [vk("t1", team_id="team-a"), vk("t2", team_id="team-a"), vk("t3", team_id="team-b"), vk("solo")],
        teams=[{"name": "team-a", "customer_id": "acme", "budget": {"max_limit": 0.02, "reset_duration": "1d"}},
               {"name": "team-b", "customer_id": "acme"}],
        customers=[{"name": "acme", "budget": {"max_limit": 0.06, "reset_duration": "1M", "calendar_aligned": True}}],
    ))
    for _ in range(3):
        try:
            chat(client(gw, key_of("t1")))
        except openai.APIStatusError:
            break
    with pytest.raises(openai.APIStatusError) as e:
        chat(client(gw, key_of("t2")))
    assert e.value.status_code == 402 and "team 'team-a'" in e.value.body["message"]
    for _ in range(10):
        try:
            chat(client(gw, key_of("t3")))
        except openai.APIStatusError as e:
            assert e.status_code == 402 and "customer 'acme'" in e.body["message"]
            break
    else:
        raise AssertionError("the customer budget never blocked team-b")
    assert chat(client(gw, key_of("solo"))).choices  # outside the hierarchy: unaffected


# --------------------------------------------------------------------------- routing under grants


def test_provider_configs_steer_bare_models_and_key_ids_pin_keys(mock, start_gateway):
    gw = start_gateway(base_config(mock.url, [
        vk("steer", provider_configs=[{"provider": "anthropic", "weight": 1, "allowed_models": ["claude-3-haiku"]},
                                      {"provider": "openai", "weight": 1, "allowed_models": ["gpt-4o"], "key_ids": ["b"]}]),
    ]))
    mock.reset()
    c = client(gw, key_of("steer"))
    chat(c, "claude-3-haiku")
    assert mock.stats()["recent"][-1]["path"] == "/v1/messages"
    for _ in range(10):
        chat(c, "gpt-4o")
    assert mock.stats()["by_key"].get("sk-prov-a", 0) == 0 and mock.stats()["by_key"]["sk-prov-b"] == 10
    with pytest.raises(openai.PermissionDeniedError) as e:
        chat(c, "gpt-4o-mini")
    assert e.value.body["type"] == "model_blocked"


# --------------------------------------------------------------------------- accounting


def test_streams_are_counted_without_showing_usage_the_client_did_not_ask_for(mock, start_gateway):
    gw = start_gateway(base_config(mock.url, [vk("s", rate_limit={"token_max_limit": 10**6, "token_reset_duration": "1h"})]), env={"RAINBRIDGE_ADMIN_TOKEN": TOKEN})
    chunks = list(chat(client(gw, key_of("s")), stream=True))
    assert all(ch.choices for ch in chunks)  # no usage-only chunk reached the client
    status, _, report = http_json("GET", f"{gw.url}/api/governance/virtual-keys/s/usage", headers=ADMIN)
    assert status == 200
    tokens = report["levels"][0]["rate_limit"]["token"]
    assert tokens["current_usage"] > 0 and tokens["reserved"] == 0


def test_retries_and_fallbacks_are_charged_once(mock, start_gateway):
    config = base_config(mock.url, [vk("once", rate_limit={"token_max_limit": 10**6, "token_reset_duration": "1h", "request_max_limit": 100, "request_reset_duration": "1h"})])
    config["providers"]["openai"]["network_config"].update(max_retries=2, retry_backoff_initial=10, retry_backoff_max=20)
    gw = start_gateway(config, env={"RAINBRIDGE_ADMIN_TOKEN": TOKEN})
    mid = uuid.uuid4().hex
    reply = chat(client(gw, key_of("once")), extra_headers={"x-bf-eh-x-mock-fail-first": "2", "x-bf-eh-x-mock-id": mid})
    _, _, report = http_json("GET", f"{gw.url}/api/governance/virtual-keys/once/usage", headers=ADMIN)
    rl = report["levels"][0]["rate_limit"]
    assert rl["request"]["current_usage"] == 1
    assert rl["token"]["current_usage"] == reply.usage.total_tokens


# --------------------------------------------------------------------------- persistence


def test_restart_keeps_usage_and_shutdown_flushes(mock, start_gateway, store_config):
    config = base_config(mock.url, [vk("persist", rate_limit={"request_max_limit": 5, "request_reset_duration": "1h"})], store=store_config)
    gw = start_gateway(config)
    for _ in range(3):
        chat(client(gw, key_of("persist")))
    gw.stop()  # SIGTERM right away: before the periodic flush, so shutdown must flush
    gw2 = start_gateway(config)
    c = client(gw2, key_of("persist"))
    chat(c)
    chat(c)
    with pytest.raises(openai.RateLimitError):
        chat(c)
    assert "restored" in gw2.log()


def test_budget_windows_do_not_move_when_the_file_is_reloaded(mock, start_gateway, store_config):
    config = base_config(mock.url, [vk("anchor", budget={"max_limit": 100, "reset_duration": "1d"})], store=store_config)
    gw = start_gateway(config, env={"RAINBRIDGE_ADMIN_TOKEN": TOKEN})
    _, _, first = http_json("GET", f"{gw.url}/api/governance/virtual-keys/anchor/usage", headers=ADMIN)
    gw.stop()
    time.sleep(0.05)
    gw2 = start_gateway(config, env={"RAINBRIDGE_ADMIN_TOKEN": TOKEN})
    _, _, second = http_json("GET", f"{gw2.url}/api/governance/virtual-keys/anchor/usage", headers=ADMIN)
    assert first["levels"][0]["budgets"][0]["last_reset"] == second["levels"][0]["budgets"][0]["last_reset"]


def test_the_anthropic_sdk_authenticates_with_a_virtual_key_and_is_counted(mock, start_gateway):
    import anthropic

    gw = start_gateway(base_config(mock.url, [vk("claude", rate_limit={"token_max_limit": 10**6, "token_reset_duration": "1h", "request_max_limit": 2, "request_reset_duration": "1h"})]),
                       env={"RAINBRIDGE_ADMIN_TOKEN": TOKEN})
    c = anthropic.Anthropic(base_url=gw.url + "/anthropic", api_key=key_of("claude"), max_retries=0)
    msg = c.messages.create(model="anthropic/claude-3-haiku", max_tokens=50, messages=[{"role": "user", "content": "hi"}])
    with c.messages.stream(model="anthropic/claude-3-haiku", max_tokens=50, messages=[{"role": "user", "content": "hi"}]) as s:
        streamed = s.get_final_message()
    _, _, report = http_json("GET", f"{gw.url}/api/governance/virtual-keys/claude/usage", headers=ADMIN)
    tokens = report["levels"][0]["rate_limit"]["token"]["current_usage"]
    expected = msg.usage.input_tokens + msg.usage.output_tokens + streamed.usage.input_tokens + streamed.usage.output_tokens
    assert tokens == expected
    with pytest.raises(anthropic.RateLimitError) as e:
        c.messages.create(model="anthropic/claude-3-haiku", max_tokens=50, messages=[{"role": "user", "content": "hi"}])
    assert "request limit of 2" in str(e.value)
