"""OpenAI Chat Completions ⇄ Gemini ``generateContent`` (Google's Generative Language API).

Request: ``messages`` become ``contents`` (roles ``user`` / ``model``; system and developer
messages become ``systemInstruction``), tool calls ``functionCall`` parts, tool messages
``functionResponse`` parts; sampling knobs go into ``generationConfig``; ``tools`` become
``functionDeclarations`` (with ``parametersJsonSchema``, which takes JSON Schema as OpenAI
clients write it) and ``tool_choice`` becomes ``toolConfig.functionCallingConfig``.
Response: each candidate becomes a choice, ``usageMetadata`` becomes ``usage``.

Gemini 3 models return a ``thoughtSignature`` with each function call and refuse the next
turn without it. It travels in the tool call as Google's own OpenAI-compatible endpoint
carries it, ``extra_content.google.thought_signature``, and goes back upstream from there.

Something Gemini cannot express and that would change the answer if dropped (``logprobs``,
``logit_bias``, custom tools, a tool message whose call cannot be found) is a
TranslationError naming the field. Pure code on parsed JSON; inputs are never mutated.
"""

from __future__ import annotations

import mimetypes
import time
import uuid

from .anthropic_openai import TranslationError, dumps_str, parse_arguments

__all__ = [
    "chat_request_to_gemini",
    "finish_reason_of",
    "gemini_response_to_chat",
    "new_call_id",
    "tool_call_of",
    "usage_of",
]

SYSTEM_JOINER = "\n\n"

# Gemini's FinishReason enum (v1beta) → OpenAI finish_reason; anything else is "stop".
_FINISH = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
}

# Fields of a chat request that would change the answer and that Gemini has no place for.
_REFUSED = {
    "logprobs": "Gemini's logprobs are not translated: leave logprobs out for a gemini model",
    "top_logprobs": "Gemini's logprobs are not translated: leave top_logprobs out for a gemini model",
    "logit_bias": "Gemini has no logit_bias: leave it out for a gemini model",
}


# --- request --------------------------------------------------------------------------------


def chat_request_to_gemini(req: dict) -> dict:
    """OpenAI chat request → generateContent body (the model goes in the URL, not here)."""
    for name, why in _REFUSED.items():
        if req.get(name) not in (None, False):
            raise TranslationError(why, param=name)
    raw = req.get("messages")
    if not isinstance(raw, list) or not raw:
        raise TranslationError("messages must be a non-empty list", param="messages")
    system: list[str] = []
    contents: list[dict] = []
    names: dict[str, str] = {}  # tool call id → function name, for the tool messages
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
            _append(contents, "user", _user_parts(msg.get("content"), f"{where}.content"))
        elif role == "assistant":
            _append(contents, "model", _assistant_parts(msg, where, names))
        elif role in ("tool", "function"):
            _append(contents, "user", [_function_response(msg, where, names)])
        else:
            raise TranslationError(
                f"role must be system, developer, user, assistant or tool, got {role!r}", f"{where}.role"
            )
    if not contents:
        raise TranslationError("messages need at least one user or assistant message", param="messages")

    out: dict = {"contents": contents}
    if system:
        out["systemInstruction"] = {"parts": [{"text": SYSTEM_JOINER.join(system)}]}
    config = _generation_config(req)
    if config:
        out["generationConfig"] = config
    tools = req.get("tools")
    if tools:
        if not isinstance(tools, list):
            raise TranslationError("tools must be a list", param="tools")
        out["tools"] = [{"functionDeclarations": [_declaration(t, f"tools[{i}]") for i, t in enumerate(tools)]}]
        choice = req.get("tool_choice")
        if choice is not None:
            out["toolConfig"] = {"functionCallingConfig": _calling_config(choice)}
    return out


def _append(contents: list[dict], role: str, parts: list[dict]) -> None:
    """Gemini wants turns to alternate; consecutive messages of one role share a turn (so a
    run of tool messages answers a run of parallel calls in one turn, as Gemini requires)."""
    if not parts:
        return
    if contents and contents[-1]["role"] == role:
        contents[-1]["parts"].extend(parts)
    else:
        contents.append({"role": role, "parts": parts})


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


