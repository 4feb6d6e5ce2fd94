"""Wrong types, deep nesting and hostile model names get a 400 naming the field: never a 500,
never an ERROR line in the gateway's log.

The sweeps replace every field of a valid request, nested ones included, by a value of each
other JSON type (the probe of issue 12), on both routes and towards both provider families
(native and translated).
"""

from __future__ import annotations

import copy
import http.client
import json
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from support import GatewayProcess, provider_config

WRONG = {"string": "s", "integer": 7, "float": 1.5, "boolean": True, "null": None, "array": [1], "object": {"k": 1}}


def json_kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def variants(doc: object, free_form: set[str], path: tuple = ()):
    """(path, value) for every field and element of ``doc`` and each value of another JSON
    type; an integer stands in for a float (any number will do there), not the reverse.
    Free-form objects (JSON schemas, tool inputs) are replaced whole but not entered."""
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else ()
    for key, value in items:
        here = (*path, key)
        kind = json_kind(value)
        for name, wrong in WRONG.items():
            if name != kind and not (kind == "float" and name == "integer"):
                yield here, wrong
        if param_of(here) not in free_form:
            yield from variants(value, free_form, here)


def param_of(path: tuple) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def replaced(doc: dict, path: tuple, value: object) -> dict:
    out = copy.deepcopy(doc)
    node = out
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    return out


# Fields documented as "a string or an array": a string there is no wrong type.
STRING_TOO = re.compile(r"^(system|stop|messages\[\d+\]\.content(\[\d+\]\.content)?)$")


# Objects mapping free keys to typed values: an error names the map, not the key.
MAPS = {"logit_bias"}


def names_field(param: str | None, field: str) -> bool:
    """The error's ``param`` is the replaced field or a field inside it."""
    if param in MAPS and field.startswith(param + "."):
        return True
    return param is not None and (param == field or param.startswith((field + ".", field + "[")))


ANTHROPIC = {
    "model": "M", "max_tokens": 16, "system": [{"type": "text", "text": "be brief"}],
    "metadata": {"user_id": "u1"}, "stop_sequences": ["END"], "temperature": 0.5, "top_p": 0.9, "top_k": 5,
    "stream": False,
    "tools": [{"name": "get_weather", "description": "weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}],
    "tool_choice": {"type": "auto", "disable_parallel_tool_use": False},
    "messages": [
        {"role": "user", "content": [
            {"type": "text", "text": "hi"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
            {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "a doc"}, "title": "t"},
        ]},
        {"role": "assistant", "content": [
            {"type": "text", "text": "calling"},
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
        ]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "is_error": False,
                                      "content": [{"type": "text", "text": "sunny"}]}]},
    ],
}
ANTHROPIC_FREE = {"tools[0].input_schema", "messages[1].content[1].input"}

CHAT = {
    "model": "M", "max_tokens": 16, "temperature": 0.5, "top_p": 0.9, "n": 1, "stop": ["END"], "stream": False,
    "user": "u1", "seed": 1, "presence_penalty": 0.1, "frequency_penalty": 0.1, "logit_bias": {"50256": -100},
    "response_format": {"type": "text"}, "stream_options": {"include_usage": True}, "parallel_tool_calls": True,
    "tools": [{"type": "function", "function": {"name": "get_weather", "description": "w", "parameters": {"type": "object", "properties": {}}}}],
    "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
    "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "hi"},
                                     {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]},
        {"role": "assistant", "content": None,
         "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ],
}
CHAT_FREE = {"tools[0].function.parameters"}


@pytest.fixture(scope="module")
def gateway(mock, tmp_path_factory):
    gw = GatewayProcess(tmp_path_factory.mktemp("shapes"), provider_config(mock.url))
    yield gw
    gw.stop()


class Client:
    """One keep-alive connection to the gateway (reopened if the gateway closes it)."""

    def __init__(self, url: str):
        host, port = url.removeprefix("http://").split(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=10)

    def post(self, path: str, body: bytes) -> tuple[int, dict]:
        for attempt in range(2):
            try:
                self.conn.request("POST", path, body=body, headers={"content-type": "application/json"})
                resp = self.conn.getresponse()
                data = resp.read()
                return resp.status, json.loads(data) if data else {}
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self.conn.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        self.conn.close()


def error_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if " ERROR " in line or "Traceback" in line]


