"""OpenAI (and Azure OpenAI) endpoints: chat, legacy completions, embeddings, models.

Handlers are pure: a `Call` in, a `Reply` out, `ApiError` for bad input.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import orjson

from . import synth
from .errors import AZURE, ApiError, stream_error_frame
from .reply import Call, Reply, Stream

FINGERPRINT = "fp_mock"
DONE = b"data: [DONE]\n\n"

MODELS = (
    ("gpt-4o", "system"),
    ("gpt-4o-mini", "system"),
    ("gpt-4.1", "system"),
    ("gpt-4.1-mini", "system"),
    ("o3-mini", "system"),
    ("gpt-3.5-turbo-instruct", "system"),
    ("text-embedding-3-small", "system"),
    ("text-embedding-3-large", "system"),
    ("text-embedding-ada-002", "openai-internal"),
    ("claude-3-5-sonnet-latest", "anthropic"),
    ("claude-3-5-haiku-latest", "anthropic"),
)
MODELS_CREATED = 1_715_367_049


def sse(doc: Any) -> bytes:
    return b"data: " + orjson.dumps(doc) + b"\n\n"


# --- chat completions ------------------------------------------------------


def chat(call: Call) -> Reply:
    body = call.body
    model = _model(call)
    messages = _messages(body)
    n = _int(body, "n", 1, low=1, high=128)
    limit = _max_tokens(body)
    stream, include_usage = _stream_flags(body)
    prompt_tokens = _prompt_tokens(messages, body.get("tools"))
    last = messages[-1]
    tool = _chosen_tool(body, last)
    cid = f"chatcmpl-mock{call.seq:08d}"
    base = {"id": cid, "object": "chat.completion", "created": call.created, "model": model}

    if tool is not None:
        name, arguments = tool
        call_id = f"call_mock{call.seq:08d}"
        fragments = synth.argument_fragments(arguments)
        completion = n * len(fragments)
        usage = _usage(prompt_tokens, completion)
        if stream:
            return Reply(
                stream=_chat_tool_stream(base, n, call_id, name, fragments, usage, include_usage)
            )
        message = {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": name, "arguments": arguments},
                }
            ],
            "refusal": None,
            "annotations": [],
        }
        return _chat_reply(base, n, message, "tool_calls", usage)

    role = last.get("role")
    echo = synth.openai_text(last.get("content")) if role == "tool" else _last_user_text(messages)
    words = synth.answer_words(model, echo, tool_result=role == "tool")
    words = synth.fit_words(words, call.controls.stream_chunks)
    finish = "stop"
    if limit is not None and len(words) > limit:
        words, finish = words[:limit], "length"
    usage = _usage(prompt_tokens, n * len(words))
    if stream:
        return Reply(
            stream=_chat_text_stream(
                base, n, synth.stream_tokens(words), finish, usage, include_usage
            )
        )
    message = {"role": "assistant", "content": " ".join(words), "refusal": None, "annotations": []}
    return _chat_reply(base, n, message, finish, usage)


def _chat_reply(base: dict, n: int, message: dict, finish: str, usage: dict) -> Reply:
    choices = [
        {"index": i, "message": message, "logprobs": None, "finish_reason": finish}
        for i in range(n)
    ]
    doc = {
        **base,
        "choices": choices,
        "usage": usage,
        "service_tier": "default",
        "system_fingerprint": FINGERPRINT,
    }
    return Reply(body=orjson.dumps(doc))


def _chunk_base(base: dict, include_usage: bool) -> dict:
    chunk = {
        **base,
        "object": "chat.completion.chunk",
        "service_tier": "default",
        "system_fingerprint": FINGERPRINT,
    }
    if include_usage:
        # OpenAI sends `"usage": null` on every chunk before the usage chunk.
        chunk["usage"] = None
    return chunk


def _chunk(template: dict, index: int, delta: dict, finish: str | None = None) -> bytes:
    choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
    return sse({**template, "choices": [choice]})


def _tail(template: dict, n: int, finish: str, usage: dict, include_usage: bool) -> list[bytes]:
    frames = [_chunk(template, i, {}, finish) for i in range(n)]
    if include_usage:
        frames.append(sse({**template, "choices": [], "usage": usage}))
    frames.append(DONE)
    return frames


def _chat_text_stream(
    base: dict, n: int, tokens: list[str], finish: str, usage: dict, include_usage: bool
) -> Stream:
    template = _chunk_base(base, include_usage)
    head = [
        _chunk(template, i, {"role": "assistant", "content": "", "refusal": None}) for i in range(n)
    ]

    def content() -> Iterator[bytes]:
        for token in tokens:
            for i in range(n):
                yield _chunk(template, i, {"content": token})

    return Stream(
        head, content(), _tail(template, n, finish, usage, include_usage), _stream_error()
    )


def _chat_tool_stream(
    base: dict,
    n: int,
    call_id: str,
    name: str,
    fragments: list[str],
    usage: dict,
    include_usage: bool,
) -> Stream:
    template = _chunk_base(base, include_usage)
    opening = {
        "index": 0,
        "id": call_id,
        "type": "function",
        "function": {"name": name, "arguments": ""},
    }
    head = [
        _chunk(
            template,
            i,
            {"role": "assistant", "content": None, "tool_calls": [opening], "refusal": None},
        )
        for i in range(n)
    ]

    def content() -> Iterator[bytes]:
        for fragment in fragments:
            for i in range(n):
                yield _chunk(
                    template, i, {"tool_calls": [{"index": 0, "function": {"arguments": fragment}}]}
                )

    return Stream(
        head, content(), _tail(template, n, "tool_calls", usage, include_usage), _stream_error()
    )


def _stream_error() -> bytes:
    return stream_error_frame(
        "openai", ApiError(500, "Mock failure (error-after): the stream broke off")
    )


def _chosen_tool(body: dict, last: dict) -> tuple[str, str] | None:
    """(name, JSON arguments) when the model should call a tool, else None."""
    tools = body.get("tools")
    if tools is None:
        return None
    if not isinstance(tools, list):
        raise _invalid_type("tools", "an array", tools)
    for i, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise _missing(f"tools[{i}].function.name")
    choice = body.get("tool_choice")
    if not tools or choice == "none" or last.get("role") != "user":
        return None
    chosen = tools[0]["function"]
    if isinstance(choice, dict):
        wanted = (choice.get("function") or {}).get("name")
        chosen = next((t["function"] for t in tools if t["function"]["name"] == wanted), None)
        if chosen is None:
            raise ApiError(
                400,
                f"Invalid value for 'tool_choice': no function named {wanted!r} was specified in the 'tools' parameter.",
                param="tool_choice",
            )
    arguments = synth.sample_arguments(chosen.get("parameters"))
    return chosen["name"], orjson.dumps(arguments).decode()


def _last_user_text(messages: list[dict]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            return synth.openai_text(message.get("content"))
    return ""


def _prompt_tokens(messages: list[dict], tools: Any) -> int:
    total = synth.REQUEST_OVERHEAD
    for message in messages:
        total += synth.MESSAGE_OVERHEAD + synth.count_tokens(
            synth.openai_text(message.get("content"))
        )
    if tools:
        total += len(orjson.dumps(tools)) // 4
    return total


# --- legacy completions ----------------------------------------------------


def completions(call: Call) -> Reply:
    body = call.body
    model = _model(call)
    prompts = _prompts(body)
    n = _int(body, "n", 1, low=1, high=128)
    limit = _max_tokens(body)
    stream, include_usage = _stream_flags(body)
    answers = []
    for prompt in prompts:
        words = synth.fit_words(synth.answer_words(model, prompt), call.controls.stream_chunks)
        finish = "stop"
        if limit is not None and len(words) > limit:
            words, finish = words[:limit], "length"
        answers.extend([(words, finish)] * n)
    prompt_tokens = sum(max(1, synth.count_tokens(p)) for p in prompts)
    usage = _usage(prompt_tokens, sum(len(w) for w, _ in answers))
    base = {
        "id": f"cmpl-mock{call.seq:08d}",
        "object": "text_completion",
        "created": call.created,
        "model": model,
    }
    if stream:
        return Reply(stream=_completion_stream(base, answers, usage, include_usage))
    choices = [
        {"text": " ".join(words), "index": i, "logprobs": None, "finish_reason": finish}
        for i, (words, finish) in enumerate(answers)
    ]
    doc = {**base, "choices": choices, "usage": usage, "system_fingerprint": FINGERPRINT}
    return Reply(body=orjson.dumps(doc))


def _completion_stream(base: dict, answers: list, usage: dict, include_usage: bool) -> Stream:
    template = {**base, "system_fingerprint": FINGERPRINT}
    if include_usage:
        template["usage"] = None

    def frame(index: int, text: str, finish: str | None) -> bytes:
        choice = {"text": text, "index": index, "logprobs": None, "finish_reason": finish}
        return sse({**template, "choices": [choice]})

    def content() -> Iterator[bytes]:
        streams = [synth.stream_tokens(words) for words, _ in answers]
        for step in range(max(map(len, streams), default=0)):
            for i, tokens in enumerate(streams):
                if step < len(tokens):
                    yield frame(i, tokens[step], None)

    tail = [frame(i, "", finish) for i, (_, finish) in enumerate(answers)]
    if include_usage:
        tail.append(sse({**template, "choices": [], "usage": usage}))
    tail.append(DONE)
    return Stream([], content(), tail, _stream_error())


def _prompts(body: dict) -> list[str]:
    prompt = body.get("prompt")
    if prompt is None:
        raise _missing("prompt")
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, list) and prompt:
        if all(isinstance(p, str) for p in prompt):
            return list(prompt)
        if all(isinstance(p, int) for p in prompt):
            return [" ".join(map(str, prompt))]
        if all(isinstance(p, list) for p in prompt):
            return [" ".join(map(str, p)) for p in prompt]
    raise ApiError(
        400,
        "Invalid 'prompt': expected a string, an array of strings, or token arrays.",
        param="prompt",
    )


# --- embeddings ------------------------------------------------------------


def embeddings(call: Call) -> Reply:
    body = call.body
    model = _model(call)
    inputs = _embedding_inputs(body.get("input"))
    dimensions = _int(body, "dimensions", synth.embedding_dimensions(model), low=1, high=8192)
    encoding = body.get("encoding_format", "float")
    if encoding not in ("float", "base64"):
        raise ApiError(
            400,
            f"Invalid value for 'encoding_format': expected 'float' or 'base64', got {encoding!r}.",
            param="encoding_format",
        )
    data = []
    for i, (key, _) in enumerate(inputs):
        vector = synth.embedding(key, dimensions)
        value: Any = (
            base64.b64encode(synth.float32_le_bytes(vector)).decode()
            if encoding == "base64"
            else vector.tolist()
        )
        data.append({"object": "embedding", "index": i, "embedding": value})
    tokens = sum(count for _, count in inputs)
    doc = {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
    return Reply(body=orjson.dumps(doc))


def _embedding_inputs(value: Any) -> list[tuple[bytes, int]]:
    """(hash key, token count) per input."""
    if value is None:
        raise _missing("input")
    if isinstance(value, str):
        value = [value]
    elif isinstance(value, list) and value and all(isinstance(v, int) for v in value):
        value = [value]
    if not isinstance(value, list) or not value:
        raise ApiError(
            400,
            "'input' must be a non-empty string, array of strings, or token arrays.",
            param="input",
        )
    inputs = []
    for item in value:
        if isinstance(item, str) and item:
            inputs.append((item.encode(), max(1, synth.count_tokens(item))))
        elif isinstance(item, list) and item and all(isinstance(t, int) for t in item):
            inputs.append((orjson.dumps(item), len(item)))
        else:
            raise ApiError(
                400, "'input' items must be non-empty strings or token arrays.", param="input"
            )
    return inputs


# --- models ----------------------------------------------------------------


def model_object(model_id: str, owner: str) -> dict:
    return {"id": model_id, "object": "model", "created": MODELS_CREATED, "owned_by": owner}


def list_models() -> Reply:
    doc = {"object": "list", "data": [model_object(m, o) for m, o in MODELS]}
    return Reply(body=orjson.dumps(doc))


def get_model(model_id: str) -> Reply:
    for m, owner in MODELS:
        if m == model_id:
            return Reply(body=orjson.dumps(model_object(m, owner)))
    raise ApiError(
        404,
        f"The model '{model_id}' does not exist or you do not have access to it.",
        param="model",
        code="model_not_found",
    )


# --- validation ------------------------------------------------------------


def _model(call: Call) -> str:
    # Azure names the model by the deployment in the path; `model` in the body is optional.
    if call.family == AZURE and call.deployment is not None:
        return call.deployment
    model = call.body.get("model")
    if model is None:
        raise _missing("model")
    if not isinstance(model, str) or not model:
        raise _invalid_type("model", "a string", model)
    return model


def _messages(body: dict) -> list[dict]:
    messages = body.get("messages")
    if messages is None:
        raise _missing("messages")
    if not isinstance(messages, list):
        raise _invalid_type("messages", "an array", messages)
    if not messages:
        raise ApiError(
            400,
            "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.",
            param="messages",
            code="empty_array",
        )
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise _invalid_type(f"messages[{i}]", "an object", message)
        if "role" not in message:
            raise _missing(f"messages[{i}].role")
        if not isinstance(message["role"], str):
            raise _invalid_type(f"messages[{i}].role", "a string", message["role"])
    return messages


def _max_tokens(body: dict) -> int | None:
    for name in ("max_completion_tokens", "max_tokens"):
        if body.get(name) is not None:
            return _int(body, name, None, low=1, high=1 << 31)
    return None


def _stream_flags(body: dict) -> tuple[bool, bool]:
    stream = body.get("stream") or False
    if not isinstance(stream, bool):
        raise _invalid_type("stream", "a boolean", stream)
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise _invalid_type("stream_options", "an object", options)
    return stream, bool(stream and options and options.get("include_usage") is True)


def _int(body: dict, name: str, default: Any, *, low: int, high: int) -> Any:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool):
        raise _invalid_type(name, "an integer", value)
    if not low <= value <= high:
        raise ApiError(
            400,
            f"Invalid '{name}': expected a value between {low} and {high}, but got {value} instead.",
            param=name,
            code="integer_out_of_range",
        )
    return value


def _usage(prompt: int, completion: int) -> dict:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _missing(param: str) -> ApiError:
    return ApiError(
        400,
        f"Missing required parameter: '{param}'.",
        param=param,
        code="missing_required_parameter",
    )


_JSON_TYPES = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "a boolean",
    list: "an array",
    dict: "an object",
    type(None): "null",
}


def _invalid_type(param: str, expected: str, value: Any) -> ApiError:
    got = _JSON_TYPES.get(type(value), type(value).__name__)
    return ApiError(
        400,
        f"Invalid type for '{param}': expected {expected}, but got {got} instead.",
        param=param,
        code="invalid_type",
    )
