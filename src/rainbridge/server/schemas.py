"""The request shapes of both APIs, as msgspec Structs: a wrong type is a 400 naming its path.

The handlers read, translate and forward the parsed dict; these Structs only check it
(``msgspec.convert``, ~0.3 µs for a small chat request) before anything trusts a field's
type. They follow the documented request schemas of OpenAI Chat Completions and Anthropic
Messages, and stay lenient where forwarding needs it:

- fields we do not know are ignored (and forwarded): the APIs grow faster than we do;
- content blocks are one Struct whatever their ``type``, so a block type added upstream
  passes to a native provider; each known field has its documented type;
- ``null`` for an optional field means absent (SDKs send it), as the handlers read it.
"""

from __future__ import annotations

import re
from typing import Any, Literal

import msgspec

from ..errors import InvalidRequest

Object = dict[str, Any]


class _Lenient(msgspec.Struct, gc=False):
    """Unknown fields are ignored (the default); a subclass lists what it checks. Built only
    to be dropped, over acyclic JSON data: no cycles, so the GC need not track them."""


# --------------------------------------------------------------------------- Anthropic


class CacheControl(_Lenient):
    type: str
    ttl: str | None = None


class Source(_Lenient):
    """image / document ``source``: base64, url, file, text or content."""

    type: str
    media_type: str | None = None
    data: str | None = None
    url: str | None = None
    file_id: str | None = None
    content: str | list[Block] | None = None


class Block(_Lenient):
    """Every content block (text, image, document, tool_use, tool_result, thinking, search
    results, server tool blocks …) with the documented type of each field it may carry."""

    type: str
    text: str | None = None
    source: Source | str | None = None  # search_result blocks name their source by a string
    id: str | None = None
    name: str | None = None
    input: Object | None = None
    tool_use_id: str | None = None
    content: str | list[Block] | Object | None = None  # *_tool_result errors are objects
    is_error: bool | None = None
    title: str | None = None
    context: str | None = None
    citations: list[Object] | Object | None = None  # a list on text, {enabled} on documents
    thinking: str | None = None
    signature: str | None = None
    data: str | None = None
    cache_control: CacheControl | None = None

    def __post_init__(self) -> None:
        """What one Struct for all block types cannot say: the fields a known type needs."""
        kind = self.type
        if kind == "text":
            _require(self.text, "text")
        elif kind == "image" or kind == "document":
            if type(self.source) is not Source:
                raise ValueError("field `source`: must be an object")
        elif kind == "tool_use":
            _require(self.id, "id")
            _require(self.name, "name")
            _require(self.input, "input")
        elif kind == "tool_result":
            _require(self.tool_use_id, "tool_use_id")
            if isinstance(self.content, dict):
                raise ValueError("field `content`: must be a string or an array of blocks")


def _require(value: object, name: str) -> None:
    if value is None:
        raise ValueError(f"Object missing required field `{name}`")


class Message(_Lenient):
    role: str
    content: str | list[Block]


class SystemBlock(_Lenient):
    type: str
    text: str
    cache_control: CacheControl | None = None
    citations: list[Object] | None = None


class Metadata(_Lenient):
    user_id: str | None = None


class Tool(_Lenient):
    """A client tool (``name``, ``input_schema``) or a server tool (``type`` + its options)."""

    name: str
    type: str | None = None
    description: str | None = None
    input_schema: Object | None = None
    cache_control: CacheControl | None = None

    def __post_init__(self) -> None:
        if self.type in (None, "custom"):
            _require(self.input_schema, "input_schema")


class ToolChoice(_Lenient):
    type: str
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class Thinking(_Lenient):
    type: str
    budget_tokens: int | None = None


class MessagesRequest(_Lenient):
    model: str
    messages: list[Message]
    max_tokens: int
    system: str | list[SystemBlock] | None = None
    metadata: Metadata | None = None
    stop_sequences: list[str] | None = None
    stream: bool | None = None
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    thinking: Thinking | None = None
    service_tier: str | None = None
    container: str | None = None
    mcp_servers: list[Object] | None = None


