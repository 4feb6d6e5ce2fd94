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
        (key_of("ghost"), "openai/gpt-4o", 403, "virtual_key_not_found", "virtual key not found"),
        (key_of("off"), "openai/gpt-4o", 403, "virtual_key_blocked", "'off' is inactive"),
        (key_of("old"), "openai/gpt-4o", 403, "virtual_key_blocked", "expired at 2020-01-01"),
        (key_of("only-anthropic"), "openai/gpt-4o", 403, "provider_blocked", "may not use provider 'openai'"),
        (key_of("only-anthropic"), "anthropic/claude-3-opus", 403, "model_blocked", "may not use model 'claude-3-opus'"),
        (key_of("broke"), "openai/gpt-4o", 402, "budget_exceeded", "budget of $0 per 1d exhausted for virtual key 'broke'"),
        (key_of("slow"), "openai/gpt-4o", 429, "request_limited", "request limit of 0 per 1h reached for virtual key 'slow'"),
        (key_of("thin"), "openai/gpt-4o", 429, "token_limited", "token limit of 10 per 1h reached for virtual key 'thin'"),
    ]
    for key, model, status, type_, fragment in cases:
        with pytest.raises(openai.APIStatusError) as e:
            chat(client(gw, key), model)
        assert e.value.status_code == status, (type_, e.value.status_code, e.value.body)
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
            async with s.post(url + "/v1/chat/completions", json=body, headers=headers) as resp:
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


async def spend_until_refused(url, key, workers, latency_ms, per_worker=40):
    """``workers`` clients, each sending requests back to back until one is refused: at
    most ``workers`` requests are in flight at any moment, and most of the time exactly that
    many. Returns every (status, body) in the order the answers came, and the most requests
    seen in flight at once."""
    body = json.dumps({"model": "openai/gpt-4o", "messages": [{"role": "user", "content": "hello there"}]})
    headers = {"content-type": "application/json", "authorization": f"Bearer {key}", "x-bf-eh-x-mock-latency-ms": str(latency_ms)}
    results: list[tuple[int, dict]] = []
    in_flight = [0, 0]  # now, most

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
        async def worker():
            for _ in range(per_worker):
                in_flight[0] += 1
                in_flight[1] = max(in_flight)
                try:
                    async with s.post(url + "/v1/chat/completions", data=body, headers=headers) as resp:
                        results.append((resp.status, await resp.json()))
                finally:
                    in_flight[0] -= 1
                if resp.status != 200:
                    return
            raise AssertionError(f"no request refused in {per_worker} per client")

        await asyncio.gather(*(worker() for _ in range(workers)))
    return results, in_flight[1]


async def test_budget_is_overshot_only_by_requests_in_flight(mock, start_gateway):
    # README: "A budget admits while it has room left: it is overshot at most by the
    # requests already in flight when it filled up." With K clients sending back to back,
    # at most K requests are in flight when the budget fills: the ones that completed before
    # left room (they cost less than the limit together), so at most K - 1 more than those
    # can have been admitted. Every request after that is refused with 402 budget_exceeded.
    workers, limit = 6, 0.2
    gw = start_gateway(base_config(mock.url, [vk("spend", budget={"max_limit": limit, "reset_duration": "1d"})]), env={"RAINBRIDGE_ADMIN_TOKEN": TOKEN})
    results, most_in_flight = await spend_until_refused(gw.url, key_of("spend"), workers, latency_ms=150)
    assert most_in_flight == workers

    admitted = [b for status, b in results if status == 200]
    refused = [(status, b) for status, b in results if status != 200]
    assert len(refused) == workers  # each client stopped at its first refusal
    for status, b in refused:
        assert status == 402, b
        assert (b["error"]["type"], b["error"]["code"]) == ("budget_exceeded", "budget_exceeded"), b
        assert f"budget of ${limit:g} per 1d exhausted for virtual key 'spend'" in b["error"]["message"], b
    costs = [b["usage"]["total_tokens"] * 0.001 for b in admitted]
    assert len(set(costs)) == 1, costs  # the fake provider answers the same prompt alike
    fit = 0  # requests that fit before the budget filled (the gateway's own float sums)
    spent = 0.0
    while spent < limit:
        spent += costs[0]
        fit += 1
    assert fit <= len(admitted) <= fit - 1 + workers, (len(admitted), fit)
    assert fit >= 2 * workers  # the budget holds several rounds of requests, not one

    status, _, report = http_json("GET", f"{gw.url}/api/governance/virtual-keys/spend/usage", headers=ADMIN)
    assert status == 200
    budget = report["levels"][0]["budgets"][0]
    assert budget["current_usage"] == pytest.approx(sum(costs)) and budget["reserved"] == 0


