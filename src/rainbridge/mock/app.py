"""From request to reply: routing, auth, fault controls, and running deferred replies.

`MockApp.handle` is synchronous and returns either a finished `Reply` (the
fast path) or a coroutine function the connection runs as a task (waits,
streams, hangs, cuts).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from functools import partial
from typing import Any
from urllib.parse import parse_qs, parse_qsl, unquote

import orjson

from . import anthropic_api, bedrock_api, cohere_api, entra_api, gemini_api, openai_api
from .controls import NO_CONTROLS, ControlError, Controls, key_status, parse_controls
from .errors import (
    ANTHROPIC,
    AZURE,
    BEDROCK,
    COHERE,
    ENTRA,
    GEMINI,
    OPENAI,
    VERTEX,
    ApiError,
    error_body,
    mock_failure,
)
from .google_oauth import GoogleOAuth
from .http import Deferred, HttpConnection
from .reply import Call, Reply, Request
from .stats import MockStats


@dataclass(slots=True, frozen=True)
class Route:
    family: str
    # chat, completions, embeddings, messages, count_tokens, models, model,
    # generate, stream_generate, embed, batch_embed
    endpoint: str
    methods: tuple[str, ...]
    param: str | None = None  # Azure deployment, or model id (Gemini: the model in the path)


_EXACT = {
    "/v1/chat/completions": Route(OPENAI, "chat", ("POST",)),
    "/chat/completions": Route(OPENAI, "chat", ("POST",)),  # Perplexity's path (no /v1)
    "/v1/completions": Route(OPENAI, "completions", ("POST",)),
    "/v1/embeddings": Route(OPENAI, "embeddings", ("POST",)),
    "/v1/models": Route(OPENAI, "models", ("GET",)),
    "/v1/messages": Route(ANTHROPIC, "messages", ("POST",)),
    "/v1/messages/count_tokens": Route(ANTHROPIC, "count_tokens", ("POST",)),
    "/openai/models": Route(AZURE, "models", ("GET",)),
    "/v1beta/models": Route(GEMINI, "models", ("GET",)),
    "/v2/chat": Route(COHERE, "cohere_chat", ("POST",)),
    "/v2/embed": Route(COHERE, "cohere_embed", ("POST",)),
}
_GEMINI_METHODS = {
    "generateContent": "generate",
    "streamGenerateContent": "stream_generate",
    "embedContent": "embed",
    "batchEmbedContents": "batch_embed",
}
_VERTEX_METHODS = {
    ("google", "generateContent"): "generate",
    ("google", "streamGenerateContent"): "stream_generate",
    ("anthropic", "rawPredict"): "raw_predict",
    ("anthropic", "streamRawPredict"): "raw_predict",
}
_BEDROCK_ACTIONS = {"converse": "converse", "converse-stream": "converse_stream"}
_AZURE_OPS = {"chat/completions": "chat", "completions": "completions", "embeddings": "embeddings"}
_POST_HANDLERS = {
    "chat": openai_api.chat,
    "completions": openai_api.completions,
    "embeddings": openai_api.embeddings,
    "messages": anthropic_api.messages,
    "count_tokens": anthropic_api.count_tokens,
    "generate": gemini_api.generate,
    "embed": gemini_api.embed,
    "batch_embed": gemini_api.batch_embed,
    "cohere_chat": cohere_api.chat,
    "cohere_embed": cohere_api.embed,
    "converse": bedrock_api.converse,
}


def route(path: str, headers: dict[str, str]) -> Route | None:
    """Which endpoint a path names; /v1/models answers in Anthropic's shape to Anthropic clients."""
    found = _EXACT.get(path)
    if found is None:
        if _gemini_v1(path):  # Gemini's v1: /v1/models/{model}:{method}
            model, _, method = unquote(path[len("/v1/models/") :]).rpartition(":")
            found = Route(GEMINI, _GEMINI_METHODS[method], ("POST",), model)
        elif path.startswith("/v1/projects/"):
            found = _vertex_route(path)
        elif path.startswith("/model/"):
            model_id, _, action = path[len("/model/"):].partition("/")
            if model_id and action in _BEDROCK_ACTIONS:
                found = Route(BEDROCK, _BEDROCK_ACTIONS[action], ("POST",), unquote(model_id))
        elif path.startswith("/v1/models/") and len(path) > len("/v1/models/"):
            found = Route(OPENAI, "model", ("GET",), unquote(path[len("/v1/models/") :]))
        elif path.startswith("/openai/deployments/"):
            deployment, _, op = path[len("/openai/deployments/") :].partition("/")
            if deployment and op in _AZURE_OPS:
                found = Route(AZURE, _AZURE_OPS[op], ("POST",), unquote(deployment))
        elif path.endswith(ENTRA_TOKEN_PATH) and path.count("/") == ENTRA_TOKEN_PATH.count("/") + 1:
            found = Route(ENTRA, "entra_token", ("POST",), unquote(path[1 : -len(ENTRA_TOKEN_PATH)]))
        elif path.startswith("/v1beta/models/"):
            model, colon, method = unquote(path[len("/v1beta/models/") :]).rpartition(":")
            if colon and model and method in _GEMINI_METHODS:
                found = Route(GEMINI, _GEMINI_METHODS[method], ("POST",), model)
            elif not colon and method:
                found = Route(GEMINI, "model", ("GET",), method)
    if found is not None and found.family == OPENAI and found.endpoint.startswith("model"):
        if "anthropic-version" in headers:
            found = Route(ANTHROPIC, found.endpoint, found.methods, found.param)
    return found


