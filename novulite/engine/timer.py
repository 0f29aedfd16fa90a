"""Release delayed jobs to the standard queue the moment they come due.

Huey's scheduler looks at its schedule once a second, which would make every delay up
to a second late. This thread instead sleeps until the earliest due time in the job
store, or until a worker reports an earlier one, and then queues what is due.

The job store stays the only record of what waits. A job keeps status `delayed`
until a worker claims it, so after a crash or a restart the first pass finds every
job that came due meanwhile and queues it once.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from typing import Any

from novulite.db.fast import db_datetime
from novulite.queues import RUN_JOBS

logger = logging.getLogger("novulite.timer")

CHUNK = 100
# How many due jobs one pass queues; a larger backlog takes further passes at once.
PASS_LIMIT = 2000
# The maximum sleep between passes, so delayed jobs written by another process are found.
IDLE_SECONDS = 1.0
# A job still delayed this long after it was queued lost its queue entry; queue it again.
REQUEUE_AFTER_SECONDS = 30.0


class DueJobTimer:
    """A thread that queues delayed jobs when their run_at passes."""

    def __init__(self, ctx: Any) -> None:
        self._ctx = ctx
        self._wake = threading.Condition()
        self._next_due: dt.datetime | None = None
        self._stopping = False
        # Job id -> monotonic time it was queued, so a job waiting for its claim is not queued twice.
        self._queued: dict[str, float] = {}
        self._thread = threading.Thread(target=self._loop, name="novulite-timer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def notify(self, due: dt.datetime) -> None:
        """Record that a job now waits until `due`, and wake the thread if that is sooner than planned."""
        with self._wake:
            if self._next_due is None or due < self._next_due:
                self._next_due = due
                self._wake.notify()

    def _loop(self) -> None:
        while True:
            try:
                more = self.run_once()
            except Exception:
                logger.exception("queueing due jobs failed; the next pass retries")
                more = False
            with self._wake:
                if self._stopping:
                    return
                if not more:
                    self._wake.wait(self._sleep_seconds())
                if self._stopping:
                    return

    def _sleep_seconds(self) -> float:
        if self._next_due is None:
            return IDLE_SECONDS
        left = (self._next_due - self._ctx.clock.now()).total_seconds()
        return min(max(left, 0.0), IDLE_SECONDS)

    def run_once(self) -> bool:
        """Queue the jobs due now; return True when more were due than one pass takes."""
        now = self._ctx.clock.now()
        with self._wake:
            # Cleared before the query, so a notify() racing with this pass is not lost.
            self._next_due = None
        raw = self._ctx.store.raw_read()
        at = db_datetime(now)
        due = [
            row[0]
            for row in raw.execute(
                "SELECT id FROM job WHERE status = 'delayed' AND run_at <= ? ORDER BY run_at LIMIT ?",
                [at, PASS_LIMIT],
            )
        ]
        following = raw.execute(
            "SELECT min(run_at) FROM job WHERE status = 'delayed' AND run_at > ?", [at]
        ).fetchone()[0]
        fresh = self._queue(due)
        if following is not None:
            self.notify(_parse(following))
        if len(due) < PASS_LIMIT:
            return False
        if fresh:
            return True
        # A full pass of jobs still waiting for their claim: look again shortly for the ones behind them.
        self.notify(now + dt.timedelta(seconds=0.05))
        return False

    def _queue(self, due: list[str]) -> int:
        """Queue the due jobs not queued recently; return how many were queued."""
        clock = time.monotonic()
        for job_id, queued_at in list(self._queued.items()):
            if clock - queued_at > REQUEUE_AFTER_SECONDS:
                del self._queued[job_id]
        fresh = [job_id for job_id in due if job_id not in self._queued]
        for start in range(0, len(fresh), CHUNK):
            self._ctx.queues.enqueue(RUN_JOBS, fresh[start : start + CHUNK])
        for job_id in fresh:
            self._queued[job_id] = clock
        # Ids no longer due were claimed; forget them so the map stays small.
        still_due = set(due)
        for job_id in [job_id for job_id in self._queued if job_id not in still_due]:
            del self._queued[job_id]
        if fresh:
            logger.debug("queued %d due jobs", len(fresh))
        return len(fresh)


def _parse(value: Any) -> dt.datetime:
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    return dt.datetime.fromisoformat(str(value)).replace(tzinfo=dt.UTC)
