"""OpenAI chat ⇄ Bedrock Converse translation (pure functions), both ways, and the
ConverseStream → chunk state machine."""

from __future__ import annotations

import pytest

from rainbridge.translate import TranslationError
from rainbridge.translate.bedrock_openai import (
    chat_request_to_converse,
    converse_response_to_chat,
    usage_of,
)
from rainbridge.translate.bedrock_openai_stream import ConverseStreamToChat

TOOL = {"type": "function", "function": {"name": "f", "description": "d", "parameters": {"type": "object"}}}
CALL = {"id": "tooluse_1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}


def test_system_and_developer_messages_join_into_system():
    out = chat_request_to_converse({"messages": [
        {"role": "system", "content": "one"}, {"role": "developer", "content": [{"type": "text", "text": "two"}]},
        {"role": "user", "content": "hi"}]})
    assert out == {"system": [{"text": "one\n\ntwo"}], "messages": [{"role": "user", "content": [{"text": "hi"}]}]}


def test_parallel_tool_results_share_one_user_turn_after_the_calls():
    second = {**CALL, "id": "tooluse_2"}
    out = chat_request_to_converse({"tools": [TOOL], "messages": [
        {"role": "user", "content": "go"}, {"role": "assistant", "content": "calling", "tool_calls": [CALL, second]},
        {"role": "tool", "tool_call_id": "tooluse_1", "content": "r1"},
        {"role": "tool", "tool_call_id": "tooluse_2", "content": [{"type": "text", "text": "r2"}]},
        {"role": "user", "content": "and?"}]})
    assert out["messages"][1:] == [
        {"role": "assistant", "content": [{"text": "calling"}, {"toolUse": {"toolUseId": "tooluse_1", "name": "f", "input": {"a": 1}}},
                                          {"toolUse": {"toolUseId": "tooluse_2", "name": "f", "input": {"a": 1}}}]},
        {"role": "user", "content": [{"toolResult": {"toolUseId": "tooluse_1", "content": [{"text": "r1"}]}},
                                     {"toolResult": {"toolUseId": "tooluse_2", "content": [{"text": "r2"}]}},
                                     {"text": "and?"}]},
    ]
    assert out["toolConfig"] == {"tools": [{"toolSpec": {"name": "f", "description": "d", "inputSchema": {"json": {"type": "object"}}}}]}


@pytest.mark.parametrize(("choice", "expected"), [
    ("auto", {"auto": {}}), ("required", {"any": {}}),
    ({"type": "function", "function": {"name": "f"}}, {"tool": {"name": "f"}}),
])
def test_tool_choice_maps_to_converse(choice, expected):
    out = chat_request_to_converse({"messages": [{"role": "user", "content": "x"}], "tools": [TOOL], "tool_choice": choice})
    assert out["toolConfig"]["toolChoice"] == expected


def test_tool_choice_none_leaves_the_tools_out_unless_the_history_uses_them():
    plain = chat_request_to_converse({"messages": [{"role": "user", "content": "x"}], "tools": [TOOL], "tool_choice": "none"})
    assert "toolConfig" not in plain
    history = chat_request_to_converse({"tools": [TOOL], "tool_choice": "none", "messages": [
        {"role": "user", "content": "x"}, {"role": "assistant", "tool_calls": [CALL]},
        {"role": "tool", "tool_call_id": "tooluse_1", "content": "r"}]})
    assert "toolChoice" not in history["toolConfig"] and history["toolConfig"]["tools"]


def test_sampling_knobs_go_into_inference_config():
    out = chat_request_to_converse({"messages": [{"role": "user", "content": "x"}], "max_completion_tokens": 9,
                                    "max_tokens": 5, "temperature": 0, "top_p": 0.5, "stop": "END"})
    assert out["inferenceConfig"] == {"maxTokens": 9, "temperature": 0, "topP": 0.5, "stopSequences": ["END"]}


def test_a_data_url_image_becomes_an_image_block():
    out = chat_request_to_converse({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}, {"type": "text", "text": "what?"}]}]})
    assert out["messages"][0]["content"] == [{"image": {"format": "png", "source": {"bytes": "AAAA"}}}, {"text": "what?"}]


@pytest.mark.parametrize(("request_", "param"), [
    ({"n": 2}, "n"), ({"logprobs": True}, "logprobs"), ({"logit_bias": {"1": 2}}, "logit_bias"),
    ({"response_format": {"type": "json_object"}}, "response_format.type"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}]},
     "messages[0].content[0].image_url.url"),
    ({"messages": [{"role": "tool", "content": "r"}]}, "messages[0].tool_call_id"),
    ({"messages": [{"role": "narrator", "content": "r"}]}, "messages[0].role"),
    ({"tools": [{"type": "custom", "custom": {}}]}, "tools[0].type"),
    ({"tools": [TOOL], "tool_choice": "sometimes"}, "tool_choice"),
])
def test_what_converse_cannot_express_is_refused_naming_the_field(request_, param):
    with pytest.raises(TranslationError) as caught:
        chat_request_to_converse({"messages": [{"role": "user", "content": "x"}], **request_})
    assert caught.value.param == param