def sweep(gateway, path: str, doc: dict, free_form: set[str]) -> tuple[int, list[str]]:
    client = Client(gateway.url)
    problems = []
    count = 0
    try:
        for where, value in variants(doc, free_form):
            count += 1
            field = param_of(where)
            status, body = client.post(path, json.dumps(replaced(doc, where, value)).encode())
            param = (body.get("error") or {}).get("param") if isinstance(body, dict) else None
            if status == 200 and (value is None or (type(value) is str and STRING_TOO.match(field))):
                continue  # null for an optional field means absent; see STRING_TOO
            if status != 400 or not names_field(param, field):
                problems.append(f"{field} = {json.dumps(value)}: {status} param={param} {body}")
    finally:
        client.close()
    return count, problems


@pytest.mark.parametrize("model", ["anthropic/claude-x", "openai/gpt-x"], ids=["native", "translated"])
def test_every_wrong_type_on_the_anthropic_route_is_a_400_naming_the_field(gateway, model):
    before = len(gateway.log())
    count, problems = sweep(gateway, "/anthropic/v1/messages", {**ANTHROPIC, "model": model}, ANTHROPIC_FREE)
    assert count > 300
    assert problems == [], f"{len(problems)} of {count} variants:\n" + "\n".join(problems[:40])
    assert error_lines(gateway.log()[before:]) == []


@pytest.mark.parametrize("model", ["openai/gpt-x", "anthropic/claude-x"], ids=["native", "translated"])
def test_every_wrong_type_on_the_chat_route_is_a_400_naming_the_field(gateway, model):
    before = len(gateway.log())
    count, problems = sweep(gateway, "/v1/chat/completions", {**CHAT, "model": model}, CHAT_FREE)
    assert count > 300
    assert problems == [], f"{len(problems)} of {count} variants:\n" + "\n".join(problems[:40])
    assert error_lines(gateway.log()[before:]) == []


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(["type", "text", "source", "content", "k"]), inner, max_size=3),
    max_leaves=8,
)
ALL_PATHS = {
    "/anthropic/v1/messages": [w for w, _ in variants(ANTHROPIC, set())],
    "/v1/chat/completions": [w for w, _ in variants(CHAT, set())],
}


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_json_value_anywhere_is_never_a_500(gateway, data):
    path = data.draw(st.sampled_from(sorted(ALL_PATHS)), label="route")
    doc = {**(ANTHROPIC if path.startswith("/anthropic") else CHAT),
           "model": data.draw(st.sampled_from(["openai/gpt-x", "anthropic/claude-x"]), label="model")}
    where = data.draw(st.sampled_from(sorted(set(ALL_PATHS[path]), key=repr)), label="field")
    value = data.draw(JSON_VALUES, label="value")
    before = len(gateway.log())
    status, body = Client(gateway.url).post(path, json.dumps(replaced(doc, where, value)).encode())
    assert status in ((200, 400, 404) if where == ("model",) else (200, 400)), body  # 404: an unknown provider
    if status == 400:
        assert body["error"]["type"] == "invalid_request_error"
    assert error_lines(gateway.log()[before:]) == []


def test_the_valid_requests_of_the_sweeps_pass(gateway):
    client = Client(gateway.url)
    try:
        for path, doc in (("/anthropic/v1/messages", ANTHROPIC), ("/v1/chat/completions", CHAT)):
            for model in ("anthropic/claude-x", "openai/gpt-x"):
                status, body = client.post(path, json.dumps({**doc, "model": model}).encode())
                assert status == 200, (path, model, body)
    finally:
        client.close()


def test_a_wrong_type_names_the_field_and_the_types(gateway):
    doc = replaced(ANTHROPIC, ("system", 0, "text"), 1)
    status, body = Client(gateway.url).post("/anthropic/v1/messages", json.dumps({**doc, "model": "openai/x"}).encode())
    assert status == 400
    assert body["error"] == {"type": "invalid_request_error", "code": "invalid_type", "param": "system[0].text",
                             "message": "'system[0].text' must be a string, not an integer"}


# --------------------------------------------------------------------------- nesting


def nested(base: dict, depth: int) -> bytes:
    """``base`` plus a field whose arrays nest so that the body nests ``depth`` levels (the
    body itself is 1); written as text, since Python's json recurses too deep for it."""
    inner = b"[" * (depth - 1) + b"1" + b"]" * (depth - 1)
    return json.dumps(base).encode()[:-1] + b', "extra": ' + inner + b"}"


