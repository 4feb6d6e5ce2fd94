"""Bifrost's routing rules: CEL conditions that send a request to another provider/model
before governance picks a provider (``governance.routing_rules``).

Order, as Bifrost's routing engine: the scope chain virtual key -> its team -> the team's
(or the key's) customer -> global; within a scope by ``priority`` ascending (file order
breaks ties); the first rule whose expression is true wins. Its target is drawn by weight;
a ``chain_rule`` feeds the resolved provider/model back and the chain is evaluated again
from the top, until no rule matches, a terminal rule matches, a provider/model pair comes
back (a cycle) or ``max_depth`` steps were taken. The last match decides provider, model,
pinned key and fallbacks.

Expressions are compiled once, when the rules are loaded, with the ``cel`` package
(``pip install 'rainbridge[routing]'``): a Rust CEL interpreter, 3-30 µs a rule. Everything
here is sans-IO: the variables come in a dict, the RNG is injected.
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

log = logging.getLogger("rainbridge.routing")

MAX_EXPRESSION_CHARS = 4096  # CEL is not Turing-complete; its cost still grows with length
# Comprehensions (all, exists, exists_one, map, filter) per expression: two nested ones over
# 900-element list literals took 0.8 s to evaluate; one is linear in its list (or the headers).
MAX_COMPREHENSIONS = 1
DEFAULT_MAX_DEPTH = 10  # Bifrost's routing_chain_max_depth default
SCOPES = ("virtual_key", "team", "customer", "global")
CAPACITY = ("budget_used", "tokens_used", "request")  # percentages of the target's limits
# complexity_tier needs Bifrost's embedding classifier: unknown here, so a rule that reads
# it never matches (as Bifrost when the classifier is not configured).
UNKNOWN = frozenset(("complexity_tier",))
VARIABLES = frozenset(("model", "provider", "request_type", "headers", "params", "virtual_key_id",
                       "virtual_key_name", "team_id", "team_name", "customer_id", "customer_name",
                       *CAPACITY)) | UNKNOWN
INSTALL = "routing rules are evaluated with the cel package: pip install 'rainbridge[routing]'"

# Literal keys of headers[...] / params[...] and of `"k" in headers`, lowercased at compile
# time: header names are case-insensitive, and the maps hold lowercase keys (as Bifrost).
_STRING = r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\''
_MAP_KEY = re.compile(rf'\b(headers|params)(\s*\[\s*)({_STRING})')
_IN_MAP = re.compile(rf'({_STRING})(\s+in\s+)(headers|params)\b')
_LOOP_VAR = re.compile(r'\.\s*(?:all|exists|exists_one|map|filter)\s*\(\s*([A-Za-z_][A-Za-z0-9_]*)\s*,')
_COMPREHENSION = re.compile(r'\.\s*(?:all|exists|exists_one|map|filter)\s*\(')
_MATCHES = re.compile(r'\bmatches\s*\(')
_MATCHES_LITERAL = re.compile(rf'\.\s*matches\s*\(\s*({_STRING})\s*\)')


class RuleError(ValueError):
    """A rule that cannot be used; ``field`` names the rule's field at fault."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


class Fallback(NamedTuple):
    provider: str
    model: str | None  # None: the request's incoming model
    key: str | None  # a provider key id or name to pin, or None


class RuleTarget(NamedTuple):
    provider: str | None  # None: keep the current provider
    model: str | None  # None: keep the current model
    key: str | None  # a provider key id or name to pin (needs provider)
    weight: float


class Decision(NamedTuple):
    provider: str
    model: str
    key: str | None
    fallbacks: tuple[Fallback, ...]  # empty: the request's own fallbacks stay
    rule: str  # the name of the rule that decided last


class Rule:
    __slots__ = ("chain", "cumulative", "expression", "fallbacks", "id", "keys", "name", "never", "priority", "program",
                 "reads", "scope", "scope_id", "targets", "warned")

    def __init__(self, name: str, expression: str, targets: list[RuleTarget], *, id: str | None = None,
                 scope: str = "global", scope_id: str | None = None, priority: int = 0, chain: bool = False,
                 fallbacks: Iterable[Fallback] = ()):
        self.id = id or name
        self.name = name
        self.scope = scope
        self.scope_id = scope_id or ""
        self.priority = priority
        self.chain = chain
        self.expression = expression
        self.fallbacks = tuple(fallbacks)
        self.program, self.reads = compile_expression(expression)
        # The header and param names the expression reads (None: it reads the whole map).
        self.keys = {m: literal_keys(normalize_keys(expression), m) for m in ("headers", "params")}
        self.never = bool(self.reads & UNKNOWN)
        self.targets = check_targets(targets)
        total, self.cumulative = 0.0, []
        for t in self.targets:
            total += t.weight
            self.cumulative.append(total)
        self.warned = False

    def pick(self, point: float) -> RuleTarget:
        """The target whose share of the weights holds ``point`` (in [0, 1))."""
        if len(self.targets) == 1:
            return self.targets[0]
        x = point * self.cumulative[-1]
        for t, edge in zip(self.targets, self.cumulative, strict=True):
            if x < edge:
                return t
        return self.targets[-1]

    def matches(self, variables: Any) -> bool:
        """Whether the expression holds; a missing header or param is no match, and an
        evaluation error skips the rule (logged once per rule), as in Bifrost."""
        if self.program is None:
            return True  # an empty expression always matches (Bifrost)
        if self.never:
            return False
        try:
            result = self.program.execute(variables)
        except KeyError:  # "no such key": a header or param the request does not have
            return False
        # What the cel package raises for an evaluation that fails: an unknown function, a
        # type mismatch, a bad conversion (RuntimeError, TypeError, ValueError), a division
        # by zero or an overflow (ArithmeticError), an index out of range (LookupError).
        except (RuntimeError, TypeError, ValueError, ArithmeticError, LookupError) as exc:
            self._warn(f"evaluation error: {exc}")
            return False
        if result is True or result is False:
            return result
        self._warn(f"the expression gave {type(result).__name__}, not a bool")
        return False

    def _warn(self, why: str) -> None:
        if not self.warned:
            self.warned = True
            log.warning("routing rule %r skipped: %s (logged once)", self.name, why)


