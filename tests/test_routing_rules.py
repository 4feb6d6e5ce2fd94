"""Routing rules evaluated alone (gateway/rules.py): the order Bifrost's routing engine tries
rules in (scope chain, priority, chain_rule), weighted targets with a seeded RNG, fallbacks,
and how an expression meets a request (headers case-insensitive, a missing header is no
match, an empty expression always matches, a failing rule is skipped)."""

from __future__ import annotations

import random
from collections import Counter
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rainbridge.gateway.rule_routing import pin_keys
from rainbridge.gateway.rules import (
    MAX_EXPRESSION_CHARS,
    Facts,
    Fallback,
    Rule,
    RuleError,
    RuleSet,
    RuleTarget,
    compile_expression,
    normalize_keys,
)

NOBODY = Facts()
TEAM = Facts(vk_id="vk1", vk_name="prod-app", team_id="t1", team_name="research", customer_id="c1", customer_name="acme")


def to(provider=None, model=None, weight=1.0, key=None) -> RuleTarget:
    return RuleTarget(provider, model, key, weight)


def decide(rules, facts=NOBODY, provider="openai", model="gpt-4o", headers=None, params=None, capacity=None, **kw):
    rs = RuleSet(rules, **kw)
    variables = rs.variables(facts, "chat_completion", headers or {}, params or {})
    return rs.decide(facts, provider, model, variables, capacity)


def test_first_match_in_scope_order_virtual_key_team_customer_global():
    rules = [Rule(f"{scope}-rule", "true", [to(model=scope)], scope=scope, scope_id=sid)
             for scope, sid in (("global", None), ("customer", "c1"), ("team", "t1"), ("virtual_key", "vk1"))]
    assert decide(rules, TEAM).model == "virtual_key"
    assert decide(rules[:3], TEAM).model == "team"
    assert decide(rules[:2], TEAM).model == "customer"
    assert decide(rules[:2], Facts()).model == "global"  # no key: only global rules apply


def test_rules_of_other_teams_are_not_in_the_chain():
    rules = [Rule("other", "true", [to(model="other")], scope="team", scope_id="t2"),
             Rule("global", "true", [to(model="global")])]
    assert decide(rules, TEAM).model == "global"


def test_priority_ascending_within_a_scope_and_file_order_breaks_ties():
    rules = [Rule("p10", "true", [to(model="p10")], priority=10), Rule("p0a", "true", [to(model="p0a")], priority=0),
             Rule("p0b", "true", [to(model="p0b")], priority=0)]
    assert decide(rules).rule == "p0a"


def test_a_team_rule_beats_a_global_rule_of_lower_priority_number():
    rules = [Rule("global", "true", [to(model="g")], priority=0),
             Rule("team", "true", [to(model="t")], scope="team", scope_id="t1", priority=99)]
    assert decide(rules, TEAM).model == "t"


def test_no_match_is_no_decision():
    assert decide([Rule("r", 'model == "other"', [to(provider="azure")])]) is None


def test_terminal_rule_stops_and_chain_rule_reevaluates_with_the_new_model():
    rules = [Rule("normalize", 'model == "gpt-4"', [to(model="gpt-4-turbo")], chain=True, priority=0),
             Rule("azure", 'model == "gpt-4-turbo"', [to(provider="azure")], priority=1, fallbacks=[Fallback("openai", None, None)])]
    d = decide(rules, model="gpt-4")
    assert (d.provider, d.model, d.rule) == ("azure", "gpt-4-turbo", "azure")
    assert d.fallbacks == (Fallback("openai", None, None),)  # the last match's
    rules[0].chain = False
    d = decide(rules, model="gpt-4")
    assert (d.provider, d.model) == ("openai", "gpt-4-turbo")


def test_chain_stops_at_a_cycle_and_at_max_depth():
    ping = Rule("ping", 'model == "a"', [to(model="b")], chain=True)
    pong = Rule("pong", 'model == "b"', [to(model="a")], chain=True)
    assert decide([ping, pong], model="a").model == "a"  # a -> b -> a: seen, stop
    steps = [Rule(f"s{i}", f'model == "m{i}"', [to(model=f"m{i + 1}")], chain=True) for i in range(20)]
    assert decide(steps, model="m0", max_depth=3).model == "m3"
    assert decide(steps, model="m0").model == "m10"  # Bifrost's default depth


def test_weights_share_targets_with_a_seeded_rng():
    rule = Rule("split", "true", [to(provider="openai", weight=0.7), to(provider="groq", weight=0.3)])
    rs = RuleSet([rule], rng=random.Random(7))
    variables = rs.variables(Facts(), "chat_completion", {}, {})
    counts = Counter(rs.decide(Facts(), "openai", "m", variables).provider for _ in range(10_000))
    assert 6_800 < counts["openai"] < 7_200 and counts["openai"] + counts["groq"] == 10_000
    a, b = RuleSet([rule], rng=random.Random(3)), RuleSet([rule], rng=random.Random(3))
    assert [a.decide(Facts(), "x", "m", dict(variables)).provider for _ in range(50)] == \
        [b.decide(Facts(), "x", "m", dict(variables)).provider for _ in range(50)]


