"""Renew the leases of jobs that run outside a transaction, so that no other worker takes them over.

A job's claim gives it a lease of job_lease_seconds. A step that waits on the
network holds its job longer than that, so this thread extends the lease every
job_lease_seconds / 3 while the step runs. When the process dies, renewal stops,
the lease runs out, and the reconciler hands the job to another worker as a new
attempt.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading

from novulite.clock import Clock
from novulite.db.fast import db_datetime
from novulite.db.store import Store

logger = logging.getLogger("novulite.worker")


class LeaseKeeper:
    """Extend the lease of every job this process holds, from its claim until its outcome is recorded.

    Renewal is fenced like the outcome: it extends a lease only while the job is
    still running under the attempt that holds it. A job that another worker took
    over is dropped and logged.
    """

    def __init__(self, store: Store, clock: Clock, lease_seconds: float) -> None:
        self._store = store
        self._clock = clock
        self._lease = dt.timedelta(seconds=lease_seconds)
        # (job id, attempt) -> the instant renewal stops, so a hung worker cannot keep its job forever.
        self._held: dict[tuple[str, int], dt.datetime] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="novulite-leases", daemon=True)

    def hold(self, job_id: str, attempt: int, seconds: float) -> None:
        """Renew the lease of `job_id` under `attempt` for at most `seconds` from now."""
        until = self._clock.now() + dt.timedelta(seconds=seconds)
        with self._lock:
            self._held[job_id, attempt] = until

    def release(self, job_id: str, attempt: int) -> None:
        with self._lock:
            self._held.pop((job_id, attempt), None)

    def held(self) -> list[tuple[str, int]]:
        """Return the (job id, attempt) pairs whose leases are renewed."""
        with self._lock:
            return list(self._held)

    def renew(self) -> list[tuple[str, int]]:
        """Extend every held lease once; return the (job id, attempt) pairs no longer renewed."""
        now = self._clock.now()
        with self._lock:
            held = list(self._held.items())
        overdue = [key for key, until in held if until <= now]
        lost: list[tuple[str, int]] = []
        # In id order, as claims lock rows, so two transactions on PostgreSQL wait in one direction.
        due = sorted(key for key, until in held if until > now)
        if due:
            lease_until = db_datetime(now + self._lease)
            with self._store.raw_write() as raw:
                for job_id, attempt in due:
                    cursor = raw.execute(
                        "UPDATE job SET lease_until = ? WHERE id = ? AND status = 'running' AND attempt = ?",
                        [lease_until, job_id, attempt],
                    )
                    if cursor.rowcount == 0:
                        lost.append((job_id, attempt))
        with self._lock:
            # A job released meanwhile had its outcome recorded, which is not a loss.
            lost = [key for key in lost if key in self._held]
            for key in (*overdue, *lost):
                self._held.pop(key, None)
        for job_id, attempt in overdue:
            logger.warning(
                "job %s attempt %d ran past its time limit; its lease is left to expire", job_id, attempt
            )
        for job_id, attempt in lost:
            logger.warning(
                "job %s is no longer running under attempt %d; its lease is dropped", job_id, attempt
            )
        return [*overdue, *lost]

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        interval = self._lease.total_seconds() / 3
        while not self._stop.wait(interval):
            try:
                self.renew()
            except Exception:
                logger.exception("renewing job leases failed; the next pass retries")
