"""OpenAI chat ⇄ Cohere v2 chat, as pure functions (issue 14): requests, whole answers and
streams, finish reasons and usage; hostile input is a TranslationError, never a crash."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rainbridge.translate import (
    CohereStreamToChat,
    TranslationError,
    chat_request_to_cohere,
    cohere_response_to_chat,
)
from rainbridge.translate.cohere_openai import finish_reason_of, usage_of

TOOL = {"type": "function", "function": {"name": "get_weather", "description": "Weather",
                                         "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}
CALL = {"id": "get_weather_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}


def test_a_conversation_with_system_tools_and_a_tool_result_keeps_its_shape():
    req = {"model": "x", "messages": [
        {"role": "developer", "content": [{"type": "text", "text": "Be brief."}]},
        {"role": "user", "content": [{"type": "text", "text": "Look"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}}]},
        {"role": "assistant", "content": None, "tool_calls": [CALL]},
        {"role": "tool", "tool_call_id": "get_weather_1", "content": "sunny"},
    ], "tools": [TOOL], "tool_choice": "auto", "temperature": 0.3, "top_p": 0.8, "max_completion_tokens": 9,
        "stop": "END", "seed": 7, "frequency_penalty": 0.1, "presence_penalty": 0.2,
        "response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": {"type": "object"}}}}
    assert chat_request_to_cohere(req, "command-a-03-2025") == {
        "model": "command-a-03-2025",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Look"},
                                         {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}}]},
            {"role": "assistant", "tool_calls": [CALL]},
            {"role": "tool", "tool_call_id": "get_weather_1", "content": "sunny"},
        ],
        "temperature": 0.3, "p": 0.8, "seed": 7, "frequency_penalty": 0.1, "presence_penalty": 0.2, "max_tokens": 9,
        "stop_sequences": ["END"], "response_format": {"type": "json_object", "json_schema": {"type": "object"}},
        "tools": [{"type": "function", "function": TOOL["function"]}],
    }


@pytest.mark.parametrize(("choice", "expected_choice", "tool_names"), [
    ("none", "NONE", ["get_weather", "other"]),
    ("required", "REQUIRED", ["get_weather", "other"]),
    ({"type": "function", "function": {"name": "other"}}, "REQUIRED", ["other"]),  # Cohere cannot name one: only it is left
])
def test_tool_choice(choice, expected_choice, tool_names):
    other = {"type": "function", "function": {"name": "other", "parameters": {"type": "object"}}}
    out = chat_request_to_cohere({"messages": [{"role": "user", "content": "x"}], "tools": [TOOL, other],
                                  "tool_choice": choice}, "m")
    assert out["tool_choice"] == expected_choice and [t["function"]["name"] for t in out["tools"]] == tool_names


@pytest.mark.parametrize(("req", "param"), [
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "user", "content": "x"}], "n": 2}, "n"),
    ({"messages": [{"role": "user", "content": "x"}], "logprobs": True}, "logprobs"),
    ({"messages": [{"role": "user", "content": "x"}], "logit_bias": {"1": 2}}, "logit_bias"),
    ({"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]}, "messages[0].content[0]"),
    ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].tool_call_id"),
    ({"messages": [{"role": "assistant", "content": None}]}, "messages[0].content"),
    ({"messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
    ({"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "custom", "custom": {}}]}, "tools[0].type"),
    ({"messages": [{"role": "user", "content": "x"}], "tools": [TOOL], "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
    ({"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "grammar"}}, "response_format.type"),
])
def test_what_cohere_cannot_express_is_refused_naming_the_field(req, param):
    with pytest.raises(TranslationError) as caught:
        chat_request_to_cohere(req, "m")
    assert caught.value.param == param


@pytest.mark.parametrize(("reason", "calls", "expected"), [
    ("COMPLETE", False, "stop"), ("STOP_SEQUENCE", False, "stop"), ("MAX_TOKENS", False, "length"),
    ("TOOL_CALL", True, "tool_calls"), ("COMPLETE", True, "tool_calls"), (None, False, "stop"), ("SOMETHING_NEW", False, "stop"),
])
def test_finish_reasons(reason, calls, expected):
    assert finish_reason_of(reason, calls) == expected


@pytest.mark.parametrize(("usage", "expected"), [
    ({"billed_units": {"input_tokens": 5, "output_tokens": 7}, "tokens": {"input_tokens": 45, "output_tokens": 7}}, (45, 7)),
    ({"billed_units": {"input_tokens": 5, "output_tokens": 7}}, (5, 7)),
    ({"tokens": {"input_tokens": None, "output_tokens": None}, "billed_units": {"input_tokens": 2}}, (2, 0)),
    (None, (0, 0)),
])
def test_usage_prefers_tokens_over_billed_units(usage, expected):
    out = usage_of(usage)
    assert (out["prompt_tokens"], out["completion_tokens"]) == expected and out["total_tokens"] == sum(expected)


def test_a_whole_answer_with_a_tool_call_and_thinking_becomes_a_chat_completion():
    resp = {"id": "r1", "finish_reason": "TOOL_CALL", "message": {
        "role": "assistant", "tool_plan": "I will look it up.", "tool_calls": [CALL],
        "content": [{"type": "thinking", "thinking": "hmm"}, {"type": "text", "text": "Checking."}]},
        "usage": {"tokens": {"input_tokens": 3, "output_tokens": 4}}}
    out = cohere_response_to_chat(resp, "command-a", created=1)
    assert out["id"] == "chatcmpl-r1" and out["model"] == "command-a" and out["created"] == 1
    (choice,) = out["choices"]
    assert choice["message"] == {"role": "assistant", "content": "Checking.", "refusal": None, "tool_calls": [CALL]}
    assert choice["finish_reason"] == "tool_calls" and out["usage"]["total_tokens"] == 7


def events_for_a_tool_call() -> list[dict]:
    return [
        {"type": "message-start", "id": "m1", "delta": {"message": {"role": "assistant", "content": [], "tool_calls": []}}},
        {"type": "tool-plan-delta", "delta": {"message": {"tool_plan": "I will"}}},
        {"type": "tool-call-start", "index": 0, "delta": {"message": {"tool_calls": {
            "id": "get_weather_1", "type": "function", "function": {"name": "get_weather", "arguments": ""}}}}},
        {"type": "tool-call-delta", "index": 0, "delta": {"message": {"tool_calls": {"function": {"arguments": '{"city":'}}}}},
        {"type": "tool-call-delta", "index": 0, "delta": {"message": {"tool_calls": {"function": {"arguments": '"Paris"}'}}}}},
        {"type": "tool-call-end", "index": 0},
        {"type": "message-end", "delta": {"finish_reason": "TOOL_CALL",
                                          "usage": {"billed_units": {"input_tokens": 1, "output_tokens": 2},
                                                    "tokens": {"input_tokens": 11, "output_tokens": 2}}}},
    ]


def test_a_streamed_tool_call_becomes_tool_call_deltas_then_the_usage_chunk():
    translator = CohereStreamToChat("command-a", include_usage=True, created=1)
    chunks = [c for e in events_for_a_tool_call() for c in translator.feed(e)]
    assert translator.complete and translator.finish == "TOOL_CALL"
    chunks += translator.usage_chunks()
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert deltas[0] == {"role": "assistant", "content": ""}
    assert deltas[1]["tool_calls"] == [{"index": 0, "id": "get_weather_1", "type": "function",
                                        "function": {"name": "get_weather", "arguments": ""}}]
    arguments = "".join(d["tool_calls"][0]["function"]["arguments"] for d in deltas if "tool_calls" in d)
    assert arguments == '{"city":"Paris"}'
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]] == ["tool_calls"]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["prompt_tokens"] == 11
    assert all(c["id"] == "chatcmpl-m1" for c in chunks)


def test_streamed_thinking_is_left_out_and_text_passes():
    translator = CohereStreamToChat("m", include_usage=False)
    events = [
        {"type": "message-start", "id": "m2"},
        {"type": "content-start", "index": 0, "delta": {"message": {"content": {"type": "thinking", "thinking": ""}}}},
        {"type": "content-delta", "index": 0, "delta": {"message": {"content": {"thinking": "secret plan", "text": "x"}}}},
        {"type": "content-start", "index": 1, "delta": {"message": {"content": {"type": "text", "text": ""}}}},
        {"type": "content-delta", "index": 1, "delta": {"message": {"content": {"text": "Hello"}}}},
        {"type": "message-end", "delta": {"finish_reason": "MAX_TOKENS"}},
    ]
    chunks = [c for e in events for c in translator.feed(e)]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == "Hello"
    assert chunks[-1]["choices"][0]["finish_reason"] == "length" and translator.usage_chunks() == []
    assert all("usage" not in c for c in chunks)


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                    max_leaves=12)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(["messages", "tools", "tool_choice", "stop", "response_format", "n", "max_tokens"]),
                       JSON, max_size=5))
def test_hostile_requests_are_a_translation_error_or_a_json_body(req):
    try:
        out = chat_request_to_cohere(req, "m")
    except TranslationError:
        return
    orjson.dumps(out)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.dictionaries(st.sampled_from(["type", "index", "delta", "id"]), JSON, max_size=4), max_size=6))
def test_hostile_stream_events_raise_only_what_the_adapter_turns_into_a_stream_error(events):
    translator = CohereStreamToChat("m", include_usage=True)
    for event in events:
        try:
            chunks = translator.feed(event)
        except (AttributeError, TypeError, ValueError):
            return
        orjson.dumps(chunks)
