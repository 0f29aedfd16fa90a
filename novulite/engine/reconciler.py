"""Re-queue work whose queue entry was lost: after a crash, a kill -9 or a restart.

The job store is the source of truth. Anything it shows as due but unclaimed after
a grace period, or as running under an expired lease, is enqueued again. Claims
make a duplicate entry harmless: the second delivery finds nothing to do.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time

from sqlalchemy import and_, or_, select, update

from novulite.db.dialect import rowcount
from novulite.db.models import Job, Notification, TriggerEvent
from novulite.engine.context import WorkerContext
from novulite.engine.retention import RETENTION_INTERVAL_SECONDS, purge_history
from novulite.idempotency import purge_expired
from novulite.queues import EXPAND_NOTIFICATIONS, HANDLE_TRIGGERS, RUN_JOBS

logger = logging.getLogger("novulite.worker")

BATCH = 500
CHUNK = 100


def release_leases(ctx: WorkerContext) -> int:
    """Expire the lease of every running job and paged fan-out; return how many there were.

    Call it only when no other process runs jobs on this store, as at the start of
    the embedded server: a job still marked running, or a paged trigger holding off
    the reconciler with retry_after, was cut off by the last stop.

    On PostgreSQL other processes may be running jobs under their leases, so nothing
    is released: the leases of a stopped process run out within job_lease_seconds.
    """
    if ctx.store.dialect == "postgresql":
        return 0
    now = ctx.clock.now()
    with ctx.store.write() as session:
        released = rowcount(
            session.execute(
                update(Job)
                .where(Job.status == "running", Job.lease_until >= now)
                .values(lease_until=now - dt.timedelta(microseconds=1))
                .execution_options(synchronize_session=False)
            )
        )
        fan_outs = rowcount(
            session.execute(
                update(TriggerEvent)
                .where(
                    TriggerEvent.status == "received",
                    TriggerEvent.cursor.is_not(None),
                    TriggerEvent.retry_after > now,
                )
                .values(retry_after=None)
                .execution_options(synchronize_session=False)
            )
        )
    if released:
        logger.info("released the leases of jobs interrupted by the last stop: %d", released)
    if fan_outs:
        logger.info("resuming %d paged fan-outs interrupted by the last stop", fan_outs)
    return released + fan_outs


def reconcile(ctx: WorkerContext, grace: dt.timedelta) -> int:
    """Enqueue every trigger, notification and job left behind; return how many were enqueued."""
    now = ctx.clock.now()
    cutoff = now - grace
    with ctx.store.read() as session:
        trigger_ids = list(
            session.scalars(
                select(TriggerEvent.id)
                .where(
                    TriggerEvent.status == "received",
                    TriggerEvent.created_at <= cutoff,
                    or_(TriggerEvent.retry_after.is_(None), TriggerEvent.retry_after <= now),
                )
                .limit(BATCH)
            )
        )
        notification_ids = list(
            session.scalars(
                select(Notification.id)
                .where(Notification.expansion == "pending", Notification.created_at <= cutoff)
                .limit(BATCH)
            )
        )
        job_ids = list(
            session.scalars(
                select(Job.id)
                .where(
                    or_(
                        and_(Job.status == "queued", Job.run_at <= cutoff),
                        and_(Job.status == "running", Job.lease_until < now),
                    )
                )
                .limit(BATCH)
            )
        )
    for task_name, ids in (
        (HANDLE_TRIGGERS, trigger_ids),
        (EXPAND_NOTIFICATIONS, notification_ids),
        (RUN_JOBS, job_ids),
    ):
        for start in range(0, len(ids), CHUNK):
            ctx.queues.enqueue(task_name, ids[start : start + CHUNK])
    total = len(trigger_ids) + len(notification_ids) + len(job_ids)
    if total:
        logger.info(
            "re-queued %d triggers, %d notifications and %d jobs",
            len(trigger_ids),
            len(notification_ids),
            len(job_ids),
        )
    return total


# Expired Idempotency-Key records are deleted this often.
PURGE_INTERVAL_SECONDS = 300.0


class Reconciler:
    """A thread that calls reconcile() every `interval` seconds until stopped."""

    def __init__(self, ctx: WorkerContext, interval: float, grace: float) -> None:
        self._ctx = ctx
        self._interval = interval
        self._grace = dt.timedelta(seconds=grace)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="novulite-reconciler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        next_purge = 0.0
        next_retention = 0.0
        while not self._stop.wait(self._interval):
            try:
                reconcile(self._ctx, self._grace)
            except Exception:
                logger.exception("reconciler pass failed; the next pass retries")
            if time.monotonic() >= next_purge:
                next_purge = time.monotonic() + PURGE_INTERVAL_SECONDS
                self._purge_idempotency_records()
            if time.monotonic() >= next_retention:
                next_retention = time.monotonic() + RETENTION_INTERVAL_SECONDS
                self._purge_history()

    def _purge_history(self) -> None:
        days = self._ctx.settings.retention_days
        if days <= 0:
            return
        try:
            result = purge_history(self._ctx.store.raw_write, self._ctx.clock.now(), days)
        except Exception:
            logger.exception(
                "deleting messages and execution details past retention failed; the next hour retries"
            )
            return
        if result.messages or result.execution_details:
            logger.info(
                "deleted %d messages and %d execution details older than %d days",
                result.messages,
                result.execution_details,
                days,
            )

    def _purge_idempotency_records(self) -> None:
        try:
            with self._ctx.store.raw_write() as raw:
                purged = purge_expired(raw, self._ctx.clock.now())
        except Exception:
            logger.exception("deleting expired idempotency records failed; the next pass retries")
            return
        if purged:
            logger.info("deleted %d expired idempotency records", purged)
