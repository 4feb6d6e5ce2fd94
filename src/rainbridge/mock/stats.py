"""Live counters and the recent-request log, for tests to inspect."""

from __future__ import annotations

from collections import deque
from typing import Any
from urllib.parse import parse_qsl

RECENT = 50


class MockStats:
    """Counters for one provider. `snapshot()` is what `GET /mock/stats` returns.

    Requests to `/mock/*` are not counted.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.requests = 0
        self.by_path: dict[str, int] = {}
        self.by_key: dict[str, int] = {}
        self.by_mock_id: dict[str, int] = {}
        self.disconnects = 0  # responses the client abandoned before they were complete
        self.streams_started = 0
        self.streams_completed = 0  # ended normally, with the terminal event
        self.streams_errored = 0  # ended by the error-after control
        self.streams_cut = 0  # connection dropped by the cut-after control
        self.active = 0  # deferred responses (waits, streams, hangs) in progress
        # Raw tuples; turned into dicts only when someone looks (keeps the hot path cheap).
        self._recent: deque[tuple] = deque(maxlen=RECENT)

    def record(
        self,
        method: str,
        path: str,
        query: str,
        headers: dict,
        body: Any,
        key: str | None,
        mock_id: str | None,
    ) -> int:
        """Count one request; returns how many requests this mock-id has seen so far."""
        self.requests += 1
        self.by_path[path] = self.by_path.get(path, 0) + 1
        if key is not None:
            self.by_key[key] = self.by_key.get(key, 0) + 1
        self._recent.append((method, path, query, headers, body, key))
        if mock_id is None:
            return 0
        seen = self.by_mock_id.get(mock_id, 0) + 1
        self.by_mock_id[mock_id] = seen
        return seen

    @property
    def recent(self) -> list[dict]:
        return [
            {
                "method": method,
                "path": path,
                "query": dict(parse_qsl(query, keep_blank_values=True)),
                "headers": dict(headers),
                "body": body,
                "key": key,
            }
            for method, path, query, headers, body, key in self._recent
        ]

    def snapshot(self) -> dict:
        return {
            "requests": self.requests,
            "by_path": dict(self.by_path),
            "by_key": dict(self.by_key),
            "by_mock_id": dict(self.by_mock_id),
            "disconnects": self.disconnects,
            "streams_started": self.streams_started,
            "streams_completed": self.streams_completed,
            "streams_errored": self.streams_errored,
            "streams_cut": self.streams_cut,
            "active": self.active,
            "recent": self.recent,
        }
