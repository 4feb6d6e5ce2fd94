"""Amazon Bedrock's Converse API (bedrock-runtime), as its API reference documents it.

| request | answer |
|---|---|
| `POST /model/{modelId}/converse` | a ConverseResponse (JSON) |
| `POST /model/{modelId}/converse-stream` | `application/vnd.amazon.eventstream` binary messages |

Request: `messages: [{role: "user"|"assistant", content: [ContentBlock]}]` (required; starts
with a user message and alternates), `system: [{text}]`, `inferenceConfig: {maxTokens,
temperature, topP, stopSequences}`, `toolConfig: {tools: [{toolSpec: {name, description,
inputSchema: {json}}}], toolChoice: {auto: {}} | {any: {}} | {tool: {name}}}`,
`additionalModelRequestFields`, `guardrailConfig` … A ContentBlock is one of `text`, `image
{format, source: {bytes}}`, `document`, `toolUse {toolUseId, name, input}`, `toolResult
{toolUseId, content: [{text}|{json}], status}`, `reasoningContent`, `cachePoint`. toolUse and
toolResult blocks need a toolConfig, and each toolResult must answer a toolUse of the turn before.

Response: `{output: {message: {role: "assistant", content}}, stopReason: end_turn | tool_use |
max_tokens | stop_sequence | guardrail_intervened | content_filtered, usage: {inputTokens,
outputTokens, totalTokens}, metrics: {latencyMs}}`. The stream sends the events `messageStart
{role}`, `contentBlockStart {start: {toolUse: {toolUseId, name}}, contentBlockIndex}` (tool
use only), `contentBlockDelta {delta: {text} | {toolUse: {input}}, contentBlockIndex}` (one per
token; tool input in fragments of a JSON string), `contentBlockStop`, `messageStop
{stopReason}`, `metadata {usage, metrics}`; each a message with the headers `:message-type:
event`, `:event-type`, `:content-type: application/json`. The error-after control sends an
exception message (`:message-type: exception`, `:exception-type: modelStreamErrorException`).

Auth: SigV4 (`Authorization: AWS4-HMAC-SHA256 Credential=…, SignedHeaders=…, Signature=…`,
`X-Amz-Date`, `X-Amz-Security-Token` for temporary credentials), checked by recomputing the
signature with botocore from the received request; the fake's secret for an access key id is
`mock_secret_key(access_key_id)`, and `ASIA…` (temporary) ids need a session token. Or a Bedrock
API key: `Authorization: Bearer …`. Errors: `{"message"}` with the exception in the
`x-amzn-ErrorType` header: ValidationException 400, AccessDeniedException 403,
UnrecognizedClientException 403, InvalidSignatureException 403, ResourceNotFoundException 404,
ThrottlingException 429, InternalServerException 500, ServiceUnavailableException 503.
"""

from __future__ import annotations

import datetime
import hmac
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import orjson

from ..eventstream import encode_message
from . import synth
from .errors import ApiError
from .reply import Call, Reply, Request, Stream

EVENT_STREAM = "application/vnd.amazon.eventstream"
MAX_CLOCK_SKEW = datetime.timedelta(minutes=15)  # AWS refuses a signature older or newer than this

_EXCEPTIONS = {
    400: "ValidationException", 401: "UnrecognizedClientException", 403: "AccessDeniedException",
    404: "ResourceNotFoundException", 408: "ModelTimeoutException", 424: "ModelErrorException",
    429: "ThrottlingException", 500: "InternalServerException", 503: "ServiceUnavailableException",
}
_REQUEST_FIELDS = frozenset({
    "messages", "system", "inferenceConfig", "toolConfig", "guardrailConfig", "additionalModelRequestFields",
    "promptVariables", "additionalModelResponseFieldPaths", "requestMetadata", "performanceConfig", "mock",
})
_INFERENCE_FIELDS = frozenset({"maxTokens", "temperature", "topP", "stopSequences"})
_BLOCK_FIELDS = frozenset({
    "text", "image", "document", "video", "toolUse", "toolResult", "guardContent", "reasoningContent", "cachePoint",
    "citationsContent",
})


def exception_name(status: int) -> str:
    return _EXCEPTIONS.get(status, "InternalServerException" if status >= 500 else "ValidationException")


