"""The x-ratelimit-* response headers of governed requests (OpenAI's names).

Rate limit windows end on whole seconds, so a header's reset text only changes with the
tenth of a second: the lines of each limit are written once per tenth (``check_lines``,
called by ``Plan.refresh``) with ``%d`` where the remaining count goes, and an admission
only formats the counts (``head_lines``). Denials carry the same headers (``limit_headers``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..counters.windows import human_reset

if TYPE_CHECKING:
    from .plan import Plan

HEADER_NAMES = {
    m: (b"x-ratelimit-limit-" + m.encode(), b"x-ratelimit-remaining-" + m.encode(), b"x-ratelimit-reset-" + m.encode())
    for m in ("requests", "tokens")
}
_RESET_TEXT: dict[int, bytes] = {}


def reset_text(reset_ms: int) -> bytes:
    """``human_reset`` at a tenth of a second, memoized (it is on every governed response)."""
    tenths = reset_ms // 100
    text = _RESET_TEXT.get(tenths)
    if text is None:
        if len(_RESET_TEXT) > 100_000:
            _RESET_TEXT.clear()
        text = _RESET_TEXT[tenths] = human_reset(tenths * 100).encode()
    return text


def check_lines(metric: str, limit: float, end_ms: int, tenth: int) -> bytes:
    """The lines of one limit for this tenth of a second, with %d for the remaining count."""
    limit_name, remaining_name, reset_name = HEADER_NAMES[metric]
    reset = reset_text((end_ms // 100 - tenth) * 100).replace(b"%", b"%%")
    return b"%s: %d\r\n%s: %%d\r\n%s: %s\r\n" % (limit_name, limit, remaining_name, reset_name, reset)


def head_lines(plan: Plan) -> bytes:
    """x-ratelimit-* lines of the tightest request limit and the tightest token limit: the
    lines come ready-made for this tenth of a second (Plan.refresh), only the remaining
    counts are formatted."""
    chosen = []
    counts = []
    for c, others in plan.header_groups:
        s = c.slot
        left = c.limit - s.committed - s.reserved  # type: ignore[union-attr]
        for other in others:
            o = other.slot
            other_left = other.limit - o.committed - o.reserved  # type: ignore[union-attr]
            if other_left < left:
                c, left = other, other_left
        chosen.append(c)
        counts.append(left if left > 0 else 0)
    key = tuple(chosen)
    template = plan.templates.get(key)
    if template is None:
        template = plan.templates[key] = b"".join([c.lines for c in key])
    return template % tuple(counts)


def limit_headers(metric: str, limit: float, remaining: float, reset_ms: int) -> list[tuple[bytes, bytes]]:
    names = HEADER_NAMES[metric]
    return [
        (names[0], b"%d" % limit),
        (names[1], b"%d" % (remaining if remaining > 0 else 0)),
        (names[2], reset_text(reset_ms)),
    ]