def compile_expression(expression: str) -> tuple[Any, frozenset[str]]:
    """The compiled program (None for an empty expression) and the variables it reads;
    RuleError naming ``cel_expression`` when it is too long, does not parse, or reads a
    variable Bifrost does not define (a typo would otherwise never match, silently)."""
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise RuleError("cel_expression", f"longer than {MAX_EXPRESSION_CHARS} characters")
    if not expression.strip():
        return None, frozenset()
    if len(_COMPREHENSION.findall(expression)) > MAX_COMPREHENSIONS:
        raise RuleError("cel_expression", f"at most {MAX_COMPREHENSIONS} comprehension (all, exists, exists_one, map, "
                        "filter) per rule: nested ones make an evaluation's cost the product of their lists' sizes")
    cel = cel_module()
    try:
        program = cel.compile(normalize_keys(expression))
        reads = frozenset(program.variables())
    except (ValueError, RuntimeError, TypeError) as exc:
        raise RuleError("cel_expression", f"invalid CEL: {exc}") from None
    reads -= {m[1] for m in _LOOP_VAR.finditer(expression)}  # exists(k, ...): k is the macro's own
    check_patterns(expression, cel)
    unknown = sorted(reads - VARIABLES)
    if unknown:
        raise RuleError("cel_expression", f"unknown variable(s) {', '.join(unknown)}; routing rules can read "
                        + ", ".join(sorted(VARIABLES)))
    return program, reads


def check_patterns(expression: str, cel: Any) -> None:
    """``matches`` only with a literal pattern, and one that compiles: CEL compiles the
    pattern at every evaluation, so a pattern taken from the request would let a client
    choose what each request costs, and an invalid one costs its failed compilation (up to
    ~15 ms) on every request before the rule is skipped."""
    literals = [m[1] for m in _MATCHES_LITERAL.finditer(expression)]
    if len(_MATCHES.findall(expression)) != len(literals):
        raise RuleError("cel_expression", "matches() takes a string literal pattern here, as in "
                        'headers["x-app-version"].matches("^[0-9]+$")')
    for literal in literals:
        try:
            cel.compile(f'"".matches({literal})').execute({})
        except (RuntimeError, ValueError, TypeError) as exc:
            raise RuleError("cel_expression", f"invalid regular expression {literal}: {exc}") from None


def cel_module() -> Any:
    try:
        import cel  # the common-expression-language distribution
    except ImportError:
        raise RuleError("cel_expression", INSTALL) from None
    return cel


def normalize_keys(expression: str) -> str:
    expression = _MAP_KEY.sub(lambda m: m[1] + m[2] + m[3].lower(), expression)
    return _IN_MAP.sub(lambda m: m[1].lower() + m[2] + m[3], expression)


def literal_keys(expression: str, name: str) -> frozenset[str] | None:
    """The keys ``expression`` reads from map ``name`` as literals (``name["k"]``, ``"k" in
    name``); None when it uses the map any other way (``size(headers)``, a computed key).
    Only these keys are handed to CEL: converting a request's every header for each
    evaluation cost more than the evaluation itself."""
    if '"""' in expression or "'''" in expression:
        return None  # triple-quoted strings: not worth parsing here
    literals = [m[3] for m in _MAP_KEY.finditer(expression) if m[1] == name]
    literals += [m[1] for m in _IN_MAP.finditer(expression) if m[3] == name]
    if any("\\" in literal for literal in literals):
        return None  # an escape: leave the decoding to CEL
    keys = frozenset(literal[1:-1] for literal in literals)
    rest = _IN_MAP.sub("", _MAP_KEY.sub("", expression))
    if re.search(rf"\b{name}\b", rest):
        return None
    return keys