ROUTES = [
    ("/v1/chat/completions", {"model": "openai/gpt-x", "messages": [{"role": "user", "content": "hi"}]}),
    ("/anthropic/v1/messages", {"model": "anthropic/claude-x", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}),
    ("/anthropic/v1/messages", {"model": "openai/gpt-x", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}),
]


@pytest.mark.parametrize(("path", "base"), ROUTES, ids=["chat", "messages-native", "messages-translated"])
@pytest.mark.parametrize("depth", [99, 100, 101, 254, 255, 256, 1024, 1025, 5000])
def test_nesting_is_bounded_at_100_levels(gateway, path, base, depth):
    before = len(gateway.log())
    body = nested(base, depth)
    status, reply = Client(gateway.url).post(path, body)
    if depth <= 100:
        assert status == 200, reply
    else:
        assert status == 400, reply
        assert reply["error"]["code"] in ("too_deep", "invalid_json")
        if depth <= 1024:  # orjson itself parses up to 1024 levels: ours is the bound
            assert reply["error"]["code"] == "too_deep"
            assert "more than 100 levels" in reply["error"]["message"]
    assert error_lines(gateway.log()[before:]) == []


@pytest.mark.parametrize(("path", "base"), ROUTES[:2], ids=["chat", "messages"])
def test_deep_nesting_inside_a_known_field_is_bounded_too(gateway, path, base):
    deep: object = "x"
    for _ in range(300):
        deep = {"k": deep}
    body = {**base, "metadata": deep}
    status, reply = Client(gateway.url).post(path, json.dumps(body).encode())
    assert status == 400, reply
    assert reply["error"]["code"] == "too_deep"


# --------------------------------------------------------------------------- model names


@pytest.mark.parametrize(("path", "base"), ROUTES[:2], ids=["chat", "messages"])
@pytest.mark.parametrize(("model", "fragment"), [
    ("openai/gpt-x\nINFO forged log line", "control characters"),
    ("openai/gpt\x00x", "control characters"),
    ("openai/gpt\x1b[31mx", "control characters"),
    ("openai/" + "m" * 250, "longer than 256 characters"),
    ("openai/" + "m" * 400_000, "longer than 256 characters"),
], ids=["newline", "nul", "escape", "257-chars", "400-KB"])
def test_a_hostile_model_name_is_a_400_naming_model(gateway, path, base, model, fragment):
    before = len(gateway.log())
    status, reply = Client(gateway.url).post(path, json.dumps({**base, "model": model}).encode())
    assert status == 400, reply
    assert reply["error"]["param"] == "model"
    assert reply["error"]["code"] == "invalid_model"
    assert fragment in reply["error"]["message"]
    assert model not in reply["error"]["message"]
    assert "forged" not in gateway.log()[before:]


def test_a_hostile_fallback_name_is_a_400_naming_it(gateway):
    body = {**ROUTES[0][1], "fallbacks": ["openai/ok", "openai/x\r\nforged"]}
    status, reply = Client(gateway.url).post("/v1/chat/completions", json.dumps(body).encode())
    assert status == 400, reply
    assert reply["error"]["param"] == "fallbacks[1]"
    assert reply["error"]["code"] == "invalid_model"


def test_a_model_name_of_256_characters_is_routed(gateway):
    model = "openai/" + "m" * 249
    status, reply = Client(gateway.url).post("/v1/chat/completions", json.dumps({**ROUTES[0][1], "model": model}).encode())
    assert status == 200, reply


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return int(re.search(r"VmRSS:\s+(\d+)", status.read()).group(1))


def test_long_model_names_do_not_stay_in_memory(gateway):
    """Issue 12: 150 requests with 400 KB model names left 121 MB more RSS."""
    client = Client(gateway.url)
    try:
        warm = {**ROUTES[0][1], "model": "openai/" + "w" * 400_000}
        client.post("/v1/chat/completions", json.dumps(warm).encode())  # allocator warm-up
        before = rss_kib(gateway.proc.pid)
        for i in range(150):
            body = {**ROUTES[0][1], "model": f"openai/{i}-" + "m" * 400_000}
            status, _ = client.post("/v1/chat/completions", json.dumps(body).encode())
            assert status == 400
        grown_mib = (rss_kib(gateway.proc.pid) - before) / 1024
    finally:
        client.close()
    assert grown_mib < 30, f"RSS grew by {grown_mib:.0f} MiB"