def error_headers(err: ApiError) -> list[tuple[str, str]]:
    name = err.type or exception_name(err.status)
    return [("x-amzn-ErrorType", f"{name}:http://internal.amazon.com/coral/com.amazon.bedrock/")]


def error_body(err: ApiError) -> bytes:
    return orjson.dumps({"message": err.message})


# --- authentication -----------------------------------------------------------------------------


def mock_secret_key(access_key_id: str) -> str:
    """The secret access key the fake provider pairs with an access key id (test credentials)."""
    return f"mock-secret-{access_key_id}"


def caller(request: Request) -> str:
    """The access key id (SigV4) or API key (Bearer) the request is made with; ApiError if the
    signature does not verify."""
    auth = request.headers.get("authorization") or ""
    if auth[:7].lower() == "bearer ":
        token = auth[7:].strip()
        if token:
            return token
    if not auth.startswith("AWS4-HMAC-SHA256 "):
        raise ApiError(403, "Missing Authentication Token", type="MissingAuthenticationTokenException")
    fields = dict(part.strip().partition("=")[::2] for part in auth[len("AWS4-HMAC-SHA256 "):].split(","))
    scope = fields.get("Credential", "").split("/")
    signed = fields.get("SignedHeaders", "").split(";")
    signature = fields.get("Signature", "")
    if len(scope) != 5 or scope[4] != "aws4_request" or not signature:
        raise ApiError(403, "Authorization header requires 'Credential', 'Signature' and 'SignedHeaders' parameters.",
                       type="IncompleteSignatureException")
    access_key, day, region, service, _ = scope
    if service != "bedrock":
        raise ApiError(403, f"Credential should be scoped to correct service: 'bedrock'. (got {service!r})",
                       type="InvalidSignatureException")
    if "host" not in signed or "x-amz-date" not in signed:
        raise ApiError(403, "'Host' and 'X-Amz-Date' must be signed headers.", type="IncompleteSignatureException")
    stamp = request.headers.get("x-amz-date", "")
    try:
        when = datetime.datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.UTC)
    except ValueError:
        raise ApiError(403, "X-Amz-Date is missing or not in the form YYYYMMDDTHHMMSSZ", type="IncompleteSignatureException") from None
    if abs(datetime.datetime.now(datetime.UTC) - when) > MAX_CLOCK_SKEW or day != stamp[:8]:
        raise ApiError(403, "Signature expired or not yet current: the request time is more than 15 minutes off.",
                       type="InvalidSignatureException")
    token = request.headers.get("x-amz-security-token")
    if access_key.startswith("ASIA") and not token:
        raise ApiError(403, "The security token included in the request is invalid.", type="UnrecognizedClientException")
    expected = _signature(request, access_key, region, stamp, signed, token)
    if not hmac.compare_digest(expected, signature):
        raise ApiError(403, "The request signature we calculated does not match the signature you provided. Check your "
                       "AWS Secret Access Key and signing method. Consult the service documentation for details.",
                       type="InvalidSignatureException")
    return access_key


