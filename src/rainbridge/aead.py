"""AES-GCM from ``cryptography``, imported on first use.

Its OpenSSL bindings cost ~6 MB of memory in every worker; a gateway that encrypts neither
stored secrets nor gossip never loads them.
"""

from __future__ import annotations

import functools
from typing import Any


@functools.cache
def aesgcm() -> tuple[Any, type[Exception]]:
    """(the ``AESGCM`` class, the ``InvalidTag`` exception it raises on a wrong key or tag)."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    return AESGCM, InvalidTag
