"""Token counts read from an answer's ``usage`` without parsing the whole answer."""

from __future__ import annotations

import json
import re

import orjson
import pytest

from rainbridge.gateway.record import RequestRecord, extract_usage


@pytest.mark.parametrize(("body", "expected"), [
    # OpenAI's order (the anchored fast match)
    (b'{"id":"x","choices":[],"usage":{"prompt_tokens":12,"completion_tokens":7,"total_tokens":19}}', (12, 7)),
    # another order, spaces, and details objects in between (the general search)
    (b'{"usage": {"total_tokens": 19, "completion_tokens": 7, "prompt_tokens_details": {"cached_tokens": 3}, '
     b'"prompt_tokens": 12}}', (12, 7)),
    # Anthropic's shape
    (b'{"type":"message","content":[],"usage":{"input_tokens":25,"output_tokens":40}}', (25, 40)),
    # a message that mentions "usage" in its text does not hide the real one (searched from the end)
    (b'{"choices":[{"message":{"content":"\\"usage\\":{\\"prompt_tokens\\":1"}}],'
     b'"usage":{"prompt_tokens":5,"completion_tokens":6}}', (5, 6)),
    (b'{"usage":{"completion_tokens":6}}', (None, 6)),
    (b'{"id":"x","choices":[]}', None),
    (b'{"usage":{}}', None),
])
def test_extract_usage(body, expected):
    assert extract_usage(body) == expected


def test_stream_usage_updates_what_each_event_reports():
    record = RequestRecord("messages", content=False)
    record.set_usage({"input_tokens": 10, "output_tokens": 1})  # Anthropic message_start
    record.set_usage({"output_tokens": 15})  # message_delta
    assert (record.prompt_tokens, record.completion_tokens) == (10, 15)
    record.set_usage({"prompt_tokens": "many", "completion_tokens": None})  # not counts: ignored
    assert (record.prompt_tokens, record.completion_tokens) == (10, 15)


# --- differential: extract_usage against the implementation it replaced -------------------

_REF_TOKENS = re.compile(rb'"(prompt_tokens|completion_tokens|input_tokens|output_tokens)":\s*(\d+)')
_REF_OPENAI = re.compile(rb'"usage":\{"prompt_tokens":(\d+),"completion_tokens":(\d+)')


def _reference(body: bytes):
    """extract_usage as of a11b214, kept verbatim: what any faster version must answer."""
    start = body.rfind(b'"usage":')
    if start < 0:
        return None
    m = _REF_OPENAI.match(body, start)
    if m is not None:
        return int(m[1]), int(m[2])
    found = {name: int(value) for name, value in _REF_TOKENS.findall(body, start)}
    if not found:
        return None
    prompt = found.get(b"prompt_tokens", found.get(b"input_tokens"))
    return prompt, found.get(b"completion_tokens", found.get(b"output_tokens"))


