"""Region-aware key choice: a node prefers its own region's keys, then keys without a
region, then other regions' keys, and falls back only when the preferred ones fail."""

import random
import uuid
from collections import Counter

import openai
import pytest

from rainbridge.gateway.keys import KeyPool
from rainbridge.providers.base import ProviderKey
from support import GatewayProcess


def key(name, *regions, weight=1.0):
    return ProviderKey(name, f"sk-{name}", None, weight, regions=frozenset(regions))


def test_a_node_with_a_region_draws_only_its_own_regions_keys_while_they_are_usable():
    pool = KeyPool([key("us", "us-east-1"), key("eu", "eu-west-1"), key("any"), key("both", "us-east-1", "eu-west-1")],
                   random.Random(1), region="us-east-1")
    assert Counter(pool.choose("m").name for _ in range(500)).keys() == {"us", "both"}


def test_fallback_goes_own_region_then_no_region_then_other_regions():
    us, anyk, eu = key("us", "us-east-1"), key("any"), key("eu", "eu-west-1")
    pool = KeyPool([eu, anyk, us], random.Random(2), region="us-east-1")
    assert pool.choose("m") is us
    assert pool.choose("m", [us]) is anyk
    assert pool.choose("m", [us, anyk]) is eu
    assert pool.choose("m", [us, anyk, eu]) is None


def test_a_virtual_keys_allowed_keys_skip_to_the_next_tier():
    us, eu = key("us", "us-east-1"), key("eu", "eu-west-1")
    pool = KeyPool([us, eu], random.Random(3), region="us-east-1")
    assert pool.choose("m", (), allowed={"eu"}) is eu


def test_without_a_node_region_every_key_is_one_weighted_tier():
    pool = KeyPool([key("us", "us-east-1", weight=1), key("eu", "eu-west-1", weight=1)], random.Random(4))
    counts = Counter(pool.choose("m").name for _ in range(2000))
    assert counts["us"] > 800 and counts["eu"] > 800


@pytest.fixture(scope="module")
def regional_gateway(mock, tmp_path_factory):
    tag = uuid.uuid4().hex[:8]
    values = {"us": f"sk-good-us-{tag}", "eu": f"sk-good-eu-{tag}", "busy": f"sk-status-429-us-{tag}",
              "any": f"sk-good-any-{tag}"}
    net = {"base_url": mock.url, "max_retries": 1, "retry_backoff_initial": 10, "retry_backoff_max": 20}
    config = {
        "cluster_config": {"region": "us-east-1"},
        "providers": {
            "openai": {"keys": [
                {"name": "us", "value": values["us"], "region": "us-east-1"},
                {"name": "eu", "value": values["eu"], "region": ["eu-west-1", "eu-central-1"], "weight": 100},
            ], "network_config": net},
            # The only own-region key is rate limited upstream: the request falls back.
            "fallback": {"type": "openai", "keys": [
                {"name": "busy", "value": values["busy"], "region": "us-east-1"},
                {"name": "any", "value": values["any"]},
                {"name": "eu", "value": values["eu"], "region": "eu-west-1"},
            ], "network_config": net},
        },
    }
    gw = GatewayProcess(tmp_path_factory.mktemp("region"), config)
    yield gw, values
    gw.stop()


def test_a_gateway_in_us_east_1_sends_every_request_with_its_regions_key(regional_gateway, mock):
    gw, values = regional_gateway
    with openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0) as client:
        for _ in range(10):
            client.chat.completions.create(model="openai/gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    by_key = mock.stats()["by_key"]
    assert by_key.get(values["us"]) == 10
    assert values["eu"] not in by_key  # weight 100, other region: never drawn


def test_a_rate_limited_own_region_key_falls_back_to_the_key_without_a_region(regional_gateway, mock):
    gw, values = regional_gateway
    with openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0) as client:
        reply = client.chat.completions.create(model="fallback/gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content
    by_key = mock.stats()["by_key"]
    assert by_key.get(values["busy"]) == 1 and by_key.get(values["any"]) == 1
    assert by_key.get(values["eu"], 0) == 0