# --------------------------------------------------------------------------- hierarchy


def spend_until_budget_refusal(c, bound):
    """Send requests until one is refused; it must be a 402 ``budget_exceeded`` (any other
    error fails the test) within ``bound`` requests. Returns the refusal's error body."""
    for _ in range(bound):
        try:
            chat(c)
        except openai.APIStatusError as e:
            assert e.status_code == 402, (e.status_code, e.body)
            assert (e.body["type"], e.body["code"]) == ("budget_exceeded", "budget_exceeded"), e.body
            return e.body
    raise AssertionError(f"no budget refusal within {bound} requests")


def test_team_budget_blocks_every_key_of_the_team_and_customer_budget_its_teams(mock, start_gateway):
    gw = start_gateway(base_config(
        mock.url,
        [vk("t1", team_id="team-a"), vk("t2", team_id="team-a"), vk("t3", team_id="team-b"), vk("solo")],
        teams=[{"name": "team-a", "customer_id": "acme", "budget": {"max_limit": 0.02, "reset_duration": "1d"}},
               {"name": "team-b", "customer_id": "acme"}],
        customers=[{"name": "acme", "budget": {"max_limit": 0.06, "reset_duration": "1M", "calendar_aligned": True}}],
    ))
    # t1 spends the team's budget; then no key of the team passes, t1 included.
    refusal = spend_until_budget_refusal(client(gw, key_of("t1")), 10)
    assert "budget of $0.02 per 1d exhausted for team 'team-a'" in refusal["message"], refusal
    with pytest.raises(openai.APIStatusError) as e:
        chat(client(gw, key_of("t2")))
    assert e.value.status_code == 402 and e.value.body["type"] == "budget_exceeded", e.value.body
    assert "team 'team-a'" in e.value.body["message"]
    # team-b has no budget of its own, but its customer's fills up (team-a's spend counts).
    refusal = spend_until_budget_refusal(client(gw, key_of("t3")), 20)
    assert "budget of $0.06 per 1M exhausted for customer 'acme'" in refusal["message"], refusal
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
    limits = {"token_max_limit": 10**6, "token_reset_duration": "1h", "request_max_limit": 100, "request_reset_duration": "1h"}
    config = base_config(mock.url, [vk("once", rate_limit=limits, budget={"max_limit": 100, "reset_duration": "1d"})])
    config["providers"]["openai"]["network_config"].update(max_retries=2, retry_backoff_initial=10, retry_backoff_max=20)
    # A provider whose only key always gets 500 from the fake provider: every attempt fails.
    config["providers"]["failing"] = {"type": "openai", "keys": [{"name": "bad", "value": "sk-status-500-failing"}],
                                      "network_config": {"base_url": mock.url, "max_retries": 1, "retry_backoff_initial": 10, "retry_backoff_max": 20}}
    gw = start_gateway(config, env={"RAINBRIDGE_ADMIN_TOKEN": TOKEN})
    c = client(gw, key_of("once"))

    def attempts(mid):
        return [(r["path"], r["key"]) for r in mock.stats()["recent"] if r["headers"].get("x-mock-id") == mid]

    # Retries: two failures, then the same provider answers.
    retried_id = uuid.uuid4().hex
    retried = chat(c, extra_headers={"x-bf-eh-x-mock-fail-first": "2", "x-bf-eh-x-mock-id": retried_id})
    tries = attempts(retried_id)
    assert len(tries) == 3 and len(set(tries)) == 1, tries  # 5xx: the same key, retried twice
    # A fallback: the primary fails twice (first try + one retry), the fallback answers.
    fallback_id = uuid.uuid4().hex
    fell_back = chat(c, "failing/gpt-4o", extra_body={"fallbacks": ["anthropic/claude-3-haiku"]},
                     extra_headers={"x-bf-eh-x-mock-id": fallback_id})
    assert attempts(fallback_id) == [("/v1/chat/completions", "sk-status-500-failing")] * 2 + [("/v1/messages", "sk-ant-prov")]
    assert fell_back.usage.total_tokens > 0

    status, _, report = http_json("GET", f"{gw.url}/api/governance/virtual-keys/once/usage", headers=ADMIN)
    assert status == 200
    level = report["levels"][0]
    rl = level["rate_limit"]
    assert rl["request"]["current_usage"] == 2  # two client requests, six upstream attempts
    assert rl["token"]["current_usage"] == retried.usage.total_tokens + fell_back.usage.total_tokens
    assert rl["token"]["reserved"] == 0
    # gpt-4o and claude-3-haiku both cost $0.001 a token here (pricing_overrides).
    spend = level["budgets"][0]
    assert spend["current_usage"] == pytest.approx((retried.usage.total_tokens + fell_back.usage.total_tokens) * 0.001)


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
