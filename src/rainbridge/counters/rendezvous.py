"""Which member owns a counter key: rendezvous (highest random weight) hashing.

Every member computes the owner from its own view of the live, non-draining members, with
no coordination: the member whose ``hash(key, member)`` is highest wins. A member joining or
leaving moves only the keys it wins or owned (≈ 1/N of them); every other key keeps its
owner, so unrelated churn costs no ownership hand-over. The hash is a keyed BLAKE2b (stable
across processes, unlike ``hash()``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable


def weight(key: str, member: str) -> int:
    digest = hashlib.blake2b(member.encode(), digest_size=8, key=key.encode()[:64]).digest()
    return int.from_bytes(digest, "big")


def owner(key: str, members: Iterable[str]) -> str | None:
    """The owner of ``key`` among ``members`` (None when there is none); ties (a 64-bit
    collision) go to the greater name so every member still agrees."""
    best: tuple[int, str] | None = None
    for m in members:
        w = (weight(key, m), m)
        if best is None or w > best:
            best = w
    return best[1] if best is not None else None


def ranking(key: str, members: Iterable[str]) -> list[str]:
    """``members`` from the owner down (the order successors take over in)."""
    return sorted(members, key=lambda m: (weight(key, m), m), reverse=True)
