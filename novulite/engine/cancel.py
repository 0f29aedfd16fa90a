"""Cancel a transaction: stop every job of it that has not run yet.

One write transaction under the store's write lock does the whole cancel, so it
is ordered against every fan-out page, expansion batch and job batch, each of
which also runs in one such transaction:

- a trigger still `received` (not fanned out yet, or a paged fan-out between
  pages) becomes `canceled`. The fan-out claims only `received` triggers, so no
  notification is added after the cancel, and the reconciler, which also looks
  for `received` only, never queues it again;
- a notification whose jobs do not exist yet (`expansion = 'pending'`) gets
  `expansion = 'canceled'`. process-subscriber claims only `pending`
  notifications, so it never creates their jobs, and the reconciler skips them;
- a job `pending`, `queued` or `delayed` becomes `canceled`, and gets an execution
  detail that records the cancel. The runner claims only `queued` and due `delayed`
  jobs (and `running` ones whose lease expired), and queues a chain's next job only
  from `pending`, so a canceled job and the rest of its chain never run, even when
  the due-job timer had queued it before the cancel;
- a job `merged` into a digest that is still open becomes `canceled` too, with the
  merged steps after it, so its event drops out of the digest. A canceled digest
  owner hands the digest to the oldest event still merged into it, which then waits
  for the digest's due time; with no such event the digest is closed.

Jobs that have finished keep their status and their messages. A job that is
`running` under an expired lease, left by a crashed batch, is not canceled: its
batch rolled back, and the runner may still complete it.

Every statement finds its rows through an index on transaction_id (digests by
their primary key), so the cancel costs a few indexed statements and adds no
query to the fan-out, expansion or runner.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import sqlite3

from novulite.clock import Clock
from novulite.db.fast import db_datetime, fetch, insert_rows
from novulite.db.models import ExecutionDetail, table
from novulite.db.sql import retry_conflicts
from novulite.db.store import Store
from novulite.engine import digests
from novulite.engine.details import detail_row

logger = logging.getLogger("novulite.worker")

CANCELABLE_JOB_STATUSES = ("pending", "queued", "delayed")
CANCELED_DETAIL = "Step canceled by request before it ran"

_details = table(ExecutionDetail)
# The notifications of a transaction whose events were merged into a digest not yet sent.
MERGED_INTO_OPEN_DIGEST = (
    "SELECT m.notification_id FROM job m JOIN digest d ON d.id = m.digest_id "
    "WHERE m.transaction_id = ? AND m.environment_id = ? AND m.status = 'merged' AND d.status = 'open'"
)


@dataclasses.dataclass(frozen=True)
class Canceled:
    """Counts of what a cancel stopped: triggers not fanned out, notifications without jobs, and jobs."""

    triggers: int
    notifications: int
    jobs: int

    @property
    def anything(self) -> bool:
        return bool(self.triggers or self.notifications or self.jobs)


def cancel_transaction(store: Store, clock: Clock, environment_id: str, transaction_id: str) -> Canceled:
    """Cancel what has not run yet of one transaction in one environment; return what was stopped."""
    cancel = functools.partial(_cancel_once, store, clock, environment_id, transaction_id)
    return retry_conflicts(cancel, f"canceling transaction {transaction_id}")


def _cancel_once(store: Store, clock: Clock, environment_id: str, transaction_id: str) -> Canceled:
    statuses = ", ".join("?" for _ in CANCELABLE_JOB_STATUSES)
    with store.raw_write() as raw:
        # Read the time under the write lock, so every job batch committed before the cancel is older.
        now = clock.now()
        at = db_datetime(now)
        triggers = raw.execute(
            "UPDATE trigger_event SET status = 'canceled', retry_after = NULL "
            "WHERE environment_id = ? AND transaction_id = ? AND status = 'received'",
            (environment_id, transaction_id),
        ).rowcount
        notifications = raw.execute(
            "UPDATE notification SET expansion = 'canceled' "
            "WHERE transaction_id = ? AND environment_id = ? AND expansion = 'pending'",
            (transaction_id, environment_id),
        ).rowcount
        owned = owned_open_digests(raw, environment_id, transaction_id)
        jobs = fetch(
            raw,
            "UPDATE job SET status = 'canceled', lease_until = NULL, updated_at = ? "
            f"WHERE transaction_id = ? AND environment_id = ? AND (status IN ({statuses}) "
            f"OR (status = 'merged' AND notification_id IN ({MERGED_INTO_OPEN_DIGEST}))) "
            "RETURNING id, notification_id",
            [at, transaction_id, environment_id, *CANCELABLE_JOB_STATUSES, transaction_id, environment_id],
        )
        insert_rows(raw, _details, [detail_row(job, CANCELED_DETAIL, "Warning", now) for job in jobs])
        for digest_id in owned:
            owner = digests.hand_over(raw, digest_id, now, "its owner's transaction was canceled")
            logger.info(
                "digest %s of canceled transaction %s %s",
                digest_id,
                transaction_id,
                f"handed over to job {owner}" if owner else "closed: no other event was merged into it",
            )
    canceled = Canceled(triggers, notifications, len(jobs))
    if canceled.anything:
        logger.info(
            "transaction %s canceled: %d triggers, %d notifications and %d jobs had not run yet",
            transaction_id,
            triggers,
            notifications,
            len(jobs),
        )
    return canceled


def owned_open_digests(raw: sqlite3.Connection, environment_id: str, transaction_id: str) -> list[str]:
    """Return the open digests whose owner is a job of the transaction that has not run its digest yet."""
    statuses = ", ".join("?" for _ in CANCELABLE_JOB_STATUSES)
    rows = raw.execute(
        "SELECT d.id FROM job j JOIN digest d ON d.id = j.digest_id AND d.owner_job_id = j.id "
        f"WHERE j.transaction_id = ? AND j.environment_id = ? AND j.status IN ({statuses}) "
        "AND d.status = 'open'",
        [transaction_id, environment_id, *CANCELABLE_JOB_STATUSES],
    ).fetchall()
    return [row[0] for row in rows]
