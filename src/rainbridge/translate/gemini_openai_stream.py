"""Gemini ``streamGenerateContent?alt=sse`` events → OpenAI chat.completion.chunk payloads.

A sans-IO state machine: each SSE payload (a whole GenerateContentResponse holding the next
piece of each candidate) in, chunks out. Gemini sends a function call whole in one part, so
it becomes one tool-call delta with its complete arguments. ``usageMetadata`` rides on the
events (the last one is final); it becomes the usage-only chunk OpenAI sends last when the
client asked for ``stream_options.include_usage``. SSE framing and ``[DONE]`` are the caller's.
"""

from __future__ import annotations

import time
import uuid

from .gemini_openai import finish_reason_of, tool_call_of, usage_of

__all__ = ["GeminiStreamToChat"]


class GeminiStreamToChat:
    __slots__ = ("_base", "_calls", "_finished", "_include_usage", "_seen", "_started", "_usage")

    def __init__(self, model: str, include_usage: bool, created: int | None = None) -> None:
        self._base = {
            "id": "chatcmpl-" + uuid.uuid4().hex,
            "object": "chat.completion.chunk",
            "created": int(time.time()) if created is None else created,
            "model": model,
        }
        self._include_usage = include_usage
        self._started: set[int] = set()  # candidates whose role delta went out
        self._calls: dict[int, int] = {}  # candidate → tool calls sent
        self._seen: set[int] = set()
        self._finished: set[int] = set()  # candidates that said why they stopped
        self._usage: dict | None = None

    @property
    def complete(self) -> bool:
        """Whether every candidate seen has finished: a stream that ends before is cut."""
        return bool(self._seen) and self._seen <= self._finished

    def feed(self, event: dict) -> list[dict]:
        if isinstance(event.get("usageMetadata"), dict):
            self._usage = event["usageMetadata"]
        if event.get("responseId"):
            self._base["id"] = "chatcmpl-" + str(event["responseId"])
        if event.get("modelVersion"):
            self._base["model"] = event["modelVersion"]
        out: list[dict] = []
        candidates = event.get("candidates")
        if not candidates:
            if (event.get("promptFeedback") or {}).get("blockReason"):
                # The prompt was blocked: no candidate will come.
                out.append(self._chunk(0, self._role({}, 0), None))
                out.append(self._chunk(0, {}, "content_filter"))
                self._seen.add(0)
                self._finished.add(0)
            return out
        for position, candidate in enumerate(candidates):
            index = candidate.get("index", position)
            self._seen.add(index)
            if index in self._finished:
                continue
            for part in (candidate.get("content") or {}).get("parts") or ():
                if not isinstance(part, dict) or part.get("thought"):
                    continue
                call = tool_call_of(part)
                if call is not None:
                    sent = self._calls.get(index, 0)
                    self._calls[index] = sent + 1
                    delta = {"tool_calls": [{"index": sent, **call}]}
                elif isinstance(part.get("text"), str) and part["text"]:
                    delta = {"content": part["text"]}
                else:
                    continue
                out.append(self._chunk(index, self._role(delta, index), None))
            reason = candidate.get("finishReason")
            if reason:
                if index not in self._started:
                    out.append(self._chunk(index, self._role({}, index), None))
                out.append(self._chunk(index, {}, finish_reason_of(reason, bool(self._calls.get(index)))))
                self._finished.add(index)
        return out

    def finish(self) -> list[dict]:
        """The usage-only chunk, when the client asked for it; call once the upstream ended."""
        if not self._include_usage:
            return []
        return [{**self._base, "choices": [], "usage": usage_of(self._usage)}]

    def _role(self, delta: dict, index: int) -> dict:
        if index in self._started:
            return delta
        self._started.add(index)
        return {"role": "assistant", **({"content": ""} if not delta else {}), **delta}

    def _chunk(self, index: int, delta: dict, finish: str | None) -> dict:
        choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
        chunk = {**self._base, "choices": [choice]}
        if self._include_usage:
            chunk["usage"] = None  # as OpenAI: null on every chunk before the usage chunk
        return chunk
