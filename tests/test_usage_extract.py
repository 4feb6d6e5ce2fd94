"""Token counts read from an answer's ``usage`` without parsing the whole answer."""

from __future__ import annotations

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
