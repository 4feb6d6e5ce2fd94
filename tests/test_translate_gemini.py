"""OpenAI Chat Completions ⇄ Gemini generateContent translation, both ways, checked against the
openai SDK's own response types."""

from __future__ import annotations

import copy

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from rainbridge.translate import (
    GeminiStreamToChat,
    TranslationError,
    chat_request_to_gemini,
    gemini_response_to_chat,
)
from rainbridge.translate.gemini_openai import finish_reason_of, usage_of

PNG = "iVBORw0KGgo="
CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}


def to_gemini(messages, **extra):
    req = {"model": "gemini-2.5-flash", "messages": messages, **extra}
    before = copy.deepcopy(req)
    out = chat_request_to_gemini(req)
    assert req == before, "input was mutated"
    orjson.dumps(out)
    return out


def refused(messages, **extra) -> str | None:
    with pytest.raises(TranslationError) as caught:
        chat_request_to_gemini({"model": "m", "messages": messages, **extra})
    return caught.value.param


# --- requests ---------------------------------------------------------------------------------


def test_system_and_developer_messages_become_one_system_instruction():
    out = to_gemini([{"role": "system", "content": "A."}, {"role": "developer", "content": [{"type": "text", "text": "B."}]},
                     {"role": "user", "content": "hi"}])
    assert out == {"systemInstruction": {"parts": [{"text": "A.\n\nB."}]}, "contents": [{"role": "user", "parts": [{"text": "hi"}]}]}


def test_user_parts_become_text_inline_and_file_data():
    out = to_gemini([{"role": "user", "content": [
        {"type": "text", "text": "look"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg?size=2"}},
        {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "mp3"}},
        {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0="}},
    ]}])
    assert out["contents"][0]["parts"] == [
        {"text": "look"},
        {"inlineData": {"mimeType": "image/png", "data": PNG}},
        {"fileData": {"fileUri": "https://example.com/cat.jpg?size=2", "mimeType": "image/jpeg"}},
        {"inlineData": {"mimeType": "audio/mp3", "data": "AAAA"}},
        {"inlineData": {"mimeType": "application/pdf", "data": "JVBERi0="}},
    ]


def test_tool_calls_and_parallel_results_become_function_call_and_one_response_turn():
    second = {**CALL, "id": "call_2", "function": {"name": "get_time", "arguments": "{}"}}
    signed = {**CALL, "extra_content": {"google": {"thought_signature": "sig=="}}}
    out = to_gemini([
        {"role": "user", "content": "Weather and time?"},
        {"role": "assistant", "content": "Let me check.", "tool_calls": [signed, second]},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"sky": "clear"}'},
        {"role": "tool", "tool_call_id": "call_2", "content": "noon"},
        {"role": "user", "content": "thanks"},
    ])
    assert out["contents"] == [
        {"role": "user", "parts": [{"text": "Weather and time?"}]},
        {"role": "model", "parts": [
            {"text": "Let me check."},
            {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": "sig=="},
            {"functionCall": {"name": "get_time", "args": {}}},
        ]},
        {"role": "user", "parts": [
            {"functionResponse": {"name": "get_weather", "response": {"sky": "clear"}}},
            {"functionResponse": {"name": "get_time", "response": {"output": "noon"}}},
            {"text": "thanks"},
        ]},
    ]


def test_legacy_function_call_and_function_message_are_translated():
    out = to_gemini([{"role": "user", "content": "x"},
                     {"role": "assistant", "function_call": {"name": "f", "arguments": '{"a": 1}'}},
                     {"role": "function", "name": "f", "content": "done"}])
    assert out["contents"][1:] == [{"role": "model", "parts": [{"functionCall": {"name": "f", "args": {"a": 1}}}]},
                                   {"role": "user", "parts": [{"functionResponse": {"name": "f", "response": {"output": "done"}}}]}]


def test_generation_config_fields():
    out = to_gemini([{"role": "user", "content": "x"}], temperature=0.5, top_p=0.9, max_tokens=10, max_completion_tokens=20,
                    stop="END", n=3, seed=7, presence_penalty=0.1, frequency_penalty=0.2,
                    response_format={"type": "json_schema", "json_schema": {"name": "s", "schema": {"type": "object"}}})
    assert out["generationConfig"] == {
        "temperature": 0.5, "topP": 0.9, "seed": 7, "presencePenalty": 0.1, "frequencyPenalty": 0.2,
        "maxOutputTokens": 20, "stopSequences": ["END"], "candidateCount": 3,
        "responseMimeType": "application/json", "responseJsonSchema": {"type": "object"},
    }


def test_dropped_fields_leave_no_generation_config():
    out = to_gemini([{"role": "user", "content": "x"}], n=1, user="u", parallel_tool_calls=True, store=False, logprobs=False)
    assert "generationConfig" not in out


@pytest.mark.parametrize(("choice", "expected"), [
    ("none", {"mode": "NONE"}),
    ("auto", {"mode": "AUTO"}),
    ("required", {"mode": "ANY"}),
    ({"type": "function", "function": {"name": "f"}}, {"mode": "ANY", "allowedFunctionNames": ["f"]}),
])
def test_tool_choice_becomes_function_calling_config(choice, expected):
    tools = [{"type": "function", "function": {"name": "f", "description": "d", "parameters": {"type": "object"}}}]
    out = to_gemini([{"role": "user", "content": "x"}], tools=tools, tool_choice=choice)
    assert out["tools"] == [{"functionDeclarations": [{"name": "f", "description": "d", "parametersJsonSchema": {"type": "object"}}]}]
    assert out["toolConfig"] == {"functionCallingConfig": expected}


@pytest.mark.parametrize(("messages", "extra", "param"), [
    ([{"role": "user", "content": "x"}], {"logprobs": True}, "logprobs"),
    ([{"role": "user", "content": "x"}], {"top_logprobs": 2}, "top_logprobs"),
    ([{"role": "user", "content": "x"}], {"logit_bias": {"1": 5}}, "logit_bias"),
    ([{"role": "user", "content": "x"}], {"tools": [{"type": "custom", "custom": {"name": "c"}}]}, "tools[0].type"),
    ([{"role": "user", "content": "x"}], {"response_format": {"type": "xml"}}, "response_format.type"),
    ([{"role": "user", "content": "x"}], {"tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": "sometimes"}, "tool_choice"),
    ([{"role": "robot", "content": "x"}], {}, "messages[0].role"),
    ([{"role": "system", "content": "only a system prompt"}], {}, "messages"),
    ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png,raw"}}]}], {},
     "messages[0].content[0].image_url.url"),
    ([{"role": "user", "content": [{"type": "video", "video": {}}]}], {}, "messages[0].content[0]"),
    ([{"role": "user", "content": "x"}, {"role": "tool", "tool_call_id": "nowhere", "content": "r"}], {}, "messages[1].tool_call_id"),
    ([{"role": "user", "content": "x"}, {"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": {}}]}], {},
     "messages[1].tool_calls[0]"),
])
def test_what_gemini_cannot_express_is_refused_naming_the_field(messages, extra, param):
    assert refused(messages, **extra) == param


