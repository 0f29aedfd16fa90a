"""Delete delivered messages and execution details older than the retention age.

In-app messages are the subscribers' inboxes, so an unread, unarchived in-app message
stays however old it is. Messages with status error or warning stay too, for diagnosis.
Rows go in batches of BATCH_SIZE, each batch in its own write transaction, so other
writers wait for one batch at most.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

from novulite.db.fast import db_datetime

BATCH_SIZE = 1000

# Seconds between purges in the server process.
RETENTION_INTERVAL_SECONDS = 3600.0

# NOTE: neither table has an index on created_at, so each batch scans the table until it
# finds BATCH_SIZE expired rows.
_EXPIRED_MESSAGES = """
DELETE FROM message WHERE id IN (
    SELECT id FROM message
    WHERE status = 'sent' AND created_at < ?
      AND (channel <> 'in_app' OR read OR archived)
    LIMIT ?
)
"""
_EXPIRED_DETAILS = """
DELETE FROM execution_detail WHERE id IN (
    SELECT id FROM execution_detail WHERE created_at < ? LIMIT ?
)
"""


@dataclasses.dataclass(frozen=True)
class PurgeResult:
    messages: int
    execution_details: int


WriteTransaction = Callable[[], AbstractContextManager[sqlite3.Connection]]


def purge_history(
    write: WriteTransaction, now: dt.datetime, retention_days: int, batch_size: int = BATCH_SIZE
) -> PurgeResult:
    """Delete rows older than `retention_days` before `now`; return how many of each kind went.

    `write` opens one write transaction and yields its connection, as Store.raw_write does.
    A `retention_days` of 0 keeps everything.
    """
    if retention_days <= 0:
        return PurgeResult(0, 0)
    cutoff = db_datetime(now - dt.timedelta(days=retention_days))
    return PurgeResult(
        messages=_delete_in_batches(write, _EXPIRED_MESSAGES, cutoff, batch_size),
        execution_details=_delete_in_batches(write, _EXPIRED_DETAILS, cutoff, batch_size),
    )


def _delete_in_batches(write: WriteTransaction, sql: str, cutoff: str | None, batch_size: int) -> int:
    total = 0
    while True:
        with write() as connection:
            deleted = connection.execute(sql, (cutoff, batch_size)).rowcount
        total += deleted
        if deleted < batch_size:
            return total


def file_transactions(connection: sqlite3.Connection) -> WriteTransaction:
    """Return a WriteTransaction on one sqlite3 connection opened with isolation_level=None."""

    @contextlib.contextmanager
    def write() -> Iterator[sqlite3.Connection]:
        connection.execute("BEGIN IMMEDIATE")
        try:
            yield connection
        except BaseException:
            connection.rollback()
            raise
        connection.commit()

    return write
