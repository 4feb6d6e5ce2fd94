"""What one inference request did, gathered along the request path for the log (and,
with governance, for accounting). A slotted object: cheap enough to make for every request."""

from __future__ import annotations

import os
import re
import time
from bisect import bisect_left

import orjson

from ..telemetry.requests import DEFAULT_BUCKETS as FRAME_BUCKETS
from ..telemetry.requests import NO_KEY as NO_KEY_LABELS

CONTENT_CAP = 64 * 1024  # bytes of request/response content kept per log entry
# A request cut before its usage arrived is charged an estimate: ~4 bytes per token, the
# rule admission reserves the prompt by, applied to the request body and to the text
# (content, tool arguments, thinking) relayed so far.
BYTES_PER_TOKEN = 4
CANCELLED = "cancelled"  # error_type of a request whose task was cancelled (shutdown cap)


class RequestRecord:
    __slots__ = (
        "admission",
        "completion_tokens",
        "content",
        "dims",
        "endpoint",
        "error_type",
        "fall_back",
        "finished",
        "first_token",
        "gap_total",
        "gaps",
        "head_lines",
        "job",
        "last_frame",
        "model",
        "path",
        "prompt_tokens",
        "provider",
        "request_body",
        "request_bytes",
        "response_body",
        "response_bytes",
        "span",
        "started",
        "status",
        "stream",
        "stream_done",
        "stream_parts",
        "text_bytes",
        "virtual_key_id",
        "vk_labels",
        "wall_started",
    )

    def __init__(self, endpoint: str, content: bool, path: str = "", dims: tuple[str, ...] = ()):
        self.started = time.perf_counter()
        self.path = path  # the route's path (the metrics' path label)
        self.dims = dims  # client.prometheus_labels' values from x-bf-dim-* headers
        self.job = None  # gateway.router.Job once routed: provider, key, retries (metrics)
        self.vk_labels = NO_KEY_LABELS  # the virtual key's metric labels (telemetry.requests)
        self.response_bytes = 0  # body bytes sent, for a non-streamed answer
        self.first_token: float | None = None  # stream: seconds from routing to the first frame
        self.last_frame = 0.0  # perf_counter() of the last frame relayed
        self.gaps: list[int] | None = None  # stream: inter-frame gaps per histogram bucket
        self.gap_total = 0.0
        self.wall_started = time.time()
        self.endpoint = endpoint
        self.content = content  # keep request/response content for the log
        self.stream = False
        self.provider: str | None = None
        self.model: str | None = None
        self.status = 0
        self.error_type: str | None = None
        # Token counts from the provider's usage (None: not reported).
        self.prompt_tokens: int | None = None
        self.completion_tokens: int | None = None
        self.virtual_key_id: str | None = None
        self.request_body: bytes | None = None
        self.request_bytes = 0  # size of the request body (the prompt estimate)
        self.text_bytes = 0  # bytes of completion text relayed on a governed stream
        self.stream_done = False  # every frame of the stream was relayed (its usage too)
        self.finished = False  # Gateway.finish ran: settled and logged once
        self.response_body: bytes | None = None
        self.stream_parts: list[bytes] | None = None
        self.admission = None  # governance.engine.Admission when a virtual key was admitted
        self.head_lines = b""  # its x-ratelimit-* header lines (see server.http.HEAD_LINES)
        # Governed with fallbacks: moves the charge to the target the router falls back to
        # (Gateway.fall_back; the router calls it through Job.fall_back).
        self.fall_back = None
        self.span = None  # its trace span when tracing is on and the request is sampled

    def see_frame(self, now: float) -> None:
        """A stream frame goes out at ``now``: the first token's latency, then each gap."""
        if self.first_token is None:
            self.first_token = now - self.job.started if self.job is not None else now - self.started
            self.gaps = [0] * (len(FRAME_BUCKETS) + 1)
        else:
            gap = now - self.last_frame
            self.gaps[bisect_left(FRAME_BUCKETS, gap)] += 1  # type: ignore[index]
            self.gap_total += gap
        self.last_frame = now

    def set_usage(self, usage: dict) -> None:
        """Take the token counts of a ``usage`` object, in OpenAI's or Anthropic's shape; a
        later object (Anthropic's message_delta) updates what it reports."""
        prompt = usage.get("prompt_tokens")
        if prompt is None:
            prompt = usage.get("input_tokens")
        completion = usage.get("completion_tokens")
        if completion is None:
            completion = usage.get("output_tokens")
        if type(prompt) is int:
            self.prompt_tokens = prompt
        if type(completion) is int:
            self.completion_tokens = completion

    def see_stream_payload(self, payload: bytes) -> bool:
        """Look at one streamed JSON payload: keep usage when it carries some, and content.
        True when the payload carried a usage object."""
        found = False
        # "usage": null is on every chunk of an OpenAI stream that asked for usage: the
        # cheap test first, the parse only for a usage object (compact or spaced JSON).
        if b'"usage"' in payload and _USAGE_OBJECT.search(payload) is not None:
            try:
                usage = orjson.loads(payload).get("usage")
            except (orjson.JSONDecodeError, AttributeError):
                usage = None
            if isinstance(usage, dict):
                self.set_usage(usage)
                found = True
        if self.content:
            self.keep_content(payload)
        return found

    def count_text(self, frame: bytes) -> None:
        """Add the completion text of one relayed stream frame (its JSON string values of
        text fields, as escaped on the wire) to ``text_bytes``."""
        for m in _TEXT_FIELD.finditer(frame):
            self.text_bytes += m.end(1) - m.start(1)

    def charged_tokens(self) -> tuple[int, int]:
        """(prompt, completion) tokens to settle with. Refused or failed (an error status):
        what was reported, else 0. Answered or cancelled: the provider's usage if the
        request completed with it; otherwise estimates fill in, never 0: the prompt from the
        request size, the completion from the text relayed so far, or what a partial usage
        (Anthropic's ``message_start``) reported if that is more."""
        prompt, completion = self.prompt_tokens, self.completion_tokens
        if self.status != 200 and self.error_type != CANCELLED:
            return prompt or 0, completion or 0
        cut = self.error_type is not None and not self.stream_done
        if prompt is not None and completion is not None and not cut:
            return prompt, completion
        if prompt is None and completion is None and self.response_body is not None:
            self.count_text(self.response_body)  # an answer without any usage (rare)
        if prompt is None:
            prompt = max(1, -(-self.request_bytes // BYTES_PER_TOKEN))
        relayed = -(-self.text_bytes // BYTES_PER_TOKEN)
        if completion is None:
            completion = relayed
        elif cut:
            completion = max(completion, relayed)
        return prompt, completion

    def keep_content(self, payload: bytes) -> None:
        parts = self.stream_parts
        if parts is None:
            parts = self.stream_parts = []
        if sum(map(len, parts)) < CONTENT_CAP:
            parts.append(payload)


def log_id_prefix() -> str:
    """The request log ids' boot prefix (a hex counter follows): unique without uuid4's cost."""
    return f"{int(time.time() * 1000):x}{os.getpid():x}{os.urandom(3).hex()}-"


def log_entry(record: RequestRecord, now: float, cost: float | None) -> tuple[tuple, bytes]:
    """What the event loop hands the log writer: ``(fields, content)`` as ``store.log_pages``
    stores them (raw values: seconds; ids are the writer's). ``content`` is the request body
    then the response body (a stream's frames joined by newlines), each cut to
    ``CONTENT_CAP``; their lengths are the last two fields (-1: not kept). One copy here
    lets the bodies go at once instead of when the writer is done with them."""
    request_bytes = response_bytes = -1
    content = b""
    if record.content:
        request = record.request_body
        response = record.response_body
        if response is None and record.stream_parts is not None:
            response = b"\n".join(record.stream_parts)  # (capped as they came)
        if request is not None:
            request = request[:CONTENT_CAP]
            request_bytes = len(request)
        if response is not None:
            response = response[:CONTENT_CAP]
            response_bytes = len(response)
            content = response if request is None else request + response
        elif request is not None:
            content = request
    return ((record.wall_started, now - record.started, record.virtual_key_id, record.provider, record.model,
             record.endpoint, record.stream, record.status, record.prompt_tokens, record.completion_tokens, cost,
             record.error_type, request_bytes, response_bytes), content)


_USAGE_OBJECT = re.compile(rb'"usage"\s*:\s*\{')
# The fields that carry generated text in OpenAI chat/completions chunks and Anthropic
# events (native or translated): a JSON string value, escapes included.
_TEXT_FIELD = re.compile(
    rb'"(?:content|text|arguments|partial_json|thinking|reasoning_content|refusal)"\s*:\s*"((?:[^"\\]|\\.)*)"'
)
_TOKENS = re.compile(rb'"(prompt_tokens|completion_tokens|input_tokens|output_tokens)":\s*(\d+)')
# OpenAI's usage object as OpenAI (and most compatible servers) write it: a match at the
# position of "usage" answers without the general search.
_OPENAI_USAGE = re.compile(rb'"usage":\{"prompt_tokens":(\d+),"completion_tokens":(\d+)')


def extract_usage(body: bytes) -> tuple[int | None, int | None] | None:
    """(prompt, completion) tokens of a JSON answer's ``usage`` without parsing the whole
    answer (usage comes last in OpenAI's and Anthropic's answers, so the search from the end
    is short); None when it has no usage, or a count too long for int() (over 4,300 digits:
    a hostile upstream must not make the request fail to settle)."""
    start = body.rfind(b'"usage":')
    if start < 0:
        return None
    try:
        m = _OPENAI_USAGE.match(body, start)
        if m is not None:
            return int(m[1]), int(m[2])
        found = {name: int(value) for name, value in _TOKENS.findall(body, start)}
    except ValueError:
        return None
    if not found:
        return None
    prompt = found.get(b"prompt_tokens", found.get(b"input_tokens"))
    return prompt, found.get(b"completion_tokens", found.get(b"output_tokens"))