def _mock_answers() -> list[bytes]:
    """Non-streamed answers of the fake provider: OpenAI chat (text, n, tool call), legacy
    completions, embeddings; Anthropic messages (text, tool use)."""
    from rainbridge.mock import anthropic_api, openai_api
    from rainbridge.mock.controls import Controls
    from rainbridge.mock.reply import Call

    def call(family, body, seq):
        return Call(family, body, Controls(), seq, 1796475039)

    user = [{"role": "user", "content": "what is the weather in Paris today, in two words"}]
    fn = {"name": "weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}
    openai = [
        {"model": "gpt-4o-mini", "messages": user},
        {"model": "gpt-4o", "messages": user, "n": 3, "max_tokens": 5},
        {"model": "gpt-4o", "messages": user, "tools": [{"type": "function", "function": fn}]},
    ]
    anthropic = [
        {"model": "claude-3-5-haiku-latest", "max_tokens": 100, "messages": user},
        {"model": "claude-3-5-sonnet-latest", "max_tokens": 100, "messages": user,
         "tools": [{"name": "weather", "input_schema": fn["parameters"]}]},
    ]
    bodies = [openai_api.chat(call("openai", b, i)).body for i, b in enumerate(openai)]
    bodies.append(openai_api.completions(call("openai", {"model": "gpt-3.5-turbo-instruct", "prompt": "hi"}, 9)).body)
    bodies.append(openai_api.embeddings(call("openai", {"model": "text-embedding-3-small", "input": "hi"}, 10)).body)
    bodies += [anthropic_api.messages(call("anthropic", b, i)).body for i, b in enumerate(anthropic)]
    # the same documents as other servers write them: indented, and Python's ", " / ": "
    docs = [orjson.loads(b) for b in bodies]
    bodies += [orjson.dumps(d, option=orjson.OPT_INDENT_2) for d in docs]
    bodies += [json.dumps(d).encode() for d in docs]
    return bodies


_NUMBERS = [b"0", b"7", b"13", b"007", b"4096", b"1" * 1000, b"9" * 5000, b"1_0", b"+5", b"-5", b" 5",
            b"5 ", b"5.0", b"1e3", b"\xd9\xa3", b"", b"null", b'"12"', b"0x1f"]
_TEMPLATES = [
    b'{"id":"x","choices":[],"usage":{"prompt_tokens":%b,"completion_tokens":%b,"total_tokens":22}}',
    b'{"usage":{"prompt_tokens":%b,"completion_tokens":%b}}',
    b'{"usage":{"prompt_tokens":%b,"completion_tokens":%b},"system_fingerprint":"fp"}',
    b'{"usage": {"prompt_tokens": %b, "completion_tokens": %b}}',
    b'{"usage":{"input_tokens":%b,"cache_read_input_tokens":0,"output_tokens":%b}}',
    b'{"usage":{"prompt_tokens_details":{"cached_tokens":3},"prompt_tokens":%b,"completion_tokens":%b}}',
]
_HOSTILE = [
    b"", b"{}", b'"usage":', b'{"usage":null}', b'{"usage":{}}', b'{"usage":', b'{"usage":{"prompt_tokens":',
    b'{"usage":{"prompt_tokens":12,"completion_tokens":',
    b'{"usage":{"prompt_tokens":12,"completion_tokens":x}}',
    b'{"usage":{"prompt_tokens":x,"completion_tokens":1}}',
    # usage only inside a string value, or a real one before a quoted one
    b'{"choices":[{"message":{"content":"\\"usage\\":{\\"prompt_tokens\\":1,\\"completion_tokens\\":2}"}}]}',
    b'{"usage":{"prompt_tokens":5,"completion_tokens":6},"note":"\\"usage\\":{\\"input_tokens\\":1}"}',
    b'{"usage":{"prompt_tokens":5,"completion_tokens":6},"note":"\\"usage\\": x"}',
    # usage not last, duplicated usage keys, duplicated counts
    b'{"usage":{"prompt_tokens":5,"completion_tokens":6},"choices":[{"message":{"content":"' + b"x" * 3000 + b'"}}]}',
    b'{"usage":{"prompt_tokens":1,"completion_tokens":2},"usage":{"input_tokens":3,"output_tokens":4}}',
    b'{"usage":{"input_tokens":3,"output_tokens":4},"usage":{"prompt_tokens":1,"completion_tokens":2}}',
    b'{"usage":{"prompt_tokens":1,"prompt_tokens":8,"completion_tokens":2,"completion_tokens":9}}',
    b'{"usage":{"total_tokens":3,"completion_tokens":2,"prompt_tokens":1}}',
]


def _corpus() -> list[bytes]:
    bodies = _mock_answers() + _HOSTILE
    bodies += [t % pair for t in _TEMPLATES for a in _NUMBERS for pair in ((a, b"9"), (b"9", a), (a, a))]
    # every answer cut short anywhere in its last 160 bytes
    bodies += [b[:n] for b in list(bodies) if len(b) < 8000 for n in range(max(0, len(b) - 160), len(b))]
    return bodies


def test_extract_usage_answers_as_the_reference_on_every_body():
    corpus = _corpus()
    assert len(corpus) > 3000
    differences = []
    for body in corpus:
        try:
            want = _reference(body)
        except ValueError:  # a count over int()'s 4,300 digits: the reference raised
            want = None
        if extract_usage(body) != want:
            differences.append(body[-120:])
    assert differences == []


def test_a_count_longer_than_int_accepts_is_no_usage():
    huge = b"9" * 5000
    with pytest.raises(ValueError):  # what the reference did: Gateway.finish would raise
        _reference(b'{"usage":{"prompt_tokens":%b,"completion_tokens":1}}' % huge)
    assert extract_usage(b'{"usage":{"prompt_tokens":%b,"completion_tokens":1}}' % huge) is None
    assert extract_usage(b'{"usage":{"input_tokens":1,"output_tokens":%b}}' % huge) is None
    assert extract_usage(b'{"usage":{"prompt_tokens":%b,"completion_tokens":1}}' % (b"1" * 1000)) == (
        int("1" * 1000), 1)
