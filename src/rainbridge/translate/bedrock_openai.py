"""OpenAI Chat Completions ⇄ Amazon Bedrock's Converse API.

Request: system and developer messages become ``system: [{text}]``; user and assistant
messages ``messages: [{role, content: [ContentBlock]}]`` (text, image, ``toolUse``), tool
messages ``toolResult`` blocks in a user turn (Converse wants turns to alternate, so a run of
one role shares a turn); ``max_tokens``, ``temperature``, ``top_p``, ``stop`` go into
``inferenceConfig``; ``tools`` become ``toolConfig.tools[].toolSpec`` and ``tool_choice``
``toolConfig.toolChoice`` (``auto`` / ``any`` / ``tool``).
Response: ``output.message.content`` becomes one choice, ``stopReason`` its finish_reason,
``usage {inputTokens, outputTokens, totalTokens}`` OpenAI's usage.

Converse has no ``tool_choice: none``: the tools are left out instead (kept, without a
choice, when the conversation already holds tool blocks, which Converse refuses without a
toolConfig). What Converse cannot express and that would change the answer if dropped
(``n`` > 1, logprobs, logit_bias, a response_format other than text, image URLs that are not
data URLs) is a TranslationError naming the field. Pure code on parsed JSON.
"""

from __future__ import annotations

import time
import uuid

from .anthropic_openai import TranslationError, dumps_str, parse_arguments

__all__ = ["chat_request_to_converse", "converse_response_to_chat", "finish_reason_of", "usage_of"]

SYSTEM_JOINER = "\n\n"

# Converse's StopReason → OpenAI finish_reason.
_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "tool_use": "tool_calls",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "content_filtered": "content_filter",
    "guardrail_intervened": "content_filter",
}

_REFUSED = {
    "logprobs": "Bedrock's Converse API returns no logprobs: leave logprobs out for a bedrock model",
    "top_logprobs": "Bedrock's Converse API returns no logprobs: leave top_logprobs out for a bedrock model",
    "logit_bias": "Bedrock's Converse API has no logit_bias: leave it out for a bedrock model",
}
_IMAGE_FORMATS = {"image/png": "png", "image/jpeg": "jpeg", "image/jpg": "jpeg", "image/gif": "gif", "image/webp": "webp"}


# --- request --------------------------------------------------------------------------------


def chat_request_to_converse(req: dict) -> dict:
    """OpenAI chat request → Converse body (the model id goes in the URL, not here)."""
    for name, why in _REFUSED.items():
        if req.get(name) not in (None, False):
            raise TranslationError(why, param=name)
    n = req.get("n")
    if n is not None and n != 1:
        raise TranslationError("Bedrock's Converse API answers one choice: n must be 1 for a bedrock model", param="n")
    fmt = req.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") not in (None, "text"):
        raise TranslationError("Bedrock's Converse API has no response_format: leave it out or use text",
                               param="response_format.type")
    raw = req.get("messages")
    if not isinstance(raw, list) or not raw:
        raise TranslationError("messages must be a non-empty list", param="messages")
    system: list[str] = []
    messages: list[dict] = []
    for i, msg in enumerate(raw):
        if not isinstance(msg, dict):
            raise TranslationError("each message must be an object", param=f"messages[{i}]")
        role = msg.get("role")
        where = f"messages[{i}]"
        if role in ("system", "developer"):
            text = _text_only(msg.get("content"), f"{where}.content")
            if text:
                system.append(text)
        elif role == "user":
            _append(messages, "user", _user_blocks(msg.get("content"), f"{where}.content"))
        elif role == "assistant":
            _append(messages, "assistant", _assistant_blocks(msg, where))
        elif role == "tool":
            call_id = msg.get("tool_call_id")
            if not isinstance(call_id, str) or not call_id:
                raise TranslationError("a tool message needs tool_call_id", param=f"{where}.tool_call_id")
            text = _text_only(msg.get("content"), f"{where}.content")
            _append(messages, "user", [{"toolResult": {"toolUseId": call_id, "content": [{"text": text}]}}])
        else:
            raise TranslationError(f"role must be system, developer, user, assistant or tool, got {role!r}", f"{where}.role")
    if not messages:
        raise TranslationError("messages need at least one user or assistant message", param="messages")

    out: dict = {"messages": messages}
    if system:
        out["system"] = [{"text": SYSTEM_JOINER.join(system)}]
    config = _inference_config(req)
    if config:
        out["inferenceConfig"] = config
    tool_config = _tool_config(req, messages)
    if tool_config:
        out["toolConfig"] = tool_config
    return out


