"""Google's Gemini API (Generative Language API, ``x-goog-api-key``).

OpenAI chat requests are translated to ``POST /v1beta/models/{model}:generateContent`` (and
``:streamGenerateContent?alt=sse``), embeddings to ``:batchEmbedContents``; the answers come
back as Chat Completions and embeddings. Anthropic clients reach Gemini through the router's
Messages → chat translation, as for every non-Anthropic provider.

Gemini's errors (``{"error": {"code", "message", "status"}}``) become the OpenAI shape with
Gemini's ``status`` as ``code``. A key Gemini calls invalid (400 ``API_KEY_INVALID``) is a 401,
so the router rotates to the next key as for any dead key; a 429's ``RetryInfo`` delay becomes
``retry-after`` when the response has no such header.
"""

from __future__ import annotations

import math
import re
import struct
from base64 import b64encode
from collections.abc import AsyncIterator
from urllib.parse import quote

import orjson

from ..errors import InvalidRequest, UpstreamError, UpstreamUnreachable
from ..translate import (
    GeminiStreamToChat,
    TranslationError,
    chat_request_to_gemini,
    gemini_response_to_chat,
)
from ..translate.anthropic_openai import openai_error_type
from ..upstream import Exchange
from .base import (
    MAX_MESSAGE,
    Call,
    ProviderKey,
    Reply,
    StreamError,
    UnsupportedOperation,
    UpstreamStream,
    scrub,
)
from .http import HttpAdapter

API_VERSION = "v1beta"
# Requests per batchEmbedContents call, as the API documents its limit.
MAX_EMBED_BATCH = 100
_DELAY = re.compile(r"^(\d+(?:\.\d+)?)s$")


class GeminiAdapter(HttpAdapter):
    family = "gemini"
    native_messages = False

    def key_headers(self, key: ProviderKey) -> dict[str, str]:
        headers = {"Content-Type": "application/json", **self.network.extra_headers}
        if key.value:
            headers["x-goog-api-key"] = key.value
        return headers

    def model_path(self, model: str, method: str) -> str:
        """``…/v1beta/models/{model}:{method}``; the name is one path segment, whatever it holds."""
        name = model[len("models/"):] if model.startswith("models/") else model
        return f"{self.base_path}/{API_VERSION}/models/{quote(name, safe='')}:{method}"

    # -- chat ---------------------------------------------------------------------------------

    def _to_gemini(self, body: dict) -> dict:
        try:
            return chat_request_to_gemini(body)
        except TranslationError as exc:
            raise InvalidRequest(str(exc), param=exc.param, code="unsupported_parameter") from None

    async def chat(self, call: Call) -> Reply:
        model = call.body.get("model") or ""
        body = self._to_gemini(call.body)
        reply = await self.post(self.base_url, self.model_path(model, "generateContent"), orjson.dumps(body),
                                call.key, call.extra_headers)
        try:
            data = gemini_response_to_chat(reply.data, model)
        except (AttributeError, TypeError, ValueError):  # not a GenerateContentResponse
            raise self._malformed() from None
        return Reply(orjson.dumps(data), data)

    async def chat_stream(self, call: Call) -> UpstreamStream:
        model = call.body.get("model") or ""
        body = self._to_gemini(call.body)
        options = call.body.get("stream_options")
        include_usage = bool(isinstance(options, dict) and options.get("include_usage"))
        translator = GeminiStreamToChat(model, include_usage)
        path = self.model_path(model, "streamGenerateContent") + "?alt=sse"
        exchange = await self.open_stream(self.base_url, path, orjson.dumps(body), call.key, call.extra_headers)
        return self.stream_of(self._chat_chunks(exchange, translator, call.key), exchange)

    async def _chat_chunks(self, exchange: Exchange, translator: GeminiStreamToChat, key: ProviderKey) -> AsyncIterator[bytes]:
        async for _event, data in self.events(exchange):
            try:
                parsed = orjson.loads(data)
            except orjson.JSONDecodeError:
                raise StreamError(f"{self.name}: malformed stream event") from None
            if not isinstance(parsed, dict):
                raise StreamError(f"{self.name}: malformed stream event")
            if "error" in parsed:
                message, status, _ = _error_fields(parsed, 500)
                raise StreamError(f"{self.name}: {scrub(message, key)}", openai_error_type(status))
            try:
                chunks = translator.feed(parsed)
            except (AttributeError, TypeError, ValueError):
                raise StreamError(f"{self.name}: malformed stream event") from None
            for chunk in chunks:
                yield orjson.dumps(chunk)
        if not translator.complete:
            raise StreamError(f"provider {self.name} ended the stream before the answer was complete")
        for chunk in translator.finish():
            yield orjson.dumps(chunk)

    # -- embeddings -----------------------------------------------------------------------------

    async def embeddings(self, call: Call) -> Reply:
        model = call.body.get("model") or ""
        texts = _embedding_texts(call.body.get("input"))
        dimensions = call.body.get("dimensions")
        resource = "models/" + (model[len("models/"):] if model.startswith("models/") else model)
        requests = []
        for text in texts:
            request: dict = {"model": resource, "content": {"parts": [{"text": text}]}}
            if dimensions is not None:
                request["outputDimensionality"] = dimensions
            requests.append(request)
        body = orjson.dumps({"requests": requests})
        reply = await self.post(self.base_url, self.model_path(model, "batchEmbedContents"), body,
                                call.key, call.extra_headers)
        base64 = call.body.get("encoding_format") == "base64"
        data = []
        try:
            for i, found in enumerate(reply.data.get("embeddings") or ()):
                values = found.get("values") or []
                vector = b64encode(struct.pack(f"<{len(values)}f", *values)).decode() if base64 else values
                data.append({"object": "embedding", "index": i, "embedding": vector})
        except (AttributeError, TypeError, ValueError, struct.error):  # not a BatchEmbedContentsResponse
            raise self._malformed() from None
        # Gemini's embedding answers carry no token count.
        out = {"object": "list", "data": data, "model": model, "usage": {"prompt_tokens": 0, "total_tokens": 0}}
        return Reply(orjson.dumps(out), out)

    # -- the rest ---------------------------------------------------------------------------

    async def completions(self, call: Call) -> Reply:
        raise UnsupportedOperation(f"provider {self.name} (gemini) does not support /v1/completions; use chat completions", param="model")

    completions_stream = completions

    async def list_models(self, key: ProviderKey) -> list[str]:
        reply = await self.get(self.base_url, f"{self.base_path}/{API_VERSION}/models?pageSize=1000", key)
        try:
            found = reply.data.get("models") or ()
        except (AttributeError, ValueError):
            raise self._malformed() from None
        names = (m.get("name") for m in (found if isinstance(found, list) else ()) if isinstance(m, dict))
        return [n[len("models/"):] if n.startswith("models/") else n for n in names if isinstance(n, str)]

    def _malformed(self) -> UpstreamUnreachable:
        return UpstreamUnreachable(f"provider {self.name} sent an answer that is not in Gemini's format",
                                   provider=self.name, code="upstream_protocol_error")

    def _refused(self, exchange: Exchange, data: bytes, key: ProviderKey) -> Exception:
        if exchange.status < 400:
            return super()._refused(exchange, data, key)
        try:
            parsed = orjson.loads(data)
        except orjson.JSONDecodeError:
            parsed = None
        if not isinstance(parsed, dict) or not isinstance(parsed.get("error"), dict):
            return super()._refused(exchange, data, key)
        message, _, code = _error_fields(parsed, exchange.status)
        status = exchange.status
        if _reason(parsed) == "API_KEY_INVALID":
            status = 401  # Gemini says 400; the key is dead and the next one may serve
        if len(message) > MAX_MESSAGE:
            message = message[:MAX_MESSAGE] + " …"
        return UpstreamError(
            f"{self.name}: {scrub(message, key)}",
            provider=self.name,
            status=status,
            type=openai_error_type(status),
            code=code,
            retry_after=exchange.retry_after or _retry_delay(parsed),
        )