def test_zero_weight_target_is_never_drawn():
    rule = Rule("r", "true", [to(provider="never", weight=0.0), to(provider="always", weight=1.0)])
    rs = RuleSet([rule], rng=random.Random(1))
    variables = rs.variables(Facts(), "chat_completion", {}, {})
    assert {rs.decide(Facts(), "x", "m", variables).provider for _ in range(1000)} == {"always"}


def test_target_without_provider_or_model_keeps_the_current_one_and_pins_its_key():
    d = decide([Rule("r", "true", [to(provider="azure", key="k2")])], model="gpt-4o")
    assert (d.provider, d.model, d.key) == ("azure", "gpt-4o", "k2")


def test_headers_are_case_insensitive_and_a_missing_header_is_no_match():
    rule = Rule("r", 'headers["X-Tier"] == "premium" && "X-Tier" in headers', [to(model="fast")])
    assert decide([rule], headers={"x-tier": "premium"}).model == "fast"
    assert decide([rule], headers={"x-tier": "basic"}) is None
    assert decide([rule], headers={}) is None
    assert normalize_keys("headers['X-A'] == 'V' && params[\"Region\"] == \"EU\"") == \
        "headers['x-a'] == 'V' && params[\"region\"] == \"EU\""


@pytest.mark.parametrize(("expression", "keys"), [
    ('headers["X-Tier"] == "a" && "x-region" in headers', {"x-tier", "x-region"}),
    ('model == "a"', set()),
    ("size(headers) > 2", None),
    ('headers.exists(k, k.startsWith("x-"))', None),
    ('headers["x-\\u0041"] == "a"', None),
    ('model == "headers"', None),  # the name in a string: read as the whole map (safe)
])
def test_header_names_an_expression_reads(expression, keys):
    rule = Rule("r", expression, [to()])
    assert rule.keys["headers"] == (frozenset(keys) if keys is not None else None)


def test_string_functions_membership_and_numbers():
    facts = TEAM
    for expression in ('model.startsWith("gpt-4") && model.endsWith("o") && model.contains("4")',
                       'headers["x-app-version"].matches("^[0-9]+\\\\.[0-9]+\\\\.[0-9]+$")',
                       'headers["x-region"] in ["us", "eu"]', 'virtual_key_name.startsWith("prod-")',
                       'team_name == "research" && customer_id == "c1"', 'request_type == "chat_completion"',
                       'params["region"] == "eu"', "budget_used > 80 && tokens_used < 50.5 && request >= 0"):
        rule = Rule("r", expression, [to(model="hit")])
        d = decide([rule], facts, headers={"x-app-version": "1.2.3", "x-region": "eu"}, params={"region": "eu"},
                   capacity=lambda p, m: (85.0, 10.0, 0.0))
        assert d is not None and d.model == "hit", expression


def test_capacity_is_read_for_the_provider_and_model_of_each_chain_step():
    seen = []

    def capacity(provider, model):
        seen.append((provider, model))
        return (95.0, 0.0, 0.0) if model == "big" else (0.0, 0.0, 0.0)

    rules = [Rule("downgrade", 'budget_used > 90 && model == "big"', [to(model="small")], chain=True),
             Rule("route", 'model == "small" && budget_used < 10.0', [to(provider="groq")])]
    d = decide(rules, model="big", capacity=capacity)
    assert (d.provider, d.model) == ("groq", "small")
    assert seen == [("openai", "big"), ("openai", "small")]


def test_empty_expression_always_matches():
    assert decide([Rule("r", "", [to(model="any")])]).model == "any"


def test_complexity_tier_is_unknown_so_the_rule_never_matches():
    # Bifrost's doc: unknown, so no match, not even the negated form (a stand-in value would match it).
    rules = [Rule("complex", '!(complexity_tier in ["SIMPLE", "MEDIUM"])', [to(model="frontier")]),
             Rule("after", "true", [to(model="next")], priority=1)]
    assert decide(rules).model == "next"


def test_a_rule_that_fails_to_evaluate_or_gives_no_bool_is_skipped(caplog):
    failing = {"division": "1 / (size(model) - 6) == 0", "overflow": "9223372036854775807 + size(model) > 0",
               "index": "[1][size(model)] == 1", "conversion": "int(model) == 1", "types": "dyn(model) + 1 == 2",
               "not-bool": "model"}
    rules = [Rule(name, expression, [to(model="x")]) for name, expression in failing.items()]
    rules.append(Rule("good", "true", [to(model="z")], priority=1))
    rs = RuleSet(rules)  # one set: a rule's warning is logged once however many requests it skips
    for _ in range(2):
        assert rs.decide(NOBODY, "openai", "gpt-4o", rs.variables(NOBODY, "chat_completion", {}, {})).model == "z"
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert [sum(f"{name!r}" in w for w in warnings) for name in failing] == [1] * len(failing)


