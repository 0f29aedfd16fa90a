"""Operator actions on failed jobs: retry and discard.

A retry is offered only where it can help. Failures whose cause may pass (a
transient error that ran out of attempts, an outcome that was never confirmed, a
worker that was lost) can be retried. A failure that another attempt would meet
again, such as a template error, invalid controls or a provider's 4xx response, is
shown with its cause and offers no retry.

Both actions are one conditional UPDATE on `status = 'failed'`, so a form sent twice
acts once.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import sqlite3
from typing import Any

from novulite.clock import Clock
from novulite.db.fast import db_datetime, insert_rows, placeholders
from novulite.db.models import ExecutionDetail, table
from novulite.db.sql import json_text, retry_conflicts
from novulite.db.store import Store
from novulite.engine.details import detail_row

logger = logging.getLogger("novulite.worker")

_details = table(ExecutionDetail)

# SQL true for a failed job whose error marks it retryable or its outcome unknown.
RETRYABLE_SQL = (
    f"({json_text('error', 'retryable')} = 'true' OR {json_text('error', 'outcome')} = '\"unknown\"')"
)


def is_retryable(error: dict[str, Any] | None) -> bool:
    """Return whether a failed job with `error` may succeed if run again, as RETRYABLE_SQL decides."""
    if not error:
        return False
    return error.get("retryable") is True or error.get("outcome") == "unknown"


def not_retryable_reason(error: dict[str, Any] | None) -> str:
    """Return why a retry cannot help a failed job, for the admin UI."""
    if not error:
        return "no error was recorded, so the cause is unknown"
    status = error.get("status")
    if isinstance(status, int) and 400 <= status < 500:
        return f"the provider rejected the request with HTTP {status}; fix the request or the credentials"
    code = error.get("code")
    if isinstance(code, int) and 500 <= code < 600:
        return f"the SMTP server rejected the message with {code}; fix the address or the content"
    return "the cause is in the workflow, the payload or the integration, so a retry would fail the same way"


@dataclasses.dataclass(frozen=True)
class Requeued:
    """Jobs an operator's retry moved back to the queue, and those left as they were."""

    job_ids: list[str]
    # Failed jobs that a retry cannot help.
    refused: int


def retry_failed_jobs(store: Store, clock: Clock, job_ids: list[str], admin: str) -> Requeued:
    """Queue retryable failed jobs again with a fresh set of attempts; return the queued ids.

    The caller enqueues the returned ids after this commits.
    """
    if not job_ids:
        return Requeued([], 0)
    retry = functools.partial(_retry_once, store, clock, job_ids, admin)
    return retry_conflicts(retry, f"retrying {len(job_ids)} failed jobs")


def _retry_once(store: Store, clock: Clock, job_ids: list[str], admin: str) -> Requeued:
    with store.raw_write() as raw:
        now = clock.now()
        at = db_datetime(now)
        rows = raw.execute(
            "UPDATE job SET status = 'queued', attempt = 0, run_at = ?, error = NULL, output = NULL, "
            f"lease_until = NULL, updated_at = ? WHERE id IN ({placeholders(len(job_ids))}) "
            f"AND status = 'failed' AND {RETRYABLE_SQL} RETURNING id, notification_id, position",
            [at, at, *job_ids],
        ).fetchall()
        jobs = [{"id": row[0], "notification_id": row[1], "position": row[2]} for row in rows]
        resumed = _resume_stopped_chains(raw, jobs, at)
        refused = raw.execute(
            f"SELECT count(*) FROM job WHERE id IN ({placeholders(len(job_ids))}) AND status = 'failed'",
            job_ids,
        ).fetchone()[0]
        text = f"Retried by {admin} from the admin UI"
        insert_rows(raw, _details, [detail_row(job, text, "Queued", now) for job in jobs])
    if jobs:
        logger.info(
            "admin %s retried %d failed jobs; %d later steps they had stopped will run after them",
            admin,
            len(jobs),
            resumed,
        )
    return Requeued([job["id"] for job in jobs], refused)


def _resume_stopped_chains(raw: sqlite3.Connection, jobs: list[dict[str, Any]], at: str | None) -> int:
    """Set the later steps that each job's failure canceled back to pending; return how many.

    Those steps never ran, so they have no execution details. Steps canceled with the
    transaction, or discarded, have a detail that records it and stay canceled.
    """
    statement = (
        "UPDATE job SET status = 'pending', updated_at = ? "
        "WHERE notification_id = ? AND position > ? AND status = 'canceled' "
        "AND NOT EXISTS (SELECT 1 FROM execution_detail d WHERE d.job_id = job.id)"
    )
    resumed = 0
    for job in jobs:
        resumed += raw.execute(statement, [at, job["notification_id"], job["position"]]).rowcount
    return resumed


def discard_failed_jobs(store: Store, clock: Clock, job_ids: list[str], admin: str) -> int:
    """Mark failed jobs canceled, keeping their error; return how many were discarded."""
    if not job_ids:
        return 0
    discard = functools.partial(_discard_once, store, clock, job_ids, admin)
    return retry_conflicts(discard, f"discarding {len(job_ids)} failed jobs")


def _discard_once(store: Store, clock: Clock, job_ids: list[str], admin: str) -> int:
    with store.raw_write() as raw:
        now = clock.now()
        at = db_datetime(now)
        rows = raw.execute(
            "UPDATE job SET status = 'canceled', updated_at = ? "
            f"WHERE id IN ({placeholders(len(job_ids))}) AND status = 'failed' RETURNING id, notification_id",
            [at, *job_ids],
        ).fetchall()
        text = f"Discarded by {admin} from the admin UI"
        insert_rows(
            raw,
            _details,
            [detail_row({"id": row[0], "notification_id": row[1]}, text, "Warning", now) for row in rows],
        )
    if rows:
        logger.info("admin %s discarded %d failed jobs", admin, len(rows))
    return len(rows)
