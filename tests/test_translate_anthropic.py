"""Anthropic Messages ⇄ OpenAI Chat Completions translation, checked against the SDKs' own types."""

from __future__ import annotations

import copy

import anthropic.types as at
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from pydantic import TypeAdapter

from rainbridge.translate import (
    ChatStreamToMessages,
    MessagesStreamToChat,
    TranslationError,
    UpstreamStreamError,
    chat_request_to_messages,
    chat_response_to_message,
    error_to_anthropic,
    error_to_openai,
    message_response_to_chat,
    messages_request_to_chat,
)

STREAM_EVENT = TypeAdapter(at.RawMessageStreamEvent)
PNG = "iVBORw0KGgo="


def frozen(fn, *args, **kwargs):
    """Call fn and fail if it mutated any argument; also check the output serializes."""
    before = copy.deepcopy(args)
    out = fn(*args, **kwargs)
    assert args == before, "input was mutated"
    orjson.dumps(out)
    return out


def anthropic_req(messages, **extra):
    return {"model": "claude-x", "max_tokens": 100, "messages": messages, **extra}


def chat_req(messages, **extra):
    return {"model": "gpt-x", "messages": messages, **extra}


# --- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (402, "billing_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (413, "request_too_large"),
        (422, "invalid_request_error"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (502, "api_error"),
        (503, "overloaded_error"),
        (504, "timeout_error"),
        (529, "overloaded_error"),
    ],
)
def test_error_to_anthropic_type_by_status(status, expected):
    assert error_to_anthropic(status, "boom") == {
        "type": "error",
        "error": {"type": expected, "message": "boom"},
    }


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (418, "invalid_request_error"),
        (429, "rate_limit_error"),
        (500, "server_error"),
        (529, "server_error"),
    ],
)
def test_error_to_openai_type_by_status(status, expected):
    assert error_to_openai(status, "boom") == {
        "error": {"message": "boom", "type": expected, "param": None, "code": None}
    }


def test_explicit_error_type_wins():
    assert error_to_anthropic(400, "m", "budget_exceeded")["error"]["type"] == "budget_exceeded"
    assert error_to_openai(400, "m", "budget_exceeded")["error"]["type"] == "budget_exceeded"


def test_anthropic_error_body_parses_with_sdk():
    from anthropic.types.shared import ErrorResponse

    for status in (400, 401, 403, 404, 429, 500, 529):
        ErrorResponse.model_validate(error_to_anthropic(status, "x"))


# --- Anthropic request → OpenAI ------------------------------------------------------------------

TOOL_SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


@pytest.mark.parametrize(
    ("req", "expected_messages"),
    [
        pytest.param(
            anthropic_req([{"role": "user", "content": "hi"}]),
            [{"role": "user", "content": "hi"}],
            id="plain-text",
        ),
        pytest.param(
            anthropic_req([{"role": "user", "content": "hi"}], system="be brief"),
            [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
            id="system-string",
        ),
        pytest.param(
            anthropic_req(
                [{"role": "user", "content": "hi"}],
                system=[
                    {"type": "text", "text": "a"},
                    {"type": "text", "text": "b", "cache_control": {"type": "ephemeral"}},
                ],
            ),
            [{"role": "system", "content": "a\n\nb"}, {"role": "user", "content": "hi"}],
            id="system-blocks-joined",
        ),
        pytest.param(
            anthropic_req([{"role": "user", "content": [{"type": "text", "text": "one"}]}]),
            [{"role": "user", "content": "one"}],
            id="single-text-block-becomes-string",
        ),
        pytest.param(
            anthropic_req(
                [
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "look"},
                            {
                                "type": "image",
                                "source": {
                                    "type": "base64",
                                    "media_type": "image/png",
                                    "data": PNG,
                                },
                            },
                            {
                                "type": "image",
                                "source": {"type": "url", "url": "https://x.test/a.jpg"},
                            },
                        ],
                    }
                ]
            ),
            [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "look"},
                        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                        {"type": "image_url", "image_url": {"url": "https://x.test/a.jpg"}},
                    ],
                }
            ],
            id="images",
        ),
        pytest.param(
            anthropic_req(
                [
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "document",
                                "title": "r.pdf",
                                "source": {
                                    "type": "base64",
                                    "media_type": "application/pdf",
                                    "data": "JVBE",
                                },
                            },
                            {
                                "type": "document",
                                "source": {"type": "text", "media_type": "text/plain", "data": "t"},
                            },
                        ],
                    }
                ]
            ),
            [
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "file",
                            "file": {
                                "filename": "r.pdf",
                                "file_data": "data:application/pdf;base64,JVBE",
                            },
                        },
                        {"type": "text", "text": "t"},
                    ],
                }
            ],
            id="documents",
        ),
        pytest.param(
            anthropic_req(
                [
                    {"role": "user", "content": "weather?"},
                    {
                        "role": "assistant",
                        "content": [
                            {"type": "thinking", "thinking": "hmm", "signature": "s"},
                            {"type": "text", "text": "Checking."},
                            {
                                "type": "tool_use",
                                "id": "toolu_1",
                                "name": "get_weather",
                                "input": {"city": "Paris"},
                            },
                            {"type": "tool_use", "id": "toolu_2", "name": "get_time", "input": {}},
                        ],
                    },
                    {
                        "role": "user",
                        "content": [
                            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
                            {
                                "type": "tool_result",
                                "tool_use_id": "toolu_2",
                                "content": [
                                    {"type": "text", "text": "12:00"},
                                    {"type": "text", "text": "UTC"},
                                ],
                            },
                            {"type": "text", "text": "thanks"},
                        ],
                    },
                ]
            ),
            [
                {"role": "user", "content": "weather?"},
                {
                    "role": "assistant",
                    "content": "Checking.",
                    "tool_calls": [
                        {
                            "id": "toolu_1",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                        },
                        {
                            "id": "toolu_2",
                            "type": "function",
                            "function": {"name": "get_time", "arguments": "{}"},
                        },
                    ],
                },
                {"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"},
                {"role": "tool", "tool_call_id": "toolu_2", "content": "12:00\nUTC"},
                {"role": "user", "content": "thanks"},
            ],
            id="tool-use-and-results",
        ),
        pytest.param(
            anthropic_req(
                [
                    {
                        "role": "assistant",
                        "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}],
                    },
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "tool_result",
                                "tool_use_id": "t",
                                "is_error": True,
                                "content": "no such file",
                            }
                        ],
                    },
                ]
            ),
            [
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "t",
                            "type": "function",
                            "function": {"name": "f", "arguments": "{}"},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "t", "content": "Error: no such file"},
            ],
            id="tool-result-error-no-text",
        ),
        pytest.param(
            anthropic_req(
                [
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "tool_result",
                                "tool_use_id": "t",
                                "content": [
                                    {"type": "text", "text": "screenshot:"},
                                    {
                                        "type": "image",
                                        "source": {
                                            "type": "base64",
                                            "media_type": "image/png",
                                            "data": PNG,
                                        },
                                    },
                                ],
                            }
                        ],
                    }
                ]
            ),
            [
                {"role": "tool", "tool_call_id": "t", "content": "screenshot:"},
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}
                    ],
                },
            ],
            id="tool-result-image-follows-as-user",
        ),
        pytest.param(
            anthropic_req(
                [{"role": "assistant", "content": [{"type": "thinking", "thinking": "x"}]}]
            ),
            [{"role": "assistant", "content": ""}],
            id="thinking-only-assistant-keeps-turn",
        ),
    ],
)
def test_messages_request_to_chat_messages(req, expected_messages):
    out = frozen(messages_request_to_chat, req)
    assert out["messages"] == expected_messages
    assert out["model"] == "claude-x"