def _append(messages: list[dict], role: str, blocks: list[dict]) -> None:
    if not blocks:
        return
    if messages and messages[-1]["role"] == role:
        messages[-1]["content"].extend(blocks)
    else:
        messages.append({"role": role, "content": blocks})


def _text_only(content: object, param: str) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    if not isinstance(content, list):
        raise TranslationError("content must be a string or a list of parts", param=param)
    texts = []
    for j, part in enumerate(content):
        if not isinstance(part, dict) or part.get("type") != "text":
            raise TranslationError("only text parts are allowed here", param=f"{param}[{j}]")
        texts.append(part.get("text") or "")
    return "\n".join(texts)


def _user_blocks(content: object, param: str) -> list[dict]:
    if isinstance(content, str):
        return [{"text": content}] if content else []
    if content is None:
        return []
    if not isinstance(content, list):
        raise TranslationError("content must be a string or a list of parts", param=param)
    blocks = []
    for j, part in enumerate(content):
        where = f"{param}[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            blocks.append({"text": part.get("text") or ""})
        elif kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            blocks.append(_image(url, f"{where}.image_url.url"))
        else:
            raise TranslationError(f"content part type {kind!r} is not supported for bedrock", param=where)
    return blocks


def _image(url: object, param: str) -> dict:
    """A data: URL → an image block with its bytes (base64, as the REST API carries blob fields)."""
    if not isinstance(url, str) or not url.startswith("data:"):
        raise TranslationError("bedrock takes images inline: use a data:image/...;base64, URL", param=param)
    head, sep, data = url[5:].partition(",")
    mime, _, encoding = head.partition(";")
    fmt = _IMAGE_FORMATS.get(mime.lower())
    if not sep or encoding != "base64" or fmt is None:
        raise TranslationError("a data URL must look like data:image/<png|jpeg|gif|webp>;base64,<data>", param=param)
    return {"image": {"format": fmt, "source": {"bytes": data}}}


def _assistant_blocks(msg: dict, where: str) -> list[dict]:
    content = msg.get("content")
    blocks: list[dict] = []
    if isinstance(content, str):
        if content:
            blocks.append({"text": content})
    elif isinstance(content, list):
        for j, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") not in ("text", "refusal"):
                raise TranslationError("assistant content parts must be text", param=f"{where}.content[{j}]")
            text = part.get("text") or part.get("refusal") or ""
            if text:
                blocks.append({"text": text})
    elif content is not None:
        raise TranslationError("content must be a string or a list of parts", param=f"{where}.content")
    calls = msg.get("tool_calls") or ()
    if not isinstance(calls, list | tuple):
        raise TranslationError("tool_calls must be a list", param=f"{where}.tool_calls")
    for k, call in enumerate(calls):
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not isinstance(call.get("id"), str):
            raise TranslationError("a tool call needs id and function.name", param=f"{where}.tool_calls[{k}]")
        blocks.append({"toolUse": {"toolUseId": call["id"], "name": fn["name"], "input": parse_arguments(fn.get("arguments"))}})
    return blocks


def _inference_config(req: dict) -> dict:
    config: dict = {}
    limit = req.get("max_completion_tokens")
    if limit is None:
        limit = req.get("max_tokens")
    if limit is not None:
        config["maxTokens"] = limit
    if req.get("temperature") is not None:
        config["temperature"] = req["temperature"]
    if req.get("top_p") is not None:
        config["topP"] = req["top_p"]
    stop = req.get("stop")
    if stop:
        stop = [stop] if isinstance(stop, str) else stop
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
            raise TranslationError("stop must be a string or a list of strings", param="stop")
        config["stopSequences"] = stop
    return config


