"""Dialect-specific statements, so engine code stays portable across SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

from sqlalchemy import CursorResult, Result
from sqlalchemy.dialects import postgresql, sqlite


def insert(bind_dialect_name: str, table: Any) -> Any:
    """Return an INSERT that supports ON CONFLICT for the given dialect."""
    if bind_dialect_name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def rowcount(result: Result[Any]) -> int:
    """Return how many rows an UPDATE or DELETE matched: the test that a conditional claim won."""
    if not isinstance(result, CursorResult):
        raise TypeError(f"expected the result of an UPDATE or DELETE, got {type(result).__name__}")
    return result.rowcount
