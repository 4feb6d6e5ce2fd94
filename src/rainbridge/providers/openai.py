"""OpenAI and every OpenAI-compatible provider (vLLM, Ollama, Groq, Mistral, OpenRouter …).

Bodies pass through untouched apart from ``model``: fields we do not know reach the
provider as the client sent them, and the provider's answer reaches the client as bytes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import orjson

from .base import Call, ProviderKey, Reply, StreamError, UpstreamStream, iter_sse, network_error
from .http import HttpAdapter


class OpenAIAdapter(HttpAdapter):
    family = "openai"
    native_messages = False

    def key_headers(self, key: ProviderKey) -> dict[str, str]:
        headers = {"Content-Type": "application/json", **self.network.extra_headers}
        if key.value:
            headers["Authorization"] = f"Bearer {key.value}"
        return headers

    def url(self, op: str, key: ProviderKey, model: str) -> str:
        return f"{self.base_url}/v1/{op}"

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
        reply = await self.get(f"{self.base_url}/v1/models", key.headers, key)
        data = reply.data.get("data") or []
        return [m["id"] for m in data if isinstance(m, dict) and isinstance(m.get("id"), str)]

    async def _send(self, op: str, call: Call) -> Reply:
        key = call.key
        url = self.url(op, key, call.body.get("model", ""))
        return await self.post(url, orjson.dumps(call.body), self.headers_for(key, call.extra_headers), key)

    async def _stream(self, op: str, call: Call) -> UpstreamStream:
        key = call.key
        url = self.url(op, key, call.body.get("model", ""))
        resp = await self.open(url, orjson.dumps(call.body), self.headers_for(key, call.extra_headers), key)
        return UpstreamStream(self._payloads(resp), resp.close)

    async def _payloads(self, resp: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
        """The JSON payload of each SSE event, up to ``[DONE]``."""
        try:
            async for _event, data in iter_sse(resp.content):
                if data == b"[DONE]":
                    return
                yield data
        except (TimeoutError, aiohttp.ClientError) as exc:
            idle = self.network.stream_idle_timeout_in_seconds
            raise StreamError(str(network_error(self.name, exc, idle))) from exc