def _tool_config(req: dict, messages: list[dict]) -> dict | None:
    tools = req.get("tools")
    if not tools:
        return None
    if not isinstance(tools, list):
        raise TranslationError("tools must be a list", param="tools")
    specs = [{"toolSpec": _tool_spec(t, f"tools[{i}]")} for i, t in enumerate(tools)]
    choice = req.get("tool_choice")
    if choice is None or choice == "auto":
        return {"tools": specs, "toolChoice": {"auto": {}}} if choice else {"tools": specs}
    if choice == "none":
        has_blocks = any("toolUse" in b or "toolResult" in b for m in messages for b in m["content"])
        return {"tools": specs} if has_blocks else None
    if choice == "required":
        return {"tools": specs, "toolChoice": {"any": {}}}
    if isinstance(choice, dict) and choice.get("type") == "function" and isinstance(choice.get("function"), dict):
        name = choice["function"].get("name")
        if isinstance(name, str) and name:
            return {"tools": specs, "toolChoice": {"tool": {"name": name}}}
    raise TranslationError("tool_choice must be none, auto, required or a named function", param="tool_choice")


def _tool_spec(tool: object, param: str) -> dict:
    if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(tool.get("function"), dict):
        raise TranslationError("only function tools can be translated for bedrock", param=f"{param}.type")
    fn = tool["function"]
    if not isinstance(fn.get("name"), str) or not fn["name"]:
        raise TranslationError("a function tool needs a name", param=f"{param}.function.name")
    spec: dict = {"name": fn["name"], "inputSchema": {"json": fn.get("parameters") or {"type": "object", "properties": {}}}}
    if fn.get("description"):
        spec["description"] = fn["description"]
    return spec


# --- response --------------------------------------------------------------------------------


def finish_reason_of(stop_reason: str | None) -> str:
    return _FINISH.get(stop_reason or "", "stop")


def usage_of(usage: dict | None) -> dict:
    """Converse usage → OpenAI usage; cache reads and writes are prompt tokens, as for Anthropic."""
    usage = usage or {}
    cache_read = usage.get("cacheReadInputTokens") or 0
    prompt = (usage.get("inputTokens") or 0) + cache_read + (usage.get("cacheWriteInputTokens") or 0)
    completion = usage.get("outputTokens") or 0
    out: dict = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    if cache_read:
        out["prompt_tokens_details"] = {"cached_tokens": cache_read}
    return out


def tool_call_of(block: dict) -> dict | None:
    use = block.get("toolUse")
    if not isinstance(use, dict):
        return None
    return {
        "id": use.get("toolUseId") or "call_" + uuid.uuid4().hex[:24],
        "type": "function",
        "function": {"name": use.get("name") or "", "arguments": dumps_str(use.get("input") or {})},
    }


def converse_response_to_chat(resp: dict, model: str, created: int | None = None) -> dict:
    """ConverseResponse → chat.completion (reasoning blocks are left out)."""
    message = (resp.get("output") or {}).get("message") or {}
    texts: list[str] = []
    calls: list[dict] = []
    for block in message.get("content") or ():
        if not isinstance(block, dict):
            continue
        call = tool_call_of(block)
        if call is not None:
            calls.append(call)
        elif isinstance(block.get("text"), str):
            texts.append(block["text"])
    out_message: dict = {"role": "assistant", "content": "".join(texts) if texts else None, "refusal": None}
    if calls:
        out_message["tool_calls"] = calls
    return {
        "id": "chatcmpl-" + uuid.uuid4().hex,
        "object": "chat.completion",
        "created": int(time.time()) if created is None else created,
        "model": model,
        "choices": [{"index": 0, "message": out_message, "logprobs": None,
                     "finish_reason": finish_reason_of(resp.get("stopReason"))}],
        "usage": usage_of(resp.get("usage")),
    }
