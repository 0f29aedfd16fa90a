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
import sqlite3
from collections.abc import Callable
from typing import Any

from sqlalchemy import Table

from novulite.db.fast import db_datetime, fetch, insert_rows, placeholders, write_value
from novulite.db.models import (
    ExecutionDetail,
    Job,
    Message,
    Notification,
    Subscriber,
    TriggerEvent,
    Workflow,
    table,
)
from novulite.engine import gate
from novulite.engine.conditions import ConditionError
from novulite.engine.context import WorkerContext
from novulite.engine.details import detail_row
from novulite.engine.lookups import load_actors, load_preferences, load_step_outputs, notification_context
from novulite.engine.steps import digest, in_app, throttle, unconfigured
from novulite.engine.steps.base import PermanentStepError, StepContext, StepResult, TransientStepError
from novulite.engine.templates import TemplateError
from novulite.engine.variables import actor_id
from novulite.queues import RUN_JOBS

logger = logging.getLogger("novulite.worker")

StepHandler = Callable[[StepContext], StepResult]
STEP_HANDLERS: dict[str, StepHandler] = {
    "in_app": in_app.run,
    "email": unconfigured.run,
    "sms": unconfigured.run,
    "push": unconfigured.run,
    "chat": unconfigured.run,
    "digest": digest.run,
    "throttle": throttle.run,
}
# Step types whose final failure cancels the rest of the chain: after a throttle that could not
# decide, running the later steps could send more than the throttle allows.
CANCEL_CHAIN_ON_FAILURE = ("throttle",)
# The wait before retry n (n >= 1) is drawn uniformly from [0, RETRY_BASE_SECONDS * 2**(n-1)].
RETRY_BASE_SECONDS = 2.0

_jobs = table(Job)
_details = table(ExecutionDetail)
_messages = table(Message)
_NOTIFICATION_COLUMNS = (
    "n.id AS id, n.workflow_pk AS workflow_pk, n.context_keys AS context_keys, "
    "t.payload AS payload, t.overrides AS overrides, t.context AS context, t.actor AS actor"
)


@dataclasses.dataclass
class _Outcome:
    """Follow-up work from committed outcomes: next jobs, retries and realtime events."""

    next_job_ids: list[str] = dataclasses.field(default_factory=list)
    retries: list[tuple[str, float]] = dataclasses.field(default_factory=list)
    events: dict[str, list[Any]] = dataclasses.field(default_factory=dict)
    # Due times of jobs that went to wait, for the timer that releases them.
    waits: list[dt.datetime] = dataclasses.field(default_factory=list)

    def merge(self, other: _Outcome) -> None:
        self.next_job_ids.extend(other.next_job_ids)
        self.retries.extend(other.retries)
        self.waits.extend(other.waits)
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
    if outcome.waits and ctx.timer is not None:
        ctx.timer.notify(min(outcome.waits))


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


def _claim(raw: sqlite3.Connection, job_ids: list[str], now: dt.datetime, lease_seconds: float) -> list[Any]:
    """Move due jobs, and jobs whose previous runner's lease expired, to running; return them by id.

    Returned rows carry the new status, so a step that waited tells its second run apart by its output.
    """
    at = db_datetime(now)
    lease_until = db_datetime(now + dt.timedelta(seconds=lease_seconds))
    # A delayed job that comes due resumes the attempt that put it to wait, so it does not count one.
    jobs = fetch(
        raw,
        "UPDATE job SET status = 'running', attempt = attempt + (status <> 'delayed'), lease_until = ?, "
        f"updated_at = ? WHERE id IN ({placeholders(len(job_ids))}) "
        "AND ((status IN ('queued', 'delayed') AND run_at <= ?) OR (status = 'running' AND lease_until < ?)) "
        "RETURNING *",
        [lease_until, at, *job_ids, at, at],
        _jobs,
    )
    return sorted(jobs, key=lambda job: job.id)


