"""OpenAI Chat Completions ⇄ Cohere's v2 Chat API (``POST /v2/chat``).

Request: the message list keeps its shape (Cohere v2 has ``system``, ``user``, ``assistant``
and ``tool`` roles, ``tool_calls`` with ``function.arguments`` as a JSON string, and
``tool_call_id`` on tool messages); ``developer`` becomes ``system``, image parts stay
``image_url`` parts. ``top_p`` is ``p``, ``stop`` is ``stop_sequences``, ``max_completion_tokens``
is ``max_tokens``; ``tool_choice`` ``required`` / ``none`` are ``REQUIRED`` / ``NONE`` (Cohere
has no ``auto`` value: it is the default) and a named function keeps only that tool, required.
Response: text content parts joined, ``tool_calls`` as they are, ``finish_reason`` mapped
(COMPLETE and STOP_SEQUENCE → stop, MAX_TOKENS → length, TOOL_CALL → tool_calls), usage from
``usage.tokens`` (falling back to ``billed_units``), as Bifrost reads it.

A finish reason of ERROR or TIMEOUT is Cohere saying the generation failed: the adapter
turns it into an error rather than an answer. Something Cohere cannot express and that would
change the answer if dropped (``n`` > 1, ``logprobs``, ``logit_bias``, audio or file parts) is a
TranslationError naming the field. Pure code on parsed JSON; inputs are never mutated.
"""

from __future__ import annotations

import time
import uuid

from .anthropic_openai import TranslationError, dumps_str

__all__ = [
    "FAILED_FINISH",
    "chat_request_to_cohere",
    "cohere_response_to_chat",
    "finish_reason_of",
    "tool_call_of",
    "usage_of",
]

_FINISH = {
    "COMPLETE": "stop",
    "STOP_SEQUENCE": "stop",
    "MAX_TOKENS": "length",
    "TOOL_CALL": "tool_calls",
}
# Finish reasons that mean no usable answer: Cohere's internal error and its timeout.
FAILED_FINISH = frozenset({"ERROR", "TIMEOUT"})

_REFUSED = {
    "logprobs": "Cohere's logprobs are not translated: leave logprobs out for a cohere model",
    "top_logprobs": "Cohere's logprobs are not translated: leave top_logprobs out for a cohere model",
    "logit_bias": "Cohere has no logit_bias: leave it out for a cohere model",
}

_SAMPLING = (("temperature", "temperature"), ("top_p", "p"), ("seed", "seed"),
             ("frequency_penalty", "frequency_penalty"), ("presence_penalty", "presence_penalty"))


# --- request --------------------------------------------------------------------------------


def chat_request_to_cohere(req: dict, model: str) -> dict:
    """OpenAI chat request → v2 chat body (``stream`` is the adapter's to set)."""
    for name, why in _REFUSED.items():
        if req.get(name) not in (None, False):
            raise TranslationError(why, param=name)
    n = req.get("n")
    if n is not None and n != 1:
        raise TranslationError("Cohere answers with one choice: n must be 1 for a cohere model", param="n")
    raw = req.get("messages")
    if not isinstance(raw, list) or not raw:
        raise TranslationError("messages must be a non-empty list", param="messages")
    messages = [_message(msg, f"messages[{i}]") for i, msg in enumerate(raw)]
    out: dict = {"model": model, "messages": messages}
    for ours, theirs in _SAMPLING:
        if req.get(ours) is not None:
            out[theirs] = req[ours]
    limit = req.get("max_completion_tokens")
    if limit is None:
        limit = req.get("max_tokens")
    if limit is not None:
        out["max_tokens"] = limit
    stop = req.get("stop")
    if stop:
        stop = [stop] if isinstance(stop, str) else stop
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
            raise TranslationError("stop must be a string or a list of strings", param="stop")
        out["stop_sequences"] = stop
    fmt = _response_format(req.get("response_format"))
    if fmt is not None:
        out["response_format"] = fmt
    tools = req.get("tools")
    if tools:
        if not isinstance(tools, list):
            raise TranslationError("tools must be a list", param="tools")
        out["tools"] = [_tool(t, f"tools[{i}]") for i, t in enumerate(tools)]
        _apply_tool_choice(out, req.get("tool_choice"))
    elif req.get("tool_choice") == "required":
        raise TranslationError("tool_choice required needs tools", param="tool_choice")
    return out


