"""The limiter in its own SQLite file, for a single host without Redis.

Every operation runs in one `BEGIN IMMEDIATE` transaction, which takes the file's write lock before
reading, so threads and processes that share the file see each other's slots and tokens. Each thread
gets its own connection. Rows whose window ended or whose bucket refilled are deleted by the next
operation on the same table.
"""

from __future__ import annotations

import math
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from novulite.limiter.base import (
    TOKEN_EPSILON,
    Limiter,
    Reservation,
    TokenResult,
    check_reserve_arguments,
    check_take_arguments,
)

BUSY_TIMEOUT_SECONDS = 5.0

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS limiter_window (key TEXT PRIMARY KEY, expires_at REAL NOT NULL)",
    "CREATE INDEX IF NOT EXISTS limiter_window_expires ON limiter_window (expires_at)",
    "CREATE TABLE IF NOT EXISTS limiter_window_member ("
    " key TEXT NOT NULL, member TEXT NOT NULL, PRIMARY KEY (key, member)) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS limiter_bucket ("
    " key TEXT PRIMARY KEY, tokens REAL NOT NULL, updated_at REAL NOT NULL, expires_at REAL NOT NULL)",
    "CREATE INDEX IF NOT EXISTS limiter_bucket_expires ON limiter_bucket (expires_at)",
)


class SqliteLimiter(Limiter):
    """Limits kept in the SQLite file at `path`, created if missing.

    `clock` returns the current time in seconds. It must agree across every process that shares the
    file, so the default is wall-clock `time.time`.
    """

    def __init__(
        self,
        path: Path | str,
        clock: Callable[[], float] = time.time,
        busy_timeout: float = BUSY_TIMEOUT_SECONDS,
    ) -> None:
        self._path = str(path)
        self._clock = clock
        self._busy_timeout = busy_timeout
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._connections_lock = threading.Lock()
        with self._transaction() as connection:
            for statement in SCHEMA:
                connection.execute(statement)

    def _connection(self) -> sqlite3.Connection:
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            # isolation_level=None leaves transactions to the explicit BEGIN IMMEDIATE below.
            connection = sqlite3.connect(
                self._path, timeout=self._busy_timeout, isolation_level=None, check_same_thread=False
            )
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
            self._local.connection = connection
            with self._connections_lock:
                self._connections.append(connection)
        return connection

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        connection = self._connection()
        connection.execute("BEGIN IMMEDIATE")
        try:
            yield connection
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")

    def reserve(self, key: str, limit: int, window_seconds: float, member: str) -> Reservation:
        check_reserve_arguments(key, limit, window_seconds, member)
        with self._transaction() as connection:
            now = self._clock()
            connection.execute(
                "DELETE FROM limiter_window_member WHERE key IN"
                " (SELECT key FROM limiter_window WHERE expires_at <= ?)",
                (now,),
            )
            connection.execute("DELETE FROM limiter_window WHERE expires_at <= ?", (now,))

            row = connection.execute("SELECT expires_at FROM limiter_window WHERE key = ?", (key,)).fetchone()
            expires_at: float | None = row[0] if row else None
            count = self._member_count(connection, key)
            already_member = (
                connection.execute(
                    "SELECT 1 FROM limiter_window_member WHERE key = ? AND member = ?", (key, member)
                ).fetchone()
                is not None
            )

            granted = already_member
            if not already_member and count < limit:
                connection.execute(
                    "INSERT INTO limiter_window_member (key, member) VALUES (?, ?)", (key, member)
                )
                count += 1
                granted = True
            # The first member starts the window.
            if granted and expires_at is None:
                expires_at = now + window_seconds
                connection.execute(
                    "INSERT INTO limiter_window (key, expires_at) VALUES (?, ?)", (key, expires_at)
                )

        reset = max(0.0, expires_at - now) if expires_at is not None else 0.0
        return Reservation(granted=granted, count=count, reset_seconds=reset)

    @staticmethod
    def _member_count(connection: sqlite3.Connection, key: str) -> int:
        row = connection.execute(
            "SELECT count(*) FROM limiter_window_member WHERE key = ?", (key,)
        ).fetchone()
        return int(row[0])

    def take(self, key: str, capacity: int, refill_per_second: float, cost: int) -> TokenResult:
        check_take_arguments(key, capacity, refill_per_second, cost)
        with self._transaction() as connection:
            now = self._clock()
            connection.execute("DELETE FROM limiter_bucket WHERE expires_at <= ?", (now,))
            row = connection.execute(
                "SELECT tokens, updated_at FROM limiter_bucket WHERE key = ?", (key,)
            ).fetchone()

            # A missing bucket is a full one, because rows are deleted only once they have refilled.
            if row is None:
                tokens = float(capacity)
            else:
                elapsed = max(0.0, now - row[1])
                tokens = min(float(capacity), row[0] + elapsed * refill_per_second)

            # A refused request deducts nothing. Storing the refilled level with the new time changes nothing.
            allowed = tokens + TOKEN_EPSILON >= cost
            retry_after = 0.0
            if allowed:
                tokens = max(0.0, tokens - cost)
            else:
                retry_after = (cost - tokens) / refill_per_second
            reset = (capacity - tokens) / refill_per_second

            connection.execute(
                "INSERT INTO limiter_bucket (key, tokens, updated_at, expires_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (key) DO UPDATE SET tokens = excluded.tokens,"
                " updated_at = excluded.updated_at, expires_at = excluded.expires_at",
                (key, tokens, now, now + reset),
            )

        return TokenResult(
            allowed=allowed,
            remaining=math.floor(tokens + TOKEN_EPSILON),
            reset_seconds=reset,
            retry_after_seconds=retry_after,
        )

    def close(self) -> None:
        """Close every thread's connection. The limiter must not be used afterwards."""
        with self._connections_lock:
            for connection in self._connections:
                connection.close()
            self._connections.clear()