def _error_fields(parsed: dict, status: int) -> tuple[str, int, str | None]:
    """(message, HTTP status, Gemini status name) of a Gemini error document."""
    err = parsed.get("error")
    if not isinstance(err, dict):
        return str(err), status, None
    code = err.get("code")
    name = err.get("status")
    return (str(err.get("message") or name or "no error message"),
            code if isinstance(code, int) and 400 <= code <= 599 else status,
            name if isinstance(name, str) else None)


def _details(parsed: dict) -> list[dict]:
    details = parsed["error"].get("details")
    return [d for d in details if isinstance(d, dict)] if isinstance(details, list) else []


def _reason(parsed: dict) -> str | None:
    """google.rpc.ErrorInfo's reason (``API_KEY_INVALID`` …), if the error has one."""
    for detail in _details(parsed):
        if str(detail.get("@type", "")).endswith("google.rpc.ErrorInfo"):
            return detail.get("reason")
    return None


def _retry_delay(parsed: dict) -> str | None:
    """google.rpc.RetryInfo's ``retryDelay`` ("37s", "0.5s") as whole seconds for retry-after."""
    for detail in _details(parsed):
        if str(detail.get("@type", "")).endswith("google.rpc.RetryInfo"):
            found = _DELAY.match(str(detail.get("retryDelay", "")))
            if found:
                return str(max(1, math.ceil(float(found.group(1)))))
    return None


def _embedding_texts(value: object) -> list[str]:
    texts = [value] if isinstance(value, str) else value
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise InvalidRequest("gemini embeds text: input must be a string or a list of strings", param="input",
                             code="unsupported_parameter")
    if len(texts) > MAX_EMBED_BATCH:
        raise InvalidRequest(f"gemini embeds at most {MAX_EMBED_BATCH} inputs per request", param="input",
                             code="too_many_inputs")
    return texts