ENTRA_TOKEN_PATH = "/oauth2/v2.0/token"


def _vertex_route(path: str) -> Route | None:
    """``/v1/projects/{p}/locations/{l}/publishers/{publisher}/models/{model}:{method}``"""
    parts = path.split("/")
    if len(parts) != 10 or parts[4] != "locations" or parts[6] != "publishers" or parts[8] != "models":
        return None
    model, colon, method = unquote(parts[9]).rpartition(":")
    endpoint = _VERTEX_METHODS.get((parts[7], method))
    if not colon or not model or endpoint is None:
        return None
    return Route(VERTEX, endpoint, ("POST",), model)


def _gemini_v1(path: str) -> bool:
    if not path.startswith("/v1/models/"):
        return False
    model, colon, method = path[len("/v1/models/") :].rpartition(":")
    return bool(colon and model) and method in _GEMINI_METHODS


def guess_family(path: str, headers: dict[str, str]) -> str:
    """The API family an unknown path most likely belongs to, for the 404's shape."""
    if path.startswith("/v2/"):
        return COHERE
    if path.endswith(ENTRA_TOKEN_PATH):
        return ENTRA
    if path.startswith("/openai/"):
        return AZURE
    if path.startswith("/v1beta/") or "x-goog-api-key" in headers or _gemini_v1(path):
        return GEMINI
    if path.startswith("/v1/projects/"):
        return VERTEX
    if path.startswith("/model/") or "x-amz-date" in headers:
        return BEDROCK
    if path.startswith("/v1/messages") or "anthropic-version" in headers or "x-api-key" in headers:
        return ANTHROPIC
    return OPENAI


_KEY_HEADERS = {ANTHROPIC: "x-api-key", AZURE: "api-key"}


def api_key(family: str, headers: dict[str, str], query: str = "") -> str | None:
    """The caller's key: the family's own header, else `Authorization: Bearer` (OpenAI, Azure
    and Anthropic accept it); Gemini takes `x-goog-api-key` or `?key=` (Bearer is OAuth there)."""
    if family == GEMINI:
        return headers.get("x-goog-api-key") or (parse_qs(query).get("key") or [None])[0]
    own = _KEY_HEADERS.get(family)
    if own is not None and headers.get(own):
        return headers[own]
    auth = headers.get("authorization")
    if auth and auth[:7].lower() == "bearer ":
        return auth[7:].strip() or None
    return None


