"""Amazon Bedrock's Converse API (``bedrock-runtime``), signed with SigV4 or a Bedrock API key.

OpenAI chat requests are translated to ``POST /model/{modelId}/converse`` (and
``/converse-stream``, whose answer is AWS event-stream binary framing) and the answers back
to Chat Completions; Anthropic clients reach Bedrock through the router's Messages → chat
translation. Each key carries its own credentials and region (Bifrost's
``bedrock_key_config``); a key with a ``value`` is a Bedrock API key sent as
``Authorization: Bearer``. ``deployments`` map a model name to a model id or inference
profile, prefixed by ``arn`` when one is set.

Bedrock's errors (``{"message"}`` with the exception in ``x-amzn-ErrorType``) become the
OpenAI shape with the exception name as ``code``: ValidationException 400,
AccessDeniedException 403 (the router rotates to the next key), ThrottlingException 429
(retried, then rotated), ModelTimeoutException 408, ModelErrorException 424,
ServiceUnavailableException 503 …; an exception event mid-stream ends the stream as an error.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from urllib.parse import quote

import orjson

from ..config.schema import BedrockKeyConfig
from ..errors import InvalidRequest, UpstreamError, UpstreamUnreachable
from ..eventstream import EventStreamDecoder, EventStreamError
from ..translate import TranslationError
from ..translate.anthropic_openai import openai_error_type
from ..translate.bedrock_openai import chat_request_to_converse, converse_response_to_chat
from ..translate.bedrock_openai_stream import ConverseStreamToChat
from ..upstream import Exchange, Origin, ProtocolError
from .aws_sigv4 import AssumedRole, AwsSigner
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
from .http import HttpAdapter, extra_block, header_block

DEFAULT_REGION = "us-east-1"
# Exceptions a ConverseStream may send mid-stream, by the status the same error has as an answer.
_STREAM_EXCEPTIONS = {
    "throttlingException": 429, "validationException": 400, "modelStreamErrorException": 424,
    "internalServerException": 500, "serviceUnavailableException": 503,
}


class BedrockAdapter(HttpAdapter):
    family = "bedrock"
    native_messages = False

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._signers: dict[str, AwsSigner] = {}  # key id → its signer

    def key_headers(self, key: ProviderKey) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json", **self.network.extra_headers}
        if key.value:
            headers["Authorization"] = f"Bearer {key.value}"
        return headers

    # -- endpoints and signing -------------------------------------------------------------------

    @staticmethod
    def _config(key: ProviderKey) -> BedrockKeyConfig:
        return key.bedrock or BedrockKeyConfig()  # type: ignore[return-value]

    def region(self, key: ProviderKey) -> str:
        return self._config(key).region or DEFAULT_REGION

    def url_for(self, key: ProviderKey) -> str:
        return self.base_url or f"https://bedrock-runtime.{self.region(key)}.amazonaws.com"

    def model_path(self, key: ProviderKey, model: str, action: str) -> str:
        config = self._config(key)
        model_id = config.deployments.get(model, model)
        if config.arn:
            model_id = f"{config.arn.rstrip('/')}/{model_id}"
        return f"{self.base_path if self.base_url else ''}/model/{quote(model_id, safe='')}/{action}"

    def signer(self, key: ProviderKey) -> AwsSigner:
        signer = self._signers.get(key.id)
        if signer is None:
            config = self._config(key)
            role = AssumedRole(config.role_arn, config.external_id or None,
                               config.session_name or "rainbridge") if config.role_arn else None
            signer = self._signers[key.id] = AwsSigner(self.region(key), config.access_key, config.secret_key,
                                                       config.session_token, role=role)
        return signer

    async def request_head(self, origin: Origin, path: str, key: ProviderKey, body: bytes,
                           extra: dict[str, str] | None) -> bytes:
        if key.value:  # a Bedrock API key: the prebuilt Bearer head
            return self.post_head(origin, path, key, len(body), extra)
        host = origin.host_header.decode("latin-1")
        scheme = "https" if self.url_for(key).startswith("https:") else "http"
        signed = await self.signer(key).sign(f"{scheme}://{host}{path}", body, {"Content-Type": "application/json"})
        own = key.headers
        if extra:  # a request's own header replaces the provider's of that name (as post_head does)
            names = {name.lower() for name in extra}
            if "content-type" in names:
                raise InvalidRequest("header x-bf-eh-content-type cannot be forwarded to bedrock: the content type is "
                                     "part of the request's signature", param="x-bf-eh-content-type", code="invalid_extra_header")
            own = {n: v for n, v in own.items() if n.lower() not in names}
        head = (f"POST {path} HTTP/1.1\r\n".encode("latin-1") + b"Host: " + origin.host_header + b"\r\n"
                + header_block({"Accept-Encoding": "identity", **own, **signed}))
        return head + b"Content-Length: %d\r\n" % len(body) + extra_block(extra) + b"\r\n"

    # -- chat -------------------------------------------------------------------------------------

    def _to_converse(self, body: dict) -> dict:
        try:
            return chat_request_to_converse(body)
        except TranslationError as exc:
            raise InvalidRequest(str(exc), param=exc.param, code="unsupported_parameter") from None

    async def chat(self, call: Call) -> Reply:
        model = call.body.get("model") or ""
        body = orjson.dumps(self._to_converse(call.body))
        reply = await self.post(self.url_for(call.key), self.model_path(call.key, model, "converse"), body,
                                call.key, call.extra_headers)
        try:
            data = converse_response_to_chat(reply.data, model)
        except (AttributeError, TypeError, ValueError):  # not a ConverseResponse
            raise self._malformed() from None
        return Reply(orjson.dumps(data), data)

    async def chat_stream(self, call: Call) -> UpstreamStream:
        model = call.body.get("model") or ""
        body = orjson.dumps(self._to_converse(call.body))
        options = call.body.get("stream_options")
        translator = ConverseStreamToChat(model, bool(isinstance(options, dict) and options.get("include_usage")))
        exchange = await self.open_stream(self.url_for(call.key), self.model_path(call.key, model, "converse-stream"),
                                          body, call.key, call.extra_headers)
        return self.stream_of(self._chat_chunks(exchange, translator, call.key), exchange)

    async def _chat_chunks(self, exchange: Exchange, translator: ConverseStreamToChat, key: ProviderKey) -> AsyncIterator[bytes]:
        async for headers, payload in self._messages(exchange):
            kind = headers.get(":message-type")
            if kind == "exception" or kind == "error":
                raise self._stream_exception(headers, payload, key)
            if kind != "event":
                continue
            try:
                event = orjson.loads(payload)
                chunks = translator.feed(str(headers.get(":event-type")), event)
            except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
                raise StreamError(f"{self.name}: malformed stream event") from None
            for chunk in chunks:
                yield orjson.dumps(chunk)
        if not translator.complete:
            raise StreamError(f"provider {self.name} ended the stream before the answer was complete")
        for chunk in translator.finish():
            yield orjson.dumps(chunk)

    async def _messages(self, exchange: Exchange) -> AsyncIterator[tuple[dict, bytes]]:
        """The stream's event-stream messages; framing and transport failures become StreamError."""
        decoder = EventStreamDecoder()
        try:
            async for data in exchange.chunks(self.idle_s):
                for message in decoder.feed(data):
                    yield message
        except EventStreamError as exc:
            raise StreamError(f"provider {self.name} sent a broken event stream ({exc})") from None
        except TimeoutError:
            raise StreamError(f"provider {self.name} sent nothing for {self.idle_s:g}s") from None
        except (OSError, ProtocolError):
            raise StreamError(f"provider {self.name} broke the stream") from None
        if decoder.pending:
            raise StreamError(f"provider {self.name} broke the stream (it ended inside an event-stream message)")

    def _stream_exception(self, headers: dict, payload: bytes, key: ProviderKey) -> StreamError:
        name = str(headers.get(":exception-type") or headers.get(":error-code") or "error")
        message = _message_of(payload) or str(headers.get(":error-message") or name)
        status = _STREAM_EXCEPTIONS.get(name, 500)
        return StreamError(f"{self.name}: {scrub(_bounded(message), key)}", openai_error_type(status))

    # -- the rest ---------------------------------------------------------------------------------

    async def completions(self, call: Call) -> Reply:
        raise UnsupportedOperation(f"provider {self.name} (bedrock) does not support /v1/completions; use chat completions", param="model")

    completions_stream = completions

    async def embeddings(self, call: Call) -> Reply:
        raise UnsupportedOperation(f"provider {self.name} (bedrock) does not support embeddings yet", param="model")

    async def list_models(self, key: ProviderKey) -> list[str]:
        # The model catalogue lives on another service (bedrock, not bedrock-runtime): the
        # key's deployments are the models it names.
        return sorted(self._config(key).deployments)

    def _malformed(self) -> UpstreamUnreachable:
        return UpstreamUnreachable(f"provider {self.name} sent an answer that is not in Bedrock's Converse format",
                                   provider=self.name, code="upstream_protocol_error")

    def _refused(self, exchange: Exchange, data: bytes, key: ProviderKey) -> Exception:
        status = exchange.status
        if status < 400:
            return super()._refused(exchange, data, key)
        name = (exchange.error_type or "").partition(":")[0] or _body_type(data)
        message = _message_of(data) or name or f"HTTP {status}"
        return UpstreamError(
            f"{self.name}: {scrub(_bounded(message), key)}",
            provider=self.name,
            status=status,
            type=openai_error_type(status),
            code=name or None,
            retry_after=exchange.retry_after,
        )


def _message_of(data: bytes) -> str | None:
    """AWS's JSON error body: ``{"message": …}`` (some services say ``Message``)."""
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError:
        text = data[:300].decode("utf-8", "replace").strip()
        return text or None
    if isinstance(parsed, dict):
        for field in ("message", "Message"):
            if isinstance(parsed.get(field), str):
                return parsed[field]
    return None


def _body_type(data: bytes) -> str:
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError:
        return ""
    found = parsed.get("__type") if isinstance(parsed, dict) else None
    return found.rpartition("#")[2] if isinstance(found, str) else ""


def _bounded(message: str) -> str:
    return message[:MAX_MESSAGE] + " …" if len(message) > MAX_MESSAGE else message
