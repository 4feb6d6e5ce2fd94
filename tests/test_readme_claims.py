"""README claims about cost and shared limits, each checked through a real gateway.

- "Cost = tokens × price from a bundled, versioned table (prices.json) or pricing_overrides;
  an unknown model costs 0 (warned once)."
- "Shared budget_id/rate_limit_id references give each owner its own counter."
"""

import json
from importlib import resources

import openai
import pytest

from support import http_json

TOKEN = "readme-claims-admin-token"
ADMIN = {"authorization": f"Bearer {TOKEN}"}


def key_of(name):
    return f"sk-rb-{name}-" + "0" * 24


def vk(name, **extra):
    return {"name": name, "value": key_of(name), **extra}


def config(mock_url, virtual_keys, **gov):
    """openai on the fake provider, no pricing_overrides: prices come from the bundled table."""
    return {
        "providers": {"openai": {"keys": [{"name": "a", "value": "sk-prov-a"}], "network_config": {"base_url": mock_url}}},
        "governance": {"virtual_keys": virtual_keys, **gov},
    }


def chat(gw, key, model="openai/gpt-4o"):
    c = openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0, timeout=20)
    try:
        return c.chat.completions.create(model=model, messages=[{"role": "user", "content": "hello there"}])
    finally:
        c.close()


def usage_report(gw, vk_id):
    status, _, report = http_json("GET", f"{gw.url}/api/governance/virtual-keys/{vk_id}/usage", headers=ADMIN)
    assert status == 200, report
    return report["levels"][0]


def bundled_price(model):
    """(input, output) USD per token from the table shipped in the package."""
    table = json.loads((resources.files("rainbridge.governance") / "prices.json").read_text("utf-8"))
    per_million = table["models"][model]
    return per_million[0] / 1e6, per_million[1] / 1e6


BUDGET = {"max_limit": 100, "reset_duration": "1d"}


def test_known_models_are_charged_from_the_bundled_price_table(mock, start_gateway):
    gw = start_gateway(config(mock.url, [vk("exact", budget=BUDGET), vk("dated", budget=BUDGET)]),
                       env={"RAINBRIDGE_ADMIN_TOKEN": TOKEN})
    # An exact name, and a dated name priced as the longest known name it extends
    # (gpt-4o-mini-2024-07-18 is gpt-4o-mini, not gpt-4o).
    for vk_id, model, priced_as in (("exact", "gpt-4o", "gpt-4o"), ("dated", "gpt-4o-mini-2024-07-18", "gpt-4o-mini")):
        reply = chat(gw, key_of(vk_id), f"openai/{model}")
        input_price, output_price = bundled_price(priced_as)
        expected = reply.usage.prompt_tokens * input_price + reply.usage.completion_tokens * output_price
        assert expected > 0
        budget = usage_report(gw, vk_id)["budgets"][0]
        assert budget["current_usage"] == pytest.approx(expected, rel=1e-9), (model, budget)
    assert "no price for model" not in gw.log()


def test_an_unknown_model_costs_nothing_and_is_warned_about_once_by_name(mock, start_gateway):
    gw = start_gateway(config(mock.url, [vk("mystery", budget=BUDGET, rate_limit={"request_max_limit": 100, "request_reset_duration": "1h"})]),
                       env={"RAINBRIDGE_ADMIN_TOKEN": TOKEN})
    for _ in range(3):
        assert chat(gw, key_of("mystery"), "openai/no-such-model-xyz").usage.total_tokens > 0
    level = usage_report(gw, "mystery")
    assert level["rate_limit"]["request"]["current_usage"] == 3  # counted, but free
    assert level["budgets"][0]["current_usage"] == 0
    warnings = [line for line in gw.log().splitlines() if "no-such-model-xyz" in line]
    assert len(warnings) == 1, warnings
    assert "WARNING" in warnings[0] and "price" in warnings[0], warnings


def test_a_shared_budget_id_gives_each_key_its_own_counter(mock, start_gateway):
    # One request costs far more than $0.000001: it fills a key's budget by itself.
    shared = [{"id": "tiny", "max_limit": 0.000001, "reset_duration": "1d"}]
    gw = start_gateway(config(mock.url, [vk("first", budget_id="tiny"), vk("second", budget_id="tiny")], budgets=shared),
                       env={"RAINBRIDGE_ADMIN_TOKEN": TOKEN})
    spent = {}
    for name in ("first", "second"):
        reply = chat(gw, key_of(name))  # the other key's spend did not fill this one's budget
        input_price, output_price = bundled_price("gpt-4o")
        spent[name] = reply.usage.prompt_tokens * input_price + reply.usage.completion_tokens * output_price
        with pytest.raises(openai.APIStatusError) as e:
            chat(gw, key_of(name))
        assert e.value.status_code == 402 and e.value.body["type"] == "budget_exceeded", e.value.body
        assert f"virtual key '{name}'" in e.value.body["message"]
    for name in ("first", "second"):
        budget = usage_report(gw, name)["budgets"][0]
        assert budget["max_limit"] == 0.000001 and budget["reset_duration"] == "1d"
        assert budget["current_usage"] == pytest.approx(spent[name], rel=1e-9), (name, budget)


def test_a_shared_rate_limit_id_gives_each_key_its_own_counter(mock, start_gateway):
    shared = [{"id": "two", "request_max_limit": 2, "request_reset_duration": "1h"}]
    gw = start_gateway(config(mock.url, [vk("left", rate_limit_id="two"), vk("right", rate_limit_id="two")], rate_limits=shared),
                       env={"RAINBRIDGE_ADMIN_TOKEN": TOKEN})
    for name in ("left", "right"):
        chat(gw, key_of(name))
        chat(gw, key_of(name))
        with pytest.raises(openai.RateLimitError) as e:
            chat(gw, key_of(name))
        assert e.value.body["type"] == "request_limited"
        assert f"request limit of 2 per 1h reached for virtual key '{name}'" in e.value.body["message"]
    for name in ("left", "right"):
        assert usage_report(gw, name)["rate_limit"]["request"]["current_usage"] == 2