def test_messages_request_to_chat_parameters():
    req = anthropic_req(
        [{"role": "user", "content": "hi"}],
        temperature=0.3,
        top_p=0.9,
        top_k=5,
        stop_sequences=["END"],
        stream=True,
        metadata={"user_id": "u-1"},
        thinking={"type": "enabled", "budget_tokens": 1024},
    )
    out = frozen(messages_request_to_chat, req)
    assert out == {
        "model": "claude-x",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 100,
        "temperature": 0.3,
        "top_p": 0.9,
        "stop": ["END"],
        "stream": True,
        "stream_options": {"include_usage": True},
        "user": "u-1",
    }


def test_messages_request_to_chat_tools():
    req = anthropic_req(
        [{"role": "user", "content": "hi"}],
        tools=[
            {"name": "get_weather", "description": "Weather by city", "input_schema": TOOL_SCHEMA},
            {"name": "noop", "input_schema": {"type": "object"}, "cache_control": {"type": "x"}},
        ],
    )
    assert frozen(messages_request_to_chat, req)["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather by city",
                "parameters": TOOL_SCHEMA,
            },
        },
        {"type": "function", "function": {"name": "noop", "parameters": {"type": "object"}}},
    ]


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ({"type": "auto"}, {"tool_choice": "auto"}),
        ({"type": "any"}, {"tool_choice": "required"}),
        ({"type": "none"}, {"tool_choice": "none"}),
        (
            {"type": "tool", "name": "get_weather"},
            {"tool_choice": {"type": "function", "function": {"name": "get_weather"}}},
        ),
        (
            {"type": "auto", "disable_parallel_tool_use": True},
            {"tool_choice": "auto", "parallel_tool_calls": False},
        ),
        (
            {"type": "any", "disable_parallel_tool_use": True},
            {"tool_choice": "required", "parallel_tool_calls": False},
        ),
        (
            {"type": "tool", "name": "g", "disable_parallel_tool_use": False},
            {"tool_choice": {"type": "function", "function": {"name": "g"}}},
        ),
    ],
)
def test_messages_tool_choice_to_chat(choice, expected):
    req = anthropic_req(
        [{"role": "user", "content": "hi"}],
        tools=[{"name": "get_weather", "input_schema": TOOL_SCHEMA}],
        tool_choice=choice,
    )
    out = frozen(messages_request_to_chat, req)
    got = {k: out[k] for k in ("tool_choice", "parallel_tool_calls") if k in out}
    assert got == expected


def test_tool_choice_without_tools_is_dropped():
    out = messages_request_to_chat(anthropic_req([], tool_choice={"type": "any"}))
    assert "tool_choice" not in out and "tools" not in out


@pytest.mark.parametrize(
    ("req", "param"),
    [
        (anthropic_req("nope"), "messages"),
        (anthropic_req([{"role": "system", "content": "x"}]), "messages[0].role"),
        (
            anthropic_req(
                [{"role": "user", "content": "x"}],
                tools=[{"type": "web_search_20250305", "name": "web_search"}],
            ),
            "tools[0]",
        ),
        (
            anthropic_req(
                [
                    {
                        "role": "user",
                        "content": [
                            {"type": "document", "source": {"type": "url", "url": "https://x"}}
                        ],
                    }
                ]
            ),
            "messages[0].content[0].source",
        ),
        (
            anthropic_req([{"role": "user", "content": [{"type": "audio"}]}]),
            "messages[0].content[0]",
        ),
        (anthropic_req([], system=[{"type": "image"}]), "system[0]"),
    ],
)
def test_messages_request_to_chat_rejects(req, param):
    with pytest.raises(TranslationError) as info:
        messages_request_to_chat(req)
    assert info.value.param == param