def _user_parts(content: object, param: str) -> list[dict]:
    if isinstance(content, str):
        return [{"text": content}]
    if content is None:
        return []
    if not isinstance(content, list):
        raise TranslationError("content must be a string or a list of parts", param=param)
    parts = []
    for j, part in enumerate(content):
        where = f"{param}[{j}]"
        if not isinstance(part, dict):
            raise TranslationError("content part must be an object", param=where)
        kind = part.get("type")
        if kind == "text":
            parts.append({"text": part.get("text") or ""})
        elif kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            parts.append(_media(url, f"{where}.image_url.url"))
        elif kind == "input_audio":
            audio = part.get("input_audio")
            if not isinstance(audio, dict) or not isinstance(audio.get("data"), str):
                raise TranslationError("input_audio needs data (base64) and format", param=f"{where}.input_audio")
            fmt = audio.get("format") or "wav"
            parts.append({"inlineData": {"mimeType": f"audio/{fmt}", "data": audio["data"]}})
        elif kind == "file":
            file = part.get("file")
            if not isinstance(file, dict) or not isinstance(file.get("file_data"), str):
                raise TranslationError("only files given inline (file_data) reach gemini", f"{where}.file")
            parts.append(_media(file["file_data"], f"{where}.file.file_data"))
        else:
            raise TranslationError(f"content part type {kind!r} is not supported for gemini", param=where)
    return parts


def _media(url: object, param: str) -> dict:
    """A data: URL → inlineData; any other URL → fileData (Gemini fetches it)."""
    if not isinstance(url, str) or not url:
        raise TranslationError("a URL is required", param=param)
    if url.startswith("data:"):
        head, sep, data = url[5:].partition(",")
        mime, _, encoding = head.partition(";")
        if not sep or encoding != "base64" or not mime:
            raise TranslationError("a data URL must look like data:<mime type>;base64,<data>", param=param)
        return {"inlineData": {"mimeType": mime, "data": data}}
    file: dict = {"fileUri": url}
    guessed = mimetypes.guess_type(url.split("?", 1)[0])[0]
    if guessed:
        file["mimeType"] = guessed
    return {"fileData": file}


def _assistant_parts(msg: dict, where: str, names: dict[str, str]) -> list[dict]:
    content = msg.get("content")
    parts: list[dict] = []
    if isinstance(content, str):
        if content:
            parts.append({"text": content})
    elif isinstance(content, list):
        for j, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") not in ("text", "refusal"):
                raise TranslationError("assistant content parts must be text", param=f"{where}.content[{j}]")
            text = part.get("text") or part.get("refusal") or ""
            if text:
                parts.append({"text": text})
    elif content is not None:
        raise TranslationError("content must be a string or a list of parts", param=f"{where}.content")
    calls = msg.get("tool_calls") or ()
    if not isinstance(calls, list | tuple):
        raise TranslationError("tool_calls must be a list", param=f"{where}.tool_calls")
    if not calls and isinstance(msg.get("function_call"), dict):
        calls = ({"function": msg["function_call"]},)  # the legacy single call
    for k, call in enumerate(calls):
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise TranslationError("a tool call needs function.name", param=f"{where}.tool_calls[{k}]")
        if isinstance(call.get("id"), str):
            names[call["id"]] = fn["name"]
        part: dict = {"functionCall": {"name": fn["name"], "args": parse_arguments(fn.get("arguments"))}}
        signature = _signature(call)
        if signature:
            part["thoughtSignature"] = signature
        parts.append(part)
    return parts


def _signature(call: dict) -> str | None:
    extra = call.get("extra_content")
    google = extra.get("google") if isinstance(extra, dict) else None
    found = google.get("thought_signature") if isinstance(google, dict) else None
    return found if isinstance(found, str) else None


def _function_response(msg: dict, where: str, names: dict[str, str]) -> dict:
    call_id = msg.get("tool_call_id")
    name = names.get(call_id) if isinstance(call_id, str) else None
    name = name or msg.get("name")
    if not isinstance(name, str) or not name:
        raise TranslationError(
            "a tool message must answer a tool call of an earlier assistant message (gemini needs the "
            "function's name): no call with this tool_call_id",
            param=f"{where}.tool_call_id",
        )
    text = _text_only(msg.get("content"), f"{where}.content")
    # Gemini wants an object: "output" is the key its docs name for a function's output.
    parsed = parse_arguments(text) if text.startswith("{") else None
    return {"functionResponse": {"name": name, "response": parsed or {"output": text}}}


def _generation_config(req: dict) -> dict:
    config: dict = {}
    for ours, theirs in (("temperature", "temperature"), ("top_p", "topP"), ("seed", "seed"),
                         ("presence_penalty", "presencePenalty"), ("frequency_penalty", "frequencyPenalty")):
        if req.get(ours) is not None:
            config[theirs] = req[ours]
    limit = req.get("max_completion_tokens")
    if limit is None:
        limit = req.get("max_tokens")
    if limit is not None:
        config["maxOutputTokens"] = limit
    stop = req.get("stop")
    if stop:
        stop = [stop] if isinstance(stop, str) else stop
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
            raise TranslationError("stop must be a string or a list of strings", param="stop")
        config["stopSequences"] = stop
    n = req.get("n")
    if n is not None and n != 1:
        config["candidateCount"] = n
    fmt = req.get("response_format")
    if isinstance(fmt, dict):
        kind = fmt.get("type")
        if kind == "json_object":
            config["responseMimeType"] = "application/json"
        elif kind == "json_schema":
            config["responseMimeType"] = "application/json"
            spec = fmt.get("json_schema")
            schema = spec.get("schema") if isinstance(spec, dict) else None
            if isinstance(schema, dict):
                config["responseJsonSchema"] = schema
        elif kind not in (None, "text"):
            raise TranslationError(f"response_format type {kind!r} is not supported for gemini", "response_format.type")
    return config