def check_targets(targets: list[RuleTarget]) -> tuple[RuleTarget, ...]:
    """Bifrost's rules for targets: at least one, weights >= 0 summing to 1 (within 0.001),
    a pinned key only with a provider, no two alike."""
    if not targets:
        raise RuleError("targets", "a rule needs at least one target")
    for i, t in enumerate(targets):
        if not t.weight >= 0:
            raise RuleError(f"targets[{i}].weight", f"must be >= 0, not {t.weight}")
        if t.key and not t.provider:
            raise RuleError(f"targets[{i}].key_id", "a pinned key needs the target's provider")
    seen = set()
    for i, t in enumerate(targets):
        identity = ((t.provider or "").lower(), (t.model or "").lower(), t.key or "")
        if identity in seen:
            raise RuleError(f"targets[{i}]", "the same provider, model and key as an earlier target")
        seen.add(identity)
    total = sum(t.weight for t in targets)
    if abs(total - 1.0) > 0.001:  # Bifrost's tolerance
        raise RuleError("targets", f"the weights sum to {total:g}; they must sum to 1")
    return tuple(targets)


class Facts(NamedTuple):
    """Who sends the request: the scope chain's ids and the CEL organisation variables."""

    vk_id: str = ""
    vk_name: str = ""
    team_id: str = ""
    team_name: str = ""
    customer_id: str = ""
    customer_name: str = ""


# (provider, model) -> (budget_used, tokens_used, request), percentages; read only when a
# rule's expression needs them.
Capacity = Callable[[str, str], tuple[float, float, float]]
NO_CAPACITY = (0.0, 0.0, 0.0)


class RuleSet:
    """Every enabled rule, indexed by (scope, scope id) and sorted by priority."""

    def __init__(self, rules: Iterable[Rule], max_depth: int = DEFAULT_MAX_DEPTH, rng: random.Random | None = None):
        by_scope: dict[tuple[str, str], list[Rule]] = {}
        for r in rules:
            by_scope.setdefault((r.scope, r.scope_id if r.scope != "global" else ""), []).append(r)
        self.by_scope = {k: tuple(sorted(v, key=lambda r: r.priority)) for k, v in by_scope.items()}
        self.rules = [r for group in self.by_scope.values() for r in group]
        self.reads = frozenset().union(*(r.reads for r in self.rules))
        self.header_keys = _union(r.keys["headers"] for r in self.rules if "headers" in r.reads)
        self.param_keys = _union(r.keys["params"] for r in self.rules if "params" in r.reads)
        self._context = cel_module().Context if self.rules else None
        self.needs_capacity = bool(self.reads.intersection(CAPACITY))
        self.max_depth = max(1, max_depth)
        self._random = (rng or random.Random()).random

    def __len__(self) -> int:
        return len(self.rules)

    def chain(self, facts: Facts) -> list[tuple[Rule, ...]]:
        out = []
        for key in (("virtual_key", facts.vk_id), ("team", facts.team_id), ("customer", facts.customer_id)):
            if key[1] and key in self.by_scope:
                out.append(self.by_scope[key])
        if ("global", "") in self.by_scope:
            out.append(self.by_scope[("global", "")])
        return out

    def variables(self, facts: Facts, request_type: str, headers: Mapping[str, str],
                  params: Mapping[str, str]) -> dict[str, Any]:
        """The variables the rules read that do not change along a chain (only those: each
        is converted to CEL on every evaluation)."""
        every = {"request_type": request_type, "headers": headers, "params": params,
                 "virtual_key_id": facts.vk_id, "virtual_key_name": facts.vk_name, "team_id": facts.team_id,
                 "team_name": facts.team_name, "customer_id": facts.customer_id, "customer_name": facts.customer_name}
        return {k: v for k, v in every.items() if k in self.reads}

    def decide(self, facts: Facts, provider: str, model: str, variables: dict[str, Any],
               capacity: Capacity | None = None) -> Decision | None:
        """The routing decision for a request now at ``provider``/``model``, or None when no
        rule matches. ``variables`` (from ``variables``) gets provider, model and capacity."""
        chain = self.chain(facts)
        if not chain:
            return None
        decision: Decision | None = None
        seen = {(provider, model)}
        for _ in range(self.max_depth):
            variables["provider"], variables["model"] = provider, model
            if self.needs_capacity:
                used = capacity(provider, model) if capacity is not None else NO_CAPACITY
                variables["budget_used"], variables["tokens_used"], variables["request"] = used
            # One Context per step: CEL converts the variables once, not once per rule.
            matched = self._first_match(chain, self._context(variables=variables))
            if matched is None:
                break
            target = matched.pick(self._random())
            provider = target.provider or provider
            model = target.model or model
            decision = Decision(provider, model, target.key, matched.fallbacks, matched.name)
            if not matched.chain or (provider, model) in seen:
                break
            seen.add((provider, model))
        else:
            log.warning("routing rules: chain longer than %d steps, stopped at %s/%s", self.max_depth, provider, model)
        return decision

    @staticmethod
    def _first_match(chain: list[tuple[Rule, ...]], variables: Any) -> Rule | None:
        for rules in chain:
            for rule in rules:
                if rule.matches(variables):
                    return rule
        return None


def _union(sets: Iterable[frozenset[str] | None]) -> frozenset[str] | None:
    out: set[str] = set()
    for keys in sets:
        if keys is None:
            return None
        out |= keys
    return frozenset(out)