def _by_id(raw: sqlite3.Connection, sql: str, ids: set[str], *tables: Table) -> dict[str, Any]:
    return {row.id: row for row in fetch(raw, sql.format(placeholders(len(ids))), list(ids), *tables)}


def _run_batch(ctx: WorkerContext, job_ids: list[str]) -> _Outcome:
    now = ctx.clock.now()
    outcome = _Outcome()
    with ctx.store.raw_write() as raw:
        jobs = _claim(raw, job_ids, now, ctx.settings.job_lease_seconds)
        if not jobs:
            return outcome
        notifications = _by_id(
            raw,
            f"SELECT {_NOTIFICATION_COLUMNS} FROM notification n JOIN trigger_event t ON t.id = n.trigger_id "
            "WHERE n.id IN ({})",
            {job.notification_id for job in jobs},
            table(Notification),
            table(TriggerEvent),
        )
        subscribers = _by_id(
            raw,
            "SELECT * FROM subscriber WHERE id IN ({})",
            {job.subscriber_pk for job in jobs},
            table(Subscriber),
        )
        workflows = _by_id(
            raw,
            "SELECT * FROM workflow WHERE id IN ({})",
            {notification.workflow_pk for notification in notifications.values()},
            table(Workflow),
        )
        preferences = load_preferences(
            raw,
            {job.subscriber_pk for job in jobs},
            {notification_context(notification) for notification in notifications.values()},
        )
        # A chain's first job has no earlier steps to show.
        step_outputs = load_step_outputs(raw, {job.notification_id for job in jobs if job.position > 0})
        actors = load_actors(raw, notifications.values(), {job.environment_id for job in jobs})
        finished: list[tuple[Any, ...]] = []
        waiting: list[tuple[Any, ...]] = []
        halted: list[tuple[Any, ...]] = []
        details: list[dict[str, Any]] = []
        messages: list[dict[str, Any]] = []
        for job in jobs:
            notification = notifications[job.notification_id]
            workflow = workflows[notification.workflow_pk]
            context = StepContext(
                connection=raw,
                job=job,
                notification=notification,
                trigger=notification,
                subscriber=subscribers[job.subscriber_pk],
                workflow=workflow,
                now=now,
                steps=step_outputs.get(job.notification_id, {}),
                actor=actors.get((job.environment_id, actor_id(notification.actor) or "")),
                preferences=preferences.resolve(
                    workflow, job.subscriber_pk, notification_context(notification)
                ),
                limiter=ctx.limiter,
            )
            result = _run_step(context, outcome)
            if result is None:
                continue
            output = write_value(_jobs, "output", result.output)
            if result.wait_until is not None:
                waiting.append((db_datetime(result.wait_until), output, db_datetime(now), job.id))
                outcome.waits.append(result.wait_until)
            else:
                finished.append((result.status, output, db_datetime(now), job.id))
            if result.halt is not None:
                halted.append((result.halt, db_datetime(now), job.notification_id, job.position))
            details.extend(
                detail_row(job, text, status, now, raw_detail) for text, status, raw_detail in result.details
            )
            messages.extend(result.messages)
            for task_name, ids in result.events:
                outcome.events.setdefault(task_name, []).extend(ids)
        # The claim and the insert share a transaction, so a job's message can only be new here.
        insert_rows(raw, _messages, messages)
        if finished:
            raw.executemany(
                "UPDATE job SET status = ?, output = ?, lease_until = NULL, updated_at = ? WHERE id = ?",
                finished,
            )
        if waiting:
            raw.executemany(
                "UPDATE job SET status = 'delayed', run_at = ?, output = ?, lease_until = NULL, "
                "updated_at = ? WHERE id = ?",
                waiting,
            )
        if halted:
            # The rest of the chain takes the halting step's verdict instead of running.
            raw.executemany(
                "UPDATE job SET status = ?, updated_at = ? "
                "WHERE notification_id = ? AND position > ? AND status = 'pending'",
                halted,
            )
        if finished:
            outcome.next_job_ids.extend(_queue_next(raw, [row[3] for row in finished], now))
        insert_rows(raw, _details, details)
    return outcome


