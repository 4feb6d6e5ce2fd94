"""Errors every store shares."""

from __future__ import annotations


class StoreUnavailable(Exception):
    """The store cannot be reached; the message names where (never a password)."""


class Conflict(Exception):
    """A write broke a uniqueness or reference rule (duplicate name, row still in use)."""