# --- OpenAI request → Anthropic ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("req", "expected"),
    [
        pytest.param(
            chat_req([{"role": "user", "content": "hi"}]),
            {"messages": [{"role": "user", "content": "hi"}]},
            id="plain-text",
        ),
        pytest.param(
            chat_req(
                [
                    {"role": "system", "content": "a"},
                    {"role": "developer", "content": [{"type": "text", "text": "b"}]},
                    {"role": "user", "content": "hi"},
                ]
            ),
            {"system": "a\n\nb", "messages": [{"role": "user", "content": "hi"}]},
            id="system-and-developer-joined",
        ),
        pytest.param(
            chat_req(
                [
                    {"role": "user", "content": "one"},
                    {"role": "user", "content": [{"type": "text", "text": "two"}]},
                ]
            ),
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "one"},
                            {"type": "text", "text": "two"},
                        ],
                    }
                ]
            },
            id="consecutive-user-merge",
        ),
        pytest.param(
            chat_req(
                [
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "see"},
                            {
                                "type": "image_url",
                                "image_url": {
                                    "url": f"data:image/png;base64,{PNG}",
                                    "detail": "low",
                                },
                            },
                            {"type": "image_url", "image_url": {"url": "https://x.test/a.jpg"}},
                            {
                                "type": "file",
                                "file": {
                                    "filename": "r.pdf",
                                    "file_data": "data:application/pdf;base64,JVBE",
                                },
                            },
                        ],
                    }
                ]
            ),
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "see"},
                            {
                                "type": "image",
                                "source": {
                                    "type": "base64",
                                    "media_type": "image/png",
                                    "data": PNG,
                                },
                            },
                            {
                                "type": "image",
                                "source": {"type": "url", "url": "https://x.test/a.jpg"},
                            },
                            {
                                "type": "document",
                                "source": {
                                    "type": "base64",
                                    "media_type": "application/pdf",
                                    "data": "JVBE",
                                },
                                "title": "r.pdf",
                            },
                        ],
                    }
                ]
            },
            id="images-and-file",
        ),
        pytest.param(
            chat_req(
                [
                    {"role": "user", "content": "weather?"},
                    {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [
                            {
                                "id": "call_1",
                                "type": "function",
                                "function": {
                                    "name": "get_weather",
                                    "arguments": '{"city":"Paris"}',
                                },
                            },
                            {
                                "id": "functions.get_time:1",
                                "type": "function",
                                "function": {"name": "get_time", "arguments": ""},
                            },
                        ],
                    },
                    {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
                    {
                        "role": "tool",
                        "tool_call_id": "functions.get_time:1",
                        "content": [{"type": "text", "text": "12:00"}],
                    },
                    {"role": "user", "content": "thanks"},
                    {"role": "assistant", "content": ""},
                ]
            ),
            {
                "messages": [
                    {"role": "user", "content": "weather?"},
                    {
                        "role": "assistant",
                        "content": [
                            {
                                "type": "tool_use",
                                "id": "call_1",
                                "name": "get_weather",
                                "input": {"city": "Paris"},
                            },
                            {
                                "type": "tool_use",
                                "id": "functions_get_time_1",
                                "name": "get_time",
                                "input": {},
                            },
                        ],
                    },
                    {
                        "role": "user",
                        "content": [
                            {"type": "tool_result", "tool_use_id": "call_1", "content": "sunny"},
                            {
                                "type": "tool_result",
                                "tool_use_id": "functions_get_time_1",
                                "content": [{"type": "text", "text": "12:00"}],
                            },
                            {"type": "text", "text": "thanks"},
                        ],
                    },
                ]
            },
            id="tool-calls-results-merge-and-id-sanitizing",
        ),
        pytest.param(
            chat_req(
                [
                    {"role": "user", "content": "q"},
                    {
                        "role": "assistant",
                        "content": [
                            {"type": "text", "text": "a"},
                            {"type": "refusal", "refusal": "!"},
                        ],
                        "tool_calls": [
                            {
                                "id": "c",
                                "type": "function",
                                "function": {"name": "f", "arguments": "{}"},
                            }
                        ],
                    },
                ]
            ),
            {
                "messages": [
                    {"role": "user", "content": "q"},
                    {
                        "role": "assistant",
                        "content": [
                            {"type": "text", "text": "a!"},
                            {"type": "tool_use", "id": "c", "name": "f", "input": {}},
                        ],
                    },
                ]
            },
            id="assistant-parts-with-tool-call",
        ),
    ],
)
def test_chat_request_to_messages_messages(req, expected):
    out = frozen(chat_request_to_messages, req)
    assert out["messages"] == expected["messages"]
    assert out.get("system") == expected.get("system")
    assert out["max_tokens"] == 4096


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({}, {"max_tokens": 4096}),
        ({"max_tokens": 50}, {"max_tokens": 50}),
        ({"max_tokens": 50, "max_completion_tokens": 70}, {"max_tokens": 70}),
        ({"temperature": 1.7}, {"max_tokens": 4096, "temperature": 1.0}),
        (
            {"temperature": 0.2, "top_p": 0.5},
            {"max_tokens": 4096, "temperature": 0.2, "top_p": 0.5},
        ),
        ({"stop": "END"}, {"max_tokens": 4096, "stop_sequences": ["END"]}),
        ({"stop": ["a", "b"]}, {"max_tokens": 4096, "stop_sequences": ["a", "b"]}),
        ({"user": "u-1"}, {"max_tokens": 4096, "metadata": {"user_id": "u-1"}}),
        (
            {"stream": True, "stream_options": {"include_usage": True}},
            {"max_tokens": 4096, "stream": True},
        ),
        (
            {
                "n": 1,
                "logprobs": True,
                "top_logprobs": 2,
                "response_format": {"type": "json_object"},
                "seed": 3,
                "frequency_penalty": 0.1,
                "presence_penalty": 0.1,
            },
            {"max_tokens": 4096},
        ),
    ],
)
def test_chat_request_to_messages_parameters(extra, expected):
    out = frozen(chat_request_to_messages, chat_req([{"role": "user", "content": "hi"}], **extra))
    assert out == {
        "model": "gpt-x",
        "messages": [{"role": "user", "content": "hi"}],
        **expected,
    }