def _message(msg: object, where: str) -> dict:
    if not isinstance(msg, dict):
        raise TranslationError("each message must be an object", param=where)
    role = msg.get("role")
    if role in ("system", "developer"):
        return {"role": "system", "content": _text(msg.get("content"), f"{where}.content")}
    if role == "user":
        return {"role": "user", "content": _user_content(msg.get("content"), f"{where}.content")}
    if role == "assistant":
        return _assistant(msg, where)
    if role == "tool":
        call_id = msg.get("tool_call_id")
        if not isinstance(call_id, str) or not call_id:
            raise TranslationError("a tool message needs tool_call_id", param=f"{where}.tool_call_id")
        return {"role": "tool", "tool_call_id": call_id, "content": _text(msg.get("content"), f"{where}.content")}
    raise TranslationError(f"role must be system, developer, user, assistant or tool, got {role!r}", f"{where}.role")


def _text(content: object, where: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for j, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise TranslationError("only text parts can be translated here for cohere", param=f"{where}[{j}]")
            texts.append(part["text"])
        return "".join(texts)
    if content is None:
        return ""
    raise TranslationError("content must be a string or a list of parts", param=where)


def _user_content(content: object, where: str) -> str | list[dict]:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise TranslationError("content must be a string or a list of parts", param=where)
    parts: list[dict] = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            parts.append({"type": "text", "text": part["text"]})
        elif kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            if not isinstance(url, str) or not url:
                raise TranslationError("an image part needs image_url.url", param=f"{where}[{j}].image_url")
            parts.append({"type": "image_url", "image_url": {"url": url}})
        else:
            raise TranslationError(f"content part type {kind!r} is not supported for cohere", param=f"{where}[{j}]")
    return parts


def _assistant(msg: dict, where: str) -> dict:
    out: dict = {"role": "assistant"}
    content = msg.get("content")
    if isinstance(content, list):  # refusal parts read as text
        content = [{"type": "text", "text": p.get("refusal") or ""} if isinstance(p, dict) and p.get("type") == "refusal"
                   else p for p in content]
    text = _text(content, f"{where}.content")
    if text:
        out["content"] = text
    calls = msg.get("tool_calls") or ()
    if not isinstance(calls, list | tuple):
        raise TranslationError("tool_calls must be a list", param=f"{where}.tool_calls")
    translated = []
    for k, call in enumerate(calls):
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not isinstance(call.get("id"), str):
            raise TranslationError("a tool call needs id and function.name", param=f"{where}.tool_calls[{k}]")
        arguments = fn.get("arguments")
        translated.append({"id": call["id"], "type": "function", "function": {
            "name": fn["name"], "arguments": arguments if isinstance(arguments, str) else dumps_str(arguments or {})}})
    if translated:
        out["tool_calls"] = translated
    elif not text:
        raise TranslationError("an assistant message needs content or tool_calls", param=f"{where}.content")
    return out


def _tool(tool: object, param: str) -> dict:
    if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(tool.get("function"), dict):
        raise TranslationError("only function tools can be translated for cohere", param=f"{param}.type")
    fn = tool["function"]
    if not isinstance(fn.get("name"), str) or not fn["name"]:
        raise TranslationError("a function tool needs a name", param=f"{param}.function.name")
    out: dict = {"name": fn["name"]}
    if fn.get("description"):
        out["description"] = fn["description"]
    out["parameters"] = fn.get("parameters") or {"type": "object", "properties": {}}
    return {"type": "function", "function": out}


def _apply_tool_choice(out: dict, choice: object) -> None:
    if choice is None or choice == "auto":
        return
    if choice == "none":
        out["tool_choice"] = "NONE"
    elif choice == "required":
        out["tool_choice"] = "REQUIRED"
    elif isinstance(choice, dict) and choice.get("type") == "function" and isinstance(choice.get("function"), dict):
        name = choice["function"].get("name")
        kept = [t for t in out["tools"] if t["function"]["name"] == name]
        if not kept:
            raise TranslationError(f"tool_choice names {name!r}, which is not among the tools", param="tool_choice")
        out["tools"] = kept  # Cohere cannot name a tool: the one tool left, required
        out["tool_choice"] = "REQUIRED"
    else:
        raise TranslationError("tool_choice must be none, auto, required or a named function", param="tool_choice")


def _response_format(fmt: object) -> dict | None:
    if not isinstance(fmt, dict):
        return None
    kind = fmt.get("type")
    if kind in (None, "text"):
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        spec = fmt.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        return {"type": "json_object", **({"json_schema": schema} if isinstance(schema, dict) else {})}
    raise TranslationError(f"response_format type {kind!r} is not supported for cohere", param="response_format.type")


# --- response --------------------------------------------------------------------------------


def finish_reason_of(reason: str | None, has_calls: bool) -> str:
    if has_calls and reason in (None, "COMPLETE"):
        return "tool_calls"
    return _FINISH.get(reason or "", "stop")


def usage_of(usage: dict | None) -> dict:
    """Cohere usage → OpenAI usage: ``tokens`` (what the model processed), else
    ``billed_units`` (what is billed; smaller, without the system preamble)."""
    usage = usage if isinstance(usage, dict) else {}
    counts = usage.get("tokens") if isinstance(usage.get("tokens"), dict) else None
    if not counts or (counts.get("input_tokens") is None and counts.get("output_tokens") is None):
        counts = usage.get("billed_units") if isinstance(usage.get("billed_units"), dict) else {}
    prompt = int(counts.get("input_tokens") or 0)
    completion = int(counts.get("output_tokens") or 0)
    out: dict = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    cached = usage.get("cached_tokens")
    if isinstance(cached, int) and cached:
        out["prompt_tokens_details"] = {"cached_tokens": cached}
    return out


def tool_call_of(call: dict) -> dict:
    fn = call.get("function") or {}
    arguments = fn.get("arguments")
    return {
        "id": call.get("id") or "call_" + uuid.uuid4().hex[:24],
        "type": "function",
        "function": {"name": fn.get("name") or "",
                     "arguments": arguments if isinstance(arguments, str) else dumps_str(arguments or {})},
    }


def cohere_response_to_chat(resp: dict, model: str, created: int | None = None) -> dict:
    """v2 chat response → chat.completion (thinking parts and tool_plan are left out)."""
    message = resp.get("message") or {}
    content = message.get("content")
    texts = [p["text"] for p in content or () if isinstance(p, dict) and p.get("type") == "text"
             and isinstance(p.get("text"), str)] if isinstance(content, list) else []
    calls = [tool_call_of(c) for c in message.get("tool_calls") or () if isinstance(c, dict)]
    out_message: dict = {"role": "assistant", "content": "".join(texts) if texts else None, "refusal": None}
    if calls:
        out_message["tool_calls"] = calls
    return {
        "id": "chatcmpl-" + str(resp.get("id") or uuid.uuid4().hex),
        "object": "chat.completion",
        "created": int(time.time()) if created is None else created,
        "model": model,
        "choices": [{
            "index": 0,
            "message": out_message,
            "logprobs": None,
            "finish_reason": finish_reason_of(resp.get("finish_reason"), bool(calls)),
        }],
        "usage": usage_of(resp.get("usage")),
    }
