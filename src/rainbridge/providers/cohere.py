"""Cohere's v2 API (``Authorization: Bearer``): chat at ``POST /v2/chat``, embeddings at
``POST /v2/embed``, models at ``GET /v1/models``.

OpenAI chat requests are translated to v2 chat (``stream: true`` for a stream of typed SSE
events) and the answers back to Chat Completions; embeddings to ``/v2/embed`` with
``embedding_types: ["float"]``. Anthropic clients reach Cohere through the router's Messages →
chat translation, as for every non-Anthropic provider.

Cohere's errors (``{"id", "message"}``) become the OpenAI shape. Its 498 ("invalid token") is
a 401, so the router rotates to the next key as for any dead key; a 429 is retried as for
every provider. A finish reason of ERROR or TIMEOUT is a failed generation: a 502 (retried
like any upstream failure), or an error event when it ends a stream.
"""

from __future__ import annotations

import struct
from base64 import b64encode
from collections.abc import AsyncIterator

import orjson

from ..errors import InvalidRequest, UpstreamError, UpstreamUnreachable
from ..translate import (
    CohereStreamToChat,
    TranslationError,
    chat_request_to_cohere,
    cohere_response_to_chat,
)
from ..translate.anthropic_openai import openai_error_type
from ..translate.cohere_openai import FAILED_FINISH
from ..upstream import Exchange
from .base import (
    MAX_MESSAGE,
    Call,
    ProviderKey,
    Reply,
    StreamError,
    UnsupportedOperation,
    UpstreamStream,
    error_message,
    scrub,
)
from .http import HttpAdapter

# Texts per /v2/embed call, as Cohere documents its limit.
MAX_EMBED_TEXTS = 96
# The input_type an OpenAI client cannot say: texts embedded to be searched (override it with
# an ``input_type`` field in the request body).
DEFAULT_INPUT_TYPE = "search_document"
INPUT_TYPES = frozenset({"search_document", "search_query", "classification", "clustering", "image"})
INVALID_TOKEN = 498  # Cohere's status for a key it does not know


