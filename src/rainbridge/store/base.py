"""Errors every store shares."""

from __future__ import annotations


class StoreUnavailable(Exception):
    """The store cannot be reached; the message names where (never a password)."""
