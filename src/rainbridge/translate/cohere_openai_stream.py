"""Cohere v2 chat stream events → OpenAI chat.completion.chunk payloads.

A sans-IO state machine: each SSE payload (``{"type": "message-start" | "content-start" |
"content-delta" | "content-end" | "tool-plan-delta" | "tool-call-start" | "tool-call-delta" |
"tool-call-end" | "citation-start" | "citation-end" | "message-end" | "debug", "index", "delta"}``)
in, chunks out. Text deltas become content deltas (thinking blocks and the tool plan are left
out, as in the whole answer); a tool call opens with its id and name and streams its arguments
as Cohere does; ``message-end`` carries the finish reason and the usage, which becomes the
usage-only chunk OpenAI sends last when the client asked for ``stream_options.include_usage``.
SSE framing and ``[DONE]`` are the caller's.
"""

from __future__ import annotations

import time
import uuid

from .cohere_openai import finish_reason_of, usage_of

__all__ = ["CohereStreamToChat"]


class CohereStreamToChat:
    __slots__ = ("_base", "_calls", "_finish", "_include_usage", "_started", "_thinking", "_usage")

    def __init__(self, model: str, include_usage: bool, created: int | None = None) -> None:
        self._base = {
            "id": "chatcmpl-" + uuid.uuid4().hex,
            "object": "chat.completion.chunk",
            "created": int(time.time()) if created is None else created,
            "model": model,
        }
        self._include_usage = include_usage
        self._started = False
        self._calls: dict[int, int] = {}  # Cohere's tool call index → ours, in order of arrival
        self._thinking: set[int] = set()  # content indexes that are thinking blocks
        self._finish: str | None = None  # Cohere's finish reason, once message-end came
        self._usage: dict | None = None

    @property
    def complete(self) -> bool:
        """Whether message-end arrived: a stream that ends before it is cut."""
        return self._finish is not None

    @property
    def finish(self) -> str | None:
        return self._finish

    def feed(self, event: dict) -> list[dict]:
        kind = event.get("type")
        delta = event.get("delta") if isinstance(event.get("delta"), dict) else {}
        message = delta.get("message") if isinstance(delta.get("message"), dict) else {}
        index = event.get("index") if isinstance(event.get("index"), int) else 0
        if kind == "message-start":
            if event.get("id"):
                self._base["id"] = "chatcmpl-" + str(event["id"])
            return [self._chunk(self._role({}), None)] if not self._started else []
        if kind == "content-start":
            content = message.get("content")
            if isinstance(content, dict) and content.get("type") == "thinking":
                self._thinking.add(index)
            return []
        if kind == "content-delta":
            content = message.get("content")
            text = content.get("text") if isinstance(content, dict) else None
            if index in self._thinking or not isinstance(text, str) or not text:
                return []
            return [self._chunk(self._role({"content": text}), None)]
        if kind == "tool-call-start":
            call = message.get("tool_calls")
            if not isinstance(call, dict):
                raise ValueError("tool-call-start without a tool call")
            ours = self._calls.setdefault(index, len(self._calls))
            fn = call.get("function") if isinstance(call.get("function"), dict) else {}
            piece = {"index": ours, "id": call.get("id") or "call_" + uuid.uuid4().hex[:24], "type": "function",
                     "function": {"name": fn.get("name") or "", "arguments": fn.get("arguments") or ""}}
            return [self._chunk(self._role({"tool_calls": [piece]}), None)]
        if kind == "tool-call-delta":
            call = message.get("tool_calls")
            fn = call.get("function") if isinstance(call, dict) and isinstance(call.get("function"), dict) else {}
            arguments = fn.get("arguments")
            if index not in self._calls or not isinstance(arguments, str) or not arguments:
                return []
            piece = {"index": self._calls[index], "function": {"arguments": arguments}}
            return [self._chunk({"tool_calls": [piece]}, None)]
        if kind == "message-end":
            reason = delta.get("finish_reason")
            self._finish = str(reason) if reason else "COMPLETE"
            if isinstance(delta.get("usage"), dict):
                self._usage = delta["usage"]
            out = [] if self._started else [self._chunk(self._role({}), None)]
            out.append(self._chunk({}, finish_reason_of(self._finish, bool(self._calls))))
            return out
        return []  # tool-plan-delta, content-end, tool-call-end, citations, debug

    def usage_chunks(self) -> list[dict]:
        """The usage-only chunk, when the client asked for it; call once the upstream ended."""
        if not self._include_usage:
            return []
        return [{**self._base, "choices": [], "usage": usage_of(self._usage)}]

    def _role(self, delta: dict) -> dict:
        if self._started:
            return delta
        self._started = True
        return {"role": "assistant", **({"content": ""} if not delta else {}), **delta}

    def _chunk(self, delta: dict, finish: str | None) -> dict:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        chunk = {**self._base, "choices": [choice]}
        if self._include_usage:
            chunk["usage"] = None
        return chunk