def test_chat_request_default_max_tokens_argument():
    out = chat_request_to_messages(chat_req([{"role": "user", "content": "hi"}]), 123)
    assert out["max_tokens"] == 123


FUNCTION_TOOL = {
    "type": "function",
    "function": {"name": "get_weather", "description": "Weather", "parameters": TOOL_SCHEMA},
}


@pytest.mark.parametrize(
    ("extra", "expected_choice"),
    [
        ({}, None),
        ({"tool_choice": "auto"}, {"type": "auto"}),
        ({"tool_choice": "required"}, {"type": "any"}),
        ({"tool_choice": "none"}, {"type": "none"}),
        (
            {"tool_choice": {"type": "function", "function": {"name": "get_weather"}}},
            {"type": "tool", "name": "get_weather"},
        ),
        ({"parallel_tool_calls": False}, {"type": "auto", "disable_parallel_tool_use": True}),
        ({"parallel_tool_calls": True}, None),
        (
            {"tool_choice": "required", "parallel_tool_calls": False},
            {"type": "any", "disable_parallel_tool_use": True},
        ),
        ({"tool_choice": "none", "parallel_tool_calls": False}, {"type": "none"}),
    ],
)
def test_chat_tool_choice_to_messages(extra, expected_choice):
    req = chat_req([{"role": "user", "content": "hi"}], tools=[FUNCTION_TOOL], **extra)
    out = frozen(chat_request_to_messages, req)
    assert out["tools"] == [
        {"name": "get_weather", "description": "Weather", "input_schema": TOOL_SCHEMA}
    ]
    assert out.get("tool_choice") == expected_choice


def test_chat_tool_without_parameters_gets_empty_object_schema():
    req = chat_req(
        [{"role": "user", "content": "hi"}],
        tools=[{"type": "function", "function": {"name": "ping"}}],
    )
    assert chat_request_to_messages(req)["tools"] == [
        {"name": "ping", "input_schema": {"type": "object", "properties": {}}}
    ]


@pytest.mark.parametrize(
    ("req", "param"),
    [
        (chat_req([{"role": "user", "content": "hi"}], n=2), "n"),
        (chat_req(None), "messages"),
        (chat_req([{"role": "function", "content": "x", "name": "f"}]), "messages[0].role"),
        (
            chat_req([{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]),
            "messages[0].content[0]",
        ),
        (
            chat_req(
                [
                    {
                        "role": "user",
                        "content": [
                            {"type": "image_url", "image_url": {"url": "data:image/png,xx"}}
                        ],
                    }
                ]
            ),
            "messages[0].content[0].image_url.url",
        ),
        (
            chat_req(
                [
                    {
                        "role": "assistant",
                        "tool_calls": [
                            {
                                "id": "c",
                                "type": "function",
                                "function": {"name": "f", "arguments": "{"},
                            }
                        ],
                    }
                ]
            ),
            "messages[0].tool_calls[0].function.arguments",
        ),
        (
            chat_req([{"role": "user", "content": "x"}], tools=[{"type": "custom", "custom": {}}]),
            "tools[0]",
        ),
        (
            chat_req(
                [{"role": "user", "content": "x"}],
                tools=[FUNCTION_TOOL],
                tool_choice={"type": "allowed_tools"},
            ),
            "tool_choice",
        ),
        (chat_req([{"role": "user", "content": "x"}], temperature="hot"), "temperature"),
    ],
)
def test_chat_request_to_messages_rejects(req, param):
    with pytest.raises(TranslationError) as info:
        chat_request_to_messages(req)
    assert info.value.param == param
    if param == "n":
        assert "n" in str(info.value)


# --- request round trips --------------------------------------------------------------------


def test_anthropic_request_round_trip_keeps_meaning():
    req = anthropic_req(
        [
            {"role": "user", "content": "weather in Paris?"},
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "Let me check."},
                    {"type": "tool_use", "id": "toolu_1", "name": "w", "input": {"city": "Paris"}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
                    {"type": "text", "text": "and?"},
                ],
            },
        ],
        system="be brief",
        stop_sequences=["END"],
        temperature=0.5,
        tools=[{"name": "w", "description": "weather", "input_schema": TOOL_SCHEMA}],
        tool_choice={"type": "any", "disable_parallel_tool_use": True},
        metadata={"user_id": "u"},
    )
    back = chat_request_to_messages(messages_request_to_chat(req))
    assert back == {
        **req,
        "messages": [
            req["messages"][0],
            req["messages"][1],
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
                    {"type": "text", "text": "and?"},
                ],
            },
        ],
    }


texts = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=20)
content = st.one_of(
    texts, st.lists(st.builds(lambda t: {"type": "text", "text": t}, texts), min_size=1, max_size=3)
)
system = st.one_of(
    st.none(),
    texts,
    st.lists(st.builds(lambda t: {"type": "text", "text": t}, texts), min_size=1, max_size=3),
)


def _turns(messages):
    """(role, concatenated text) per turn after merging consecutive same-role messages."""
    turns: list[list] = []
    for msg in messages:
        body = msg["content"]
        text = body if isinstance(body, str) else "".join(b["text"] for b in body)
        if turns and turns[-1][0] == msg["role"]:
            turns[-1][1] += text
        else:
            turns.append([msg["role"], text])
    return turns


