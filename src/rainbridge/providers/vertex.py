"""Google Vertex AI: Gemini models (``generateContent``) and Anthropic's Claude models
(``rawPredict``), with OAuth2 tokens from a service account.

``POST {base}/v1/projects/{project}/locations/{region}/publishers/google/models/{model}:generateContent``
(``:streamGenerateContent?alt=sse`` to stream) speaks the Gemini API's body format, so the
Gemini translation and error handling are reused. Models whose name starts with ``claude``
go to ``publishers/anthropic/models/{model}:rawPredict`` (``:streamRawPredict``) with an
Anthropic Messages body (no ``model``; ``anthropic_version: vertex-2023-10-16``), translated
with the Anthropic translation. Project, region and credentials come from each key's
``vertex_key_config``; the base URL is ``https://{region}-aiplatform.googleapis.com``
(``aiplatform.googleapis.com`` for ``global``) unless ``network_config.base_url`` is set.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from urllib.parse import quote

import orjson

from ..config.schema import VertexKeyConfig
from ..errors import InvalidRequest, UpstreamUnreachable
from ..translate import (
    GeminiStreamToChat,
    MessagesStreamToChat,
    TranslationError,
    UpstreamStreamError,
    chat_request_to_messages,
    gemini_response_to_chat,
    message_response_to_chat,
)
from ..upstream import Exchange, Origin
from .base import Call, ProviderKey, Reply, StreamError, UnsupportedOperation, UpstreamStream, scrub
from .gemini import GeminiAdapter
from .google_oauth import TokenSource

ANTHROPIC_VERSION = "vertex-2023-10-16"


class VertexAdapter(GeminiAdapter):
    family = "vertex"
    native_messages = False

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._tokens: dict[str, TokenSource] = {}  # key id → its token source

    def key_headers(self, key: ProviderKey) -> dict[str, str]:
        return {"Content-Type": "application/json", **self.network.extra_headers}

    # -- endpoints and tokens ----------------------------------------------------------------------

    @staticmethod
    def _config(key: ProviderKey) -> VertexKeyConfig:
        return key.vertex or VertexKeyConfig()  # type: ignore[return-value]

    def url_for(self, key: ProviderKey) -> str:
        if self.base_url:
            return self.base_url
        region = self._config(key).region
        return "https://aiplatform.googleapis.com" if region == "global" else f"https://{region}-aiplatform.googleapis.com"

    def vertex_path(self, key: ProviderKey, model: str, method: str) -> str:
        config = self._config(key)
        publisher = "anthropic" if is_claude(model) else "google"
        prefix = self.base_path if self.base_url else ""
        return (f"{prefix}/v1/projects/{quote(config.project_id, safe='')}/locations/{quote(config.region, safe='')}"
                f"/publishers/{publisher}/models/{quote(model, safe='')}:{method}")

    def tokens(self, key: ProviderKey) -> TokenSource:
        source = self._tokens.get(key.id)
        if source is None:
            source = self._tokens[key.id] = TokenSource(self.name, self._config(key).auth_credentials)
        return source

    async def request_head(self, origin: Origin, path: str, key: ProviderKey, body: bytes,
                           extra: dict[str, str] | None) -> bytes:
        token = await self.tokens(key).token()
        if not token.isascii() or not token.isprintable():
            raise UpstreamUnreachable(f"provider {self.name}: the token endpoint returned an unusable token",
                                      provider=self.name, code="token_refresh_failed")
        head = self.post_head(origin, path, key, len(body), extra)
        return head[:-2] + b"Authorization: Bearer " + token.encode() + b"\r\n\r\n"

    # -- chat ----------------------------------------------------------------------------------------

    async def chat(self, call: Call) -> Reply:
        model = call.body.get("model") or ""
        if is_claude(model):
            return await self._claude_chat(call, model)
        body = self._to_gemini(call.body)
        reply = await self.post(self.url_for(call.key), self.vertex_path(call.key, model, "generateContent"),
                                orjson.dumps(body), call.key, call.extra_headers)
        try:
            data = gemini_response_to_chat(reply.data, model)
        except (AttributeError, TypeError, ValueError):
            raise self._malformed() from None
        return Reply(orjson.dumps(data), data)

    async def chat_stream(self, call: Call) -> UpstreamStream:
        model = call.body.get("model") or ""
        options = call.body.get("stream_options")
        include_usage = bool(isinstance(options, dict) and options.get("include_usage"))
        if is_claude(model):
            return await self._claude_stream(call, model, include_usage)
        body = self._to_gemini(call.body)
        path = self.vertex_path(call.key, model, "streamGenerateContent") + "?alt=sse"
        exchange = await self.open_stream(self.url_for(call.key), path, orjson.dumps(body), call.key, call.extra_headers)
        return self.stream_of(self._chat_chunks(exchange, GeminiStreamToChat(model, include_usage), call.key), exchange)

    # -- Claude on Vertex ----------------------------------------------------------------------------

    def _to_raw_predict(self, body: dict) -> dict:
        try:
            out = chat_request_to_messages(body)
        except TranslationError as exc:
            raise InvalidRequest(str(exc), param=exc.param, code="unsupported_parameter") from None
        out.pop("model", None)  # the model is in the URL
        out["anthropic_version"] = ANTHROPIC_VERSION
        return out

    async def _claude_chat(self, call: Call, model: str) -> Reply:
        body = self._to_raw_predict(call.body)
        reply = await self.post(self.url_for(call.key), self.vertex_path(call.key, model, "rawPredict"),
                                orjson.dumps(body), call.key, call.extra_headers)
        try:
            data = message_response_to_chat(reply.data)
        except (AttributeError, TypeError, ValueError, KeyError):
            raise self._malformed() from None
        return Reply(orjson.dumps(data), data)

    async def _claude_stream(self, call: Call, model: str, include_usage: bool) -> UpstreamStream:
        body = self._to_raw_predict(call.body)
        body["stream"] = True
        translator = MessagesStreamToChat(model=model, include_usage=include_usage)
        exchange = await self.open_stream(self.url_for(call.key), self.vertex_path(call.key, model, "streamRawPredict"),
                                          orjson.dumps(body), call.key, call.extra_headers)
        return self.stream_of(self._claude_chunks(exchange, translator, call.key), exchange)

    async def _claude_chunks(self, exchange: Exchange, translator: MessagesStreamToChat, key: ProviderKey) -> AsyncIterator[bytes]:
        async for event, data in self.events(exchange):
            try:
                parsed = orjson.loads(data)
                event_type = event.decode() if event else parsed.get("type", "")
                chunks = translator.feed(event_type, parsed)
            except UpstreamStreamError as exc:
                raise StreamError(f"{self.name}: {scrub(exc.message, key)}", exc.type) from None
            except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
                raise StreamError(f"{self.name}: malformed stream event") from None
            for chunk in chunks:
                yield orjson.dumps(chunk)

    # -- the rest ----------------------------------------------------------------------------------

    async def completions(self, call: Call) -> Reply:
        raise UnsupportedOperation(f"provider {self.name} (vertex) does not support /v1/completions; use chat completions", param="model")

    completions_stream = completions

    async def embeddings(self, call: Call) -> Reply:
        raise UnsupportedOperation(f"provider {self.name} (vertex) does not support embeddings yet", param="model")

    async def list_models(self, key: ProviderKey) -> list[str]:
        return []  # Vertex's publisher model catalogue is not listed; keys name their models


def is_claude(model: str) -> bool:
    return model.startswith("claude")
