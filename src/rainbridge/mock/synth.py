"""Deterministic content: token counts, answers, tool arguments, embeddings.

Pure functions only. A "token" here is a whitespace-separated word, so a
count is `len(text.split())` and a stream emits one word per chunk; the
same rule is used for prompts and answers so `usage` is self-consistent.
"""

from __future__ import annotations

import hashlib
import math
import sys
from array import array
from collections.abc import Iterable
from typing import Any

ECHO_WORDS = 8
# Per-message and per-request overhead, as OpenAI's own counting recipe adds.
MESSAGE_OVERHEAD = 3
REQUEST_OVERHEAD = 3
# Tool-call arguments are streamed in fragments of this many characters; one
# fragment counts as one completion token.
ARGUMENT_FRAGMENT = 4


def count_tokens(text: str) -> int:
    return len(text.split())


def answer_words(model: str, echo: str, *, tool_result: bool = False) -> list[str]:
    """The deterministic reply: a fixed prefix, then the first words of `echo`."""
    words = ["This", "is", "a", "mock", "response", "from", f"{model}:"]
    if tool_result:
        words += ["the", "tool", "returned"]
    words += echo.split()[:ECHO_WORDS]
    return words


def fit_words(words: list[str], count: int | None) -> list[str]:
    """Repeat or truncate `words` to exactly `count` (None keeps them as they are)."""
    if count is None or count == len(words):
        return words
    if not words or count <= 0:
        return []
    return [words[i % len(words)] for i in range(count)]


def stream_tokens(words: list[str]) -> list[str]:
    """Words as stream deltas: concatenating them gives `" ".join(words)`."""
    return [w if i == 0 else " " + w for i, w in enumerate(words)]


def argument_fragments(arguments: str) -> list[str]:
    return [
        arguments[i : i + ARGUMENT_FRAGMENT] for i in range(0, len(arguments), ARGUMENT_FRAGMENT)
    ]


def sample_arguments(schema: Any) -> dict[str, Any]:
    """Fill a JSON schema's required properties with fixed sample values."""
    if not isinstance(schema, dict):
        return {}
    props = schema.get("properties")
    props = props if isinstance(props, dict) else {}
    required = schema.get("required")
    if not isinstance(required, list):
        return {}
    return {name: _sample_value(props.get(name)) for name in required if isinstance(name, str)}


def _sample_value(schema: Any) -> Any:
    if not isinstance(schema, dict):
        return None
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    kind = schema.get("type")
    if isinstance(kind, list):  # ["string", "null"]
        kind = next((k for k in kind if k != "null"), None)
    if kind == "string":
        return "mock"
    if kind in ("number", "integer"):
        return 1
    if kind == "boolean":
        return True
    return None


def openai_text(content: Any) -> str:
    """The text of an OpenAI message `content` (string or list of parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
        )
    return ""


def anthropic_text(content: Any) -> str:
    """The text of an Anthropic message `content`, including tool results."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    parts = []
    for block in content:
        if not isinstance(block, dict):
            continue
        if isinstance(block.get("text"), str):
            parts.append(block["text"])
        elif block.get("type") == "tool_result":
            parts.append(anthropic_text(block.get("content")))
    return " ".join(parts)


def embedding_dimensions(model: str) -> int:
    return 3072 if model.endswith("-large") else 1536


def embedding(key: bytes, dimensions: int) -> array:
    """A unit-length float32 vector derived only from `key`."""
    raw = array("h", hashlib.shake_256(key).digest(dimensions * 2))
    norm = math.sqrt(sum(v * v for v in raw)) or 1.0
    return array("f", [v / norm for v in raw])


def float32_le_bytes(vector: array) -> bytes:
    """The wire form OpenAI uses for `encoding_format: base64`."""
    if sys.byteorder == "little":
        return vector.tobytes()
    swapped = array("f", vector)
    swapped.byteswap()
    return swapped.tobytes()


def total_tokens(texts: Iterable[str]) -> int:
    return sum(len(t.split()) for t in texts)
