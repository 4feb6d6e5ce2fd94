"""Anthropic Messages ⇄ OpenAI Chat Completions: errors, stop reasons, usage, whole responses.

Requests live in `anthropic_openai_request`, streams in `anthropic_openai_stream`; both lean on
the small tables here. Everything is pure code on parsed JSON dicts; inputs are never mutated.
"""

from __future__ import annotations

import time
import uuid

import orjson

__all__ = [
    "TranslationError",
    "UpstreamStreamError",
    "anthropic_error_type",
    "chat_response_to_message",
    "error_to_anthropic",
    "error_to_openai",
    "message_response_to_chat",
    "openai_error_type",
]


class TranslationError(ValueError):
    """The client sent something the other API cannot express; the gateway answers 400."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class UpstreamStreamError(Exception):
    """An Anthropic `error` event arrived mid-stream (after the 200 was already sent)."""

    def __init__(self, type_: str, message: str) -> None:
        super().__init__(f"{type_}: {message}")
        self.type = type_
        self.message = message


# --- errors -------------------------------------------------------------------------------

# From Anthropic's "HTTP errors" page plus the SDK's ErrorType (402 billing, 504 timeout).
_ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",  # "no capacity right now": clients back off the same way as for 529
    504: "timeout_error",
    529: "overloaded_error",
}

# OpenAI documents only the envelope, not a status table; these are the names its SDK's
# exception classes use, so a client reading `type` sees the same cause as the status code.
_OPENAI_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


def anthropic_error_type(status: int) -> str:
    """Anthropic error `type` for an HTTP status (other 4xx → invalid_request, 5xx → api)."""
    found = _ANTHROPIC_ERROR_TYPES.get(status)
    if found:
        return found
    return "invalid_request_error" if 400 <= status < 500 else "api_error"


def openai_error_type(status: int) -> str:
    """OpenAI error `type` for an HTTP status (other 4xx → invalid_request, 5xx → server)."""
    found = _OPENAI_ERROR_TYPES.get(status)
    if found:
        return found
    return "invalid_request_error" if 400 <= status < 500 else "server_error"


def error_to_anthropic(status: int, message: str, type_: str | None = None) -> dict:
    """Anthropic error body; an explicit `type_` (the gateway's own stable type) wins."""
    return {
        "type": "error",
        "error": {"type": type_ or anthropic_error_type(status), "message": message},
    }


def error_to_openai(status: int, message: str, type_: str | None = None) -> dict:
    """OpenAI error body; an explicit `type_` (the gateway's own stable type) wins."""
    return {
        "error": {
            "message": message,
            "type": type_ or openai_error_type(status),
            "param": None,
            "code": None,
        }
    }


# --- stop reasons ---------------------------------------------------------------------------

_FINISH_TO_STOP = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    # Anthropic's `refusal` is "classifiers intervened for a policy violation": the same event.
    "content_filter": "refusal",
}

_STOP_TO_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",  # the turn is complete as far as this response goes
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


def stop_reason_from_finish(
    finish_reason: str | None, matched_stop: object, has_tool_use: bool
) -> tuple[str, str | None]:
    """(stop_reason, stop_sequence) for an OpenAI finish_reason.

    OpenAI never says which stop string matched; vLLM (`stop_reason`) and SGLang
    (`matched_stop`) do, as a string (an int there is an EOS/stop token id, not a sequence).
    Some servers answer "stop" (or nothing) after tool calls, so tool_use wins over end_turn.
    """
    reason = _FINISH_TO_STOP.get(finish_reason or "", "end_turn")
    if reason != "end_turn":
        return reason, None
    if has_tool_use:
        return "tool_use", None
    if isinstance(matched_stop, str) and finish_reason == "stop":
        return "stop_sequence", matched_stop
    return "end_turn", None


def finish_from_stop_reason(stop_reason: str | None) -> str:
    """OpenAI finish_reason for an Anthropic stop_reason (unknown → "stop")."""
    return _STOP_TO_FINISH.get(stop_reason or "", "stop")


def matched_stop_of(choice: dict) -> object:
    """The matched stop string some OpenAI-compatible servers report (see above)."""
    found = choice.get("stop_reason")
    return found if found is not None else choice.get("matched_stop")


# --- usage ------------------------------------------------------------------------------------