@settings(max_examples=150, deadline=None)
@given(
    system=system,
    messages=st.lists(
        st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant"]), "content": content}),
        min_size=1,
        max_size=6,
    ),
)
def test_property_text_round_trip(system, messages):
    req = anthropic_req(messages)
    if system is not None:
        req["system"] = system
    back = chat_request_to_messages(frozen(messages_request_to_chat, req))
    if system is None:
        assert "system" not in back
    else:
        want = system if isinstance(system, str) else "\n\n".join(b["text"] for b in system)
        assert back["system"] == want
    assert _turns(back["messages"]) == _turns(messages)


# --- responses ----------------------------------------------------------------------------------


def chat_completion(message, finish_reason="stop", usage=None, **choice_extra):
    return {
        "id": "chatcmpl-abc",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "gpt-x",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "refusal": None, **message},
                "logprobs": None,
                "finish_reason": finish_reason,
                **choice_extra,
            }
        ],
        "usage": usage or {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    }


def test_chat_response_to_message_text():
    out = frozen(chat_response_to_message, chat_completion({"content": "Hello"}), "claude-x")
    assert out == {
        "id": "msg_chatcmpl-abc",
        "type": "message",
        "role": "assistant",
        "model": "claude-x",
        "content": [{"type": "text", "text": "Hello"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 10, "output_tokens": 5},
    }
    at.Message.model_validate(out)


def test_chat_response_to_message_tool_calls():
    resp = chat_completion(
        {
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                },
                {
                    "id": "call_2",
                    "type": "function",
                    "function": {"name": "f", "arguments": "{oops"},
                },
            ],
        },
        finish_reason="tool_calls",
    )
    out = frozen(chat_response_to_message, resp, "claude-x")
    assert out["content"] == [
        {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "call_2", "name": "f", "input": {}},
    ]
    assert out["stop_reason"] == "tool_use"
    at.Message.model_validate(out)


@pytest.mark.parametrize(
    ("finish", "extra", "message", "expected"),
    [
        ("stop", {}, {"content": "x"}, ("end_turn", None)),
        ("length", {}, {"content": "x"}, ("max_tokens", None)),
        ("tool_calls", {}, {"content": "x"}, ("tool_use", None)),
        ("function_call", {}, {"content": "x"}, ("tool_use", None)),
        ("content_filter", {}, {"content": "x"}, ("refusal", None)),
        ("stop", {"stop_reason": "END"}, {"content": "x"}, ("stop_sequence", "END")),  # vLLM
        ("stop", {"matched_stop": "##"}, {"content": "x"}, ("stop_sequence", "##")),  # SGLang
        ("stop", {"stop_reason": 128009}, {"content": "x"}, ("end_turn", None)),  # EOS token id
        (
            "stop",
            {},
            {
                "content": None,
                "tool_calls": [
                    {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                ],
            },
            ("tool_use", None),
        ),
        ("stop", {}, {"content": None, "refusal": "I can't."}, ("refusal", None)),
        (None, {}, {"content": "x"}, ("end_turn", None)),
    ],
)
def test_chat_response_stop_reasons(finish, extra, message, expected):
    out = chat_response_to_message(chat_completion(message, finish, **extra), "m")
    assert (out["stop_reason"], out["stop_sequence"]) == expected
    at.Message.model_validate(out)


@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        (
            {"prompt_tokens": 100, "completion_tokens": 7, "total_tokens": 107},
            {"input_tokens": 100, "output_tokens": 7},
        ),
        (
            {
                "prompt_tokens": 100,
                "completion_tokens": 7,
                "total_tokens": 107,
                "prompt_tokens_details": {"cached_tokens": 64},
            },
            {"input_tokens": 36, "output_tokens": 7, "cache_read_input_tokens": 64},
        ),
        (
            {"prompt_tokens": 5, "completion_tokens": 1, "prompt_tokens_details": None},
            {"input_tokens": 5, "output_tokens": 1},
        ),
    ],
)
def test_chat_response_usage(usage, expected):
    assert (
        chat_response_to_message(chat_completion({"content": "x"}, usage=usage), "m")["usage"]
        == expected
    )


def anthropic_message(content, stop_reason="end_turn", usage=None):
    return {
        "id": "msg_01",
        "type": "message",
        "role": "assistant",
        "model": "claude-x",
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": usage or {"input_tokens": 10, "output_tokens": 5},
    }


def test_message_response_to_chat_text():
    resp = anthropic_message(
        [
            {"type": "thinking", "thinking": "hmm", "signature": "s"},
            {"type": "text", "text": "Hel"},
            {"type": "text", "text": "lo"},
        ]
    )
    out = frozen(message_response_to_chat, resp, created=1700000000)
    assert out == {
        "id": "chatcmpl-msg_01",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "claude-x",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello", "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    }
    ChatCompletion.model_validate(out)


def test_message_response_to_chat_tool_use():
    resp = anthropic_message(
        [
            {"type": "tool_use", "id": "toolu_1", "name": "w", "input": {"city": "Paris"}},
        ],
        stop_reason="tool_use",
    )
    out = frozen(message_response_to_chat, resp, created=1)
    assert out["choices"][0]["message"] == {
        "role": "assistant",
        "content": None,
        "refusal": None,
        "tool_calls": [
            {
                "id": "toolu_1",
                "type": "function",
                "function": {"name": "w", "arguments": '{"city":"Paris"}'},
            }
        ],
    }
    assert out["choices"][0]["finish_reason"] == "tool_calls"
    ChatCompletion.model_validate(out)


