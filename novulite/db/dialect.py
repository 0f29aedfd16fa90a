"""Helpers for reading SQLAlchemy results in a way that type-checks."""

from __future__ import annotations

from typing import Any

from sqlalchemy import CursorResult, Result


def rowcount(result: Result[Any]) -> int:
    """Return how many rows an UPDATE or DELETE matched: the test that a conditional claim won."""
    if not isinstance(result, CursorResult):
        raise TypeError(f"expected the result of an UPDATE or DELETE, got {type(result).__name__}")
    return result.rowcount
