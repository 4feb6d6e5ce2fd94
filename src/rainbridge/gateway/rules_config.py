"""``governance.routing_rules`` of the config file, checked and compiled into a ``RuleSet``.

A rule that cannot be enforced exactly as written stops start-up with its path named: bad
CEL, weights that do not sum to 1, a scope without its id, a pinned key the provider does
not have. A scope id naming no team (customer, key) in the file is a warning: such a rule
routes nobody's requests. (Bifrost logs and skips a rule whose CEL does not compile; a routing rule
silently skipped may send traffic where the operator said it must not go.) Disabled
rules are not compiled.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from ..config.schema import (
    GovernanceConfig,
    ProviderConfig,
    RoutingFallbackConfig,
    RoutingRuleConfig,
)
from ..config.validate import Problem, child
from .rules import DEFAULT_MAX_DEPTH, INSTALL, Fallback, Rule, RuleError, RuleSet, RuleTarget

PATH = "$.governance.routing_rules"
log = logging.getLogger("rainbridge.routing")


def rules_from_config(gov: GovernanceConfig, providers: Mapping[str, ProviderConfig], out: list[Problem],
                      with_store: bool = False) -> RuleSet | None:
    """The file's enabled rules, or None when there are none (requests then skip rules
    entirely) or one is in error. ``with_store``: scopes and providers may also live in the
    config store (a reference the file does not resolve is then a warning, not an error)."""
    owners = {"virtual_key": {v.id or v.name for v in gov.virtual_keys}, "team": {t.id or t.name for t in gov.teams},
              "customer": {c.id or c.name for c in gov.customers}}
    keys = {name: {k for key in p.keys for k in (key.id, key.name) if k} for name, p in providers.items()}
    errors = sum(1 for p in out if p.severity == "error")
    rules = compile_rules([(child(PATH, i), r) for i, r in enumerate(gov.routing_rules)], owners, keys, out,
                          with_store, gov.routing_chain_max_depth)
    return rules if sum(1 for p in out if p.severity == "error") == errors else None


def compile_rules(configs: Sequence[tuple[str, RoutingRuleConfig]], owners: Mapping[str, set[str]],
                  provider_keys: Mapping[str, set[str]], out: list[Problem], with_store: bool = False,
                  max_depth: int = DEFAULT_MAX_DEPTH) -> RuleSet | None:
    """The enabled rules of ``configs`` (path, rule) that compile; each problem goes to ``out``
    with its path (a rule with an error is left out). None: no enabled rule."""
    enabled = [(path, r) for path, r in configs if r.enabled]
    if not enabled:
        return None
    try:
        import cel  # noqa: F401  (the common-expression-language distribution)
    except ImportError:
        out.append(Problem(PATH, INSTALL))
        return None
    rules: list[Rule] = []
    ids: set[str] = set()
    for path, r in enabled:
        rule = _compile(path, r, owners, provider_keys, out, with_store, ids)
        if rule is not None:
            rules.append(rule)
    return RuleSet(rules, max_depth)


def _compile(path: str, r: RoutingRuleConfig, owners: Mapping[str, set[str]], provider_keys: Mapping[str, set[str]],
             out: list[Problem], with_store: bool, ids: set[str]) -> Rule | None:
    errors = sum(1 for p in out if p.severity == "error")
    if (r.id or r.name) in ids:
        out.append(Problem(f"{path}.id", f"duplicate rule id {r.id or r.name!r}"))
    ids.add(r.id or r.name)
    if r.scope not in owners and r.scope != "global":
        out.append(Problem(f"{path}.scope", f"unknown scope {r.scope!r}: use global, customer, team or virtual_key"))
        return None
    if r.scope != "global":
        if not r.scope_id:
            out.append(Problem(f"{path}.scope_id", f"required with scope {r.scope!r}"))
            return None
        if r.scope_id not in owners[r.scope]:  # it routes nobody's requests: nothing widens
            out.append(Problem(f"{path}.scope_id", f"no {r.scope.replace('_', ' ')} with id {r.scope_id!r}"
                               + (" in this file (fine if it exists in the config store)" if with_store else
                                  ": this rule applies to no request"), "warning"))
    if r.strategy not in ("", "weighted", "adaptive"):
        out.append(Problem(f"{path}.strategy", f"strategy {r.strategy!r} is not supported yet (weighted and adaptive are)"))
        return None
    if r.strategy == "adaptive":
        out.append(Problem(f"{path}.strategy", "adaptive: targets are drawn by their configured weights "
                           "(rainbridge does not adjust them by latency or errors)", "warning"))
    targets = []
    for j, t in enumerate(r.targets):
        key = t.key_id or t.provider_key_name
        _check_provider(t.provider, key, provider_keys, f"{path}.targets[{j}]", with_store, out)
        targets.append(RuleTarget(t.provider or None, t.model or None, key, t.weight))
    fallbacks = []
    for j, fb in enumerate(r.fallbacks):
        parsed = _fallback(fb, f"{path}.fallbacks[{j}]", out)
        if parsed is None:
            continue
        if parsed.provider not in provider_keys:
            out.append(Problem(f"{path}.fallbacks[{j}]", f"provider {parsed.provider!r} is not configured: "
                               "this fallback is skipped", "warning"))
            continue
        _check_provider(parsed.provider, parsed.key, provider_keys, f"{path}.fallbacks[{j}]", with_store, out)
        fallbacks.append(parsed)
    try:
        rule = Rule(r.name, r.cel_expression, targets, id=r.id, scope=r.scope, scope_id=r.scope_id,
                    priority=r.priority, chain=r.chain_rule, fallbacks=fallbacks)
    except RuleError as exc:
        out.append(Problem(f"{path}.{exc.field}", str(exc)))
        return None
    if rule.never:
        out.append(Problem(f"{path}.cel_expression", "reads complexity_tier, which rainbridge does not compute: "
                           "this rule never matches (as in Bifrost without its complexity classifier)", "warning"))
    return rule if sum(1 for p in out if p.severity == "error") == errors else None


def _fallback(fb: str | RoutingFallbackConfig, path: str, out: list[Problem]) -> Fallback | None:
    if isinstance(fb, str):
        provider, _, model = fb.strip().partition("/")
        if not provider:
            out.append(Problem(path, f"expected 'provider/model' (or 'provider/'), got {fb!r}"))
            return None
        return Fallback(provider, model.strip() or None, None)
    if not fb.provider:
        out.append(Problem(f"{path}.provider", "required"))
        return None
    return Fallback(fb.provider, fb.model or None, fb.key_id or fb.provider_key_name)


def _check_provider(provider: str | None, key: str | None, provider_keys: Mapping[str, set[str]], path: str,
                    with_store: bool, out: list[Problem]) -> None:
    if provider is None:
        return
    keys = provider_keys.get(provider)
    if keys is None:
        out.append(Problem(f"{path}.provider", f"no provider {provider!r} is configured"
                           + (" in this file (fine if it exists in the config store)" if with_store else
                              ": requests this rule sends there would fail"), "warning"))
        return
    if key and key not in keys:
        out.append(Problem(f"{path}.key_id", f"provider {provider!r} has no key with id or name {key!r}"))


def rules_from_store(stored: Sequence[RoutingRuleConfig], state: Any, providers: Mapping[str, Any],
                     max_depth: int = DEFAULT_MAX_DEPTH) -> RuleSet | None:
    """The config store's rules, checked against its keys, teams, customers and providers
    (``state``: a GovernanceState). A rule in error (written by hand, or by a gateway with
    other providers) is left out and logged as an error: the API refuses such rules, so
    only a store edited behind its back has them."""
    owners = {"virtual_key": set(state.vks), "team": set(state.teams), "customer": set(state.customers)}
    keys = {name: {k for key in p.keys.keys for k in (key.id, key.name) if k} for name, p in providers.items()}
    out: list[Problem] = []
    rules = compile_rules([(f"routing rule {rule_id(r)!r}", r) for r in stored], owners, keys, out, False, max_depth)
    for p in out:
        if p.severity == "error":
            log.error("%s: %s (the rule is not applied)", p.path, p.message)
    return rules


def rule_id(rule: RoutingRuleConfig) -> str:
    return rule.id or rule.name
