"""A virtual key's per-provider limits (Bifrost's provider_configs[].budget / rate_limit) and
model limits (governance.model_configs) go through the same engine and Counters interface as
the key's own limits: the same slots and the same fleet limit ids (``Counters.bind``), so in
cluster mode they are fleet-wide like the others, and a member that hears of such a limit
first from another resolves it."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from rainbridge.counters.local import LocalCounters
from rainbridge.errors import BudgetExceeded, RequestLimited
from rainbridge.gateway.routing import Routes, Target
from rainbridge.governance.engine import Governance, GovernanceState
from rainbridge.governance.model import Budget, ModelLimit, ProviderGrant, RateLimit, VirtualKey
from rainbridge.governance.pricing import Price, Pricing

NOW = 1_800_000_000_000  # a fixed instant: windows are pure functions of it


class BindingCounters(LocalCounters):
    """The single-node counters, recording the fleet limit ids admission binds slots to."""

    def __init__(self) -> None:
        super().__init__("node-a")
        self.bound: dict[str, float] = {}

    def bind(self, slot, lid, limit, duration, cost_reserved, scale=1, aligned=True, anchor=0):
        self.bound[lid] = limit


def governance() -> tuple[Governance, BindingCounters]:
    counters = BindingCounters()
    gov = Governance(counters, Pricing({"gpt-4o": Price(1.0, 1.0)}), False)
    vk = VirtualKey(id="vk1", name="vk1", value_hash="h", rate_limit=RateLimit(request_max_limit=10, request_reset_duration="1h"),
                    provider_configs=[
                        ProviderGrant(provider="openai", rate_limit=RateLimit(request_max_limit=1, request_reset_duration="1m"),
                                      budgets=[Budget(id="vk1:openai:b0", max_limit=0.5, reset_duration="1d")]),
                        ProviderGrant(provider="anthropic"),
                    ])
    gov.state = GovernanceState(vks=[vk])
    return gov, counters


def target(name: str) -> Target:
    return Target(SimpleNamespace(name=name), "gpt-4o")  # admission reads only the provider's name


def test_a_request_to_a_limited_provider_binds_the_grants_limits_besides_the_keys_own():
    gov, counters = governance()
    vk = gov.state.vks["vk1"]
    gov.admit(vk, 1, 1, NOW, target("openai"))
    assert counters.bound == {"vk/vk1/requests/1h": 10, "provider/vk1:openai/requests/1m": 1, "budget/vk1:openai:b0/spend/1d": 0.5}


def test_a_request_to_another_provider_counts_only_the_keys_own_limits():
    gov, counters = governance()
    vk = gov.state.vks["vk1"]
    gov.admit(vk, 1, 1, NOW, target("anthropic"))
    assert counters.bound == {"vk/vk1/requests/1h": 10}


def test_the_grants_request_limit_refuses_its_provider_and_names_it():
    gov, _ = governance()
    vk = gov.state.vks["vk1"]
    gov.admit(vk, 1, 1, NOW, target("openai"))
    with pytest.raises(RequestLimited, match="virtual key 'vk1' on provider 'openai'"):
        gov.admit(vk, 1, 1, NOW, target("openai"))
    gov.admit(vk, 1, 1, NOW, target("anthropic"))  # the other provider is not limited by it


def test_the_grants_budget_is_charged_at_settlement_and_then_refuses():
    gov, _ = governance()
    vk = gov.state.vks["vk1"]
    admission = gov.admit(vk, 1, 1, NOW, target("openai"))
    assert gov.settle(admission, "openai", "gpt-4o", 1, 0) == 1.0  # $1 spent of a $0.5 budget
    with pytest.raises(BudgetExceeded, match="on provider 'openai'"):
        gov.admit(vk, 1, 1, NOW + 120_000, target("openai"))  # the next minute: the rate limit has room


@pytest.mark.parametrize(("lid", "expected"), [
    ("provider/vk1:openai/requests/1m", (1, "1m", True, 0)),
    ("budget/vk1:openai:b0/spend/1d", (500_000, "1d", False, 0)),
    ("provider/vk1:anthropic/requests/1m", None),
    ("provider/ghost:openai/requests/1m", None),
    ("provider/vk1:openai/requests/1h", None),  # a changed duration is another limit
])
def test_a_fleet_member_resolves_per_provider_limit_ids(lid, expected):
    gov, _ = governance()
    assert gov.limit_for(lid) == expected


def test_a_bare_model_leaves_out_a_granted_provider_whose_own_limit_is_spent():
    gov, _ = governance()
    vk = gov.state.vks["vk1"]
    routes = Routes({"openai": SimpleNamespace(name="openai"), "anthropic": SimpleNamespace(name="anthropic")})
    vk.provider_configs[0].weight, vk.provider_configs[1].weight = 1.0, 0.0  # openai while it has room
    assert gov.targets(vk, "gpt-4o", None, "openai", routes, NOW)[0].provider.name == "openai"
    gov.admit(vk, 1, 1, NOW, target("openai"))  # openai's own 1 per minute is used
    assert gov.targets(vk, "gpt-4o", None, "openai", routes, NOW)[0].provider.name == "anthropic"
    assert gov.targets(vk, "openai/gpt-4o", None, "openai", routes, NOW)[0].provider.name == "openai"  # named: admission refuses it
    assert gov.targets(vk, "gpt-4o", None, "openai", routes, NOW + 60_000)[0].provider.name == "openai"  # a new minute


def test_model_limits_go_through_the_same_counters_and_fleet_limit_ids():
    gov, counters = governance()
    gov.model_limits = (ModelLimit(id="mini", name="mini", model_name="gpt-4o", provider="anthropic",
                                   rate_limits=[RateLimit(request_max_limit=1, request_reset_duration="1m")],
                                   budgets=[Budget(id="model:mini:b0", max_limit=2.0, reset_duration="1d")]),)
    gov.admit(None, 1, 1, NOW, target("anthropic"))  # no virtual key: the global model limit still counts
    assert counters.bound == {"model/mini/requests/1m": 1, "budget/model:mini:b0/spend/1d": 2.0}
    with pytest.raises(RequestLimited, match="model limit 'mini'"):
        gov.admit(gov.state.vks["vk1"], 1, 1, NOW, target("anthropic"))
    assert gov.admit(None, 1, 1, NOW, target("openai")) is None  # no key, no model limit: nothing counted
    assert gov.limit_for("model/mini/requests/1m") == (1, "1m", True, 0)
    assert gov.limit_for("budget/model:mini:b0/spend/1d") == (2_000_000, "1d", False, 0)