class MockApp:
    def __init__(self, stats: MockStats) -> None:
        self.stats = stats
        self.google = GoogleOAuth()
        self.stopping = False  # set by MockProvider.stop so its own closes are not disconnects
        self._seq = 0
        self._entra_tokens: dict[str, float] = {}  # access token -> expiry (monotonic seconds)

    def disconnected(self) -> None:
        if not self.stopping:
            self.stats.disconnects += 1

    def handle(self, request: Request) -> Reply | Deferred:
        path = request.path
        if path.startswith("/mock/"):
            return self._introspect(request)
        if path == "/token":  # Google's OAuth2 token endpoint
            return self.google.token(request)
        found = route(path, request.headers)
        family = found.family if found is not None else guess_family(path, request.headers)

        body: Any = None
        if request.body and family == ENTRA:  # a form, as OAuth 2.0 token requests are
            body = dict(parse_qsl(request.body.decode("utf-8", "replace")))
        elif request.body:
            try:
                body = orjson.loads(request.body)
            except orjson.JSONDecodeError:
                body = None
        control_error = None
        try:
            controls = parse_controls(request.mock_headers, body)
        except ControlError as exc:
            controls, control_error = NO_CONTROLS, exc
        auth_error = None
        if family == BEDROCK:
            try:
                key = bedrock_api.caller(request)
            except ApiError as err:
                key, auth_error = None, err
        elif family == VERTEX:
            key = self.google.holder(request.headers.get("authorization"))
        else:
            key = api_key(family, request.headers, request.query)
        mock_id = controls.mock_id
        if mock_id is None and controls.fail_first is not None:
            mock_id = ""  # fail-first without a mock-id shares one anonymous counter
        seen = self.stats.record(
            request.method, path, request.query, request.headers, body, key, mock_id
        )

        try:
            if auth_error is not None:
                raise auth_error
            reply = self._answer(request, found, family, body, key, controls, control_error, seen)
        except ApiError as err:
            if family in (GEMINI, VERTEX) and err.status == 429 and err.details is None:
                err.details = [_retry_info(controls.retry_after or "1")]
            if family == BEDROCK:
                headers = bedrock_api.error_headers(err)
            else:
                headers = _error_headers(err, controls) if family not in (GEMINI, VERTEX) else []
            if err.status == 405 and found is not None:
                headers.append(("allow", ", ".join(found.methods)))
            reply = Reply(err.status, error_body(family, err), headers=headers)
        if controls.deferred or reply.stream is not None:
            return partial(self._deferred, reply, controls)
        return reply

    def _answer(
        self,
        request: Request,
        found: Route | None,
        family: str,
        body: Any,
        key: str | None,
        controls: Controls,
        control_error: ControlError | None,
        seen: int,
    ) -> Reply:
        method, path = request.method, request.path
        if found is None:
            raise _not_found(family, method, path)
        if method not in found.methods:
            raise ApiError(
                405, f"Invalid method for URL ({method} {path})", type="invalid_request_error"
            )
        if family == ENTRA:
            return self._entra_token(body if isinstance(body, dict) else {})
        if key is None:
            raise _missing_key(family)
        if family == AZURE and key.startswith("mock-entra-token-") and self._entra_tokens.get(key, 0) <= time.monotonic():
            raise ApiError(401, "Unauthorized. Access token is missing, invalid, audience is incorrect "
                           "(https://cognitiveservices.azure.com), or have expired.", code="401")
        if family == ANTHROPIC and "anthropic-version" not in request.headers:
            raise ApiError(400, "anthropic-version: header is required")
        if family == AZURE and "api-version" not in parse_qs(request.query):
            raise ApiError(
                400,
                "The api-version query parameter (?api-version=) is required for all requests.",
                code="MissingApiVersionParameter",
            )
        if control_error is not None:
            raise ApiError(400, str(control_error), param=control_error.param)
        status = key_status(key)
        if status is not None:
            raise _key_failure(family, status, key)
        if controls.fail_first is not None:
            if seen <= controls.fail_first:
                raise mock_failure(
                    controls.fail_status or 500, f"fail-first {seen}/{controls.fail_first}"
                )
        elif controls.fail_status is not None:
            raise mock_failure(controls.fail_status, "fail-status")

        if found.endpoint == "models":
            if family == OPENAI and "endpoint" in parse_qs(request.query):
                # Cohere's GET /v1/models shares OpenAI's path; its endpoint filter tells it apart.
                return cohere_api.list_models()
            return _MODEL_APIS.get(family, openai_api).list_models()
        if found.endpoint == "model":
            return _MODEL_APIS.get(family, openai_api).get_model(found.param or "")
        if not isinstance(body, dict):
            raise _bad_body(family, request.body)
        self._seq += 1
        call = Call(family, body, controls, self._seq, int(time.time()), found.param)
        if found.endpoint == "stream_generate":
            return gemini_api.generate(call, stream=True, sse=parse_qs(request.query).get("alt") == ["sse"])
        if found.endpoint == "converse_stream":
            return bedrock_api.converse(call, stream=True)
        if found.endpoint == "raw_predict":
            return anthropic_api.messages(_vertex_claude_call(call))
        return _POST_HANDLERS[found.endpoint](call)

    def _entra_token(self, form: dict) -> Reply:
        self._seq += 1
        reply, token, lifetime = entra_api.token(form, self._seq)
        now = time.monotonic()
        self._entra_tokens = {t: e for t, e in self._entra_tokens.items() if e > now}  # bounded by live tokens
        self._entra_tokens[token] = now + lifetime
        return reply

    async def _deferred(self, reply: Reply, controls: Controls, conn: HttpConnection) -> None:
        stats = self.stats
        stats.active += 1
        try:
            if controls.hang:
                await asyncio.get_running_loop().create_future()  # until the client leaves
            if controls.latency_ms:
                await asyncio.sleep(controls.latency_ms / 1000)
            if reply.stream is not None and reply.status == 200:
                await self._stream(reply, controls, conn)
            elif controls.cut_after is not None:
                conn.abort()  # a plain request with cut-after: the connection drops unanswered
            else:
                conn.send(reply.status, reply.body, reply.headers)
        finally:
            stats.active -= 1

    async def _stream(self, reply: Reply, controls: Controls, conn: HttpConnection) -> None:
        stats = self.stats
        stream = reply.stream
        assert stream is not None
        conn.start_stream(reply.status, reply.headers, stream.content_type)
        stats.streams_started += 1
        for frame in stream.head:
            conn.send_frame(frame)
        # Both limits fire at the end of the content if it is shorter than K, so a
        # stream with cut-after / error-after never completes normally.
        cut, error = controls.cut_after, controls.error_after
        delay = controls.chunk_delay_ms / 1000
        sent = 0
        for frame in stream.content:
            if sent == cut or sent == error:
                break
            if delay and sent:
                await asyncio.sleep(delay)
            conn.send_frame(frame)
            sent += 1
            if conn.write_paused:
                await conn.drain()
        if cut is not None and (error is None or cut <= error):
            stats.streams_cut += 1
            conn.abort()
            return
        if error is not None:
            conn.send_frame(stream.error)
            conn.end_stream()
            stats.streams_errored += 1
            return
        for frame in stream.tail:
            conn.send_frame(frame)
        conn.end_stream()
        stats.streams_completed += 1

    def _introspect(self, request: Request) -> Reply:
        if request.path == "/mock/stats":
            if request.method != "GET":
                return Reply(405, b'{"error":"use GET"}', headers=[("allow", "GET")])
            return Reply(body=orjson.dumps(self.stats.snapshot()))
        if request.path == "/mock/google/service-accounts":
            return self.google.register(request)
        if request.path == "/mock/google/grants":
            return Reply(body=orjson.dumps(self.google.grants))
        if request.path == "/mock/reset":
            if request.method != "POST":
                return Reply(405, b'{"error":"use POST"}', headers=[("allow", "POST")])
            self.reset()
            return Reply(body=b'{"ok":true}')
        return Reply(404, b'{"error":"unknown /mock endpoint; try /mock/stats or /mock/reset"}')

    def reset(self) -> None:
        self.stats.reset()
        self._seq = 0
        self._entra_tokens.clear()