# --------------------------------------------------------------------------- OpenAI chat


class ImageUrl(_Lenient):
    url: str
    detail: str | None = None


class Part(_Lenient):
    """A content part: text, image_url, input_audio, file, refusal."""

    type: str
    text: str | None = None
    image_url: ImageUrl | None = None
    input_audio: Object | None = None
    file: Object | None = None
    refusal: str | None = None


class FunctionCall(_Lenient):
    name: str
    arguments: str


class ToolCall(_Lenient):
    id: str
    type: str
    function: FunctionCall | None = None  # custom tool calls carry "custom" instead

    def __post_init__(self) -> None:
        if self.type == "function":
            _require(self.function, "function")


class ChatMessage(_Lenient):
    role: str
    content: str | list[Part] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None
    refusal: str | None = None


class Function(_Lenient):
    name: str
    description: str | None = None
    parameters: Object | None = None
    strict: bool | None = None


class ChatTool(_Lenient):
    type: str
    function: Function | None = None  # custom tools carry "custom" instead

    def __post_init__(self) -> None:
        if self.type == "function":
            _require(self.function, "function")


class NamedFunction(_Lenient):
    name: str


class NamedChoice(_Lenient):
    type: str
    function: NamedFunction | None = None

    def __post_init__(self) -> None:
        if self.type == "function":
            _require(self.function, "function")


class StreamOptions(_Lenient):
    include_usage: bool | None = None


class ResponseFormat(_Lenient):
    type: str
    json_schema: Object | None = None


class ChatRequest(_Lenient):
    model: str
    messages: list[ChatMessage]
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    n: int | None = None
    stop: str | list[str] | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, int] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    seed: int | None = None
    user: str | None = None
    tools: list[ChatTool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    metadata: dict[str, str] | None = None
    store: bool | None = None
    reasoning_effort: str | None = None
    service_tier: str | None = None
    modalities: list[str] | None = None


# --------------------------------------------------------------------------- checking


def check(req: dict, shape: type) -> None:
    """Raise a 400 naming the first field of ``req`` that does not fit ``shape``."""
    try:
        msgspec.convert(req, shape)
    except msgspec.ValidationError as exc:
        raise _invalid(str(exc)) from None


_AT = re.compile(r"^(.*?)(?: - at `\$(.*)`)?$", re.S)
_MISSING = re.compile(r"^Object missing required field `(.*)`$")
_EXPECTED = re.compile(r"^Expected `(.*)`, got `(.*)`$")
_FIELD = re.compile(r"^field `(.*)`: (.*)$")
_WORDS = {"str": "a string", "int": "an integer", "float": "a number", "bool": "a boolean",
          "array": "an array", "object": "an object", "null": "null"}


def _invalid(text: str) -> InvalidRequest:
    """msgspec's "Expected `str`, got `int` - at `$.messages[0].content`" in our words."""
    match = _AT.match(text)
    assert match is not None  # the pattern matches any text
    what, where = match.group(1), (match.group(2) or "").lstrip(".")
    param = where.replace("[...]", "") or None  # msgspec's "[...]": a value of a map
    missing = _MISSING.match(what)
    if missing:
        param = f"{where}.{missing.group(1)}" if where else missing.group(1)
        return InvalidRequest(f"missing required field '{param}'", param=param, code="missing_field")
    field = _FIELD.match(what)
    if field:
        param = f"{where}.{field.group(1)}" if where else field.group(1)
        return InvalidRequest(f"'{param}' {field.group(2)}", param=param, code="invalid_type")
    expected = _EXPECTED.match(what)
    if expected:
        kinds = [_WORDS.get(k, k) for k in expected.group(1).split(" | ")]
        wanted = kinds[0] if len(kinds) == 1 else ", ".join(kinds[:-1]) + " or " + kinds[-1]
        return InvalidRequest(f"'{where}' must be {wanted}, not {_WORDS.get(expected.group(2), expected.group(2))}",
                              param=param, code="invalid_type")
    return InvalidRequest(f"'{where}': {what}" if where else what, param=param, code="invalid_value")
