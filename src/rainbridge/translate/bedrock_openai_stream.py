"""ConverseStream events → OpenAI chat.completion.chunk payloads.

A sans-IO state machine: each decoded event (its ``:event-type`` and JSON payload) in,
chunks out. ``contentBlockStart`` with a ``toolUse`` opens a tool call (id and name),
``contentBlockDelta.delta.toolUse.input`` streams its arguments, ``delta.text`` the text;
``messageStop`` carries the stopReason and ``metadata`` the usage, which becomes the
usage-only chunk OpenAI sends last when the client asked for ``stream_options.include_usage``.
The event-stream framing, exceptions and ``[DONE]`` are the caller's.
"""

from __future__ import annotations

import time
import uuid

from .bedrock_openai import finish_reason_of, usage_of

__all__ = ["ConverseStreamToChat"]


class ConverseStreamToChat:
    __slots__ = ("_base", "_calls", "_include_usage", "_started", "_stop", "_usage")

    def __init__(self, model: str, include_usage: bool, created: int | None = None) -> None:
        self._base = {
            "id": "chatcmpl-" + uuid.uuid4().hex,
            "object": "chat.completion.chunk",
            "created": int(time.time()) if created is None else created,
            "model": model,
        }
        self._include_usage = include_usage
        self._started = False
        self._calls: dict[int, int] = {}  # content block index → tool call index
        self._stop: str | None = None
        self._usage: dict | None = None

    @property
    def complete(self) -> bool:
        """Whether messageStop and metadata both came: a stream that ends before is cut."""
        return self._stop is not None and self._usage is not None

    def feed(self, event_type: str, event: dict) -> list[dict]:
        if event_type == "contentBlockStart":
            use = (event.get("start") or {}).get("toolUse")
            if not isinstance(use, dict):
                return []
            index = len(self._calls)
            self._calls[event.get("contentBlockIndex", index)] = index
            call = {"index": index, "id": use.get("toolUseId") or "call_" + uuid.uuid4().hex[:24], "type": "function",
                    "function": {"name": use.get("name") or "", "arguments": ""}}
            return [self._chunk(self._role({"tool_calls": [call]}), None)]
        if event_type == "contentBlockDelta":
            delta = event.get("delta") or {}
            if isinstance(delta.get("text"), str) and delta["text"]:
                return [self._chunk(self._role({"content": delta["text"]}), None)]
            use = delta.get("toolUse")
            if isinstance(use, dict) and isinstance(use.get("input"), str):
                index = self._calls.get(event.get("contentBlockIndex", -1))
                if index is None:
                    raise ValueError("a toolUse delta for a block that was not started")
                return [self._chunk(self._role({"tool_calls": [{"index": index, "function": {"arguments": use["input"]}}]}), None)]
            return []  # reasoning content and empty deltas
        if event_type == "messageStop":
            self._stop = event.get("stopReason") or "end_turn"
            out = [] if self._started else [self._chunk(self._role({}), None)]
            out.append(self._chunk({}, finish_reason_of(self._stop)))
            return out
        if event_type == "metadata":
            self._usage = event.get("usage") if isinstance(event.get("usage"), dict) else {}
        return []  # messageStart, contentBlockStop

    def finish(self) -> list[dict]:
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
        chunk = {**self._base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
        if self._include_usage:
            chunk["usage"] = None
        return chunk
