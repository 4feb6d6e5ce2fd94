"""What routing rules cost per request, in process (no server): the rules' part of
``Gateway.plan`` (``rule_routing.apply_rules``: the facts, the headers from the ASGI scope,
the scope chain, the CEL evaluations), for a few rule sets Bifrost's docs show.

    .venv/bin/python bench/routing_rules.py [--n 20000] [--out bench/results/routing_rules.json]

With ``cel-python`` installed (``pip install cel-python``, the pure-Python CEL), the same
expressions are also timed with it, one evaluation each, beside the ``cel`` package used here.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import time
from pathlib import Path

from rainbridge.config.load import load_data
from rainbridge.counters.local import LocalCounters
from rainbridge.gateway.provider import build_providers
from rainbridge.gateway.routing import Routes
from rainbridge.gateway.rule_routing import apply_rules
from rainbridge.gateway.rules_config import rules_from_config
from rainbridge.governance.engine import Governance
from rainbridge.governance.pricing import Pricing
from rainbridge.upstream import UpstreamClient

BENCH = Path(__file__).resolve().parent
PROVIDERS = {name: {"keys": [{"name": "k", "value": "sk-bench-0123456789", "models": ["*"]}],
                    "network_config": {"base_url": "http://127.0.0.1:9"}} for name in ("openai", "groq")}
HEADERS = [(b"host", b"127.0.0.1:8080"), (b"user-agent", b"OpenAI/Python 1.54.0"), (b"accept", b"application/json"),
           (b"content-type", b"application/json"), (b"authorization", b"Bearer sk-bench"), (b"x-stainless-lang", b"python"),
           (b"x-tier", b"basic"), (b"content-length", b"93")]


def rule(i: int, expression: str, **kw) -> dict:
    return {"name": f"r{i}", "cel_expression": expression, "targets": [{"provider": "groq", "weight": 1}], **kw}


CASES = {
    "one header rule, matches": [rule(0, 'headers["x-tier"] == "basic"')],
    "one header rule, no match": [rule(0, 'headers["x-tier"] == "premium"')],
    "10 global rules, none matches": [rule(i, f'headers["x-tier"] == "t{i}" && model.startsWith("gpt-{i}")', priority=i)
                                      for i in range(10)],
    "capacity rule (model limit), no match": [rule(0, "request > 90 || budget_used > 80")],
    "regex on a header, matches": [rule(0, 'headers["user-agent"].matches("^OpenAI/Python [0-9]+\\\\.")')],
}
CAPACITY_LIMITS = [{"id": "m", "model_name": "gpt-4o", "provider": "openai",
                    "rate_limit": {"request_max_limit": 1000, "request_reset_duration": "1h"}}]


def per_call_us(fn, n: int, runs: int = 5) -> float:
    """The median over ``runs`` of the mean time of ``n`` calls, in µs."""
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        for _ in range(n):
            fn()
        times.append((time.perf_counter() - t) / n * 1e6)
    return statistics.median(times)


def bench_case(rules: list[dict], n: int) -> float:
    gov_config = {"routing_rules": rules}
    if any("request" in r["cel_expression"] for r in rules):
        gov_config["model_configs"] = CAPACITY_LIMITS
    loaded = load_data({"providers": PROVIDERS, "governance": gov_config}, {})
    config = loaded.config
    ruleset = rules_from_config(config.governance, config.providers, [])
    assert ruleset is not None
    governance = Governance(LocalCounters("bench"), Pricing({}), False)
    from rainbridge.governance.normalize import normalize
    governance.model_limits = tuple(normalize(config.governance, set(config.providers), 0).model_limits)
    routes = Routes(build_providers(config.providers, config, UpstreamClient()))
    scope = {"headers": HEADERS, "query_string": b""}
    req = {"model": "openai/gpt-4o", "messages": []}
    now_ms = int(time.time() * 1000)

    def one() -> None:
        apply_rules(ruleset, governance, routes, None, req, scope, "chat", "openai", None, now_ms)

    return per_call_us(one, n)


def bench_celpy(n: int) -> dict[str, float] | None:
    try:
        import celpy
    except ImportError:
        return None
    env = celpy.Environment()
    variables = {"model": "gpt-4o", "provider": "openai", "headers": {k.decode(): v.decode() for k, v in HEADERS},
                 "request": 0.0, "budget_used": 0.0}
    out = {}
    for name, rules in CASES.items():
        program = env.program(env.compile(rules[0]["cel_expression"]))
        activation = celpy.json_to_cel(variables)
        out[name] = per_call_us(lambda p=program, a=activation: p.evaluate(a), max(200, n // 20))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000, help="calls per timing run")
    parser.add_argument("--out", default=str(BENCH / "results" / "routing_rules.json"))
    args = parser.parse_args()
    results = {name: bench_case(rules, args.n) for name, rules in CASES.items()}
    celpy_times = bench_celpy(args.n)
    print(f"{'rule set':42} {'µs / request (cel)':>20} {'celpy, 1st expr':>16}")
    for name, us in results.items():
        other = f"{celpy_times[name]:.1f}" if celpy_times else "-"
        print(f"{name:42} {us:20.1f} {other:>16}")
    Path(args.out).write_text(json.dumps({
        "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "what": "µs per request for the routing-rule part of Gateway.plan (median of 5 runs)",
        "us_per_request": results, "celpy_us_per_evaluation_of_first_rule": celpy_times}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