_MODEL_APIS: dict[str, Any] = {ANTHROPIC: anthropic_api, GEMINI: gemini_api}


def _vertex_claude_call(call: Call) -> Call:
    """Claude on Vertex (rawPredict): a Messages body without ``model`` (it is in the URL) and
    with ``anthropic_version: vertex-2023-10-16`` instead of the header."""
    body = dict(call.body)
    if body.pop("anthropic_version", None) != "vertex-2023-10-16":
        raise ApiError(400, "anthropic_version: Input should be 'vertex-2023-10-16'")
    if "model" in body:
        raise ApiError(400, "model: Extra inputs are not permitted")
    body["model"] = call.deployment
    return Call(ANTHROPIC, body, call.controls, call.seq, call.created, call.deployment)


def _retry_info(delay: str) -> dict:
    """google.rpc.RetryInfo: how Gemini says when to come back (it sends no retry-after header)."""
    seconds = delay if delay.endswith("s") else delay + "s"
    return {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": seconds}


def _error_headers(err: ApiError, controls: Controls) -> list[tuple[str, str]]:
    retry_after = controls.retry_after
    if retry_after is None and err.status == 429:
        retry_after = "1"
    return [("retry-after", retry_after)] if retry_after is not None else []


def _not_found(family: str, method: str, path: str) -> ApiError:
    if family == BEDROCK:
        return ApiError(404, "The requested resource could not be found.", type="UnknownOperationException")
    if family in (GEMINI, VERTEX):
        return ApiError(404, f"Method not found: {method} {path}")
    if family == ANTHROPIC:
        return ApiError(404, "Not Found")
    if family == AZURE:
        return ApiError(404, "Resource not found")
    return ApiError(404, f"Invalid URL ({method} {path})", type="invalid_request_error")


def _missing_key(family: str) -> ApiError:
    if family == VERTEX:
        return ApiError(401, "Request had invalid authentication credentials. Expected OAuth 2 access token, login "
                        "cookie or other valid authentication credential.")
    if family == GEMINI:
        return ApiError(
            403,
            "Method doesn't allow unregistered callers (callers without established identity). "
            "Please use API Key or other form of API consumer identity to call this API.",
        )
    if family == ANTHROPIC:
        return ApiError(401, "x-api-key header is required")
    if family == COHERE:
        return ApiError(401, "no api key supplied")
    if family == AZURE:
        return ApiError(
            401,
            "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a "
            "valid key for an active subscription and use a correct regional API endpoint for your resource.",
        )
    return ApiError(
        401,
        "You didn't provide an API key. You need to provide your API key in an Authorization header "
        "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
        type="invalid_request_error",
    )


def _key_failure(family: str, status: int, key: str) -> ApiError:
    if status != 401:
        return mock_failure(status, "api key")
    if family == GEMINI:
        info = {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID",
                "domain": "googleapis.com", "metadata": {"service": "generativelanguage.googleapis.com"}}
        return ApiError(400, "API key not valid. Please pass a valid API key.", details=[info])
    if family == ANTHROPIC:
        return ApiError(401, "invalid x-api-key")
    if family == COHERE:
        return ApiError(401, "invalid api token")
    masked = key[:6] + "*" * 4 + key[-4:] if len(key) > 10 else "****"
    return ApiError(
        401,
        f"Incorrect API key provided: {masked}.",
        code="invalid_api_key",
        type="invalid_request_error",
    )


def _bad_body(family: str, raw: bytes) -> ApiError:
    if family == BEDROCK:
        return ApiError(400, "Malformed input request, please reformat your input and try again.")
    if family in (GEMINI, VERTEX):
        return ApiError(400, "Invalid JSON payload received. Expected an object.")
    if family == ANTHROPIC:
        return ApiError(
            400, "Request body must be a JSON object" if raw else "Request body is required"
        )
    if family == COHERE:
        return ApiError(400, "invalid request: body must be a JSON object")
    return ApiError(
        400,
        "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your "
        "HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON.)",
        type="invalid_request_error",
    )