def _declaration(tool: object, param: str) -> dict:
    if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(tool.get("function"), dict):
        raise TranslationError("only function tools can be translated for gemini", param=f"{param}.type")
    fn = tool["function"]
    out: dict = {"name": fn.get("name")}
    if fn.get("description"):
        out["description"] = fn["description"]
    if fn.get("parameters"):
        out["parametersJsonSchema"] = fn["parameters"]
    return out


def _calling_config(choice: object) -> dict:
    if choice == "none":
        return {"mode": "NONE"}
    if choice == "auto":
        return {"mode": "AUTO"}
    if choice == "required":
        return {"mode": "ANY"}
    if isinstance(choice, dict) and choice.get("type") == "function" and isinstance(choice.get("function"), dict):
        name = choice["function"].get("name")
        if isinstance(name, str) and name:
            return {"mode": "ANY", "allowedFunctionNames": [name]}
    raise TranslationError("tool_choice must be none, auto, required or a named function", param="tool_choice")


# --- response --------------------------------------------------------------------------------


def new_call_id() -> str:
    # generateContent seldom gives function calls an id; OpenAI clients need one per call.
    return "call_" + uuid.uuid4().hex[:24]


def tool_call_of(part: dict) -> dict | None:
    """An OpenAI tool call for a ``functionCall`` part (its signature kept), else None."""
    call = part.get("functionCall")
    if not isinstance(call, dict):
        return None
    out: dict = {
        "id": call.get("id") or new_call_id(),
        "type": "function",
        "function": {"name": call.get("name") or "", "arguments": dumps_str(call.get("args") or {})},
    }
    signature = part.get("thoughtSignature")
    if isinstance(signature, str):
        out["extra_content"] = {"google": {"thought_signature": signature}}
    return out


def finish_reason_of(reason: str | None, has_calls: bool) -> str:
    """OpenAI finish_reason for a candidate: a function call ends the turn as tool_calls
    (Gemini says STOP then)."""
    if has_calls and reason in (None, "STOP"):
        return "tool_calls"
    return _FINISH.get(reason or "", "stop")


def usage_of(meta: dict | None) -> dict:
    """usageMetadata → OpenAI usage. Thinking tokens are output tokens (billed as such), as
    OpenAI counts reasoning tokens in completion_tokens."""
    meta = meta or {}
    prompt = meta.get("promptTokenCount") or 0
    thoughts = meta.get("thoughtsTokenCount") or 0
    completion = (meta.get("candidatesTokenCount") or 0) + thoughts
    out: dict = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": meta.get("totalTokenCount") or prompt + completion,
    }
    cached = meta.get("cachedContentTokenCount")
    if cached:
        out["prompt_tokens_details"] = {"cached_tokens": cached}
    if thoughts:
        out["completion_tokens_details"] = {"reasoning_tokens": thoughts}
    return out


def gemini_response_to_chat(resp: dict, model: str, created: int | None = None) -> dict:
    """GenerateContentResponse → chat.completion. Thought-summary parts are left out; a
    prompt blocked before any candidate is one empty choice with finish_reason content_filter."""
    choices = []
    for position, candidate in enumerate(resp.get("candidates") or ()):
        texts: list[str] = []
        calls: list[dict] = []
        for part in (candidate.get("content") or {}).get("parts") or ():
            if not isinstance(part, dict) or part.get("thought"):
                continue
            call = tool_call_of(part)
            if call is not None:
                calls.append(call)
            elif isinstance(part.get("text"), str):
                texts.append(part["text"])
        message: dict = {"role": "assistant", "content": "".join(texts) if texts else None, "refusal": None}
        if calls:
            message["tool_calls"] = calls
        choices.append({
            "index": candidate.get("index", position),
            "message": message,
            "logprobs": None,
            "finish_reason": finish_reason_of(candidate.get("finishReason"), bool(calls)),
        })
    if not choices:
        message = {"role": "assistant", "content": None, "refusal": None}
        choices.append({"index": 0, "message": message, "logprobs": None, "finish_reason": "content_filter"})
    return {
        "id": "chatcmpl-" + (resp.get("responseId") or uuid.uuid4().hex),
        "object": "chat.completion",
        "created": int(time.time()) if created is None else created,
        "model": resp.get("modelVersion") or model,
        "choices": choices,
        "usage": usage_of(resp.get("usageMetadata")),
    }