@pytest.mark.parametrize(("stop", "finish"), [
    ("end_turn", "stop"), ("stop_sequence", "stop"), ("tool_use", "tool_calls"), ("max_tokens", "length"),
    ("content_filtered", "content_filter"), ("guardrail_intervened", "content_filter"),
])
def test_stop_reasons_map_to_finish_reasons(stop, finish):
    resp = {"output": {"message": {"role": "assistant", "content": [{"text": "a"}]}}, "stopReason": stop,
            "usage": {"inputTokens": 3, "outputTokens": 1, "totalTokens": 4}}
    assert converse_response_to_chat(resp, "m")["choices"][0]["finish_reason"] == finish


def test_a_response_with_text_and_a_tool_use_becomes_one_message():
    resp = {"output": {"message": {"role": "assistant", "content": [
        {"reasoningContent": {"reasoningText": {"text": "hmm"}}}, {"text": "Let me"}, {"text": " check."},
        {"toolUse": {"toolUseId": "tooluse_9", "name": "f", "input": {"a": [1]}}}]}},
        "stopReason": "tool_use", "usage": {"inputTokens": 3, "outputTokens": 2, "totalTokens": 5}}
    out = converse_response_to_chat(resp, "m", created=7)
    assert out["choices"][0]["message"] == {"role": "assistant", "content": "Let me check.", "refusal": None, "tool_calls": [
        {"id": "tooluse_9", "type": "function", "function": {"name": "f", "arguments": '{"a":[1]}'}}]}
    assert out["usage"] == {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    assert out["created"] == 7 and out["model"] == "m"


def test_cache_reads_and_writes_count_as_prompt_tokens():
    assert usage_of({"inputTokens": 3, "outputTokens": 2, "cacheReadInputTokens": 10, "cacheWriteInputTokens": 5}) == {
        "prompt_tokens": 18, "completion_tokens": 2, "total_tokens": 20, "prompt_tokens_details": {"cached_tokens": 10}}


def test_stream_of_text_then_usage():
    t = ConverseStreamToChat("m", include_usage=True, created=1)
    chunks = []
    for kind, event in [("messageStart", {"role": "assistant"}), ("contentBlockDelta", {"delta": {"text": "Hi"}, "contentBlockIndex": 0}),
                        ("contentBlockDelta", {"delta": {"text": " there"}, "contentBlockIndex": 0}),
                        ("contentBlockStop", {"contentBlockIndex": 0}), ("messageStop", {"stopReason": "end_turn"})]:
        chunks += t.feed(kind, event)
    assert not t.complete  # metadata (the usage) has not come yet
    chunks += t.feed("metadata", {"usage": {"inputTokens": 4, "outputTokens": 2, "totalTokens": 6}, "metrics": {"latencyMs": 1}})
    assert t.complete
    chunks += t.finish()
    assert [c["choices"][0]["delta"] for c in chunks[:-1]] == [{"role": "assistant", "content": "Hi"}, {"content": " there"}, {}]
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop" and chunks[-2]["usage"] is None
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6}


def test_stream_of_two_tool_uses_gives_indexed_tool_call_deltas():
    t = ConverseStreamToChat("m", include_usage=False)
    out = t.feed("contentBlockStart", {"start": {"toolUse": {"toolUseId": "a", "name": "f"}}, "contentBlockIndex": 1})
    out += t.feed("contentBlockDelta", {"delta": {"toolUse": {"input": '{"x":'}}, "contentBlockIndex": 1})
    out += t.feed("contentBlockDelta", {"delta": {"toolUse": {"input": "1}"}}, "contentBlockIndex": 1})
    out += t.feed("contentBlockStart", {"start": {"toolUse": {"toolUseId": "b", "name": "g"}}, "contentBlockIndex": 2})
    out += t.feed("messageStop", {"stopReason": "tool_use"})
    deltas = [c["choices"][0]["delta"] for c in out]
    assert deltas[0]["role"] == "assistant"
    assert deltas[0]["tool_calls"] == [{"index": 0, "id": "a", "type": "function", "function": {"name": "f", "arguments": ""}}]
    assert [d["tool_calls"][0]["function"]["arguments"] for d in deltas[1:3]] == ['{"x":', "1}"]
    assert deltas[3]["tool_calls"][0]["index"] == 1 and deltas[3]["tool_calls"][0]["id"] == "b"
    assert out[-1]["choices"][0]["finish_reason"] == "tool_calls" and t.finish() == []


def test_a_tool_input_delta_for_an_unstarted_block_is_an_error():
    with pytest.raises(ValueError):
        ConverseStreamToChat("m", False).feed("contentBlockDelta", {"delta": {"toolUse": {"input": "{}"}}, "contentBlockIndex": 4})
