"""Google's Gemini API (Generative Language API, v1beta), as its REST reference documents it.

| request | answer |
|---|---|
| `POST /v1beta/models/{model}:generateContent` | a GenerateContentResponse |
| `POST /v1beta/models/{model}:streamGenerateContent?alt=sse` | `data: {GenerateContentResponse}` events (CRLF-separated, as Google sends them); without `alt=sse` one JSON array of them |
| `POST /v1beta/models/{model}:embedContent`, `:batchEmbedContents` | `{"embedding": {"values"}}`, `{"embeddings": [{"values"}]}` |
| `GET /v1beta/models`, `GET /v1beta/models/{model}` | `{"models": [Model]}`, a Model |

Request (GenerateContentRequest): `contents: [{role: "user"|"model", parts: [Part]}]` (required),
`systemInstruction: {parts}`, `generationConfig` (camelCase: `temperature`, `topP`, `topK`,
`maxOutputTokens`, `stopSequences`, `candidateCount`, `responseMimeType`, `responseJsonSchema`
…), `tools: [{functionDeclarations: [{name, description, parameters | parametersJsonSchema}]}]`,
`toolConfig: {functionCallingConfig: {mode: AUTO|ANY|NONE|VALIDATED, allowedFunctionNames}}`,
`safetySettings`, `cachedContent`. A Part is one of `text`, `inlineData {mimeType, data}`,
`fileData {mimeType, fileUri}`, `functionCall {name, args}`, `functionResponse {name, response}`
(+ `thought`, `thoughtSignature`). Unknown fields are refused as Google refuses them:
400 `Invalid JSON payload received. Unknown name "x" at 'generation_config': Cannot find field.`

Response: `{candidates: [{content: {role: "model", parts}, finishReason: "STOP"|"MAX_TOKENS"|…,
index}], usageMetadata: {promptTokenCount, candidatesTokenCount, totalTokenCount}, modelVersion,
responseId}`. A stream sends one event per token (usage so far on each) and a last event with
an empty text part, the finishReason and the final usage. A function call (when `tools` are
given, the last turn is the user's and the mode is not NONE) comes whole in one part; finishReason
stays STOP, as Gemini answers. For `gemini-3*` models each call carries a `thoughtSignature`,
and a later request whose current turn holds a call without one is refused with 400, as Gemini 3
refuses it.

Auth: `x-goog-api-key` header or `?key=` (no Bearer: that is OAuth). No key: 403
PERMISSION_DENIED. A key with `status-401` in it: 400 INVALID_ARGUMENT "API key not valid"
with ErrorInfo reason `API_KEY_INVALID`, as Google answers a bad key. Errors:
`{"error": {"code", "message", "status"[, "details"]}}`; a 429 carries a google.rpc.RetryInfo
`retryDelay` (the `retry-after` control, default 1s) and no retry-after header. The
error-after control sends `data: {"error": {503 UNAVAILABLE}}`.
"""

from __future__ import annotations

from base64 import b64encode
from collections.abc import Iterator
from typing import Any

import orjson

from . import synth
from .errors import GEMINI, ApiError, error_object
from .reply import Call, Reply, Stream

MODELS = (
    ("gemini-2.5-flash", "Gemini 2.5 Flash", ("generateContent", "countTokens")),
    ("gemini-2.5-pro", "Gemini 2.5 Pro", ("generateContent", "countTokens")),
    ("gemini-2.0-flash", "Gemini 2.0 Flash", ("generateContent", "countTokens")),
    ("gemini-3-pro-preview", "Gemini 3 Pro Preview", ("generateContent", "countTokens")),
    ("gemini-embedding-001", "Gemini Embedding 001", ("embedContent",)),
    ("text-embedding-004", "Text Embedding 004", ("embedContent",)),
)

