"""Request translation: Anthropic Messages ⇄ OpenAI Chat Completions.

Anything the target API cannot express and that would change the answer if silently dropped
(server tools, PDFs by URL, n > 1 …) raises TranslationError naming the field; sampling knobs
the target lacks (top_k, logprobs, response_format …) are dropped.
"""

from __future__ import annotations

import re

import orjson

from .anthropic_openai import TranslationError, dumps_str

__all__ = ["chat_request_to_messages", "messages_request_to_chat"]

# System prompts arrive as several blocks/messages on one side and one string on the other.
SYSTEM_JOINER = "\n\n"


# --- Anthropic → OpenAI -------------------------------------------------------------------------


def messages_request_to_chat(req: dict) -> dict:
    """Anthropic Messages request → OpenAI chat request (`model` copied as-is)."""
    messages: list[dict] = []
    system = req.get("system")
    if system:
        messages.append({"role": "system", "content": _system_text(system)})
    raw = req.get("messages")
    if not isinstance(raw, list):
        raise TranslationError("messages must be a list", param="messages")
    for i, msg in enumerate(raw):
        if not isinstance(msg, dict):
            raise TranslationError("each message must be an object", param=f"messages[{i}]")
        role = msg.get("role")
        if role == "user":
            _user_to_chat(msg.get("content"), f"messages[{i}].content", messages)
        elif role == "assistant":
            messages.append(_assistant_to_chat(msg.get("content"), f"messages[{i}].content"))
        else:
            raise TranslationError(
                f"role must be 'user' or 'assistant', got {role!r}", param=f"messages[{i}].role"
            )

    out: dict = {"model": req.get("model"), "messages": messages}
    if "max_tokens" in req:
        out["max_tokens"] = req["max_tokens"]
    for key in ("temperature", "top_p"):
        if req.get(key) is not None:
            out[key] = req[key]
    stop = req.get("stop_sequences")
    if stop:
        out["stop"] = list(stop)
    if req.get("stream"):
        out["stream"] = True
        # Without this an OpenAI stream carries no usage and the client never learns its cost.
        out["stream_options"] = {"include_usage": True}
    tools = req.get("tools")
    if tools:
        out["tools"] = [_tool_to_chat(t, f"tools[{i}]") for i, t in enumerate(tools)]
        # OpenAI rejects tool_choice / parallel_tool_calls without tools, hence inside the if.
        choice = req.get("tool_choice")
        if choice:
            _tool_choice_to_chat(choice, out)
    metadata = req.get("metadata")
    if metadata and metadata.get("user_id"):
        out["user"] = metadata["user_id"]
    return out


def _system_text(system: object) -> str:
    if isinstance(system, str):
        return system
    if not isinstance(system, list):
        raise TranslationError("system must be a string or a list of text blocks", "system")
    texts = []
    for j, block in enumerate(system):
        if not isinstance(block, dict) or block.get("type") != "text":
            raise TranslationError("system blocks must be text blocks", param=f"system[{j}]")
        texts.append(block.get("text") or "")
    return SYSTEM_JOINER.join(texts)


def _content_blocks(content: object, param: str) -> list[dict]:
    if not isinstance(content, list):
        raise TranslationError("content must be a string or a list of blocks", param=param)
    for j, block in enumerate(content):
        if not isinstance(block, dict):
            raise TranslationError("content block must be an object", param=f"{param}[{j}]")
    return content


def _user_to_chat(content: object, param: str, out: list[dict]) -> None:
    if isinstance(content, str):
        out.append({"role": "user", "content": content})
        return
    parts: list[dict] = []
    tool_images: list[dict] = []
    for j, block in enumerate(_content_blocks(content, param)):
        kind = block.get("type")
        where = f"{param}[{j}]"
        if kind == "text":
            parts.append({"type": "text", "text": block.get("text") or ""})
        elif kind == "image":
            parts.append(_image_to_chat(block, where))
        elif kind == "tool_result":
            # OpenAI wants tool messages right after the assistant turn that asked for them,
            # so they go out before this turn's own text, whatever the block order.
            out.append(_tool_result_to_chat(block, where, tool_images))
        elif kind == "document":
            parts.extend(_document_to_chat(block, where))
        else:
            raise TranslationError(f"content block type {kind!r} is not supported here", where)
    # OpenAI tool messages carry text only; images a tool returned follow as user content.
    parts = tool_images + parts
    if not parts:
        return
    if len(parts) == 1 and parts[0]["type"] == "text":
        out.append({"role": "user", "content": parts[0]["text"]})
    else:
        out.append({"role": "user", "content": parts})