def _run_step(context: StepContext, outcome: _Outcome) -> StepResult | None:
    """Run one claimed job unless its conditions or preferences skip it; return None when it failed."""
    job = context.job
    handler = STEP_HANDLERS.get(job.type)
    try:
        if handler is None:
            raise PermanentStepError(f"step type {job.type!r} is not supported by this server")
        # A job that resumes after a wait left an output, and passed its conditions before it waited.
        resumed = job.output is not None
        return (None if resumed else gate.check(context)) or handler(context)
    except (PermanentStepError, TemplateError, ConditionError) as exc:
        outcome.merge(_fail(context.connection, job, context.now, exc, transient=False))
        return None
    except TransientStepError as exc:
        outcome.merge(_fail(context.connection, job, context.now, exc, transient=True))
        return None


def _queue_next(raw: sqlite3.Connection, parent_ids: list[str], now: dt.datetime) -> list[str]:
    """Queue the pending child of each job; return the queued ids."""
    at = db_datetime(now)
    rows = raw.execute(
        "UPDATE job SET status = 'queued', run_at = ?, updated_at = ? "
        f"WHERE parent_id IN ({placeholders(len(parent_ids))}) AND status = 'pending' RETURNING id",
        [at, at, *parent_ids],
    ).fetchall()
    return [row[0] for row in rows]


def _fail(
    raw: sqlite3.Connection, job: Any, now: dt.datetime, exc: Exception, *, transient: bool
) -> _Outcome:
    """Record a failed attempt: queue a retry if one is left, else fail the job and move on."""
    error: dict[str, Any] = {
        "type": type(exc).__name__,
        "message": str(exc) or type(exc).__name__,
        "attempt": job.attempt,
        "retryable": transient,
    }

    retry = transient and job.attempt < job.max_attempts
    delay = random.uniform(0, RETRY_BASE_SECONDS * 2 ** (job.attempt - 1)) if retry else 0.0
    run_at = now + dt.timedelta(seconds=delay) if retry else job.run_at
    error["nextRetryAt"] = run_at.isoformat() if retry else None

    raw.execute(
        "UPDATE job SET status = ?, run_at = ?, error = ?, lease_until = NULL, updated_at = ? WHERE id = ?",
        [
            "queued" if retry else "failed",
            db_datetime(run_at),
            write_value(_jobs, "error", error),
            db_datetime(now),
            job.id,
        ],
    )
    text, status = (
        (f"Attempt {job.attempt} failed; retrying", "Warning") if retry else ("Step failed", "Failed")
    )
    insert_rows(raw, _details, [detail_row(job, text, status, now, error)])

    first_line = error["message"].splitlines()[0] if error["message"] else ""
    logger.warning(
        "job %s (step %s, transaction %s) attempt %d failed with %s: %s; %s",
        job.id,
        job.step_id,
        job.transaction_id,
        job.attempt,
        error["type"],
        first_line,
        f"retrying in {delay:.1f} s" if retry else "no retry",
    )

    if retry:
        return _Outcome(retries=[(job.id, delay)])
    if job.type in CANCEL_CHAIN_ON_FAILURE:
        raw.execute(
            "UPDATE job SET status = 'canceled', updated_at = ? "
            "WHERE notification_id = ? AND position > ? AND status = 'pending'",
            [db_datetime(now), job.notification_id, job.position],
        )
        return _Outcome()
    if job.step.get("controlValues", {}).get("stopOnFailure"):
        return _Outcome()
    return _Outcome(next_job_ids=_queue_next(raw, [job.id], now))


def _record_unexpected(ctx: WorkerContext, job_id: str, exc: Exception) -> _Outcome:
    """Count an attempt that raised; its transaction rolled back, so claim the job again first."""
    now = ctx.clock.now()
    with ctx.store.raw_write() as raw:
        jobs = _claim(raw, [job_id], now, ctx.settings.job_lease_seconds)
        if not jobs:
            return _Outcome()
        return _fail(raw, jobs[0], now, exc, transient=True)
