"""standard: run jobs, record each outcome and queue the next job of its chain.

A job is claimed by a conditional UPDATE that also bumps `attempt`. In-app steps
touch only the job store, so the claims, the steps' writes and the outcomes of a
batch share one transaction: a crash anywhere leaves the jobs as they were, and the
message table's one-row-per-job rule keeps delivery exactly-once. When a batch
raises, its transaction rolls back and each job is run again on its own, so one bad
job cannot hold up the others.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import random
from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from novulite.db.models import ExecutionDetail, Job, Notification, Subscriber, TriggerEvent, Workflow
from novulite.engine.context import WorkerContext
from novulite.engine.steps import in_app
from novulite.engine.steps.base import PermanentStepError, StepContext, StepResult
from novulite.engine.templates import TemplateError
from novulite.ids import new_id
from novulite.queues import RUN_JOBS

logger = logging.getLogger("novulite.worker")

StepHandler = Callable[[StepContext], StepResult]
STEP_HANDLERS: dict[str, StepHandler] = {"in_app": in_app.run}
# The wait before retry n (n >= 1) is drawn uniformly from [0, RETRY_BASE_SECONDS * 2**(n-1)].
RETRY_BASE_SECONDS = 2.0
# ORM UPDATEs here are guarded by their WHERE clauses; skip syncing loaded objects to them.
_NO_SYNC = {"synchronize_session": False}


@dataclasses.dataclass
class _Outcome:
    """Follow-up work from committed outcomes: next jobs, retries and realtime events."""

    next_job_ids: list[str] = dataclasses.field(default_factory=list)
    retries: list[tuple[str, float]] = dataclasses.field(default_factory=list)
    events: dict[str, list[Any]] = dataclasses.field(default_factory=dict)

    def merge(self, other: _Outcome) -> None:
        self.next_job_ids.extend(other.next_job_ids)
        self.retries.extend(other.retries)
        for task_name, ids in other.events.items():
            self.events.setdefault(task_name, []).extend(ids)


def run_jobs(ctx: WorkerContext, job_ids: list[str]) -> None:
    outcome = _run_isolating_failures(ctx, job_ids)
    # The reconciler redoes a lost enqueue, because the job store records what is due.
    for task_name, ids in outcome.events.items():
        ctx.queues.enqueue(task_name, ids)
    if outcome.next_job_ids:
        ctx.queues.enqueue(RUN_JOBS, outcome.next_job_ids)
    for job_id, delay in outcome.retries:
        ctx.queues.schedule(RUN_JOBS, delay, [job_id])


def _run_isolating_failures(ctx: WorkerContext, job_ids: list[str]) -> _Outcome:
    try:
        return _run_batch(ctx, job_ids)
    except Exception as exc:
        if len(job_ids) == 1:
            logger.exception("job %s failed unexpectedly", job_ids[0])
            return _record_unexpected(ctx, job_ids[0], exc)
        logger.warning("a batch of %d jobs failed; running them one by one", len(job_ids))
    outcome = _Outcome()
    for job_id in job_ids:
        outcome.merge(_run_isolating_failures(ctx, [job_id]))
    return outcome


def _claimable(now: dt.datetime) -> Any:
    """Jobs that are due, or whose previous runner's lease expired."""
    return or_(
        and_(Job.status == "queued", Job.run_at <= now),
        and_(Job.status == "running", Job.lease_until < now),
    )


def _claim(session: Session, job_ids: Iterable[str], now: dt.datetime, lease_seconds: float) -> list[str]:
    return list(
        session.scalars(
            update(Job)
            .where(Job.id.in_(list(job_ids)), _claimable(now))
            .values(
                status="running",
                attempt=Job.attempt + 1,
                lease_until=now + dt.timedelta(seconds=lease_seconds),
                updated_at=now,
            )
            .returning(Job.id)
            .execution_options(**_NO_SYNC)
        )
    )


def _run_batch(ctx: WorkerContext, job_ids: list[str]) -> _Outcome:
    now = ctx.clock.now()
    outcome = _Outcome()
    with ctx.store.write() as session:
        claimed = _claim(session, job_ids, now, ctx.settings.job_lease_seconds)
        if not claimed:
            return outcome
        jobs = session.scalars(select(Job).where(Job.id.in_(claimed)).order_by(Job.id)).all()
        rows = _Rows.load(session, jobs)
        completed = []
        for job in jobs:
            result = _run_step(session, job, rows, now, outcome)
            if result is not None:
                completed.append(job)
                for task_name, ids in result.events:
                    outcome.events.setdefault(task_name, []).extend(ids)
        outcome.next_job_ids.extend(_queue_next(session, completed, now))
    return outcome