def _source(block: dict, param: str) -> dict:
    source = block.get("source") or {}
    if not isinstance(source, dict):  # a string names a search result's source, not data
        raise TranslationError("source must be an object", f"{param}.source")
    return source


def _image_to_chat(block: dict, param: str) -> dict:
    source = _source(block, param)
    kind = source.get("type")
    if kind == "base64":
        url = f"data:{source.get('media_type')};base64,{source.get('data')}"
    elif kind == "url":
        url = source.get("url")
    else:
        raise TranslationError(f"image source {kind!r} is not supported here", f"{param}.source")
    return {"type": "image_url", "image_url": {"url": url}}


def _document_to_chat(block: dict, param: str) -> list[dict]:
    source = _source(block, param)
    kind = source.get("type")
    if kind == "base64":
        media = source.get("media_type") or "application/pdf"
        file = {
            "filename": block.get("title") or "document.pdf",
            "file_data": f"data:{media};base64,{source.get('data')}",
        }
        return [{"type": "file", "file": file}]
    if kind == "text":
        return [{"type": "text", "text": source.get("data") or ""}]
    if kind == "content":
        inner = source.get("content")
        if isinstance(inner, str):
            return [{"type": "text", "text": inner}]
        return [
            {"type": "text", "text": b.get("text") or ""}
            for b in inner or ()
            if b.get("type") == "text"
        ]
    raise TranslationError(f"document source {kind!r} is not supported here", f"{param}.source")


def _tool_result_to_chat(block: dict, param: str, images: list[dict]) -> dict:
    content = block.get("content")
    if content is None:
        text = ""
    elif isinstance(content, str):
        text = content
    else:
        texts = []
        for j, inner in enumerate(_content_blocks(content, f"{param}.content")):
            kind = inner.get("type")
            if kind == "text":
                texts.append(inner.get("text") or "")
            elif kind == "image":
                images.append(_image_to_chat(inner, f"{param}.content[{j}]"))
            else:
                raise TranslationError(
                    f"tool_result block type {kind!r} is not supported here",
                    f"{param}.content[{j}]",
                )
        text = "\n".join(texts)
    if block.get("is_error"):
        # OpenAI has no error flag on tool messages; the model still needs to know it failed.
        text = "Error: " + text
    return {"role": "tool", "tool_call_id": block.get("tool_use_id"), "content": text}


def _assistant_to_chat(content: object, param: str) -> dict:
    if isinstance(content, str):
        return {"role": "assistant", "content": content}
    texts: list[str] = []
    calls: list[dict] = []
    for block in _content_blocks(content, param):
        kind = block.get("type")
        if kind == "text":
            texts.append(block.get("text") or "")
        elif kind == "tool_use":
            calls.append(
                {
                    "id": block.get("id"),
                    "type": "function",
                    "function": {
                        "name": block.get("name"),
                        "arguments": dumps_str(block.get("input") or {}),
                    },
                }
            )
        # thinking / redacted_thinking / server-tool blocks have no OpenAI form: dropped.
    msg: dict = {"role": "assistant", "content": "".join(texts) if texts else None}
    if calls:
        msg["tool_calls"] = calls
    elif msg["content"] is None:
        msg["content"] = ""  # keep the turn so user/assistant alternation survives
    return msg


def _tool_to_chat(tool: dict, param: str) -> dict:
    kind = tool.get("type")
    if kind not in (None, "custom"):
        # Server tools (web_search_…) and Anthropic-defined client tools (bash_…) have no
        # schema we could hand to another provider.
        raise TranslationError(f"tool type {kind!r} is only available on Anthropic", param)
    fn: dict = {"name": tool.get("name")}
    if tool.get("description"):
        fn["description"] = tool["description"]
    fn["parameters"] = tool.get("input_schema") or {"type": "object", "properties": {}}
    return {"type": "function", "function": fn}


def _tool_choice_to_chat(choice: dict, out: dict) -> None:
    kind = choice.get("type")
    if kind == "auto":
        out["tool_choice"] = "auto"
    elif kind == "any":
        out["tool_choice"] = "required"
    elif kind == "tool":
        out["tool_choice"] = {"type": "function", "function": {"name": choice.get("name")}}
    elif kind == "none":
        out["tool_choice"] = "none"
        return
    else:
        raise TranslationError(f"tool_choice type {kind!r} is not supported", "tool_choice")
    if choice.get("disable_parallel_tool_use"):
        out["parallel_tool_calls"] = False


# --- OpenAI → Anthropic -------------------------------------------------------------------------

_ANTHROPIC_ID = re.compile(r"[A-Za-z0-9_-]+")
_NOT_ID_CHAR = re.compile(r"[^A-Za-z0-9_-]")


