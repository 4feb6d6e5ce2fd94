"""Stream translation: OpenAI chat.completion.chunk ⇄ Anthropic Messages stream events.

Both are sans-IO state machines: parsed SSE payloads in, payloads to send out. SSE framing
(`event:`/`data:` lines, the OpenAI `[DONE]` sentinel) is the caller's job.
"""

from __future__ import annotations

import time
import uuid

from .anthropic_openai import (
    UpstreamStreamError,
    dumps_str,
    finish_from_stop_reason,
    matched_stop_of,
    new_tool_id,
    stop_reason_from_finish,
    usage_to_openai,
)

__all__ = ["ChatStreamToMessages", "MessagesStreamToChat"]

Event = tuple[str, dict]


class ChatStreamToMessages:
    """OpenAI chunks in → Anthropic `(event_name, data)` tuples out.

    Blocks are opened and closed one at a time, as the Anthropic docs show: text, then each
    tool call (by OpenAI `index`) in its own tool_use block. OpenAI sends the finish_reason
    before the usage-only chunk, so message_delta/message_stop wait for `finish()`.
    """

    __slots__ = (
        "_block",
        "_finish_reason",
        "_finished",
        "_matched_stop",
        "_message_id",
        "_model",
        "_open",
        "_started",
        "_tools",
        "_usage",
    )

    def __init__(self, model: str, message_id: str | None = None) -> None:
        self._model = model
        self._message_id = message_id
        self._started = False
        self._finished = False
        self._block = -1  # index of the most recently opened Anthropic block
        self._open: str | int | None = None  # "text", an OpenAI tool index, or None
        self._tools: dict[int, tuple[int, str]] = {}  # OpenAI index → (block index, call id)
        self._finish_reason: str | None = None
        self._matched_stop: object = None
        self._usage: dict | None = None

    @property
    def usage(self) -> dict | None:
        """The last usage the upstream reported (OpenAI shape), for accounting."""
        return self._usage

    def feed(self, chunk: dict) -> list[Event]:
        if self._finished:
            return []
        events: list[Event] = []
        usage = chunk.get("usage")
        if usage:
            self._usage = usage
        if not self._started:
            events.append(self._message_start(chunk.get("id")))
        choices = chunk.get("choices")
        if not choices:  # usage-only chunk (or a keep-alive): nothing to open
            return events
        choice = choices[0]
        delta = choice.get("delta")
        if delta:
            text = delta.get("content")
            if text:
                self._text(text, events)
            refusal = delta.get("refusal")
            if refusal:
                self._text(refusal, events)
            calls = delta.get("tool_calls")
            if not calls and delta.get("function_call"):
                calls = ({"index": 0, "function": delta["function_call"]},)  # legacy shape
            if calls:
                self._tool_calls(calls, events)
        reason = choice.get("finish_reason")
        if reason:
            self._finish_reason = reason
            self._matched_stop = matched_stop_of(choice)
            self._close(events)
        return events

    def finish(self) -> list[Event]:
        """Close whatever is open and end the message; later calls return []."""
        if self._finished:
            return []
        self._finished = True
        events: list[Event] = []
        if not self._started:
            events.append(self._message_start(None))
        self._close(events)
        stop_reason, stop_sequence = stop_reason_from_finish(
            self._finish_reason, self._matched_stop, bool(self._tools)
        )
        events.append(
            (
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
                    "usage": self._delta_usage(),
                },
            )
        )
        events.append(("message_stop", {"type": "message_stop"}))
        return events

    # -- internals --

    def _message_start(self, chunk_id: str | None) -> Event:
        self._started = True
        message_id = self._message_id or "msg_" + (chunk_id or uuid.uuid4().hex)
        self._message_id = message_id
        # Input tokens are unknown until the final usage chunk; message_delta carries them
        # (the SDKs let message_delta usage overwrite message_start's).
        return (
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": message_id,
                    "type": "message",
                    "role": "assistant",
                    "model": self._model,
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {"input_tokens": 0, "output_tokens": 0},
                },
            },
        )

    def _delta_usage(self) -> dict:
        usage = self._usage
        if not usage:
            return {"output_tokens": 0}
        prompt = usage.get("prompt_tokens") or 0
        details = usage.get("prompt_tokens_details")
        cached = details.get("cached_tokens") if details else None
        out = {
            "output_tokens": usage.get("completion_tokens") or 0,
            "input_tokens": max(prompt - (cached or 0), 0),
        }
        if cached is not None:
            out["cache_read_input_tokens"] = cached
        return out

    def _close(self, events: list[Event]) -> None:
        if self._open is not None:
            events.append(
                ("content_block_stop", {"type": "content_block_stop", "index": self._block})
            )
            self._open = None

    def _text(self, text: str, events: list[Event]) -> None:
        if self._open != "text":
            self._close(events)
            self._block += 1
            self._open = "text"
            events.append(
                (
                    "content_block_start",
                    {
                        "type": "content_block_start",
                        "index": self._block,
                        "content_block": {"type": "text", "text": ""},
                    },
                )
            )
        events.append(
            (
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": self._block,
                    "delta": {"type": "text_delta", "text": text},
                },
            )
        )

    def _tool_calls(self, calls: list[dict] | tuple[dict, ...], events: list[Event]) -> None:
        for position, call in enumerate(calls):
            key = call.get("index")
            if not isinstance(key, int):
                key = position  # a few servers omit index on single-chunk tool calls
            fn = call.get("function") or {}
            call_id = call.get("id")
            known = self._tools.get(key)
            # A new id at a known index is a new call: some servers (Gemini's OpenAI layer)
            # send every parallel call as index 0.
            if known is not None and (not call_id or call_id == known[1]):
                block = known[0]
            else:
                self._close(events)
                self._block += 1
                block = self._block
                call_id = call_id or new_tool_id()
                self._tools[key] = (block, call_id)
                self._open = key
                events.append(
                    (
                        "content_block_start",
                        {
                            "type": "content_block_start",
                            "index": block,
                            "content_block": {
                                "type": "tool_use",
                                "id": call_id,
                                "name": fn.get("name") or "",
                                "input": {},
                            },
                        },
                    )
                )
            arguments = fn.get("arguments")
            if arguments:
                # A fragment for an already-closed tool block means the upstream interleaved
                # parallel calls. It still goes out at that block's index so the arguments
                # are not lost (the SDKs accumulate deltas by index).
                events.append(
                    (
                        "content_block_delta",
                        {
                            "type": "content_block_delta",
                            "index": block,
                            "delta": {"type": "input_json_delta", "partial_json": arguments},
                        },
                    )
                )