@dataclasses.dataclass
class _Rows:
    """The rows a batch of jobs refers to, loaded with one query per table."""

    notifications: dict[str, Notification]
    triggers: dict[str, TriggerEvent]
    subscribers: dict[str, Subscriber]
    workflows: dict[str, Workflow]

    @classmethod
    def load(cls, session: Session, jobs: Iterable[Job]) -> _Rows:
        jobs = list(jobs)
        notifications = _by_id(session, Notification, {job.notification_id for job in jobs})
        return cls(
            notifications=notifications,
            triggers=_by_id(session, TriggerEvent, {n.trigger_id for n in notifications.values()}),
            subscribers=_by_id(session, Subscriber, {job.subscriber_pk for job in jobs}),
            workflows=_by_id(session, Workflow, {n.workflow_pk for n in notifications.values()}),
        )


def _by_id(session: Session, model: Any, ids: set[str]) -> dict[str, Any]:
    return {row.id: row for row in session.scalars(select(model).where(model.id.in_(ids)))}


def _run_step(
    session: Session, job: Job, rows: _Rows, now: dt.datetime, outcome: _Outcome
) -> StepResult | None:
    """Run one claimed job; return its result when it completed, None when it failed."""
    notification = rows.notifications[job.notification_id]
    context = StepContext(
        session=session,
        job=job,
        notification=notification,
        trigger=rows.triggers[notification.trigger_id],
        subscriber=rows.subscribers[job.subscriber_pk],
        workflow=rows.workflows[notification.workflow_pk],
        now=now,
    )
    handler = STEP_HANDLERS.get(job.type)
    try:
        if handler is None:
            raise PermanentStepError(f"step type {job.type!r} is not supported by this server")
        result = handler(context)
    except (PermanentStepError, TemplateError) as exc:
        outcome.merge(_fail(session, job, now, exc, transient=False))
        return None
    job.status = "completed"
    job.output = result.output
    job.lease_until = None
    job.updated_at = now
    session.add_all(_detail(job, text, status, now) for text, status in result.details)
    return result


def _queue_next(session: Session, jobs: list[Job], now: dt.datetime) -> list[str]:
    """Queue the pending child of each job; return the queued ids."""
    if not jobs:
        return []
    children = list(
        session.scalars(
            select(Job.id).where(Job.parent_id.in_([job.id for job in jobs]), Job.status == "pending")
        )
    )
    if not children:
        return []
    return list(
        session.scalars(
            update(Job)
            .where(Job.id.in_(children), Job.status == "pending")
            .values(status="queued", run_at=now, updated_at=now)
            .returning(Job.id)
            .execution_options(**_NO_SYNC)
        )
    )


def _fail(session: Session, job: Job, now: dt.datetime, exc: Exception, *, transient: bool) -> _Outcome:
    """Record a failed attempt: queue a retry if one is left, else fail the job and move on."""
    error: dict[str, Any] = {
        "type": type(exc).__name__,
        "message": str(exc) or type(exc).__name__,
        "attempt": job.attempt,
        "retryable": transient,
    }
    job.lease_until = None
    job.updated_at = now
    if transient and job.attempt < job.max_attempts:
        delay = random.uniform(0, RETRY_BASE_SECONDS * 2 ** (job.attempt - 1))
        job.status = "queued"
        job.run_at = now + dt.timedelta(seconds=delay)
        error["nextRetryAt"] = job.run_at.isoformat()
        job.error = error
        session.add(_detail(job, f"Attempt {job.attempt} failed; retrying", "Warning", now, error))
        return _Outcome(retries=[(job.id, delay)])
    job.status = "failed"
    error["nextRetryAt"] = None
    job.error = error
    session.add(_detail(job, "Step failed", "Failed", now, error))
    if job.step.get("controlValues", {}).get("stopOnFailure"):
        return _Outcome()
    return _Outcome(next_job_ids=_queue_next(session, [job], now))


def _record_unexpected(ctx: WorkerContext, job_id: str, exc: Exception) -> _Outcome:
    """Count an attempt that raised; its transaction rolled back, so claim the job again first."""
    now = ctx.clock.now()
    with ctx.store.write() as session:
        if not _claim(session, [job_id], now, ctx.settings.job_lease_seconds):
            return _Outcome()
        return _fail(session, session.get_one(Job, job_id), now, exc, transient=True)


def _detail(
    job: Job, text: str, status: str, now: dt.datetime, raw: dict[str, Any] | None = None
) -> ExecutionDetail:
    return ExecutionDetail(
        id=new_id(),
        job_id=job.id,
        notification_id=job.notification_id,
        status=status,
        detail=text,
        source="Internal",
        raw=raw,
        created_at=now,
    )
