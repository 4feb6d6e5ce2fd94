"""Anthropic's native Messages API upstream (``x-api-key``, ``anthropic-version``).

Anthropic clients (``/anthropic/v1/messages``) pass through natively; OpenAI chat requests
are translated to Messages and the answer (or stream) back to Chat Completions.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import orjson

from ..errors import InvalidRequest
from ..translate import (
    MessagesStreamToChat,
    TranslationError,
    UpstreamStreamError,
    chat_request_to_messages,
    message_response_to_chat,
)
from .base import (
    Call,
    ProviderKey,
    Reply,
    StreamError,
    UnsupportedOperation,
    UpstreamStream,
    iter_sse,
    network_error,
)
from .http import HttpAdapter

ANTHROPIC_VERSION = "2023-06-01"
# Client headers a native Messages request may carry on to Anthropic.
PASS_HEADERS = ("anthropic-version", "anthropic-beta")


class AnthropicAdapter(HttpAdapter):
    family = "anthropic"
    native_messages = True

    def key_headers(self, key: ProviderKey) -> dict[str, str]:
        headers = {
            "Content-Type": "application/json",
            "anthropic-version": ANTHROPIC_VERSION,
            **self.network.extra_headers,
        }
        if key.value:
            headers["x-api-key"] = key.value
        return headers

    @property
    def messages_url(self) -> str:
        return f"{self.base_url}/v1/messages"

    # -- native Messages ----------------------------------------------------------------

    def _native_headers(self, call: Call) -> dict[str, str]:
        extra = dict(call.extra_headers or {})
        raw = call.raw_headers or {}
        for name in PASS_HEADERS:
            if name in raw:
                extra[name] = raw[name]
        return self.headers_for(call.key, extra)

    async def messages(self, call: Call) -> Reply:
        return await self.post(self.messages_url, orjson.dumps(call.body), self._native_headers(call), call.key)

    async def messages_stream(self, call: Call) -> UpstreamStream:
        resp = await self.open(self.messages_url, orjson.dumps(call.body), self._native_headers(call), call.key)
        return UpstreamStream(self._events(resp), resp.close)

    async def _events(self, resp: aiohttp.ClientResponse) -> AsyncIterator[tuple[bytes, bytes]]:
        try:
            async for event, data in iter_sse(resp.content):
                yield event, data
        except (TimeoutError, aiohttp.ClientError) as exc:
            idle = self.network.stream_idle_timeout_in_seconds
            raise StreamError(str(network_error(self.name, exc, idle))) from exc

    # -- OpenAI chat, translated -----------------------------------------------------------

    def _to_messages(self, body: dict) -> dict:
        try:
            return chat_request_to_messages(body)
        except TranslationError as exc:
            raise InvalidRequest(str(exc), param=exc.param, code="unsupported_parameter") from None

    async def chat(self, call: Call) -> Reply:
        body = self._to_messages(call.body)
        reply = await self.post(self.messages_url, orjson.dumps(body), self.headers_for(call.key, call.extra_headers), call.key)
        data = message_response_to_chat(reply.data)
        return Reply(orjson.dumps(data), data)

    async def chat_stream(self, call: Call) -> UpstreamStream:
        body = self._to_messages(call.body)
        body["stream"] = True
        options = call.body.get("stream_options")
        include_usage = bool(isinstance(options, dict) and options.get("include_usage"))
        translator = MessagesStreamToChat(model=call.body.get("model"), include_usage=include_usage)
        headers = self.headers_for(call.key, call.extra_headers)
        resp = await self.open(self.messages_url, orjson.dumps(body), headers, call.key)
        return UpstreamStream(self._chat_chunks(resp, translator), resp.close)

    async def _chat_chunks(self, resp: aiohttp.ClientResponse, translator: MessagesStreamToChat) -> AsyncIterator[bytes]:
        async for event, data in self._events(resp):
            try:
                parsed = orjson.loads(data)
            except orjson.JSONDecodeError:
                raise StreamError(f"{self.name}: malformed stream event") from None
            event_type = event.decode() if event else parsed.get("type", "")
            try:
                chunks = translator.feed(event_type, parsed)
            except UpstreamStreamError as exc:
                raise StreamError(f"{self.name}: {exc.message}", exc.type) from None
            for chunk in chunks:
                yield orjson.dumps(chunk)

    async def completions(self, call: Call) -> Reply:
        raise UnsupportedOperation(f"provider {self.name} (anthropic) does not support /v1/completions; use chat completions", param="model")

    completions_stream = completions

    async def embeddings(self, call: Call) -> Reply:
        raise UnsupportedOperation(f"provider {self.name} (anthropic) does not support embeddings", param="model")

    async def list_models(self, key: ProviderKey) -> list[str]:
        reply = await self.get(f"{self.base_url}/v1/models", key.headers, key)
        data = reply.data.get("data") or []
        return [m["id"] for m in data if isinstance(m, dict) and isinstance(m.get("id"), str)]