_REQUEST_FIELDS = frozenset({
    "contents", "systemInstruction", "generationConfig", "tools", "toolConfig", "safetySettings",
    "cachedContent", "model", "mock",
})
_CONFIG_FIELDS = frozenset({
    "stopSequences", "responseMimeType", "responseSchema", "responseJsonSchema", "responseModalities",
    "candidateCount", "maxOutputTokens", "temperature", "topP", "topK", "seed", "presencePenalty",
    "frequencyPenalty", "responseLogprobs", "logprobs", "enableEnhancedCivicAnswers", "speechConfig",
    "thinkingConfig", "imageConfig", "mediaResolution",
})
_PART_FIELDS = frozenset({
    "text", "inlineData", "fileData", "functionCall", "functionResponse", "executableCode",
    "codeExecutionResult", "thought", "thoughtSignature", "videoMetadata", "partMetadata",
})
_DECLARATION_FIELDS = frozenset({
    "name", "description", "parameters", "parametersJsonSchema", "response", "responseJsonSchema", "behavior",
})
_TOOL_FIELDS = frozenset({"functionDeclarations", "googleSearch", "googleSearchRetrieval", "codeExecution", "urlContext"})
_TOOL_CONFIG_FIELDS = frozenset({"functionCallingConfig", "retrievalConfig"})
_CALLING_FIELDS = frozenset({"mode", "allowedFunctionNames"})
_EMBED_FIELDS = frozenset({"model", "content", "taskType", "title", "outputDimensionality"})


def frame(doc: dict) -> bytes:
    return b"data: " + orjson.dumps(doc) + b"\r\n\r\n"


# --- generateContent ------------------------------------------------------------------------


def generate(call: Call, stream: bool = False, sse: bool = True) -> Reply:
    body = _normalized(call.body)
    model = call.deployment or ""
    _known(body, _REQUEST_FIELDS, "")
    contents = _contents(body)
    config = body.get("generationConfig") or {}
    if not isinstance(config, dict):
        raise _invalid("Invalid value at 'generation_config': expected an object")
    _known(config, _CONFIG_FIELDS, "generation_config")
    declarations = _declarations(body.get("tools"))
    if model.startswith("gemini-3"):
        _require_signatures(contents)
    n = config.get("candidateCount") or 1
    if not isinstance(n, int) or not 1 <= n <= 8:
        raise _invalid("Invalid value at 'generation_config.candidate_count': must be between 1 and 8")
    prompt = _prompt_tokens(body, contents, declarations)
    response_id = f"mockresp{call.seq:08d}"
    tool = _chosen_tool(body, declarations, contents)
    if tool is not None:
        name, arguments = tool
        part: dict = {"functionCall": {"name": name, "args": arguments}}
        if model.startswith("gemini-3"):
            part["thoughtSignature"] = b64encode(f"mock-signature-{call.seq:08d}".encode()).decode()
        completion = n * len(synth.argument_fragments(orjson.dumps(arguments).decode()))
        usage = _usage(prompt, completion)
        if stream:
            return _stream_reply([[part]], n, "STOP", model, response_id, prompt, usage, sse)
        return _whole(n, [part], "STOP", model, response_id, usage)

    last = contents[-1]
    result = _function_result(last)
    echo = result if result is not None else _last_user_text(contents)
    words = synth.answer_words(model, echo, tool_result=result is not None)
    words = synth.fit_words(words, call.controls.stream_chunks)
    finish = "STOP"
    limit = config.get("maxOutputTokens")
    if isinstance(limit, int) and not isinstance(limit, bool) and len(words) > limit:
        words, finish = words[:limit], "MAX_TOKENS"
    usage = _usage(prompt, n * len(words))
    if stream:
        tokens = [[{"text": t}] for t in synth.stream_tokens(words)]
        return _stream_reply(tokens, n, finish, model, response_id, prompt, usage, sse)
    return _whole(n, [{"text": " ".join(words)}], finish, model, response_id, usage)


def _candidate(index: int, parts: list[dict], finish: str | None) -> dict:
    candidate: dict = {"content": {"parts": parts, "role": "model"}, "index": index}
    if finish is not None:
        candidate["finishReason"] = finish
    return candidate