@pytest.mark.parametrize(("expression", "targets", "field"), [
    ('model == "a', [to()], "cel_expression"),
    ('modle == "a"', [to()], "cel_expression"),
    ('model == "a" || ' * (MAX_EXPRESSION_CHARS // 16) + "true", [to()], "cel_expression"),
    ("[1, 2].all(x, [1, 2].exists(y, x == y))", [to()], "cel_expression"),  # nested comprehensions: unbounded cost
    ('model.matches("(")', [to()], "cel_expression"),  # an invalid regex: its failed compilation on every request
    ('model.matches(headers["x-pattern"])', [to()], "cel_expression"),  # a client would choose the regex
    ('matches(model, "a")', [to()], "cel_expression"),
    ("true", [], "targets"),
    ("true", [to(provider="a", weight=0.5), to(provider="b", weight=0.4)], "targets"),
    ("true", [to(provider="a", weight=0.33), to(provider="b", weight=0.33), to(provider="c", weight=0.33)],
     "targets"),  # Bifrost's tolerance is 0.001
    ("true", [to(provider="a", weight=0.5), to(provider="A", weight=0.5)], "targets[1]"),
    ("true", [to(provider="a", weight=-0.5), to(provider="b", weight=1.5)], "targets[0].weight"),
    ("true", [to(weight=float("nan"))], "targets[0].weight"),
    ("true", [to(key="k1")], "targets[0].key_id"),
])
def test_malformed_rule_is_refused_naming_its_field(expression, targets, field):
    with pytest.raises(RuleError) as err:
        Rule("r", expression, targets)
    assert err.value.field == field


def test_weights_within_bifrosts_tolerance_load():
    assert len(Rule("r", "true", [to(provider="a", weight=0.3335), to(provider="b", weight=0.333),
                                  to(provider="c", weight=0.333)]).targets) == 3


def test_compile_reports_the_variables_read():
    _, reads = compile_expression('headers["x"] == "1" && budget_used > 2')
    assert reads == {"headers", "budget_used"}


def test_a_pinned_key_narrows_and_never_widens_the_keys_a_request_may_use():
    key = SimpleNamespace
    routes = SimpleNamespace(providers={"backup": SimpleNamespace(keys=SimpleNamespace(
        keys=[key(id="id-1", name="b1"), key(id="id-2", name="b2")]))})
    assert pin_keys(None, {"backup": "b2"}, routes) == {"backup": frozenset({"id-2"})}  # by name
    assert pin_keys(None, {"backup": "id-1"}, routes) == {"backup": frozenset({"id-1"})}  # by id
    assert pin_keys({"backup": frozenset({"b1"})}, {"backup": "b2"}, routes) == {"backup": frozenset()}
    assert pin_keys({"backup": frozenset({"b2"}), "openai": frozenset({"k"})}, {"backup": "b2"}, routes) == \
        {"backup": frozenset({"id-2"}), "openai": frozenset({"k"})}
    assert pin_keys(None, {"backup": "gone"}, routes) == {"backup": frozenset()}  # skipped, as Bifrost
    assert pin_keys(None, {"ghost": "k"}, routes) == {"ghost": frozenset()}


HOSTILE = [Rule(f"r{i}", e, [to(model=f"m{i}")], priority=i) for i, e in enumerate([
    'headers["x-tier"] == "premium"', 'int(headers["x-n"]) > 3', 'double(params["w"]) / double(headers["x-n"]) > 0.5',
    'headers["x-app-version"].matches("^[0-9]+\\\\.[0-9]+$")', 'size(headers) > 3 && model.startsWith("gpt")',
    'headers.exists(k, k.contains("x"))', '"x-region" in headers && headers["x-region"] in ["eu", "us"]',
    'timestamp(headers["x-n"]) > timestamp(0)', "[1, 2][int(headers['x-n'])] == 2", "false"])]


@given(headers=st.dictionaries(st.text(max_size=12), st.text(max_size=40), max_size=8),
       params=st.dictionaries(st.text(max_size=8), st.text(max_size=20), max_size=4),
       model=st.text(max_size=40))
@settings(max_examples=200, deadline=None)
def test_any_request_gets_a_decision_or_none_never_an_exception(headers, params, model):
    headers = {k.lower(): v for k, v in headers.items()}
    d = decide(HOSTILE, TEAM, model=model, headers=headers, params=params)
    assert d is None or d.rule in {r.name for r in HOSTILE}