def test_message_response_created_defaults_to_now():
    out = message_response_to_chat(anthropic_message([{"type": "text", "text": "x"}]))
    assert isinstance(out["created"], int) and out["created"] > 1_700_000_000


@pytest.mark.parametrize(
    ("stop_reason", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("pause_turn", "stop"),
        ("max_tokens", "length"),
        ("model_context_window_exceeded", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        (None, "stop"),
    ],
)
def test_message_response_finish_reasons(stop_reason, finish):
    out = message_response_to_chat(anthropic_message([], stop_reason), created=1)
    assert out["choices"][0]["finish_reason"] == finish
    ChatCompletion.model_validate(out)


def test_message_response_usage_with_cache():
    usage = {
        "input_tokens": 10,
        "output_tokens": 5,
        "cache_read_input_tokens": 100,
        "cache_creation_input_tokens": 20,
    }
    out = message_response_to_chat(anthropic_message([], usage=usage), created=1)
    assert out["usage"] == {
        "prompt_tokens": 130,
        "completion_tokens": 5,
        "total_tokens": 135,
        "prompt_tokens_details": {"cached_tokens": 100},
    }


def test_response_round_trip_anthropic_openai_anthropic():
    original = anthropic_message(
        [
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "toolu_1", "name": "w", "input": {"city": "Paris"}},
        ],
        stop_reason="tool_use",
        usage={"input_tokens": 10, "output_tokens": 5, "cache_read_input_tokens": 4},
    )
    back = chat_response_to_message(message_response_to_chat(original, created=1), "claude-x")
    assert back["content"] == original["content"]
    assert back["stop_reason"] == "tool_use"
    assert back["usage"] == original["usage"]


# --- OpenAI stream → Anthropic events --------------------------------------------------------


def chunk(delta=None, finish=None, usage=None, choices=True):
    out = {
        "id": "chatcmpl-s1",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "gpt-x",
        "choices": [{"index": 0, "delta": delta or {}, "logprobs": None, "finish_reason": finish}]
        if choices
        else [],
    }
    if usage is not None or not choices:
        out["usage"] = usage
    return out


def run_chat_stream(chunks, **kwargs):
    tr = ChatStreamToMessages("claude-x", **kwargs)
    events = []
    for c in chunks:
        events += frozen(tr.feed, c)
    events += tr.finish()
    assert tr.finish() == []  # idempotent
    assert tr.feed(chunks[0]) == [] if chunks else True
    for name, data in events:
        assert data["type"] == name
        orjson.dumps(data)
        if name != "ping":
            STREAM_EVENT.validate_python(data)
    return tr, events


def start_event(message_id="msg_chatcmpl-s1"):
    return (
        "message_start",
        {
            "type": "message_start",
            "message": {
                "id": message_id,
                "type": "message",
                "role": "assistant",
                "model": "claude-x",
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {"input_tokens": 0, "output_tokens": 0},
            },
        },
    )


def block_start(index, block):
    return (
        "content_block_start",
        {"type": "content_block_start", "index": index, "content_block": block},
    )


def text_delta(index, text):
    return (
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": index,
            "delta": {"type": "text_delta", "text": text},
        },
    )


def json_delta(index, partial):
    return (
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": index,
            "delta": {"type": "input_json_delta", "partial_json": partial},
        },
    )


def block_stop(index):
    return ("content_block_stop", {"type": "content_block_stop", "index": index})


def message_delta(stop_reason, usage, stop_sequence=None):
    return (
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
            "usage": usage,
        },
    )


MESSAGE_STOP = ("message_stop", {"type": "message_stop"})
USAGE = {"prompt_tokens": 12, "completion_tokens": 4, "total_tokens": 16}


def test_chat_stream_text_only():
    tr, events = run_chat_stream(
        [
            chunk({"role": "assistant", "content": ""}),
            chunk({"content": "Hel"}),
            chunk({"content": "lo"}),
            chunk({}, finish="stop"),
            chunk(usage=USAGE, choices=False),
        ]
    )
    assert events == [
        start_event(),
        block_start(0, {"type": "text", "text": ""}),
        text_delta(0, "Hel"),
        text_delta(0, "lo"),
        block_stop(0),
        message_delta("end_turn", {"output_tokens": 4, "input_tokens": 12}),
        MESSAGE_STOP,
    ]
    assert tr.usage == USAGE


def test_chat_stream_text_and_two_parallel_tool_calls():
    def call(index, id_=None, name=None, args=None):
        fn = {}
        if name is not None:
            fn["name"] = name
        if args is not None:
            fn["arguments"] = args
        out = {"index": index, "function": fn}
        if id_:
            out.update(id=id_, type="function")
        return {"tool_calls": [out]}

    usage = {**USAGE, "prompt_tokens_details": {"cached_tokens": 8}}
    tr, events = run_chat_stream(
        [
            chunk({"role": "assistant", "content": None}),
            chunk({"content": "Let me check."}),
            chunk(call(0, "call_a", "get_weather", "")),
            chunk(call(0, args='{"ci')),
            chunk(call(0, args='ty": "Paris"}')),
            chunk(call(1, "call_b", "get_time", '{"tz":')),
            chunk(call(1, args=' "UTC"}')),
            chunk({}, finish="tool_calls"),
            chunk(usage=usage, choices=False),
        ],
        message_id="msg_fixed",
    )
    assert events == [
        start_event("msg_fixed"),
        block_start(0, {"type": "text", "text": ""}),
        text_delta(0, "Let me check."),
        block_stop(0),
        block_start(1, {"type": "tool_use", "id": "call_a", "name": "get_weather", "input": {}}),
        json_delta(1, '{"ci'),
        json_delta(1, 'ty": "Paris"}'),
        block_stop(1),
        block_start(2, {"type": "tool_use", "id": "call_b", "name": "get_time", "input": {}}),
        json_delta(2, '{"tz":'),
        json_delta(2, ' "UTC"}'),
        block_stop(2),
        message_delta(
            "tool_use", {"output_tokens": 4, "input_tokens": 4, "cache_read_input_tokens": 8}
        ),
        MESSAGE_STOP,
    ]
    assert tr.usage == usage