def _whole(n: int, parts: list[dict], finish: str, model: str, response_id: str, usage: dict) -> Reply:
    doc = {
        "candidates": [_candidate(i, parts, finish) for i in range(n)],
        "usageMetadata": usage,
        "modelVersion": model,
        "responseId": response_id,
    }
    return Reply(body=orjson.dumps(doc))


def _stream_reply(pieces: list[list[dict]], n: int, finish: str, model: str, response_id: str,
                  prompt: int, usage: dict, sse: bool) -> Reply:
    def event(parts: list[dict], finish_reason: str | None, meta: dict) -> dict:
        return {
            "candidates": [_candidate(i, parts, finish_reason) for i in range(n)],
            "usageMetadata": meta,
            "modelVersion": model,
            "responseId": response_id,
        }

    running = {"promptTokenCount": prompt, "totalTokenCount": prompt}
    last = event([{"text": ""}], finish, usage)
    if not sse:  # streamGenerateContent without alt=sse: one JSON array
        return Reply(body=orjson.dumps([*(event(p, None, running) for p in pieces), last]))

    def content() -> Iterator[bytes]:
        for parts in pieces:
            yield frame(event(parts, None, running))

    error = frame(error_object(GEMINI, ApiError(503, "The model is overloaded. Please try again later.")))
    return Reply(stream=Stream([], content(), [frame(last)], error))


def _usage(prompt: int, completion: int) -> dict:
    return {
        "promptTokenCount": prompt,
        "candidatesTokenCount": completion,
        "totalTokenCount": prompt + completion,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt}],
    }


def _prompt_tokens(body: dict, contents: list[dict], declarations: list[dict]) -> int:
    total = synth.REQUEST_OVERHEAD + synth.count_tokens(_parts_text((body.get("systemInstruction") or {}).get("parts")))
    for content in contents:
        total += synth.MESSAGE_OVERHEAD + synth.count_tokens(_parts_text(content["parts"]))
    if declarations:
        total += len(orjson.dumps(declarations)) // 4
    return total


def _parts_text(parts: Any) -> str:
    texts = []
    for part in parts or ():
        if isinstance(part, dict):
            if isinstance(part.get("text"), str):
                texts.append(part["text"])
            elif isinstance(part.get("functionResponse"), dict):
                texts.append(_response_text(part["functionResponse"].get("response")))
    return " ".join(texts)


def _response_text(response: Any) -> str:
    if isinstance(response, dict) and isinstance(response.get("output"), str):
        return response["output"]
    return orjson.dumps(response).decode()


def _function_result(content: dict) -> str | None:
    results = [p["functionResponse"] for p in content["parts"] if isinstance(p.get("functionResponse"), dict)]
    if content["role"] != "user" or not results:
        return None
    return " ".join(_response_text(r.get("response")) for r in results)


def _last_user_text(contents: list[dict]) -> str:
    for content in reversed(contents):
        if content["role"] == "user":
            return _parts_text(content["parts"])
    return ""


def _chosen_tool(body: dict, declarations: list[dict], contents: list[dict]) -> tuple[str, dict] | None:
    last = contents[-1]
    if not declarations or last["role"] != "user" or _function_result(last) is not None:
        return None
    calling = ((body.get("toolConfig") or {}).get("functionCallingConfig")) or {}
    mode = calling.get("mode") or "AUTO"
    if mode not in ("AUTO", "ANY", "NONE", "VALIDATED", "MODE_UNSPECIFIED"):
        raise _invalid(f"Invalid value at 'tool_config.function_calling_config.mode' ({mode!r})")
    if mode == "NONE":
        return None
    chosen = declarations[0]
    allowed = calling.get("allowedFunctionNames")
    if allowed:
        if mode not in ("ANY", "VALIDATED"):
            raise _invalid("allowed_function_names may only be set when the mode is ANY or VALIDATED")
        chosen = next((d for d in declarations if d["name"] in allowed), None)
        if chosen is None:
            raise _invalid("allowed_function_names names no function of the function declarations")
    schema = chosen.get("parametersJsonSchema") or chosen.get("parameters")
    return chosen["name"], synth.sample_arguments(_lower_types(schema))


