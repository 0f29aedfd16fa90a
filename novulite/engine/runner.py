"""standard: run one job, record its outcome and queue the next job of its chain.

A job is claimed by a conditional UPDATE that also bumps `attempt`. The attempt
number then fences the work: the transaction that records the outcome first checks
that the job is still running under that attempt, so a worker whose lease expired
and was taken over cannot record a second outcome.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import random
from collections.abc import Callable
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from novulite.db.models import (
    ExecutionDetail,
    Job,
    Notification,
    Subscriber,
    TriggerEvent,
    Workflow,
)
from novulite.engine.context import WorkerContext
from novulite.engine.steps import in_app
from novulite.engine.steps.base import PermanentStepError, StepContext, StepResult
from novulite.engine.templates import TemplateError
from novulite.queues import RUN_JOB

logger = logging.getLogger("novulite.worker")

StepHandler = Callable[[StepContext], StepResult]
STEP_HANDLERS: dict[str, StepHandler] = {"in_app": in_app.run}
# Backoff before retry attempt n (n >= 1) is drawn uniformly from [0, base * 2**(n-1)] seconds.
RETRY_BASE_SECONDS = 2.0


@dataclasses.dataclass
class _AfterCommit:
    next_job_id: str | None = None
    retry_delay: float | None = None
    events: list[tuple[str, tuple[Any, ...]]] = dataclasses.field(default_factory=list)


def run_job(ctx: WorkerContext, job_id: str) -> None:
    attempt = _claim(ctx, job_id)
    if attempt is None:
        return
    try:
        after = _execute(ctx, job_id, attempt)
    except Exception as exc:
        logger.exception("job %s attempt %d failed unexpectedly", job_id, attempt)
        after = _record_failure(ctx, job_id, attempt, exc, transient=True)
    _dispatch(ctx, job_id, after)


def _claim(ctx: WorkerContext, job_id: str) -> int | None:
    """Move the job to running if it is due, or if its previous runner's lease expired."""
    now = ctx.clock.now()
    lease_until = now + dt.timedelta(seconds=ctx.settings.job_lease_seconds)
    with Session(ctx.engine) as session, session.begin():
        claimable = or_(
            and_(Job.status == "queued", Job.run_at <= now),
            and_(Job.status == "running", Job.lease_until < now),
        )
        attempt = session.scalar(
            update(Job)
            .where(Job.id == job_id, claimable)
            .values(status="running", attempt=Job.attempt + 1, lease_until=lease_until, updated_at=now)
            .returning(Job.attempt)
        )
    return attempt


def _owned_job(session: Session, job_id: str, attempt: int) -> Job | None:
    job = session.get(Job, job_id)
    if job is None or job.status != "running" or job.attempt != attempt:
        logger.warning("job %s attempt %d lost its claim; its outcome is dropped", job_id, attempt)
        return None
    return job


def _execute(ctx: WorkerContext, job_id: str, attempt: int) -> _AfterCommit:
    now = ctx.clock.now()
    with Session(ctx.engine) as session, session.begin():
        job = _owned_job(session, job_id, attempt)
        if job is None:
            return _AfterCommit()
        step_context = _step_context(session, job, now)
        handler = STEP_HANDLERS.get(job.type)
        try:
            if handler is None:
                raise PermanentStepError(f"step type {job.type!r} is not supported by this server")
            result = handler(step_context)
        except (PermanentStepError, TemplateError) as exc:
            return _fail(session, job, now, exc, transient=False)
        job.status = "completed"
        job.output = result.output
        job.lease_until = None
        job.updated_at = now
        for text, status in result.details:
            session.add(_detail(job, text, status, now))
        after = _AfterCommit(events=list(result.events))
        after.next_job_id = _queue_next(session, job, now)
        return after


def _step_context(session: Session, job: Job, now: dt.datetime) -> StepContext:
    notification = session.get_one(Notification, job.notification_id)
    trigger = session.get_one(TriggerEvent, notification.trigger_id)
    return StepContext(
        session=session,
        job=job,
        notification=notification,
        trigger=trigger,
        subscriber=session.get_one(Subscriber, job.subscriber_pk),
        workflow=session.get_one(Workflow, notification.workflow_pk),
        now=now,
    )


def _queue_next(session: Session, job: Job, now: dt.datetime) -> str | None:
    next_id = session.scalar(select(Job.id).where(Job.parent_id == job.id, Job.status == "pending"))
    if next_id is None:
        return None
    session.execute(
        update(Job)
        .where(Job.id == next_id, Job.status == "pending")
        .values(status="queued", run_at=now, updated_at=now)
    )
    return next_id


def _fail(session: Session, job: Job, now: dt.datetime, exc: Exception, *, transient: bool) -> _AfterCommit:
    """Record a failed attempt: queue a retry if one is left, else fail the job and move on."""
    error = {
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
        return _AfterCommit(retry_delay=delay)
    job.status = "failed"
    error["nextRetryAt"] = None
    job.error = error
    session.add(_detail(job, "Step failed", "Failed", now, error))
    stop = bool(job.step.get("controlValues", {}).get("stopOnFailure"))
    return _AfterCommit(next_job_id=None if stop else _queue_next(session, job, now))


def _record_failure(
    ctx: WorkerContext, job_id: str, attempt: int, exc: Exception, *, transient: bool
) -> _AfterCommit:
    now = ctx.clock.now()
    with Session(ctx.engine) as session, session.begin():
        job = _owned_job(session, job_id, attempt)
        if job is None:
            return _AfterCommit()
        return _fail(session, job, now, exc, transient=transient)


def _dispatch(ctx: WorkerContext, job_id: str, after: _AfterCommit) -> None:
    """Enqueue what the committed outcome calls for; a lost enqueue is redone by the reconciler."""
    for task_name, args in after.events:
        ctx.queues.enqueue(task_name, *args)
    if after.next_job_id is not None:
        ctx.queues.enqueue(RUN_JOB, after.next_job_id)
    if after.retry_delay is not None:
        ctx.queues.schedule(RUN_JOB, after.retry_delay, job_id)


def _detail(
    job: Job, text: str, status: str, now: dt.datetime, raw: dict[str, Any] | None = None
) -> ExecutionDetail:
    return ExecutionDetail(
        job_id=job.id,
        notification_id=job.notification_id,
        status=status,
        detail=text,
        source="Internal",
        raw=raw,
        created_at=now,
    )
