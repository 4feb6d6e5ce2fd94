"""Routing rules applied to one request: the facts they read, and their decision turned into
the ``model`` / ``fallbacks`` / key pins governance and the router already understand.

A decision never widens access: the resolved ``provider/model`` still goes through the
virtual key's grants (``Governance.targets``), and a pinned key must be one the key may
use (else that target has no key and is skipped, as Bifrost skips a missing pinned key).
"""

from __future__ import annotations

from typing import Any, NamedTuple
from urllib.parse import parse_qsl

from ..errors import GatewayError
from ..governance.engine import Governance
from ..governance.model import VirtualKey
from .routing import REQUEST_TYPES, Routes, Target, model_field
from .rules import Facts, RuleSet


class Routed(NamedTuple):
    model: str  # "provider/model", or a bare model when no provider is known
    fallbacks: Any  # the rule's as "provider/model" strings, or the request's own
    pins: dict[str, str]  # provider -> the key id or name a target pins
    rule: str


def facts_for(vk: VirtualKey | None, gov: Governance) -> Facts:
    if vk is None:
        return Facts()
    state = gov.state
    team = state.teams.get(vk.team_id) if vk.team_id else None
    customer_id = (team.customer_id if team is not None else None) or vk.customer_id
    customer = state.customers.get(customer_id) if customer_id else None
    return Facts(vk.id, vk.name, team.id if team else "", team.name if team else "",
                 customer.id if customer else "", customer.name if customer else "")


def apply_rules(rules: RuleSet, gov: Governance, routes: Routes, vk: VirtualKey | None, req: dict,
                scope: dict | None, endpoint: str, default: str, fallbacks: Any, now_ms: int) -> Routed | None:
    """The rules' decision for this request, or None when no rule matches."""
    incoming = model_field(req.get("model"))
    prefix, sep, rest = incoming.partition("/")
    if sep and rest and prefix in routes.providers:
        provider, model = prefix, rest
    else:  # a bare model: the provider routing would pick without a key's grants, if any
        model = incoming
        try:
            provider = routes.resolve(incoming, default).provider.name
        except GatewayError:
            provider = ""
    facts = facts_for(vk, gov)
    headers: dict[str, str] = {}
    params: dict[str, str] = {}
    if scope is not None:  # only the names the rules read (all if one reads the whole map)
        wanted = rules.header_keys
        if "headers" in rules.reads:  # ASGI header names are lowercase already
            for raw_name, raw_value in scope.get("headers", ()):
                name = raw_name.decode("latin-1")
                if wanted is None or name in wanted:
                    headers.setdefault(name, raw_value.decode("latin-1"))
        wanted = rules.param_keys
        if "params" in rules.reads and scope.get("query_string"):
            for name, value in parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True):
                name = name.lower()
                if wanted is None or name in wanted:
                    params.setdefault(name, value)
    variables = rules.variables(facts, REQUEST_TYPES.get(endpoint, endpoint), headers, params)

    def capacity(p: str, m: str) -> tuple[float, float, float]:
        found = routes.providers.get(p)
        return gov.capacity(vk, Target(found, m), now_ms) if found is not None else (0.0, 0.0, 0.0)

    decision = rules.decide(facts, provider, model, variables, capacity)
    if decision is None:
        return None
    routed_model = f"{decision.provider}/{decision.model}" if decision.provider else decision.model
    pins: dict[str, str] = {}
    if decision.key and decision.provider:
        pins[decision.provider] = decision.key
    if decision.fallbacks:
        fallbacks = [f"{fb.provider}/{fb.model or model}" for fb in decision.fallbacks]
        for fb in decision.fallbacks:
            if fb.key:
                pins.setdefault(fb.provider, fb.key)
    return Routed(routed_model, fallbacks, pins, decision.rule)


def pin_keys(allowed: dict[str, frozenset[str]] | None, pins: dict[str, str],
             routes: Routes) -> dict[str, frozenset[str]]:
    """The keys a request may use once rules pinned some: each pinned provider's pin alone,
    if the virtual key may use it (else none: that target is skipped)."""
    out = dict(allowed) if allowed else {}
    for provider_name, pin in pins.items():
        provider = routes.providers.get(provider_name)
        key = next((k for k in provider.keys.keys if pin in (k.id, k.name)), None) if provider else None
        may = out.get(provider_name)
        if key is None or (may is not None and key.id not in may and key.name not in may):
            out[provider_name] = frozenset()
        else:
            out[provider_name] = frozenset((key.id,))
    return out