def _lower_types(schema: Any) -> Any:
    """OpenAPI-style schemas (`parameters`) spell types in capitals ("STRING")."""
    if isinstance(schema, dict):
        return {k: (v.lower() if k == "type" and isinstance(v, str) else _lower_types(v)) for k, v in schema.items()}
    return schema


def _require_signatures(contents: list[dict]) -> None:
    """Gemini 3: every function call of the current turn (after the last user text) must come
    back with the thoughtSignature it was given."""
    start = 0
    for i, content in enumerate(contents):
        if content["role"] == "user" and any(isinstance(p.get("text"), str) for p in content["parts"]):
            start = i
    for content in contents[start:]:
        for position, part in enumerate(content["parts"]):
            if "functionCall" in part and not part.get("thoughtSignature"):
                name = part["functionCall"].get("name")
                raise _invalid(
                    "Function call is missing a thought_signature in functionCall parts. This is required for "
                    f"tools to work correctly. Additional data, function call `default_api:{name}`, position {position + 1}."
                )


# --- validation --------------------------------------------------------------------------------


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(word[:1].upper() + word[1:] for word in rest)


def _camel_keys(doc: Any, fields: frozenset[str]) -> Any:
    """Google's JSON parser takes a field by its proto name (snake_case) or its JSON name
    (lowerCamelCase), and its own SDK sends both: one level of keys, camelCased when that
    names a field (an unknown name stays as sent, for the error that names it)."""
    if not isinstance(doc, dict):
        return doc
    return {(_camel(k) if "_" in k and _camel(k) in fields else k): v for k, v in doc.items()}


def _normalized(body: dict) -> dict:
    """The request with every structural level's keys camelCased (user data left alone:
    function arguments, responses and schemas keep their keys)."""
    out = _camel_keys(body, _REQUEST_FIELDS)
    if isinstance(out.get("generationConfig"), dict):
        out["generationConfig"] = _camel_keys(out["generationConfig"], _CONFIG_FIELDS)
    for owner in (out.get("systemInstruction"), *(out.get("contents") or ())):
        if isinstance(owner, dict) and isinstance(owner.get("parts"), list):
            owner["parts"] = [_camel_keys(p, _PART_FIELDS) for p in owner["parts"]]
    if isinstance(out.get("tools"), list):
        out["tools"] = [_camel_keys(t, _TOOL_FIELDS) for t in out["tools"]]
        for tool in out["tools"]:
            if isinstance(tool, dict) and isinstance(tool.get("functionDeclarations"), list):
                tool["functionDeclarations"] = [_camel_keys(d, _DECLARATION_FIELDS) for d in tool["functionDeclarations"]]
    if isinstance(out.get("toolConfig"), dict):
        config = out["toolConfig"] = _camel_keys(out["toolConfig"], _TOOL_CONFIG_FIELDS)
        config["functionCallingConfig"] = _camel_keys(config.get("functionCallingConfig"), _CALLING_FIELDS)
    return out


def _known(doc: dict, fields: frozenset[str], where: str) -> None:
    for name in doc:
        if name not in fields:
            at = f" at '{where}'" if where else ""
            raise _invalid(f'Invalid JSON payload received. Unknown name "{name}"{at}: Cannot find field.')


def _contents(body: dict) -> list[dict]:
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        raise _invalid("* GenerateContentRequest.contents: contents is not specified")
    out = []
    for i, content in enumerate(contents):
        if not isinstance(content, dict):
            raise _invalid(f"Invalid value at 'contents[{i}]': expected an object")
        _known(content, frozenset({"role", "parts"}), f"contents[{i}]")
        role = content.get("role") or "user"  # a single-turn request may leave it out
        if role not in ("user", "model", "function"):
            raise _invalid(f"Please use a valid role: user, model. (contents[{i}].role = {role!r})")
        parts = content.get("parts")
        if not isinstance(parts, list) or not parts:
            raise _invalid(f"* GenerateContentRequest.contents[{i}].parts: contents.parts must not be empty.")
        for j, part in enumerate(parts):
            if not isinstance(part, dict):
                raise _invalid(f"Invalid value at 'contents[{i}].parts[{j}]': expected an object")
            _known(part, _PART_FIELDS, f"contents[{i}].parts[{j}]")
        out.append({"role": role, "parts": parts})
    return out