class CohereAdapter(HttpAdapter):
    family = "cohere"
    native_messages = False

    def key_headers(self, key: ProviderKey) -> dict[str, str]:
        headers = {"Content-Type": "application/json", **self.network.extra_headers}
        if key.value:
            headers["Authorization"] = f"Bearer {key.value}"
        return headers

    # -- chat ---------------------------------------------------------------------------------

    def _to_cohere(self, body: dict, stream: bool) -> bytes:
        try:
            translated = chat_request_to_cohere(body, body.get("model") or "")
        except TranslationError as exc:
            raise InvalidRequest(str(exc), param=exc.param, code="unsupported_parameter") from None
        translated["stream"] = stream
        return orjson.dumps(translated)

    async def chat(self, call: Call) -> Reply:
        model = call.body.get("model") or ""
        reply = await self.post(self.base_url, f"{self.base_path}/v2/chat", self._to_cohere(call.body, False),
                                call.key, call.extra_headers)
        try:
            data = reply.data
        except ValueError:  # not JSON
            raise self._malformed() from None
        if not isinstance(data, dict) or not isinstance(data.get("message"), dict):
            raise self._malformed()
        if data.get("finish_reason") in FAILED_FINISH:
            raise self._failed(str(data["finish_reason"]))
        try:
            out = cohere_response_to_chat(data, model)
        except (AttributeError, TypeError, ValueError):  # not a v2 chat response
            raise self._malformed() from None
        return Reply(orjson.dumps(out), out)

    async def chat_stream(self, call: Call) -> UpstreamStream:
        model = call.body.get("model") or ""
        body = self._to_cohere(call.body, True)
        options = call.body.get("stream_options")
        translator = CohereStreamToChat(model, bool(isinstance(options, dict) and options.get("include_usage")))
        exchange = await self.open_stream(self.base_url, f"{self.base_path}/v2/chat", body, call.key, call.extra_headers)
        return self.stream_of(self._chat_chunks(exchange, translator, call.key), exchange)

    async def _chat_chunks(self, exchange: Exchange, translator: CohereStreamToChat, key: ProviderKey) -> AsyncIterator[bytes]:
        async for _event, data in self.events(exchange):
            try:
                parsed = orjson.loads(data)
            except orjson.JSONDecodeError:
                raise StreamError(f"{self.name}: malformed stream event") from None
            if not isinstance(parsed, dict) or not isinstance(parsed.get("type"), str):
                if isinstance(parsed, dict) and isinstance(parsed.get("message"), str):
                    raise StreamError(f"{self.name}: {scrub(parsed['message'][:MAX_MESSAGE], key)}")
                raise StreamError(f"{self.name}: malformed stream event")
            try:
                chunks = translator.feed(parsed)
            except (AttributeError, TypeError, ValueError):
                raise StreamError(f"{self.name}: malformed stream event") from None
            if translator.finish in FAILED_FINISH:
                raise StreamError(f"provider {self.name} could not finish the answer (finish_reason {translator.finish})")
            for chunk in chunks:
                yield orjson.dumps(chunk)
        if not translator.complete:
            raise StreamError(f"provider {self.name} ended the stream before the answer was complete")
        for chunk in translator.usage_chunks():
            yield orjson.dumps(chunk)

    # -- embeddings -----------------------------------------------------------------------------

    async def embeddings(self, call: Call) -> Reply:
        model = call.body.get("model") or ""
        texts = _embedding_texts(call.body.get("input"))
        input_type = call.body.get("input_type", DEFAULT_INPUT_TYPE)
        if input_type not in INPUT_TYPES:
            raise InvalidRequest(f"input_type must be one of {', '.join(sorted(INPUT_TYPES))} for cohere",
                                 param="input_type", code="unsupported_parameter")
        request: dict = {"model": model, "texts": texts, "input_type": input_type, "embedding_types": ["float"]}
        if call.body.get("dimensions") is not None:
            request["output_dimension"] = call.body["dimensions"]
        reply = await self.post(self.base_url, f"{self.base_path}/v2/embed", orjson.dumps(request), call.key,
                                call.extra_headers)
        base64 = call.body.get("encoding_format") == "base64"
        try:
            vectors = reply.data["embeddings"]["float"]
            data = []
            for i, values in enumerate(vectors):
                vector = b64encode(struct.pack(f"<{len(values)}f", *values)).decode() if base64 else values
                data.append({"object": "embedding", "index": i, "embedding": vector})
            billed = (reply.data.get("meta") or {}).get("billed_units") or {}
            tokens = int(billed.get("input_tokens") or 0)
        except (AttributeError, KeyError, TypeError, ValueError, struct.error):  # not an embed response
            raise self._malformed() from None
        out = {"object": "list", "data": data, "model": model, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
        return Reply(orjson.dumps(out), out)

    # -- the rest ---------------------------------------------------------------------------

    async def completions(self, call: Call) -> Reply:
        raise UnsupportedOperation(f"provider {self.name} (cohere) does not support /v1/completions; use chat completions", param="model")

    completions_stream = completions

    async def list_models(self, key: ProviderKey) -> list[str]:
        reply = await self.get(self.base_url, f"{self.base_path}/v1/models?endpoint=chat&page_size=1000", key)
        try:
            found = reply.data.get("models") if isinstance(reply.data, dict) else None
        except ValueError:  # not JSON
            raise self._malformed() from None
        models = found if isinstance(found, list) else ()
        return [m["name"] for m in models if isinstance(m, dict) and isinstance(m.get("name"), str)]

    def _malformed(self) -> UpstreamUnreachable:
        return UpstreamUnreachable(f"provider {self.name} sent an answer that is not in Cohere's format",
                                   provider=self.name, code="upstream_protocol_error")

    def _failed(self, reason: str) -> UpstreamUnreachable:
        return UpstreamUnreachable(f"provider {self.name} could not finish the answer (finish_reason {reason})",
                                   provider=self.name, code="upstream_generation_failed")

    def _refused(self, exchange: Exchange, data: bytes, key: ProviderKey) -> Exception:
        if exchange.status < 400:
            return super()._refused(exchange, data, key)
        status = 401 if exchange.status == INVALID_TOKEN else exchange.status
        message, _, _ = error_message(data)
        if len(message) > MAX_MESSAGE:
            message = message[:MAX_MESSAGE] + " …"
        return UpstreamError(f"{self.name}: {scrub(message, key)}", provider=self.name, status=status,
                             type=openai_error_type(status), retry_after=exchange.retry_after)


def _embedding_texts(value: object) -> list[str]:
    texts = [value] if isinstance(value, str) else value
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise InvalidRequest("cohere embeds text: input must be a string or a list of strings", param="input",
                             code="unsupported_parameter")
    if len(texts) > MAX_EMBED_TEXTS:
        raise InvalidRequest(f"cohere embeds at most {MAX_EMBED_TEXTS} inputs per request", param="input",
                             code="too_many_inputs")
    return texts