def usage_to_anthropic(usage: dict | None) -> dict:
    """OpenAI usage → Anthropic usage.

    OpenAI's prompt_tokens include cached tokens; Anthropic's input_tokens exclude cache reads
    (total input = input + cache_creation + cache_read), so the cached part moves across.
    """
    if not usage:
        return {"input_tokens": 0, "output_tokens": 0}
    prompt = usage.get("prompt_tokens") or 0
    details = usage.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if details else None
    out = {
        "input_tokens": max(prompt - (cached or 0), 0),
        "output_tokens": usage.get("completion_tokens") or 0,
    }
    if cached is not None:
        out["cache_read_input_tokens"] = cached
    return out


def usage_to_openai(usage: dict | None) -> dict:
    """Anthropic usage → OpenAI usage (prompt_tokens counts cache reads and writes too)."""
    usage = usage or {}
    cache_read = usage.get("cache_read_input_tokens")
    prompt = (
        (usage.get("input_tokens") or 0)
        + (cache_read or 0)
        + (usage.get("cache_creation_input_tokens") or 0)
    )
    completion = usage.get("output_tokens") or 0
    out = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    if cache_read is not None:
        out["prompt_tokens_details"] = {"cached_tokens": cache_read}
    return out


# --- small shared helpers ---------------------------------------------------------------------


def dumps_str(value: object) -> str:
    return orjson.dumps(value).decode()


def parse_arguments(arguments: object) -> dict:
    """Tool-call arguments as a dict; models sometimes emit broken JSON, which becomes {}."""
    if isinstance(arguments, dict):
        return arguments
    if not arguments:
        return {}
    try:
        parsed = orjson.loads(arguments)  # type: ignore[arg-type]
    except (orjson.JSONDecodeError, TypeError):
        return {}
    return parsed if isinstance(parsed, dict) else {}


def new_tool_id() -> str:
    # Only for upstreams that omit tool-call ids; Anthropic requires one on every tool_use.
    return "toolu_" + uuid.uuid4().hex[:24]


def _text_of_openai_content(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # some servers answer with content parts
        return "".join(p.get("text") or "" for p in content if isinstance(p, dict))
    return ""


# --- whole responses ----------------------------------------------------------------------------


def chat_response_to_message(resp: dict, model: str) -> dict:
    """OpenAI chat.completion → Anthropic message (first choice only)."""
    choices = resp.get("choices") or ()
    choice = choices[0] if choices else {}
    msg = choice.get("message") or {}
    content: list[dict] = []
    text = _text_of_openai_content(msg.get("content"))
    if text:
        content.append({"type": "text", "text": text})
    refusal = msg.get("refusal")
    if refusal:
        content.append({"type": "text", "text": refusal})
    calls = msg.get("tool_calls") or ()
    if not calls and msg.get("function_call"):
        calls = ({"function": msg["function_call"]},)  # legacy single function call
    for call in calls:
        fn = call.get("function") or {}
        content.append(
            {
                "type": "tool_use",
                "id": call.get("id") or new_tool_id(),
                "name": fn.get("name") or "",
                "input": parse_arguments(fn.get("arguments")),
            }
        )
    stop_reason, stop_sequence = stop_reason_from_finish(
        choice.get("finish_reason"), matched_stop_of(choice), bool(calls)
    )
    if refusal and stop_reason == "end_turn":
        stop_reason = "refusal"
    return {
        "id": "msg_" + (resp.get("id") or uuid.uuid4().hex),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "usage": usage_to_anthropic(resp.get("usage")),
    }


def message_response_to_chat(resp: dict, created: int | None = None) -> dict:
    """Anthropic message → OpenAI chat.completion. Thinking and server-tool blocks are dropped."""
    texts: list[str] = []
    calls: list[dict] = []
    for block in resp.get("content") or ():
        kind = block.get("type")
        if kind == "text":
            texts.append(block.get("text") or "")
        elif kind == "tool_use":
            calls.append(
                {
                    "id": block.get("id") or new_tool_id(),
                    "type": "function",
                    "function": {
                        "name": block.get("name") or "",
                        "arguments": dumps_str(block.get("input") or {}),
                    },
                }
            )
    message: dict = {
        "role": "assistant",
        # Anthropic splits one answer into several text blocks (e.g. around citations).
        "content": "".join(texts) if texts else None,
        "refusal": None,
    }
    if calls:
        message["tool_calls"] = calls
    return {
        "id": "chatcmpl-" + (resp.get("id") or uuid.uuid4().hex),
        "object": "chat.completion",
        "created": int(time.time()) if created is None else created,
        "model": resp.get("model") or "",
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": finish_from_stop_reason(resp.get("stop_reason")),
            }
        ],
        "usage": usage_to_openai(resp.get("usage")),
    }
