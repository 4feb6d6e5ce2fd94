"""Numbers Bifrost's schema types as strings (its Helm chart renders ``"5432"``) load from a
string of digits; anything else in their place is refused with the field's path (issue 14)."""

from __future__ import annotations

import pytest

from rainbridge.config.load import ConfigError, load_data


def store(section: str, port: object) -> dict:
    return {section: {"enabled": True, "type": "postgres", "config": {"host": "db", "port": port, "db_name": "bifrost"}}}


@pytest.mark.parametrize("section", ["config_store", "logs_store"])
@pytest.mark.parametrize(("given", "expected"), [
    ("5432", 5432),
    ("05432", 5432),
    ("1", 1),
    ("65535", 65535),
    (6543, 6543),  # a number stays a number
])
def test_a_digit_string_loads_as_the_number(section, given, expected):
    assert getattr(load_data(store(section, given), {}).config, section).config.port == expected


@pytest.mark.parametrize("section", ["config_store", "logs_store"])
@pytest.mark.parametrize(("given", "why"), [
    ("54x2", "expected integer"),
    ("", "expected integer"),
    ("+5432", "expected integer"),
    (" 5432", "expected integer"),
    ("٥٤٣٢", "expected integer"),  # Arabic-Indic digits: str.isdigit() says yes, a port it is not
    ("5432.0", "expected integer"),
    ("99999", "must be <= 65535"),
])
def test_anything_else_is_refused_naming_the_field(section, given, why):
    with pytest.raises(ConfigError) as caught:
        load_data(store(section, given), {})
    (problem,) = caught.value.errors
    assert problem.path == f"$.{section}.config.port" and why in problem.message


@pytest.mark.parametrize("path", [
    ("cluster_config", "gossip", "port"),
    ("providers", "openai", "network_config", "max_retries"),
    ("client", "max_request_body_size_mb"),
])
def test_a_digit_string_where_bifrost_wants_an_integer_is_refused_as_bifrost_refuses_it(path):
    config: dict = {"providers": {"openai": {"keys": [{"value": "sk-0123456789"}]}}}
    node = config
    for part in path[:-1]:
        node = node.setdefault(part, {})
    node[path[-1]] = "7"
    with pytest.raises(ConfigError) as caught:
        load_data(config, {})
    assert "$." + ".".join(path) in {p.path for p in caught.value.errors}
