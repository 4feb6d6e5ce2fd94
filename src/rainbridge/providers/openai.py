"""OpenAI and every OpenAI-compatible provider (vLLM, Ollama, Groq, Mistral, OpenRouter …).

Bodies pass through untouched apart from ``model``: fields we do not know reach the
provider as the client sent them, and the provider's answer reaches the client as bytes.
Operations live at ``{base_url}/v1/{op}`` unless a preset's ``routes`` say otherwise
(Perplexity's chat is at ``/chat/completions``; an operation a vendor lacks is a 400).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import orjson

from ..upstream import Exchange
from .base import Call, ProviderKey, Reply, UnsupportedOperation, UpstreamStream, stream_error_event
from .http import HttpAdapter

_OPERATION_NAMES = {"chat/completions": "chat completions", "completions": "/v1/completions", "embeddings": "embeddings"}
# Bifrost's request type names (request_path_overrides) of each operation.
_REQUEST_TYPES = {"chat/completions": "chat_completion", "completions": "text_completion", "embeddings": "embedding",
                  "models": "list_models"}


class OpenAIAdapter(HttpAdapter):
    family = "openai"
    native_messages = False
    # op -> path under base_url where it is not /v1/{op}; None: the vendor has no such endpoint.
    routes: dict[str, str | None] = {}
    # Bifrost's custom_provider_config.request_path_overrides: request type -> path or URL.
    path_overrides: dict[str, str] = {}

    def key_headers(self, key: ProviderKey) -> dict[str, str]:
        headers = {"Content-Type": "application/json", **self.network.extra_headers}
        if key.value:
            headers["Authorization"] = f"Bearer {key.value}"
        return headers

    def target(self, op: str, key: ProviderKey, model: str) -> tuple[str, str]:
        """(origin URL, request path) of an operation."""
        if op in self.routes:
            path = self.routes[op]
            if path is None:
                what = _OPERATION_NAMES.get(op, op)
                raise UnsupportedOperation(f"provider {self.name} does not support {what}", param="model")
            return self.base_url, self.base_path + path
        return self.base_url, f"{self.base_path}/v1/{op}"

    def where(self, op: str, key: ProviderKey, model: str, stream: bool = False) -> tuple[str, str]:
        """``target``, unless a request path override names another path (under the base
        URL) or a whole URL for this request type (a stream: its *_stream entry first)."""
        if self.path_overrides:
            kind = _REQUEST_TYPES.get(op, "")
            raw = (self.path_overrides.get(kind + "_stream") if stream else None) or self.path_overrides.get(kind)
            override = raw.strip() if raw else ""
            if override:
                if "://" in override:
                    parts = urlsplit(override)
                    return override, parts.path + (f"?{parts.query}" if parts.query else "")
                return self.base_url, self.base_path + ("" if override.startswith("/") else "/") + override
        return self.target(op, key, model)

    async def chat(self, call: Call) -> Reply:
        return await self._send("chat/completions", call)

    async def completions(self, call: Call) -> Reply:
        return await self._send("completions", call)

    async def embeddings(self, call: Call) -> Reply:
        return await self._send("embeddings", call)

    async def chat_stream(self, call: Call) -> UpstreamStream:
        return await self._stream("chat/completions", call)

    async def completions_stream(self, call: Call) -> UpstreamStream:
        return await self._stream("completions", call)

    async def list_models(self, key: ProviderKey) -> list[str]:
        url, path = self.where("models", key, "")
        data = (await self.get(url, path, key)).data.get("data") or []
        return [m["id"] for m in data if isinstance(m, dict) and isinstance(m.get("id"), str)]

    def upstream_body(self, body: dict) -> dict:
        """The body as this vendor takes it (a preset may rename the model)."""
        return body

    async def _send(self, op: str, call: Call) -> Reply:
        url, path = self.where(op, call.key, call.body.get("model", ""))
        return await self.post(url, path, orjson.dumps(self.upstream_body(call.body)), call.key, call.extra_headers)

    async def _stream(self, op: str, call: Call) -> UpstreamStream:
        url, path = self.where(op, call.key, call.body.get("model", ""), stream=True)
        body = orjson.dumps(self.upstream_body(call.body))
        exchange = await self.open_stream(url, path, body, call.key, call.extra_headers)
        return self.stream_of(self._payloads(exchange, call.key), exchange)

    async def _payloads(self, exchange: Exchange, key: ProviderKey) -> AsyncIterator[bytes]:
        """The JSON payload of each SSE event, up to ``[DONE]``; an error event ends the
        stream as a StreamError (its message scrubbed of the key)."""
        async for _event, data in self.events(exchange):
            if data == b"[DONE]":
                return
            if b'"error"' in data and (error := stream_error_event(self.name, data, key)) is not None:
                raise error
            yield data
