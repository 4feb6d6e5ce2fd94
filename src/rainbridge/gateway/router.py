"""The attempt loop: for each target (primary, then fallbacks) choose a key, take a queue
slot, call the adapter, and on failure retry, rotate keys or fall back (Bifrost semantics).

If every target fails, the primary's error is returned: it is the one the client asked for.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from ..errors import GatewayError, InvalidRequest, NotFound
from ..providers.base import Call, ProviderKey, Reply, UpstreamStream
from ..translate import TranslationError, messages_request_to_chat
from .retry import Action, backoff_ms, classify
from .routing import Target


class Job:
    """One client request as the router sees it."""

    __slots__ = ("_chat_body", "allowed_keys", "body", "extra_headers", "fall_back", "fallback_index", "key", "op",
                 "raw_headers", "retries", "span", "started", "stream", "target", "tracing")

    def __init__(
        self,
        op: str,
        body: dict,
        stream: bool = False,
        extra_headers: dict[str, str] | None = None,
        raw_headers: dict[str, str] | None = None,
        allowed_keys: dict[str, frozenset[str]] | None = None,
        fall_back: Callable[[Target], Awaitable[None]] | None = None,
    ):
        self.op = op  # chat | completions | embeddings | messages
        self.body = body
        self.stream = stream
        self.extra_headers = extra_headers
        self.raw_headers = raw_headers
        self.allowed_keys = allowed_keys  # provider -> key ids/names a virtual key may use
        # Governance, before a fallback is tried: moves the request's charge to it, or
        # raises the refusal of one of its own limits (the fallback is then skipped).
        self.fall_back = fall_back
        self._chat_body: dict | None = None
        self.span: Any = None  # the request's trace span (telemetry/tracing.py), or None
        self.tracing: Any = None
        # Where the router is (read by the metrics when the request ends):
        self.started = time.perf_counter()
        self.target: Target | None = None  # the target tried last
        self.key: ProviderKey | None = None  # its key
        self.retries = 0  # retries of that target
        self.fallback_index = 0  # 0: the primary

    def chat_body(self) -> dict:
        """An Anthropic Messages request as OpenAI chat, for providers that only speak chat."""
        if self._chat_body is None:
            try:
                self._chat_body = messages_request_to_chat(self.body)
            except TranslationError as exc:
                raise InvalidRequest(str(exc), param=exc.param) from None
        return self._chat_body

    def method_and_body(self, adapter: Any) -> tuple[Any, dict]:
        if self.op == "messages":
            if adapter.native_messages:
                return (adapter.messages_stream if self.stream else adapter.messages), self.body
            return (adapter.chat_stream if self.stream else adapter.chat), self.chat_body()
        if self.stream:
            return getattr(adapter, self.op + "_stream"), self.body
        return getattr(adapter, self.op), self.body


class Router:
    def __init__(self, rng: random.Random | None = None, sleep=asyncio.sleep):
        self._random = (rng or random.Random()).random
        self._sleep = sleep

    async def run(self, job: Job, targets: list[Target]) -> tuple[Reply | UpstreamStream, Target]:
        """The first successful answer and the target that gave it; else the primary's error
        (as Bifrost). A fallback over one of its own governance limits is skipped."""
        first_error: GatewayError | None = None
        for index, target in enumerate(targets):
            job.target, job.fallback_index, job.retries = target, index, 0
            try:
                if index and job.fall_back is not None:
                    await job.fall_back(target)
                return await self._run_target(job, target), target
            except GatewayError as err:
                if first_error is None:
                    first_error = err
        assert first_error is not None
        raise first_error

    async def _run_target(self, job: Job, target: Target) -> Reply | UpstreamStream:
        provider = target.provider
        model = target.model
        allowed = job.allowed_keys.get(provider.name) if job.allowed_keys else None
        key = provider.keys.choose(model, (), allowed)
        if key is None:
            raise NotFound(
                f"provider {provider.name} has no key that serves model {model!r}"
                + (" among the keys this virtual key may use" if allowed is not None else ""),
                param="model",
                code="model_not_found",
            )
        method, body = job.method_and_body(provider.adapter)
        dead: list[ProviderKey] = []
        retries = 0
        attempts = 0
        queue = provider.queue
        while True:
            body["model"] = key.aliases.get(model, model) if key.aliases else model
            call = Call(body, key, job.extra_headers, job.raw_headers)
            job.key = key
            await queue.acquire()
            span = None
            if job.span is not None:  # tracing on and this request sampled
                attempts += 1
                span = job.tracing.start_attempt(job.span, job.op, provider.name, model, key.name, attempts)
            try:
                result = await method(call)
            except GatewayError as err:
                queue.release()
                if span is not None:
                    job.tracing.end_attempt(span, err)
                action = classify(err)
                if action is Action.FAIL:
                    raise
                if action is Action.ROTATE_NOW:
                    dead.append(key)
                    key = provider.keys.choose(model, dead, allowed)
                    if key is None:
                        raise
                    continue
                if retries >= provider.max_retries:
                    raise
                if action is Action.ROTATE_BACKOFF:
                    key = provider.keys.choose(model, [*dead, key], allowed) or key
                delay = backoff_ms(retries, provider.backoff_initial_ms, provider.backoff_max_ms, self._random())
                retries += 1
                job.retries = retries
                await self._sleep(delay / 1000.0)
                continue
            except BaseException as exc:
                queue.release()
                if span is not None:
                    job.tracing.end_attempt(span, exc)
                raise
            if type(result) is UpstreamStream:
                result.on_close(queue.release)  # the slot is held while the stream runs
                if span is not None:
                    result.on_close(partial(job.tracing.end_attempt, span, None))
            else:
                queue.release()
                if span is not None:
                    job.tracing.end_attempt(span, None)
            return result