def sse(events):
    return b"".join(
        b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"
        for name, data in events
    )


def test_chat_stream_replays_through_the_anthropic_sdk():
    """The Anthropic SDK's own stream client rebuilds a correct message from our events."""
    import anthropic

    try:  # the HTTP client the installed SDK is built on (newer releases moved to httpx2)
        import httpx2 as httpx
    except ImportError:
        import httpx

    _, events = run_chat_stream(
        [
            chunk({"content": "Hi"}),
            chunk(
                {
                    "tool_calls": [
                        {"index": 0, "id": "c1", "function": {"name": "f", "arguments": '{"a": 1'}}
                    ]
                }
            ),
            chunk(
                {
                    "tool_calls": [
                        {"index": 1, "id": "c2", "function": {"name": "g", "arguments": '{"b"'}}
                    ]
                }
            ),
            chunk({"tool_calls": [{"index": 1, "function": {"arguments": ": 2"}}]}),
            # an upstream that interleaves parallel calls: a late fragment for the first one
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": ', "c": 3}'}}]}),
            chunk({"tool_calls": [{"index": 1, "function": {"arguments": "}"}}]}),
            chunk({}, finish="tool_calls", usage=USAGE),
        ]
    )
    body = sse(events)
    transport = httpx.MockTransport(
        lambda request: httpx.Response(
            200, content=body, headers={"content-type": "text/event-stream"}
        )
    )
    client = anthropic.Anthropic(
        api_key="test", base_url="http://sdk.test", http_client=httpx.Client(transport=transport)
    )
    with client.messages.stream(
        model="claude-x", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
    ) as stream:
        message = stream.get_final_message()
    assert [b.type for b in message.content] == ["text", "tool_use", "tool_use"]
    assert message.content[0].text == "Hi"
    # the late fragment for c1 arrived after its block was stopped and still landed in it
    assert message.content[1].id == "c1"
    assert message.content[1].input == {"a": 1, "c": 3}
    assert (message.content[2].name, message.content[2].input) == ("g", {"b": 2})
    assert message.stop_reason == "tool_use"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (12, 4)


def test_chat_stream_interleaved_fragment_goes_to_its_block():
    _, events = run_chat_stream(
        [
            chunk(
                {
                    "tool_calls": [
                        {"index": 0, "id": "a", "function": {"name": "f", "arguments": '{"x"'}}
                    ]
                }
            ),
            chunk(
                {
                    "tool_calls": [
                        {"index": 1, "id": "b", "function": {"name": "g", "arguments": "{}"}}
                    ]
                }
            ),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": ": 1}"}}]}),
        ]
    )
    assert json_delta(0, ": 1}") in events
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"


def test_chat_stream_parallel_calls_all_at_index_zero():
    calls = [
        {"index": 0, "id": "a", "function": {"name": "f", "arguments": "{}"}},
        {"index": 0, "id": "b", "function": {"name": "g", "arguments": '{"x": 1}'}},
    ]
    _, events = run_chat_stream([chunk({"tool_calls": calls}), chunk({}, finish="tool_calls")])
    assert events[1:-2] == [
        block_start(0, {"type": "tool_use", "id": "a", "name": "f", "input": {}}),
        json_delta(0, "{}"),
        block_stop(0),
        block_start(1, {"type": "tool_use", "id": "b", "name": "g", "input": {}}),
        json_delta(1, '{"x": 1}'),
        block_stop(1),
    ]


def test_chat_stream_tool_call_without_id_gets_one():
    call = {"index": 0, "function": {"name": "f", "arguments": "{}"}}
    _, events = run_chat_stream([chunk({"tool_calls": [call]})])
    assert events[1][1]["content_block"]["id"].startswith("toolu_")


def test_chat_stream_ends_without_finish_reason():
    _, events = run_chat_stream([chunk({"role": "assistant"}), chunk({"content": "partial"})])
    assert events == [
        start_event(),
        block_start(0, {"type": "text", "text": ""}),
        text_delta(0, "partial"),
        block_stop(0),
        message_delta("end_turn", {"output_tokens": 0}),
        MESSAGE_STOP,
    ]


def test_chat_stream_empty_upstream_still_yields_a_valid_message():
    _, events = run_chat_stream([])
    assert [name for name, _ in events] == ["message_start", "message_delta", "message_stop"]


def test_chat_stream_usage_only_chunk_opens_nothing():
    tr = ChatStreamToMessages("claude-x")
    events = tr.feed(chunk(usage=USAGE, choices=False))
    assert [name for name, _ in events] == ["message_start"]
    assert tr.feed(chunk(usage=USAGE, choices=False)) == []
    assert tr.usage == USAGE


@pytest.mark.parametrize(
    ("finish", "extra", "expected"),
    [
        ("length", {}, ("max_tokens", None)),
        ("content_filter", {}, ("refusal", None)),
        ("stop", {"stop_reason": "END"}, ("stop_sequence", "END")),
    ],
)
def test_chat_stream_stop_reasons(finish, extra, expected):
    c = chunk({}, finish=finish)
    c["choices"][0].update(extra)
    _, events = run_chat_stream([chunk({"content": "x"}), c])
    delta = events[-2][1]["delta"]
    assert (delta["stop_reason"], delta["stop_sequence"]) == expected