def _tool_id(value: object) -> str:
    """Anthropic ids must match ^[A-Za-z0-9_-]+$; some OpenAI-compatible servers use ids like
    "functions.get_weather:0". The same rewrite on tool_use and tool_result keeps them paired."""
    text = value if isinstance(value, str) else ""
    if _ANTHROPIC_ID.fullmatch(text):
        return text
    return _NOT_ID_CHAR.sub("_", text) or "toolu_missing"


def chat_request_to_messages(req: dict, default_max_tokens: int = 4096) -> dict:
    """OpenAI chat request → Anthropic Messages request (`model` copied as-is)."""
    n = req.get("n")
    if n is not None and n != 1:
        raise TranslationError("n > 1 is not supported by Anthropic models", param="n")
    raw = req.get("messages")
    if not isinstance(raw, list):
        raise TranslationError("messages must be a list", param="messages")
    system: list[str] = []
    messages: list[dict] = []
    for i, msg in enumerate(raw):
        if not isinstance(msg, dict):
            raise TranslationError("each message must be an object", param=f"messages[{i}]")
        role = msg.get("role")
        param = f"messages[{i}]"
        if role in ("system", "developer"):
            # Anthropic has one top-level system prompt; mid-conversation ones join it.
            system.append(_plain_text(msg.get("content"), f"{param}.content"))
        elif role == "user":
            _append(messages, "user", _user_to_blocks(msg.get("content"), f"{param}.content"))
        elif role == "assistant":
            content = _assistant_to_blocks(msg, param)
            if content:
                _append(messages, "assistant", content)
        elif role == "tool":
            _append(messages, "user", [_tool_message_to_result(msg, param)])
        else:
            raise TranslationError(f"role {role!r} is not supported", param=f"{param}.role")

    max_tokens = req.get("max_completion_tokens")
    if max_tokens is None:
        max_tokens = req.get("max_tokens")
    out: dict = {
        "model": req.get("model"),
        "messages": messages,
        # Anthropic requires max_tokens; OpenAI clients often omit it.
        "max_tokens": default_max_tokens if max_tokens is None else max_tokens,
    }
    if system:
        out["system"] = SYSTEM_JOINER.join(system)
    temperature = req.get("temperature")
    if temperature is not None:
        if isinstance(temperature, bool) or not isinstance(temperature, int | float):
            raise TranslationError("temperature must be a number", param="temperature")
        out["temperature"] = min(max(temperature, 0.0), 1.0)  # OpenAI 0..2, Anthropic 0..1
    if req.get("top_p") is not None:
        out["top_p"] = req["top_p"]
    stop = req.get("stop")
    if stop:
        out["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    if req.get("stream"):
        out["stream"] = True
    if req.get("user"):
        out["metadata"] = {"user_id": req["user"]}
    tools = req.get("tools")
    if tools:
        out["tools"] = [_function_to_tool(t, f"tools[{i}]") for i, t in enumerate(tools)]
        choice = _tool_choice_to_anthropic(req.get("tool_choice"))
        if req.get("parallel_tool_calls") is False:
            choice = choice or {"type": "auto"}
            if choice["type"] != "none":  # ToolChoiceNone has no such field
                choice["disable_parallel_tool_use"] = True
        if choice:
            out["tool_choice"] = choice
    return out


def _append(messages: list[dict], role: str, content: str | list[dict]) -> None:
    """Append a turn, merging into the previous one when the role repeats (Anthropic
    requires alternation; consecutive tool messages become one user turn of tool_results)."""
    if not messages or messages[-1]["role"] != role:
        messages.append({"role": role, "content": content})
        return
    prev = messages[-1]
    merged = prev["content"]
    if isinstance(merged, str):  # ours to replace, never the caller's list
        merged = [{"type": "text", "text": merged}] if merged else []
        prev["content"] = merged
    if isinstance(content, str):
        if content:
            merged.append({"type": "text", "text": content})
    else:
        merged.extend(content)


def _plain_text(content: object, param: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            p.get("text") or "" for p in content if isinstance(p, dict) and p.get("type") == "text"
        )
    if content is None:
        return ""
    raise TranslationError("content must be a string or a list of parts", param=param)


def _user_to_blocks(content: object, param: str) -> str | list[dict]:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise TranslationError("content must be a string or a list of parts", param=param)
    blocks: list[dict] = []
    for j, part in enumerate(content):
        where = f"{param}[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            if part.get("text"):  # Anthropic rejects empty text blocks
                blocks.append({"type": "text", "text": part["text"]})
        elif kind == "image_url":
            blocks.append(_image_url_to_block(part.get("image_url"), where))
        elif kind == "file":
            blocks.append(_file_to_document(part.get("file") or {}, where))
        else:
            raise TranslationError(f"content part type {kind!r} is not supported", param=where)
    return blocks


def _split_data_url(url: str, param: str) -> tuple[str, str]:
    header, sep, data = url.partition(",")
    if not sep or not header.endswith(";base64"):
        raise TranslationError("data URLs must be base64-encoded", param=param)
    return header[5:-7], data  # strip "data:" and ";base64"


def _image_url_to_block(image_url: object, param: str) -> dict:
    url = image_url.get("url") if isinstance(image_url, dict) else image_url
    if not isinstance(url, str) or not url:
        raise TranslationError("image_url.url is required", param=f"{param}.image_url")
    if url.startswith("data:"):
        media, data = _split_data_url(url, f"{param}.image_url.url")
        source = {"type": "base64", "media_type": media, "data": data}
    else:
        source = {"type": "url", "url": url}
    return {"type": "image", "source": source}


def _file_to_document(file: dict, param: str) -> dict:
    data_url = file.get("file_data")
    if not isinstance(data_url, str) or not data_url.startswith("data:"):
        raise TranslationError("only inline file_data (a data URL) is supported", f"{param}.file")
    media, data = _split_data_url(data_url, f"{param}.file.file_data")
    block: dict = {
        "type": "document",
        "source": {"type": "base64", "media_type": media, "data": data},
    }
    if file.get("filename"):
        block["title"] = file["filename"]
    return block


def _assistant_to_blocks(msg: dict, param: str) -> str | list[dict] | None:
    calls = msg.get("tool_calls")
    content = msg.get("content")
    if not calls:
        if isinstance(content, str):
            return content or None
        text = _assistant_parts_text(content, f"{param}.content")
        return text or None
    blocks: list[dict] = []
    text = (
        content if isinstance(content, str) else _assistant_parts_text(content, f"{param}.content")
    )
    if text:
        blocks.append({"type": "text", "text": text})
    for j, call in enumerate(calls):
        fn = call.get("function") or {}
        blocks.append(
            {
                "type": "tool_use",
                "id": _tool_id(call.get("id")),
                "name": fn.get("name"),
                "input": _client_arguments(fn.get("arguments"), f"{param}.tool_calls[{j}]"),
            }
        )
    return blocks


def _assistant_parts_text(content: object, param: str) -> str:
    if content is None:
        return ""
    if not isinstance(content, list):
        raise TranslationError("content must be a string or a list of parts", param=param)
    # Assistant parts are text or refusal; both are just what the model said.
    return "".join(
        (p.get("text") or p.get("refusal") or "") for p in content if isinstance(p, dict)
    )


def _client_arguments(arguments: object, param: str) -> dict:
    # Unlike model output, these come from the client: a broken history is its mistake.
    if isinstance(arguments, dict):
        return arguments
    if not arguments:
        return {}
    try:
        parsed = orjson.loads(arguments)  # type: ignore[arg-type]
    except (orjson.JSONDecodeError, TypeError) as exc:
        raise TranslationError(
            "function.arguments must be a JSON object", f"{param}.function.arguments"
        ) from exc
    if not isinstance(parsed, dict):
        raise TranslationError(
            "function.arguments must be a JSON object", f"{param}.function.arguments"
        )
    return parsed


def _tool_message_to_result(msg: dict, param: str) -> dict:
    block: dict = {"type": "tool_result", "tool_use_id": _tool_id(msg.get("tool_call_id"))}
    content = msg.get("content")
    if isinstance(content, list):
        texts = [
            {"type": "text", "text": p["text"]}
            for p in content
            if isinstance(p, dict) and p.get("type") == "text" and p.get("text")
        ]
        if texts:
            block["content"] = texts
    elif content:
        block["content"] = _plain_text(content, f"{param}.content")
    return block


def _function_to_tool(tool: dict, param: str) -> dict:
    fn = tool.get("function") if isinstance(tool, dict) else None
    if not isinstance(fn, dict) or tool.get("type") != "function":
        raise TranslationError("only function tools are supported", param=param)
    out: dict = {"name": fn.get("name")}
    if fn.get("description"):
        out["description"] = fn["description"]
    out["input_schema"] = fn.get("parameters") or {"type": "object", "properties": {}}
    return out


def _tool_choice_to_anthropic(choice: object) -> dict | None:
    if choice is None:
        return None  # Anthropic's default is auto too
    if choice == "auto":
        return {"type": "auto"}
    if choice == "required":
        return {"type": "any"}
    if choice == "none":
        return {"type": "none"}
    if isinstance(choice, dict) and choice.get("type") == "function":
        name = (choice.get("function") or {}).get("name")
        if name:
            return {"type": "tool", "name": name}
    raise TranslationError("unsupported tool_choice", param="tool_choice")
