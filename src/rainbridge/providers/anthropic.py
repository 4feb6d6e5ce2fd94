"""Anthropic's native Messages API upstream (``x-api-key``, ``anthropic-version``).

Anthropic clients (``/anthropic/v1/messages``) pass through natively; OpenAI chat requests
are translated to Messages and the answer (or stream) back to Chat Completions.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson

from ..errors import InvalidRequest
from ..translate import (
    MessagesStreamToChat,
    TranslationError,
    UpstreamStreamError,
    chat_request_to_messages,
    message_response_to_chat,
)
from ..upstream import Exchange
from .base import (
    Call,
    ProviderKey,
    Reply,
    StreamError,
    UnsupportedOperation,
    UpstreamStream,
    scrub,
    stream_error_event,
)
from .http import HttpAdapter

ANTHROPIC_VERSION = "2023-06-01"


class AnthropicAdapter(HttpAdapter):
    family = "anthropic"
    native_messages = True

    def key_headers(self, key: ProviderKey) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "anthropic-version": ANTHROPIC_VERSION, **self.network.extra_headers}
        if key.value:
            headers["x-api-key"] = key.value
        return headers

    @property
    def messages_path(self) -> str:
        return f"{self.base_path}/v1/messages"

    # -- native Messages ----------------------------------------------------------------

    def _native_extra(self, call: Call) -> dict[str, str] | None:
        """The client's anthropic-version / anthropic-beta replace ours on a native request."""
        if not call.raw_headers:
            return call.extra_headers
        return {**(call.extra_headers or {}), **call.raw_headers}

    async def messages(self, call: Call) -> Reply:
        return await self.post(self.base_url, self.messages_path, orjson.dumps(call.body), call.key, self._native_extra(call))

    async def messages_stream(self, call: Call) -> UpstreamStream:
        exchange = await self.open_stream(self.base_url, self.messages_path, orjson.dumps(call.body), call.key, self._native_extra(call))
        return self.stream_of(self._native_events(exchange, call.key), exchange)

    async def _native_events(self, exchange: Exchange, key: ProviderKey) -> AsyncIterator[tuple[bytes, bytes]]:
        """The upstream's events as they are, but an error event ends the stream as a
        StreamError (its message scrubbed of the key; the route writes it as ``event: error``)."""
        async for event, data in self.events(exchange):
            if b'"error"' in data and (error := stream_error_event(self.name, data, key)) is not None:
                raise error
            yield event, data

    # -- OpenAI chat, translated -----------------------------------------------------------

    def _to_messages(self, body: dict) -> dict:
        try:
            return chat_request_to_messages(body)
        except TranslationError as exc:
            raise InvalidRequest(str(exc), param=exc.param, code="unsupported_parameter") from None

    async def chat(self, call: Call) -> Reply:
        body = self._to_messages(call.body)
        reply = await self.post(self.base_url, self.messages_path, orjson.dumps(body), call.key, call.extra_headers)
        data = message_response_to_chat(reply.data)
        return Reply(orjson.dumps(data), data)

    async def chat_stream(self, call: Call) -> UpstreamStream:
        body = self._to_messages(call.body)
        body["stream"] = True
        options = call.body.get("stream_options")
        include_usage = bool(isinstance(options, dict) and options.get("include_usage"))
        translator = MessagesStreamToChat(model=call.body.get("model"), include_usage=include_usage)
        exchange = await self.open_stream(self.base_url, self.messages_path, orjson.dumps(body), call.key, call.extra_headers)
        return self.stream_of(self._chat_chunks(exchange, translator, call.key), exchange)

    async def _chat_chunks(self, exchange: Exchange, translator: MessagesStreamToChat, key: ProviderKey) -> AsyncIterator[bytes]:
        async for event, data in self.events(exchange):
            try:
                parsed = orjson.loads(data)
            except orjson.JSONDecodeError:
                raise StreamError(f"{self.name}: malformed stream event") from None
            event_type = event.decode() if event else parsed.get("type", "")
            try:
                chunks = translator.feed(event_type, parsed)
            except UpstreamStreamError as exc:
                raise StreamError(f"{self.name}: {scrub(exc.message, key)}", exc.type) from None
            for chunk in chunks:
                yield orjson.dumps(chunk)

    async def completions(self, call: Call) -> Reply:
        raise UnsupportedOperation(f"provider {self.name} (anthropic) does not support /v1/completions; use chat completions", param="model")

    completions_stream = completions

    async def embeddings(self, call: Call) -> Reply:
        raise UnsupportedOperation(f"provider {self.name} (anthropic) does not support embeddings", param="model")

    async def list_models(self, key: ProviderKey) -> list[str]:
        data = (await self.get(self.base_url, f"{self.base_path}/v1/models", key)).data.get("data") or []
        return [m["id"] for m in data if isinstance(m, dict) and isinstance(m.get("id"), str)]