# --- responses --------------------------------------------------------------------------------


def test_response_text_and_usage():
    resp = {"candidates": [{"content": {"role": "model", "parts": [{"text": "thinking…", "thought": True}, {"text": "Hel"}, {"text": "lo"}]},
                            "finishReason": "STOP", "index": 0}],
            "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 2, "thoughtsTokenCount": 4, "totalTokenCount": 11,
                              "cachedContentTokenCount": 3},
            "modelVersion": "gemini-2.5-flash", "responseId": "abc"}
    out = gemini_response_to_chat(resp, "gemini-2.5-flash", created=1)
    ChatCompletion.model_validate(out)
    assert out["id"] == "chatcmpl-abc" and out["model"] == "gemini-2.5-flash"
    assert out["choices"] == [{"index": 0, "message": {"role": "assistant", "content": "Hello", "refusal": None},
                               "logprobs": None, "finish_reason": "stop"}]
    assert out["usage"] == {"prompt_tokens": 5, "completion_tokens": 6, "total_tokens": 11,
                            "prompt_tokens_details": {"cached_tokens": 3}, "completion_tokens_details": {"reasoning_tokens": 4}}


def test_function_calls_become_tool_calls_with_ids_and_signatures():
    resp = {"candidates": [{"content": {"role": "model", "parts": [
        {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": "sig=="},
        {"functionCall": {"name": "get_time", "args": {}, "id": "given-id"}},
    ]}, "finishReason": "STOP"}]}
    out = gemini_response_to_chat(resp, "m")
    ChatCompletion.model_validate(out)
    first, second = out["choices"][0]["message"]["tool_calls"]
    assert first["id"].startswith("call_") and first["function"] == {"name": "get_weather", "arguments": '{"city":"Paris"}'}
    assert first["extra_content"] == {"google": {"thought_signature": "sig=="}}
    assert second["id"] == "given-id" and "extra_content" not in second
    assert out["choices"][0]["finish_reason"] == "tool_calls" and out["choices"][0]["message"]["content"] is None


def test_a_blocked_prompt_is_one_empty_choice_filtered():
    out = gemini_response_to_chat({"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 4}}, "m")
    ChatCompletion.model_validate(out)
    assert out["choices"][0]["finish_reason"] == "content_filter" and out["usage"]["total_tokens"] == 4


@pytest.mark.parametrize(("reason", "calls", "expected"), [
    ("STOP", False, "stop"), ("MAX_TOKENS", False, "length"), ("SAFETY", False, "content_filter"),
    ("RECITATION", False, "content_filter"), ("PROHIBITED_CONTENT", False, "content_filter"), ("OTHER", False, "stop"),
    ("STOP", True, "tool_calls"), (None, True, "tool_calls"), ("MAX_TOKENS", True, "length"),
])
def test_finish_reasons(reason, calls, expected):
    assert finish_reason_of(reason, calls) == expected


def test_usage_without_metadata_is_zero():
    assert usage_of(None) == {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}


@settings(max_examples=50, deadline=None)
@given(st.dictionaries(st.text(min_size=1, max_size=8), st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=8), max_size=4))
def test_function_call_args_survive_the_round_trip(args):
    """Gemini's call → OpenAI tool call → the next request's functionCall: same name, same args."""
    chat = gemini_response_to_chat({"candidates": [{"content": {"parts": [{"functionCall": {"name": "f", "args": args}}]}}]}, "m")
    message = chat["choices"][0]["message"]
    back = chat_request_to_gemini({"model": "m", "messages": [{"role": "user", "content": "x"}, message]})
    assert back["contents"][1]["parts"] == [{"functionCall": {"name": "f", "args": args}}]


# --- streams -----------------------------------------------------------------------------------


def event(parts=None, finish=None, usage=None, index=0):
    candidate: dict = {"content": {"role": "model", "parts": parts or [{"text": ""}]}, "index": index}
    if finish:
        candidate["finishReason"] = finish
    out: dict = {"candidates": [candidate], "responseId": "r1", "modelVersion": "gemini-2.5-flash"}
    if usage:
        out["usageMetadata"] = usage
    return out


def run(translator, events):
    chunks = [c for e in events for c in translator.feed(e)] + translator.finish()
    for chunk in chunks:
        ChatCompletionChunk.model_validate(chunk)
    return chunks


def test_stream_text_then_finish_then_usage_chunk():
    t = GeminiStreamToChat("gemini-2.5-flash", include_usage=True, created=1)
    chunks = run(t, [event([{"text": "Hel"}], usage={"promptTokenCount": 3, "totalTokenCount": 3}),
                     event([{"text": "lo"}]),
                     event(finish="STOP", usage={"promptTokenCount": 3, "candidatesTokenCount": 2, "totalTokenCount": 5})])
    assert t.complete
    assert [c["choices"][0]["delta"] for c in chunks[:-1]] == [{"role": "assistant", "content": "Hel"}, {"content": "lo"}, {}]
    assert [c["choices"][0]["finish_reason"] for c in chunks[:-1]] == [None, None, "stop"]
    assert all(c["id"] == "chatcmpl-r1" and c["usage"] is None for c in chunks[:-1])
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}


def test_stream_function_call_is_one_tool_call_delta_and_finishes_as_tool_calls():
    t = GeminiStreamToChat("m", include_usage=False)
    chunks = run(t, [event([{"functionCall": {"name": "f", "args": {"a": 1}}}, {"functionCall": {"name": "g", "args": {}}}], finish="STOP")])
    calls = [c["choices"][0]["delta"].get("tool_calls") for c in chunks]
    assert [call[0]["index"] for call in calls if call] == [0, 1]
    assert calls[0][0]["function"] == {"name": "f", "arguments": '{"a":1}'}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls" and "usage" not in chunks[-1]


def test_stream_of_a_blocked_prompt_finishes_filtered():
    t = GeminiStreamToChat("m", include_usage=False)
    chunks = run(t, [{"promptFeedback": {"blockReason": "SAFETY"}}])
    assert t.complete and chunks[-1]["choices"][0]["finish_reason"] == "content_filter"


def test_stream_without_a_finish_reason_is_not_complete():
    t = GeminiStreamToChat("m", include_usage=False)
    run(t, [event([{"text": "partial"}])])
    assert not t.complete


def test_stream_candidates_keep_their_index():
    t = GeminiStreamToChat("m", include_usage=False)
    both = {"candidates": [{"content": {"parts": [{"text": "a"}]}, "index": 0, "finishReason": "STOP"},
                           {"content": {"parts": [{"text": "b"}]}, "index": 1, "finishReason": "MAX_TOKENS"}]}
    chunks = run(t, [both])
    assert [(c["choices"][0]["index"], c["choices"][0]["finish_reason"]) for c in chunks] == [(0, None), (0, "stop"), (1, None), (1, "length")]


JSON = st.recursive(st.none() | st.booleans() | st.integers(-5, 5) | st.text(max_size=6),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(
                        ["role", "content", "type", "text", "image_url", "url", "tool_calls", "tool_call_id", "function",
                         "name", "arguments", "input_audio", "file", "file_data", "data", "id", "extra_content"]), inner, max_size=4),
                    max_leaves=12)
ROLES = st.sampled_from(["system", "developer", "user", "assistant", "tool", "function", "robot"])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.fixed_dictionaries({"role": ROLES}, optional={
    "content": JSON, "tool_calls": JSON, "tool_call_id": JSON, "name": JSON, "function_call": JSON}), max_size=4),
    st.dictionaries(st.sampled_from(["tools", "tool_choice", "stop", "n", "response_format", "logprobs", "max_tokens"]), JSON, max_size=3))
def test_any_request_translates_or_is_refused_naming_a_field(messages, extra):
    """Hostile input: the translation answers or raises TranslationError (a 400 with a param),
    never anything else (which would be a 500)."""
    try:
        # A valid user turn last, so the request gets as far as its config and tools.
        chat_request_to_gemini({"model": "m", "messages": [*messages, {"role": "user", "content": "hi"}], **extra})
    except TranslationError as exc:
        assert exc.param