def _signature(request: Request, access_key: str, region: str, stamp: str, signed: list[str], token: str | None) -> str:
    """The signature botocore computes for the request as received, over its signed headers."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    missing = [name for name in signed if name not in request.headers]
    if missing:
        raise ApiError(403, f"Signed header {missing[0]!r} is not in the request.", type="IncompleteSignatureException")
    url = f"http://{request.headers['host']}{request.path}" + (f"?{request.query}" if request.query else "")
    aws = AWSRequest(method=request.method, url=url, data=request.body, headers={n: request.headers[n] for n in signed})
    aws.context["timestamp"] = stamp
    auth = SigV4Auth(Credentials(access_key, mock_secret_key(access_key), token), "bedrock", region)
    return auth.signature(auth.string_to_sign(aws, auth.canonical_request(aws)), aws)


# --- Converse ----------------------------------------------------------------------------------------


def converse(call: Call, stream: bool = False) -> Reply:
    body = call.body
    model = call.deployment or ""
    for name in body:
        if name not in _REQUEST_FIELDS:
            raise _invalid(f"Malformed input request: extraneous key [{name}] is not permitted, please reformat your input and try again.")
    messages = _messages(body)
    config = body.get("inferenceConfig") or {}
    if not isinstance(config, dict) or any(k not in _INFERENCE_FIELDS for k in config):
        raise _invalid("inferenceConfig: only maxTokens, temperature, topP and stopSequences are allowed")
    tools, choice = _tool_config(body.get("toolConfig"), messages)
    prompt = _prompt_tokens(body, messages, tools)
    tool = _chosen_tool(tools, choice, messages)
    if tool is not None:
        name, arguments = tool
        use_id = f"tooluse_mock{call.seq:012d}"
        fragments = synth.argument_fragments(orjson.dumps(arguments).decode())
        usage = _usage(prompt, len(fragments))
        if stream:
            start = {"start": {"toolUse": {"toolUseId": use_id, "name": name}}, "contentBlockIndex": 0}
            deltas = ({"delta": {"toolUse": {"input": f}}, "contentBlockIndex": 0} for f in fragments)
            return Reply(stream=_stream(start, deltas, "tool_use", usage))
        block = {"toolUse": {"toolUseId": use_id, "name": name, "input": arguments}}
        return _whole(block, "tool_use", usage)

    result = _tool_result_text(messages[-1])
    echo = result if result is not None else _last_user_text(messages)
    words = synth.fit_words(synth.answer_words(model, echo, tool_result=result is not None), call.controls.stream_chunks)
    stop = "end_turn"
    limit = config.get("maxTokens")
    if isinstance(limit, int) and not isinstance(limit, bool):
        if limit < 1:
            raise _invalid("The maximum tokens you requested exceeds the model limit or is below 1.")
        if len(words) > limit:
            words, stop = words[:limit], "max_tokens"
    usage = _usage(prompt, len(words))
    if stream:
        deltas = ({"delta": {"text": t}, "contentBlockIndex": 0} for t in synth.stream_tokens(words))
        return Reply(stream=_stream(None, deltas, stop, usage))
    return _whole({"text": " ".join(words)}, stop, usage)


def _whole(block: dict, stop: str, usage: dict) -> Reply:
    doc = {"output": {"message": {"role": "assistant", "content": [block]}}, "stopReason": stop,
           "usage": usage, "metrics": {"latencyMs": 1}}
    return Reply(body=orjson.dumps(doc))


def event_frame(kind: str, doc: dict) -> bytes:
    headers = {":event-type": kind, ":content-type": "application/json", ":message-type": "event"}
    return encode_message(headers, orjson.dumps(doc))


def exception_frame(kind: str, message: str) -> bytes:
    headers = {":exception-type": kind, ":content-type": "application/json", ":message-type": "exception"}
    return encode_message(headers, orjson.dumps({"message": message}))


def _stream(start: dict | None, deltas: Iterator[dict], stop: str, usage: dict) -> Stream:
    head = [event_frame("messageStart", {"role": "assistant"})]
    if start is not None:
        head.append(event_frame("contentBlockStart", start))

    def content() -> Iterator[bytes]:
        for delta in deltas:
            yield event_frame("contentBlockDelta", delta)

    tail = [
        event_frame("contentBlockStop", {"contentBlockIndex": 0}),
        event_frame("messageStop", {"stopReason": stop}),
        event_frame("metadata", {"usage": usage, "metrics": {"latencyMs": 1}}),
    ]
    error = exception_frame("modelStreamErrorException", "The model stream failed. Try your request again.")
    return Stream(head, content(), tail, error, content_type=EVENT_STREAM)


def _usage(prompt: int, completion: int) -> dict:
    return {"inputTokens": prompt, "outputTokens": completion, "totalTokens": prompt + completion}


# --- validation ------------------------------------------------------------------------------------


def _messages(body: dict) -> list[dict]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _invalid("The messages field is required and must hold at least one message.")
    previous = None
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            raise _invalid(f"messages.{i}.role: the role must be user or assistant")
        if i == 0 and message["role"] != "user":
            raise _invalid("A conversation must start with a user message. Try again with a conversation that starts with a user message.")
        if message["role"] == previous:
            raise _invalid("A conversation must alternate between user and assistant roles. Make sure the conversation "
                           "alternates between user and assistant roles and try again.")
        previous = message["role"]
        content = message.get("content")
        if not isinstance(content, list) or not content:
            raise _invalid(f"messages.{i}.content: the content must be a non-empty list of content blocks")
        for j, block in enumerate(content):
            if not isinstance(block, dict) or len(block) != 1 or next(iter(block)) not in _BLOCK_FIELDS:
                raise _invalid(f"messages.{i}.content.{j}: a content block holds exactly one of {', '.join(sorted(_BLOCK_FIELDS))}")
    return messages


def _tool_config(config: Any, messages: list[dict]) -> tuple[list[dict], dict]:
    uses_tools = any("toolUse" in b or "toolResult" in b for m in messages for b in m["content"])
    if config is None:
        if uses_tools:
            raise _invalid("The toolConfig field must be defined when using toolUse and toolResult content blocks.")
        return [], {}
    if not isinstance(config, dict) or not isinstance(config.get("tools"), list) or not config["tools"]:
        raise _invalid("toolConfig.tools: at least one tool is required")
    specs = []
    for i, tool in enumerate(config["tools"]):
        spec = tool.get("toolSpec") if isinstance(tool, dict) else None
        schema = (spec or {}).get("inputSchema")
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str) or not isinstance(schema, dict) or "json" not in schema:
            raise _invalid(f"toolConfig.tools.{i}.toolSpec: name and inputSchema.json are required")
        specs.append(spec)
    choice = config.get("toolChoice") or {"auto": {}}
    if not isinstance(choice, dict) or len(choice) != 1 or next(iter(choice)) not in ("auto", "any", "tool"):
        raise _invalid("toolConfig.toolChoice: exactly one of auto, any, tool")
    _check_results(messages)
    return specs, choice


def _check_results(messages: list[dict]) -> None:
    """Each toolResult answers a toolUse of the assistant turn right before it."""
    for i, message in enumerate(messages):
        results = [b["toolResult"] for b in message["content"] if "toolResult" in b]
        if not results:
            continue
        before = messages[i - 1]["content"] if i else []
        ids = {b["toolUse"].get("toolUseId") for b in before if isinstance(b.get("toolUse"), dict)}
        for result in results:
            if not isinstance(result, dict) or result.get("toolUseId") not in ids:
                raise _invalid(f"The number of toolResult blocks at messages.{i}.content exceeds the number of toolUse "
                               "blocks of previous turn.")


def _chosen_tool(tools: list[dict], choice: dict, messages: list[dict]) -> tuple[str, dict] | None:
    last = messages[-1]
    if not tools or last["role"] != "user" or _tool_result_text(last) is not None:
        return None
    chosen = tools[0]
    if "tool" in choice:
        name = (choice["tool"] or {}).get("name")
        chosen = next((t for t in tools if t["name"] == name), None)
        if chosen is None:
            raise _invalid(f"toolConfig.toolChoice.tool.name: no tool named {name!r}")
    return chosen["name"], synth.sample_arguments(chosen["inputSchema"]["json"])


def _tool_result_text(message: dict) -> str | None:
    results = [b["toolResult"] for b in message["content"] if isinstance(b.get("toolResult"), dict)]
    if message["role"] != "user" or not results:
        return None
    texts = []
    for result in results:
        for part in result.get("content") or ():
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                texts.append(part["text"])
            elif isinstance(part, dict) and "json" in part:
                texts.append(orjson.dumps(part["json"]).decode())
    return " ".join(texts)


def _last_user_text(messages: list[dict]) -> str:
    for message in reversed(messages):
        if message["role"] == "user":
            return " ".join(b["text"] for b in message["content"] if isinstance(b.get("text"), str))
    return ""


def _prompt_tokens(body: dict, messages: list[dict], tools: list[dict]) -> int:
    system = " ".join(b.get("text", "") for b in body.get("system") or () if isinstance(b, dict))
    total = synth.REQUEST_OVERHEAD + synth.count_tokens(system)
    for message in messages:
        texts = [b["text"] for b in message["content"] if isinstance(b.get("text"), str)]
        total += synth.MESSAGE_OVERHEAD + synth.count_tokens(" ".join(texts))
    if tools:
        total += len(orjson.dumps(tools)) // 4
    return total


def model_path(model_id: str, action: str) -> str:
    return f"/model/{quote(model_id, safe='')}/{action}"


def _invalid(message: str) -> ApiError:
    return ApiError(400, message, type="ValidationException")
