"""Anthropic Messages API: /v1/messages, /v1/messages/count_tokens, /v1/models.

Handlers are pure: a `Call` in, a `Reply` out, `ApiError` for bad input.
Validation messages follow Anthropic's `field.path: problem` wording.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson

from . import synth
from .errors import ANTHROPIC, ApiError, stream_error_frame
from .reply import Call, Reply, Stream

MODELS = (
    ("claude-sonnet-4-20250514", "Claude Sonnet 4", "2025-05-22T00:00:00Z"),
    ("claude-3-7-sonnet-20250219", "Claude Sonnet 3.7", "2025-02-24T00:00:00Z"),
    ("claude-3-5-sonnet-latest", "Claude Sonnet 3.5", "2024-10-22T00:00:00Z"),
    ("claude-3-5-haiku-latest", "Claude Haiku 3.5", "2024-10-22T00:00:00Z"),
)


def event(kind: str, doc: dict) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(doc) + b"\n\n"


def messages(call: Call) -> Reply:
    body = call.body
    model = _require_str(body, "model")
    max_tokens = body.get("max_tokens")
    if max_tokens is None:
        raise _invalid("max_tokens: Field required")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise _invalid("max_tokens: Input should be a valid integer greater than or equal to 1")
    msgs = _messages(body)
    system = _system(body.get("system"))
    tools = _tools(body.get("tools"))
    stream = body.get("stream") or False
    if not isinstance(stream, bool):
        raise _invalid("stream: Input should be a valid boolean")

    input_tokens = synth.REQUEST_OVERHEAD + synth.count_tokens(system)
    for message in msgs:
        input_tokens += synth.MESSAGE_OVERHEAD + synth.count_tokens(
            synth.anthropic_text(message["content"])
        )
    if tools:
        input_tokens += len(orjson.dumps(tools)) // 4

    msg_id = f"msg_mock{call.seq:08d}"
    last = msgs[-1]
    tool = _chosen_tool(body, tools, last)
    if tool is not None:
        name, arguments = tool
        tool_id = f"toolu_mock{call.seq:08d}"
        fragments = synth.argument_fragments(orjson.dumps(arguments).decode())
        usage = _usage(input_tokens, len(fragments))
        if stream:
            block = {"type": "tool_use", "id": tool_id, "name": name, "input": {}}
            deltas = ({"type": "input_json_delta", "partial_json": f} for f in fragments)
            return Reply(stream=_stream(msg_id, model, usage, block, deltas, "tool_use"))
        block = {"type": "tool_use", "id": tool_id, "name": name, "input": arguments}
        return Reply(body=_message(msg_id, model, [block], "tool_use", usage))

    result = _tool_result_text(last)
    echo = result if result is not None else _last_user_text(msgs)
    words = synth.answer_words(model, echo, tool_result=result is not None)
    words = synth.fit_words(words, call.controls.stream_chunks)
    stop = "end_turn"
    if len(words) > max_tokens:
        words, stop = words[:max_tokens], "max_tokens"
    usage = _usage(input_tokens, len(words))
    if stream:
        deltas = ({"type": "text_delta", "text": t} for t in synth.stream_tokens(words))
        return Reply(
            stream=_stream(msg_id, model, usage, {"type": "text", "text": ""}, deltas, stop)
        )
    block = {"type": "text", "text": " ".join(words)}
    return Reply(body=_message(msg_id, model, [block], stop, usage))


def count_tokens(call: Call) -> Reply:
    body = call.body
    _require_str(body, "model")
    msgs = _messages(body)
    total = synth.REQUEST_OVERHEAD + synth.count_tokens(_system(body.get("system")))
    for message in msgs:
        total += synth.MESSAGE_OVERHEAD + synth.count_tokens(
            synth.anthropic_text(message["content"])
        )
    tools = _tools(body.get("tools"))
    if tools:
        total += len(orjson.dumps(tools)) // 4
    return Reply(body=orjson.dumps({"input_tokens": total}))


def list_models() -> Reply:
    data = [_model_object(*m) for m in MODELS]
    doc = {"data": data, "has_more": False, "first_id": data[0]["id"], "last_id": data[-1]["id"]}
    return Reply(body=orjson.dumps(doc))


def get_model(model_id: str) -> Reply:
    for model in MODELS:
        if model[0] == model_id:
            return Reply(body=orjson.dumps(_model_object(*model)))
    raise ApiError(404, f"model: {model_id}")


def _model_object(model_id: str, display_name: str, created_at: str) -> dict:
    return {"type": "model", "id": model_id, "display_name": display_name, "created_at": created_at}


def _message(msg_id: str, model: str, content: list, stop: str, usage: dict) -> bytes:
    return orjson.dumps(
        {
            "id": msg_id,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": content,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": usage,
        }
    )


def _stream(
    msg_id: str, model: str, usage: dict, block: dict, deltas: Iterator[dict], stop: str
) -> Stream:
    start_usage = {**usage, "output_tokens": 1}
    start = {
        "id": msg_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": start_usage,
    }
    head = [
        event("message_start", {"type": "message_start", "message": start}),
        event(
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": block},
        ),
        event("ping", {"type": "ping"}),
    ]
    content = (
        event("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": d})
        for d in deltas
    )
    tail = [
        event("content_block_stop", {"type": "content_block_stop", "index": 0}),
        event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop, "stop_sequence": None},
                "usage": {"output_tokens": usage["output_tokens"]},
            },
        ),
        event("message_stop", {"type": "message_stop"}),
    ]
    error = stream_error_frame(ANTHROPIC, ApiError(529, "Overloaded"))
    return Stream(head, content, tail, error)


def _usage(input_tokens: int, output_tokens: int) -> dict:
    return {
        "input_tokens": input_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": output_tokens,
    }


def _chosen_tool(body: dict, tools: list[dict], last: dict) -> tuple[str, dict] | None:
    if not tools or last["role"] != "user" or _tool_result_text(last) is not None:
        return None
    choice = body.get("tool_choice")
    if choice is None:
        choice = {"type": "auto"}
    if not isinstance(choice, dict) or choice.get("type") not in ("auto", "any", "tool", "none"):
        raise _invalid(
            "tool_choice: Input should be an object with type 'auto', 'any', 'tool' or 'none'"
        )
    if choice["type"] == "none":
        return None
    chosen = tools[0]
    if choice["type"] == "tool":
        chosen = next((t for t in tools if t["name"] == choice.get("name")), None)
        if chosen is None:
            raise _invalid(f"tool_choice.name: Tool '{choice.get('name')}' not found in tools")
    return chosen["name"], synth.sample_arguments(chosen.get("input_schema"))


def _tool_result_text(message: dict) -> str | None:
    """The text of the tool results in a user message, or None if it has none."""
    content = message["content"]
    if message["role"] != "user" or not isinstance(content, list):
        return None
    results = [b for b in content if isinstance(b, dict) and b.get("type") == "tool_result"]
    if not results:
        return None
    return " ".join(synth.anthropic_text(b.get("content")) for b in results)


def _last_user_text(msgs: list[dict]) -> str:
    for message in reversed(msgs):
        if message["role"] == "user":
            return synth.anthropic_text(message["content"])
    return ""


def _messages(body: dict) -> list[dict]:
    msgs = body.get("messages")
    if msgs is None:
        raise _invalid("messages: Field required")
    if not isinstance(msgs, list):
        raise _invalid("messages: Input should be a valid list")
    if not msgs:
        raise _invalid("messages: at least one message is required")
    for i, message in enumerate(msgs):
        if not isinstance(message, dict):
            raise _invalid(f"messages.{i}: Input should be a valid dictionary")
        if message.get("role") not in ("user", "assistant"):
            raise _invalid(f"messages.{i}.role: Input should be 'user' or 'assistant'")
        content = message.get("content")
        if content is None:
            raise _invalid(f"messages.{i}.content: Field required")
        if not isinstance(content, (str, list)):
            raise _invalid(
                f"messages.{i}.content: Input should be a valid string or list of content blocks"
            )
    return msgs


def _system(system: Any) -> str:
    if system is None:
        return ""
    if isinstance(system, str):
        return system
    if isinstance(system, list):
        for i, block in enumerate(system):
            if (
                not isinstance(block, dict)
                or block.get("type") != "text"
                or not isinstance(block.get("text"), str)
            ):
                raise _invalid(f"system.{i}: Input should be a text block with a string 'text'")
        return " ".join(block["text"] for block in system)
    raise _invalid("system: Input should be a valid string or list of text blocks")


def _tools(tools: Any) -> list[dict]:
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise _invalid("tools: Input should be a valid list")
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
            raise _invalid(f"tools.{i}.name: Field required")
        # Server tools (web search, ...) carry a `type` and no schema.
        if "type" not in tool and not isinstance(tool.get("input_schema"), dict):
            raise _invalid(f"tools.{i}.input_schema: Field required")
    return tools


def _require_str(body: dict, name: str) -> str:
    value = body.get(name)
    if value is None:
        raise _invalid(f"{name}: Field required")
    if not isinstance(value, str) or not value:
        raise _invalid(f"{name}: Input should be a valid string")
    return value


def _invalid(message: str) -> ApiError:
    return ApiError(400, message, param=message.split(":", 1)[0])