# --- Anthropic stream → OpenAI chunks --------------------------------------------------------

ANTHROPIC_TEXT_STREAM = [
    (
        "message_start",
        {
            "type": "message_start",
            "message": {
                "id": "msg_01",
                "type": "message",
                "role": "assistant",
                "model": "claude-x",
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {"input_tokens": 25, "output_tokens": 1, "cache_read_input_tokens": 5},
            },
        },
    ),
    block_start(0, {"type": "text", "text": ""}),
    ("ping", {"type": "ping"}),
    text_delta(0, "Hello"),
    text_delta(0, "!"),
    block_stop(0),
    message_delta("end_turn", {"output_tokens": 15}),
    MESSAGE_STOP,
]


def openai_chunk(delta, finish=None, usage_key=False):
    out = {
        "id": "chatcmpl-msg_01",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "gpt-alias",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }
    if usage_key:
        out["usage"] = None
    return out


def run_messages_stream(events, **kwargs):
    tr = MessagesStreamToChat(created=1700000000, **kwargs)
    out = []
    for name, data in events:
        out += frozen(tr.feed, name, data)
    for c in out:
        ChatCompletionChunk.model_validate(c)
        orjson.dumps(c)
    return tr, out


def test_messages_stream_text():
    tr, out = run_messages_stream(ANTHROPIC_TEXT_STREAM, model="gpt-alias")
    assert out == [
        openai_chunk({"role": "assistant", "content": ""}),
        openai_chunk({"content": "Hello"}),
        openai_chunk({"content": "!"}),
        openai_chunk({}, "stop"),
    ]
    assert tr.usage == {
        "prompt_tokens": 30,
        "completion_tokens": 15,
        "total_tokens": 45,
        "prompt_tokens_details": {"cached_tokens": 5},
    }


def test_messages_stream_include_usage_and_model_from_message_start():
    tr, out = run_messages_stream(ANTHROPIC_TEXT_STREAM, include_usage=True)
    assert all(c["model"] == "claude-x" for c in out)
    assert all(c["usage"] is None for c in out[:-1])
    assert out[-1] == {
        "id": "chatcmpl-msg_01",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "claude-x",
        "choices": [],
        "usage": tr.usage,
    }


def test_messages_stream_tool_use():
    events = [
        ANTHROPIC_TEXT_STREAM[0],
        block_start(0, {"type": "thinking", "thinking": "", "signature": ""}),
        (
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "thinking_delta", "thinking": "hm"},
            },
        ),
        block_stop(0),
        block_start(1, {"type": "text", "text": ""}),
        text_delta(1, "Checking."),
        block_stop(1),
        block_start(2, {"type": "tool_use", "id": "toolu_a", "name": "get_weather", "input": {}}),
        json_delta(2, ""),
        json_delta(2, '{"city": '),
        json_delta(2, '"Paris"}'),
        block_stop(2),
        block_start(3, {"type": "tool_use", "id": "toolu_b", "name": "get_time", "input": {}}),
        json_delta(3, "{}"),
        block_stop(3),
        message_delta("tool_use", {"output_tokens": 40}),
        MESSAGE_STOP,
    ]
    _, out = run_messages_stream(events, model="gpt-alias")
    assert out == [
        openai_chunk({"role": "assistant", "content": ""}),
        openai_chunk({"content": "Checking."}),
        openai_chunk(
            {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "toolu_a",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": ""},
                    }
                ]
            }
        ),
        openai_chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]}),
        openai_chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]}),
        openai_chunk(
            {
                "tool_calls": [
                    {
                        "index": 1,
                        "id": "toolu_b",
                        "type": "function",
                        "function": {"name": "get_time", "arguments": ""},
                    }
                ]
            }
        ),
        openai_chunk({"tool_calls": [{"index": 1, "function": {"arguments": "{}"}}]}),
        openai_chunk({}, "tool_calls"),
    ]


def test_messages_stream_error_event_raises():
    tr = MessagesStreamToChat(created=1)
    tr.feed(*ANTHROPIC_TEXT_STREAM[0])
    with pytest.raises(UpstreamStreamError) as info:
        tr.feed(
            "error",
            {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
        )
    assert (info.value.type, info.value.message) == ("overloaded_error", "Overloaded")


def test_messages_stream_ignores_unknown_events():
    tr = MessagesStreamToChat(created=1)
    assert tr.usage is None
    assert tr.feed("ping", {"type": "ping"}) == []
    assert tr.feed("some_future_event", {"type": "some_future_event"}) == []


def test_stream_round_trip_openai_anthropic_openai():
    """OpenAI chunks → Anthropic events → OpenAI chunks keeps the text and tool calls."""
    to_anthropic = ChatStreamToMessages("claude-x")
    upstream = [
        chunk({"content": "Hi "}),
        chunk({"content": "there"}),
        chunk(
            {
                "tool_calls": [
                    {"index": 0, "id": "c1", "function": {"name": "f", "arguments": '{"a"'}}
                ]
            }
        ),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": ": 1}"}}]}),
        chunk({}, finish="tool_calls"),
        chunk(usage=USAGE, choices=False),
    ]
    events = [e for c in upstream for e in to_anthropic.feed(c)] + to_anthropic.finish()
    to_openai = MessagesStreamToChat(created=1)
    out = [c for name, data in events for c in to_openai.feed(name, data)]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in out)
    args = "".join(
        tc["function"].get("arguments", "")
        for c in out
        for tc in c["choices"][0]["delta"].get("tool_calls") or ()
    )
    assert text == "Hi there"
    assert args == '{"a": 1}'
    assert out[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert to_openai.usage == {"prompt_tokens": 12, "completion_tokens": 4, "total_tokens": 16}