def _declarations(tools: Any) -> list[dict]:
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise _invalid("Invalid value at 'tools': expected a list")
    out = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict):
            raise _invalid(f"Invalid value at 'tools[{i}]': expected an object")
        for j, declaration in enumerate(tool.get("functionDeclarations") or ()):
            where = f"tools[{i}].function_declarations[{j}]"
            if not isinstance(declaration, dict) or not isinstance(declaration.get("name"), str):
                raise _invalid(f"* GenerateContentRequest.{where}.name: Name cannot be empty.")
            _known(declaration, _DECLARATION_FIELDS, where)
            if "parameters" in declaration and "parametersJsonSchema" in declaration:
                raise _invalid(f"* GenerateContentRequest.{where}: parameters and parameters_json_schema are mutually exclusive")
            out.append(declaration)
    return out


def _invalid(message: str) -> ApiError:
    return ApiError(400, message)


# --- embeddings -----------------------------------------------------------------------------------


def embed(call: Call) -> Reply:
    values = _embedding(call.deployment or "", _camel_keys(call.body, _EMBED_FIELDS))
    return Reply(body=orjson.dumps({"embedding": {"values": values}}))


def batch_embed(call: Call) -> Reply:
    requests = call.body.get("requests")
    if not isinstance(requests, list) or not requests:
        raise _invalid("* BatchEmbedContentsRequest.requests: requests is not specified")
    if len(requests) > 100:
        raise _invalid("* BatchEmbedContentsRequest.requests: at most 100 requests can be in one batch")
    model = call.deployment or ""
    out = []
    for i, request in enumerate(requests):
        if not isinstance(request, dict):
            raise _invalid(f"Invalid value at 'requests[{i}]': expected an object")
        if request.get("model") != f"models/{model}":
            raise _invalid(f"* BatchEmbedContentsRequest.requests[{i}].model: the model must be models/{model}")
        out.append({"values": _embedding(model, _camel_keys(request, _EMBED_FIELDS))})
    return Reply(body=orjson.dumps({"embeddings": out}))


def _embedding(model: str, request: dict) -> list[float]:
    content = request.get("content")
    if not isinstance(content, dict) or not isinstance(content.get("parts"), list) or not content["parts"]:
        raise _invalid("* EmbedContentRequest.content: content is not specified")
    text = _parts_text(content["parts"])
    dimensions = request.get("outputDimensionality") or (3072 if "gemini-embedding" in model else 768)
    if not isinstance(dimensions, int) or not 1 <= dimensions <= 3072:
        raise _invalid("* EmbedContentRequest.output_dimensionality: must be between 1 and 3072")
    return list(synth.embedding(f"{model}\0{text}".encode(), dimensions))


# --- models ------------------------------------------------------------------------------------------


def _model_object(model_id: str, display: str, methods: tuple[str, ...]) -> dict:
    return {
        "name": f"models/{model_id}",
        "version": "001",
        "displayName": display,
        "inputTokenLimit": 1048576,
        "outputTokenLimit": 65536,
        "supportedGenerationMethods": list(methods),
    }


def list_models() -> Reply:
    return Reply(body=orjson.dumps({"models": [_model_object(*m) for m in MODELS]}))


def get_model(model_id: str) -> Reply:
    for model in MODELS:
        if model[0] == model_id:
            return Reply(body=orjson.dumps(_model_object(*model)))
    raise ApiError(404, f"models/{model_id} is not found for API version v1beta, or is not supported for generateContent.")
