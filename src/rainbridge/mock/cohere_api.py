"""Cohere's v2 API, as its API reference (docs.cohere.com/reference/chat, /embed, /list-models)
documents it.

| request | answer |
|---|---|
| `POST /v2/chat` | a chat response; with `"stream": true` typed SSE events |
| `POST /v2/embed` | `{"id", "texts", "embeddings": {"float": [[…]]}, "meta", "response_type"}` |
| `GET /v1/models?endpoint=chat` | `{"models": [{"name", "endpoints", …}], "next_page_token"}` |

Request: `model`, `messages` (required); a message is `{"role": "system"|"user"|"assistant"|"tool",
"content"}` where content is a string or a list of `{"type": "text", "text"}` /
`{"type": "image_url", "image_url": {"url"}}` parts (tool messages: text or `document` parts);
assistant messages may carry `tool_calls: [{"id", "type": "function", "function": {"name",
"arguments": "<json>"}}]` and `tool_plan`; tool messages `tool_call_id`. Knobs: `max_tokens`,
`stop_sequences`, `temperature`, `p`, `k`, `seed`, `frequency_penalty`, `presence_penalty`,
`response_format`, `tools: [{"type": "function", "function": {"name", "description",
"parameters"}}]`, `tool_choice: "REQUIRED"|"NONE"`, `stream`. An unknown field is a 400.

Response: `{"id", "message": {"role": "assistant", "content": [{"type": "text", "text"}] |
"tool_plan", "tool_calls"}, "finish_reason": "COMPLETE"|"MAX_TOKENS"|"TOOL_CALL"|…, "usage":
{"billed_units": {"input_tokens", "output_tokens"}, "tokens": {"input_tokens",
"output_tokens"}}}`. `tokens.input_tokens` counts the system preamble Cohere adds
(`PREAMBLE_TOKENS` here); `billed_units` does not.

Stream: `event: <type>\\ndata: {"type": <type>, …}` for message-start, content-start,
content-delta (`delta.message.content.text`), content-end, then message-end
(`delta.finish_reason`, `delta.usage`); a tool call is tool-plan-delta, tool-call-start (id and
name, empty arguments), tool-call-delta (argument fragments), tool-call-end. The error-after
control ends the stream with `message-end` and finish reason ERROR, Cohere's documented way
of saying the generation failed.

Auth: `Authorization: Bearer <key>`; none: 401 `no api key supplied`; a key with `status-401`
in it: 401 `invalid api token`. Errors: `{"id", "message"}`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import orjson

from . import synth
from .errors import ApiError
from .reply import Call, Reply, Stream

PREAMBLE_TOKENS = 40
MODELS = ("command-a-03-2025", "command-r-plus-08-2024", "command-r7b-12-2024")
EMBED_MODELS = ("embed-v4.0", "embed-english-v3.0")
_CHAT_FIELDS = frozenset({
    "model", "messages", "stream", "tools", "strict_tools", "documents", "citation_options", "response_format",
    "safety_mode", "max_tokens", "stop_sequences", "temperature", "seed", "frequency_penalty", "presence_penalty",
    "k", "p", "logprobs", "tool_choice", "thinking", "priority", "mock",
})
_EMBED_FIELDS = frozenset({"model", "texts", "images", "inputs", "input_type", "embedding_types", "output_dimension",
                           "max_tokens", "truncate", "priority"})
INPUT_TYPES = ("search_document", "search_query", "classification", "clustering", "image")


def frame(doc: dict) -> bytes:
    return b"event: " + doc["type"].encode() + b"\ndata: " + orjson.dumps(doc) + b"\n\n"


def _invalid(message: str) -> ApiError:
    return ApiError(400, f"invalid request: {message}")


# --- chat ---------------------------------------------------------------------------------------


def chat(call: Call) -> Reply:
    body = call.body
    for name in body:
        if name not in _CHAT_FIELDS:
            raise _invalid(f"unknown field: parameter '{name}' is not a valid field")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _invalid("model must be a non-empty string")
    messages = _messages(body.get("messages"))
    tools = _tools(body.get("tools"))
    choice = body.get("tool_choice")
    if choice not in (None, "REQUIRED", "NONE"):
        raise _invalid("tool_choice must be one of REQUIRED, NONE")
    stream = body.get("stream") is True
    prompt = synth.REQUEST_OVERHEAD + sum(synth.MESSAGE_OVERHEAD + synth.count_tokens(_text(m.get("content")))
                                          for m in messages)
    if tools:
        prompt += len(orjson.dumps(tools)) // 4
    response_id = str(uuid.UUID(int=call.seq))
    last = messages[-1]
    if tools and choice != "NONE" and last["role"] == "user":
        fn = tools[0]["function"]
        arguments = orjson.dumps(synth.sample_arguments(fn.get("parameters"))).decode()
        fragments = synth.argument_fragments(arguments)
        plan = f"I will call {fn['name']}."
        call_id = f"{fn['name']}_{call.seq:012x}"
        usage = _usage(prompt, len(fragments) + synth.count_tokens(plan))
        if stream:
            return Reply(stream=_tool_stream(response_id, call_id, fn["name"], plan, fragments, usage))
        message = {"role": "assistant", "tool_plan": plan, "tool_calls": [
            {"id": call_id, "type": "function", "function": {"name": fn["name"], "arguments": arguments}}]}
        return _whole(response_id, message, "TOOL_CALL", usage)

    result = last["role"] == "tool"
    echo = _text(last.get("content")) if result else _last_user_text(messages)
    words = synth.fit_words(synth.answer_words(model, echo, tool_result=result), call.controls.stream_chunks)
    finish = "COMPLETE"
    limit = body.get("max_tokens")
    if isinstance(limit, int) and not isinstance(limit, bool) and len(words) > limit:
        words, finish = words[:limit], "MAX_TOKENS"
    usage = _usage(prompt, len(words))
    if stream:
        return Reply(stream=_text_stream(response_id, synth.stream_tokens(words), finish, usage))
    message = {"role": "assistant", "content": [{"type": "text", "text": " ".join(words)}]}
    return _whole(response_id, message, finish, usage)


def _whole(response_id: str, message: dict, finish: str, usage: dict) -> Reply:
    return Reply(body=orjson.dumps({"id": response_id, "message": message, "finish_reason": finish, "usage": usage}))


def _usage(prompt: int, completion: int) -> dict:
    return {"billed_units": {"input_tokens": prompt, "output_tokens": completion},
            "tokens": {"input_tokens": prompt + PREAMBLE_TOKENS, "output_tokens": completion}}


def _start(response_id: str) -> bytes:
    return frame({"id": response_id, "type": "message-start", "delta": {"message": {
        "role": "assistant", "content": [], "tool_plan": "", "tool_calls": [], "citations": []}}})


def _end(finish: str, usage: dict | None) -> bytes:
    delta: dict = {"finish_reason": finish}
    if usage is not None:
        delta["usage"] = usage
    return frame({"type": "message-end", "delta": delta})


_FAILED = _end("ERROR", None)


def _text_stream(response_id: str, tokens: list[str], finish: str, usage: dict) -> Stream:
    head = [_start(response_id), frame({"type": "content-start", "index": 0,
                                        "delta": {"message": {"content": {"type": "text", "text": ""}}}})]

    def content() -> Iterator[bytes]:
        for token in tokens:
            yield frame({"type": "content-delta", "index": 0, "delta": {"message": {"content": {"text": token}}}})

    tail = [frame({"type": "content-end", "index": 0}), _end(finish, usage)]
    return Stream(head, content(), tail, _FAILED)


def _tool_stream(response_id: str, call_id: str, name: str, plan: str, fragments: list[str], usage: dict) -> Stream:
    head = [_start(response_id), frame({"type": "tool-plan-delta", "delta": {"message": {"tool_plan": plan}}}),
            frame({"type": "tool-call-start", "index": 0, "delta": {"message": {"tool_calls": {
                "id": call_id, "type": "function", "function": {"name": name, "arguments": ""}}}}})]

    def content() -> Iterator[bytes]:
        for fragment in fragments:
            yield frame({"type": "tool-call-delta", "index": 0,
                         "delta": {"message": {"tool_calls": {"function": {"arguments": fragment}}}}})

    tail = [frame({"type": "tool-call-end", "index": 0}), _end("TOOL_CALL", usage)]
    return Stream(head, content(), tail, _FAILED)


def _messages(raw: Any) -> list[dict]:
    if not isinstance(raw, list) or not raw:
        raise _invalid("messages must be a non-empty list")
    known_calls: set[str] = set()
    for i, msg in enumerate(raw):
        if not isinstance(msg, dict):
            raise _invalid(f"messages[{i}] must be an object")
        role = msg.get("role")
        if role not in ("system", "user", "assistant", "tool"):
            raise _invalid(f"messages[{i}].role must be one of system, user, assistant, tool")
        if role == "assistant":
            for call in msg.get("tool_calls") or ():
                if not isinstance(call, dict) or not isinstance(call.get("function"), dict) \
                        or not isinstance(call["function"].get("arguments", ""), str):
                    raise _invalid(f"messages[{i}].tool_calls: function.arguments must be a JSON string")
                known_calls.add(call.get("id"))
        if role == "tool" and msg.get("tool_call_id") not in known_calls:
            raise _invalid(f"messages[{i}].tool_call_id does not match any tool call of an earlier message")
        content = msg.get("content")
        if content is not None and not isinstance(content, str | list):
            raise _invalid(f"messages[{i}].content must be a string or a list of content blocks")
    return raw


def _tools(raw: Any) -> list[dict]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise _invalid("tools must be a list")
    for i, tool in enumerate(raw):
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(fn, dict) \
                or not isinstance(fn.get("name"), str):
            raise _invalid(f"tools[{i}] must be {{\"type\": \"function\", \"function\": {{\"name\", ...}}}}")
    return raw


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                texts.append(part["text"])
            elif isinstance(part, dict) and isinstance(part.get("document"), dict):
                texts.append(orjson.dumps(part["document"].get("data")).decode())
        return " ".join(texts)
    return ""


def _last_user_text(messages: list[dict]) -> str:
    for msg in reversed(messages):
        if msg["role"] == "user":
            return _text(msg.get("content"))
    return ""


# --- embed and models ---------------------------------------------------------------------------


def embed(call: Call) -> Reply:
    body = call.body
    for name in body:
        if name not in _EMBED_FIELDS:
            raise _invalid(f"unknown field: parameter '{name}' is not a valid field")
    model = body.get("model")
    texts = body.get("texts")
    if not isinstance(model, str) or not model:
        raise _invalid("model must be a non-empty string")
    if body.get("input_type") not in INPUT_TYPES:
        raise _invalid("input_type is required for embed models v3 and higher")
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts) or len(texts) > 96:
        raise _invalid("texts must be a list of 1 to 96 strings")
    types = body.get("embedding_types") or ["float"]
    dimensions = body.get("output_dimension") or (1536 if model.startswith("embed-v4") else 1024)
    vectors = [list(synth.embedding(f"{model}\0{t}".encode(), dimensions)) for t in texts]
    doc = {
        "id": str(uuid.UUID(int=call.seq)),
        "texts": texts,
        "embeddings": {kind: vectors for kind in types if kind == "float"},
        "meta": {"api_version": {"version": "2"}, "billed_units": {"input_tokens": synth.total_tokens(texts)}},
        "response_type": "embeddings_by_type",
    }
    return Reply(body=orjson.dumps(doc))


def list_models() -> Reply:
    models = [{"name": m, "endpoints": ["chat"], "finetuned": False, "context_length": 256000,
               "default_endpoints": ["chat"]} for m in MODELS]
    return Reply(body=orjson.dumps({"models": models, "next_page_token": ""}))
