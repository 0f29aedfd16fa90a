"""SQL fragments whose text differs between the SQLite and the PostgreSQL job store.

The engine writes one SQL text for both stores wherever SQLite 3.40 and PostgreSQL 15
agree: booleans compared with TRUE and FALSE, conditional counts with FILTER, and JSON
read with `->`. The few fragments that cannot be shared are chosen here, from the connection a
statement runs on: novulite.db.postgres.RawConnection names its dialect, and a
sqlite3.Connection has no such attribute.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg

logger = logging.getLogger("novulite.db")

T = TypeVar("T")

SQLITE = "sqlite"
POSTGRESQL = "postgresql"

# PostgreSQL aborted the transaction to break a deadlock or a serialization conflict, so running
# it again may succeed. SQLite's single writer raises neither.
RETRYABLE_ERRORS: tuple[type[Exception], ...] = (
    psycopg.errors.DeadlockDetected,
    psycopg.errors.SerializationFailure,
)


def dialect_of(connection: Any) -> str:
    """Return "postgresql" for a RawConnection, else "sqlite"."""
    return str(getattr(connection, "dialect", SQLITE))


def is_postgresql(connection: Any) -> bool:
    return dialect_of(connection) == POSTGRESQL


def for_update(connection: Any) -> str:
    """Return the clause that locks the selected rows until the transaction ends.

    On SQLite the write transaction already holds the database-wide write lock, and
    SQLite has no FOR UPDATE, so the clause is empty there.
    """
    return " FOR UPDATE" if is_postgresql(connection) else ""


def skip_locked(connection: Any) -> str:
    """Return the clause that locks the selected rows and leaves out rows another transaction holds."""
    return " FOR UPDATE SKIP LOCKED" if is_postgresql(connection) else ""


def not_indexed(connection: Any, column: str) -> str:
    """Return `column` written so that SQLite's planner does not pick an index on it.

    SQLite reads a unary `+` as "do not use an index for this term". PostgreSQL has no
    unary plus for text, and its planner weighs the indexes by their statistics anyway.
    """
    return column if is_postgresql(connection) else f"+{column}"


def json_text(column: str, key: str) -> str:
    """Return an expression for the top-level JSON value `key` of `column`, as JSON text.

    `->` on a plain label is the same operator in SQLite (3.38 and later) and PostgreSQL.
    CAST to TEXT gives `true`, `"unknown"` or `3` on both: compare with such literals.
    """
    return f"CAST({column} -> '{key}' AS TEXT)"


def begin_snapshot(connection: Any) -> str:
    """Return the statement that starts a read-only transaction whose statements share one snapshot.

    A SQLite transaction reads one snapshot from its first read on. PostgreSQL's
    default READ COMMITTED takes a new snapshot per statement, so it needs REPEATABLE READ.
    """
    return "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY" if is_postgresql(connection) else "BEGIN"


def claimable(connection: Any, table: str, count: int, condition: str) -> str:
    """Return the WHERE condition of a claim: which of `count` ids, bound first, meet `condition`.

    A claim is one conditional UPDATE on those ids. On SQLite its write transaction
    excludes every other writer. On PostgreSQL other processes claim at the same time,
    so the claim locks its rows in id order and skips rows that another transaction
    holds: two batches that share rows neither wait for nor deadlock with each other,
    and the transaction that holds a row decides its fate.
    """
    ids = ", ".join("?" * count)
    if not is_postgresql(connection):
        return f"id IN ({ids}) AND {condition}"
    locked = f"SELECT id FROM {table} WHERE id IN ({ids}) AND {condition} ORDER BY id FOR UPDATE SKIP LOCKED"
    return f"id IN ({locked})"


# Runs of a transaction that PostgreSQL aborted for a deadlock, before the error goes to the caller.
CONFLICT_ATTEMPTS = 3


def retry_conflicts(transaction: Callable[[], T], description: str) -> T:
    """Run `transaction` (a whole write transaction), again when PostgreSQL aborted it for a deadlock.

    Batches that lock rows in different orders, such as a cancel and a job batch of the
    same chain, can deadlock. PostgreSQL then rolls one back, and a new run succeeds.
    """
    for attempt in range(1, CONFLICT_ATTEMPTS + 1):
        try:
            return transaction()
        except RETRYABLE_ERRORS as exc:
            if attempt == CONFLICT_ATTEMPTS:
                raise
            logger.warning("%s was rolled back (%s); running it again", description, type(exc).__name__)
    raise AssertionError("unreachable")