class MessagesStreamToChat:
    """Anthropic stream events in → OpenAI chat.completion.chunk dicts out.

    Thinking, citations and server-tool blocks have no chunk form and are skipped.
    """

    __slots__ = ("_created", "_id", "_include_usage", "_model", "_tools", "_usage")

    def __init__(
        self, model: str | None = None, include_usage: bool = False, created: int | None = None
    ) -> None:
        self._model = model
        self._include_usage = include_usage
        self._created = int(time.time()) if created is None else created
        self._id: str | None = None
        self._tools: dict[int, int] = {}  # Anthropic block index → OpenAI tool_call index
        self._usage: dict | None = None  # Anthropic-shaped running totals

    @property
    def usage(self) -> dict | None:
        """OpenAI-shaped usage so far (None before message_start)."""
        return None if self._usage is None else usage_to_openai(self._usage)

    def feed(self, event_type: str, data: dict) -> list[dict]:
        # Most events are deltas, so they are tested first.
        if event_type == "content_block_delta":
            delta = data.get("delta") or {}
            kind = delta.get("type")
            if kind == "text_delta":
                text = delta.get("text")
                return [self._chunk({"content": text})] if text else []
            if kind == "input_json_delta":
                index = self._tools.get(data.get("index"))  # type: ignore[arg-type]
                partial = delta.get("partial_json")
                if index is None or not partial:
                    return []
                return [
                    self._chunk(
                        {"tool_calls": [{"index": index, "function": {"arguments": partial}}]}
                    )
                ]
            return []  # thinking_delta, signature_delta, citations_delta
        if event_type == "content_block_start":
            return self._block_start(data)
        if event_type == "message_start":
            return self._message_start(data.get("message") or {})
        if event_type == "message_delta":
            usage = data.get("usage")
            if usage:
                # message_delta totals are cumulative: they replace, absent ones keep.
                current = self._usage if self._usage is not None else {}
                self._usage = {**current, **{k: v for k, v in usage.items() if v is not None}}
            reason = finish_from_stop_reason((data.get("delta") or {}).get("stop_reason"))
            return [self._chunk({}, reason)]
        if event_type == "message_stop":
            if not self._include_usage:
                return []
            return [
                {
                    "id": self._chunk_id(),
                    "object": "chat.completion.chunk",
                    "created": self._created,
                    "model": self._model or "",
                    "choices": [],
                    "usage": usage_to_openai(self._usage),
                }
            ]
        if event_type == "error":
            error = data.get("error") or {}
            raise UpstreamStreamError(error.get("type") or "api_error", error.get("message") or "")
        return []  # ping, content_block_stop, and event types added after this was written

    # -- internals --

    def _chunk_id(self) -> str:
        if self._id is None:
            self._id = "chatcmpl-" + uuid.uuid4().hex
        return self._id

    def _chunk(self, delta: dict, finish_reason: str | None = None) -> dict:
        chunk = {
            "id": self._id or self._chunk_id(),
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model or "",
            "choices": [
                {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            ],
        }
        if self._include_usage:
            chunk["usage"] = None  # OpenAI: with include_usage every other chunk has usage null
        return chunk

    def _message_start(self, message: dict) -> list[dict]:
        if message.get("id"):
            self._id = "chatcmpl-" + message["id"]
        if self._model is None:
            self._model = message.get("model")
        self._usage = dict(message.get("usage") or {})
        return [self._chunk({"role": "assistant", "content": ""})]

    def _block_start(self, data: dict) -> list[dict]:
        block = data.get("content_block") or {}
        kind = block.get("type")
        if kind == "text":
            text = block.get("text")
            return [self._chunk({"content": text})] if text else []
        if kind != "tool_use":
            return []
        index = self._tools[data.get("index")] = len(self._tools)  # type: ignore[index]
        given = block.get("input")
        call = {
            "index": index,
            "id": block.get("id") or new_tool_id(),
            "type": "function",
            "function": {
                "name": block.get("name") or "",
                "arguments": dumps_str(given) if given else "",
            },
        }
        return [self._chunk({"tool_calls": [call]})]
