"""Fault and timing controls, read from `x-mock-*` headers and the body's `mock` field.

Pure: a header dict and a parsed body in, a `Controls` value out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

HEADER_PREFIX = "x-mock-"

# control name -> kind; the body form uses underscores (`latency_ms`).
_KINDS = {
    "latency-ms": "ms",
    "stream-chunks": "count",
    "chunk-delay-ms": "ms",
    "fail-status": "status",
    "fail-first": "count",
    "mock-id": "str",
    "cut-after": "count",
    "error-after": "count",
    "hang": "bool",
    "retry-after": "str",
}
# `x-mock-id` reads better than `x-mock-mock-id`; both work.
_ALIASES = {"id": "mock-id"}

_KEY_STATUS = re.compile(r"status-(\d{3})")


class ControlError(ValueError):
    """A control has an unknown name or a value of the wrong kind."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


@dataclass(slots=True, frozen=True)
class Controls:
    latency_ms: float = 0.0
    stream_chunks: int | None = None
    chunk_delay_ms: float = 0.0
    fail_status: int | None = None
    fail_first: int | None = None
    mock_id: str | None = None
    cut_after: int | None = None
    error_after: int | None = None
    hang: bool = False
    retry_after: str | None = None

    @property
    def deferred(self) -> bool:
        """Whether answering needs the event loop (a wait, or a dropped connection)."""
        return self.latency_ms > 0 or self.hang or self.cut_after is not None


NO_CONTROLS = Controls()


def parse_controls(mock_headers: dict[str, str], body: Any) -> Controls:
    """Merge header controls with body `mock` controls (the body wins)."""
    raw: dict[str, tuple[str, Any]] = {}
    for header, value in mock_headers.items():
        raw[_canonical(header[len(HEADER_PREFIX) :], header)] = (header, value)
    if isinstance(body, dict):
        section = body.get("mock")
        if section is not None:
            if not isinstance(section, dict):
                raise ControlError("mock", "'mock' must be an object of controls")
            for name, value in section.items():
                param = f"mock.{name}"
                raw[_canonical(str(name).replace("_", "-"), param)] = (param, value)
    if not raw:
        return NO_CONTROLS
    values = {
        name.replace("-", "_"): _convert(_KINDS[name], param, value)
        for name, (param, value) in raw.items()
    }
    return Controls(**values)


def key_status(key: str | None) -> int | None:
    """The failure status an API key asks for (`sk-status-429-x` -> 429), if any."""
    if not key:
        return None
    match = _KEY_STATUS.search(key)
    if match is None:
        return None
    status = int(match.group(1))
    return status if 400 <= status <= 599 else None


def _canonical(name: str, param: str) -> str:
    name = _ALIASES.get(name, name)
    if name not in _KINDS:
        raise ControlError(param, f"unknown mock control {param!r}; known: {', '.join(_KINDS)}")
    return name


def _convert(kind: str, param: str, value: Any) -> Any:
    if kind == "str":
        return str(value)
    if kind == "bool":
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off", ""):
            return False
        raise ControlError(param, f"{param} must be a boolean, got {value!r}")
    try:
        number = float(value) if kind == "ms" else int(value)
    except (TypeError, ValueError):
        raise ControlError(param, f"{param} must be a number, got {value!r}") from None
    if isinstance(value, bool) or number < 0:
        raise ControlError(param, f"{param} must be a non-negative number, got {value!r}")
    if kind == "status" and not 400 <= number <= 599:
        raise ControlError(param, f"{param} must be an HTTP error status (4xx/5xx), got {value!r}")
    return number
