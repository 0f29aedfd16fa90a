"""standard: run jobs, record each outcome and queue the next job of its chain.

A job is claimed by a conditional UPDATE that also bumps `attempt`. In-app steps
touch only the job store, so the claims, the steps' writes and the outcomes of a
batch share one transaction: a crash anywhere leaves the jobs as they were, and the
message table's one-row-per-job rule keeps delivery exactly-once. When a batch
raises, its transaction rolls back and each job is run again on its own, so one bad
job cannot hold up the others.

Steps that call the outside world, such as http_request, return an ExternalCall
instead, and run in two phases. Their claim (running, with a lease) commits with
the batch. The call then runs on the CallPool, outside any transaction, while the
LeaseKeeper renews the lease. Its outcome is recorded in a new transaction only if
the job is still running under the same attempt. If the worker dies meanwhile, the
lease runs out and the job is taken over as a new attempt, so such steps run at
least once.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
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
from novulite.db.sql import claimable, not_indexed
from novulite.engine import gate
from novulite.engine.conditions import ConditionError
from novulite.engine.context import WorkerContext
from novulite.engine.details import detail_row
from novulite.engine.lookups import load_actors, load_preferences, load_step_outputs, notification_context
from novulite.engine.steps import channel, digest, email, http_request, in_app, throttle
from novulite.engine.steps import delay as delay_step
from novulite.engine.steps.base import (
    ExternalCall,
    PermanentStepError,
    StepContext,
    StepError,
    StepResult,
    TransientStepError,
)
from novulite.engine.templates import TemplateError
from novulite.engine.variables import actor_id
from novulite.metrics import DELIVERY_CHANNELS
from novulite.queues import RUN_JOBS

logger = logging.getLogger("novulite.worker")

StepHandler = Callable[[StepContext], StepResult | ExternalCall]
STEP_HANDLERS: dict[str, StepHandler] = {
    "in_app": in_app.run,
    "email": email.run,
    "sms": channel.run,
    "push": channel.run,
    "chat": channel.run,
    "digest": digest.run,
    "http_request": http_request.run,
    "throttle": throttle.run,
    "delay": delay_step.run,
}
# Step types whose failure ends the chain unless their controls set continueOnFailure. After a
# throttle that could not decide, running the later steps could send more than the throttle allows.
# A delay that cannot compute its due time must not let the next steps run at once.
STOP_CHAIN_ON_FAILURE = frozenset({"http_request", "throttle", "delay"})
# Failures that another attempt would meet again.
PERMANENT_ERRORS = (PermanentStepError, TemplateError, ConditionError)
# The start of the execution detail written when a job is taken over from a worker that stopped.
WORKER_LOST_PREFIX = "Worker lost"
# The wait before retry n (n >= 1) is drawn uniformly from [0, RETRY_BASE_SECONDS * 2**(n-1)].
RETRY_BASE_SECONDS = 2.0

_jobs = table(Job)
_details = table(ExecutionDetail)
_messages = table(Message)
# A job has one message, written with the outcome that ends an attempt. When an operator
# retries a failed delivery, the new outcome replaces the failure's message and keeps its id.
MESSAGE_UPSERT = "ON CONFLICT (job_id) DO UPDATE SET " + ", ".join(
    f"{name} = excluded.{name}"
    for name in ("status", "error", "subject", "content", "provider_id", "created_at", "updated_at")
)
_NOTIFICATION_COLUMNS = (
    "n.id AS id, n.workflow_pk AS workflow_pk, n.context_keys AS context_keys, "
    "t.payload AS payload, t.overrides AS overrides, t.context AS context, t.actor AS actor"
)


@dataclasses.dataclass
class _Outcome:
    """Follow-up work from committed outcomes: next jobs, retries and realtime events."""

    next_job_ids: list[str] = dataclasses.field(default_factory=list)
    events: dict[str, list[Any]] = dataclasses.field(default_factory=dict)
    # Due times of jobs that went to wait, for the timer that releases them.
    waits: list[dt.datetime] = dataclasses.field(default_factory=list)
    # Claimed jobs whose step runs after the commit, outside the transaction.
    calls: list[tuple[Any, ExternalCall]] = dataclasses.field(default_factory=list)
    # Final outcomes of channel steps as (channel, provider, delivered), counted once committed.
    deliveries: list[tuple[str, str | None, bool]] = dataclasses.field(default_factory=list)

    def merge(self, other: _Outcome) -> None:
        self.next_job_ids.extend(other.next_job_ids)
        self.deliveries.extend(other.deliveries)
        self.waits.extend(other.waits)
        self.calls.extend(other.calls)
        for task_name, ids in other.events.items():
            self.events.setdefault(task_name, []).extend(ids)


def run_jobs(ctx: WorkerContext, job_ids: list[str]) -> None:
    outcome = _run_isolating_failures(ctx, job_ids)
    _follow_up(ctx, outcome)
    if outcome.calls:
        _perform_calls(ctx, outcome.calls)


def _follow_up(ctx: WorkerContext, outcome: _Outcome) -> None:
    """Enqueue what committed outcomes started: next jobs, realtime events, and due times of waits."""
    if ctx.metrics is not None:
        for step_type, provider, delivered in outcome.deliveries:
            ctx.metrics.count_delivery(step_type, provider, delivered)
    # The reconciler redoes a lost enqueue, because the job store records what is due.
    for task_name, ids in outcome.events.items():
        ctx.queues.enqueue(task_name, ids)
    if outcome.next_job_ids:
        ctx.queues.enqueue(RUN_JOBS, outcome.next_job_ids)
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


# Claimable jobs: due ones, and running ones whose runner's lease expired. Each binds the current instant.
_DUE = "status IN ('queued', 'delayed') AND run_at <= ?"
_LEASE_EXPIRED = "status = 'running' AND lease_until < ?"


def _claim(
    raw: sqlite3.Connection, job_ids: list[str], now: dt.datetime, lease_seconds: float
) -> tuple[list[Any], set[str]]:
    """Move due jobs, and jobs whose previous runner's lease expired, to running; return them by id.

    Returned rows carry the new status, so a step that waited recognises its second run by its output.
    Also returns the ids of jobs taken over after their last attempt, which must fail instead of running.
    """
    at = db_datetime(now)
    lease_until = db_datetime(now + dt.timedelta(seconds=lease_seconds))
    # A delayed job that comes due resumes the attempt that put it to wait, so it does not count one.
    # A job delayed for a retry left no output, and its claim starts the next attempt.
    jobs = fetch(
        raw,
        "UPDATE job SET status = 'running', "
        "attempt = attempt + CASE WHEN status <> 'delayed' OR output IS NULL THEN 1 ELSE 0 END, "
        "lease_until = ?, updated_at = ? "
        f"WHERE {claimable(raw, 'job', len(job_ids), _DUE)} RETURNING *",
        [lease_until, at, *job_ids, at],
        _jobs,
    )
    # Only steps that run outside the transaction commit a running job, so only they are taken over.
    # Most batches claim every id above, and then skip this statement.
    rest = set(job_ids) - {job.id for job in jobs}
    taken_over = (
        fetch(
            raw,
            "UPDATE job SET attempt = attempt + 1, lease_until = ?, updated_at = ? "
            f"WHERE {claimable(raw, 'job', len(rest), _LEASE_EXPIRED)} RETURNING *",
            [lease_until, at, *rest, at],
            _jobs,
        )
        if rest
        else []
    )
    if taken_over:
        insert_rows(raw, _details, [_takeover_detail(job, now) for job in taken_over])
        for job in taken_over:
            logger.warning(
                "job %s (step %s): the worker running attempt %d was lost; claimed as attempt %d",
                job.id,
                job.step_id,
                job.attempt - 1,
                job.attempt,
            )
    exhausted = {job.id for job in taken_over if job.attempt > job.max_attempts}
    return sorted([*jobs, *taken_over], key=lambda job: job.id), exhausted


def _takeover_detail(job: Any, now: dt.datetime) -> dict[str, Any]:
    lost = job.attempt - 1
    if job.attempt > job.max_attempts:
        text = f"{WORKER_LOST_PREFIX} during attempt {lost}; no attempts left"
    else:
        text = f"{WORKER_LOST_PREFIX}; retried as attempt {job.attempt}"
    return detail_row(job, text, "Warning", now, {"lostAttempt": lost, "attempt": job.attempt})


def _by_id(raw: sqlite3.Connection, sql: str, ids: set[str], *tables: Table) -> dict[str, Any]:
    return {row.id: row for row in fetch(raw, sql.format(placeholders(len(ids))), list(ids), *tables)}


def _run_batch(ctx: WorkerContext, job_ids: list[str]) -> _Outcome:
    now = ctx.clock.now()
    outcome = _Outcome()
    with ctx.store.raw_write() as raw:
        jobs, exhausted = _claim(raw, job_ids, now, ctx.settings.job_lease_seconds)
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
        results: list[tuple[Any, StepResult]] = []
        for job in jobs:
            if job.id in exhausted:
                lost = PermanentStepError(
                    f"the worker running attempt {job.attempt - 1} was lost, and no attempts are left",
                    outcome="unknown",
                )
                outcome.merge(_fail(raw, job, now, lost, transient=False))
                continue
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
            if isinstance(result, ExternalCall):
                # The claim commits with this batch, and the call runs after the commit.
                outcome.calls.append((job, result))
            elif result is not None:
                results.append((job, result))
        _record_results(raw, now, results, outcome)
    return outcome


def _record_results(
    raw: sqlite3.Connection, now: dt.datetime, results: list[tuple[Any, StepResult]], outcome: _Outcome
) -> None:
    """Write finished steps' statuses, outputs, messages and details, and queue the next jobs."""
    finished: list[tuple[Any, ...]] = []
    waiting: list[tuple[Any, ...]] = []
    halted: list[tuple[Any, ...]] = []
    details: list[dict[str, Any]] = []
    messages: list[dict[str, Any]] = []

    for job, result in results:
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
        if result.messages and job.type in DELIVERY_CHANNELS:
            outcome.deliveries.append((job.type, result.messages[0].get("provider_id"), True))
        for task_name, ids in result.events:
            outcome.events.setdefault(task_name, []).extend(ids)

    insert_rows(raw, _messages, messages, MESSAGE_UPSERT)
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
        # The rest of the chain takes the halting step's verdict instead of running. `+status`
        # keeps SQLite on the notification_id index, as in _queue_next.
        raw.executemany(
            "UPDATE job SET status = ?, updated_at = ? "
            f"WHERE notification_id = ? AND position > ? AND {not_indexed(raw, 'status')} = 'pending'",
            halted,
        )
    if finished:
        outcome.next_job_ids.extend(_queue_next(raw, [row[3] for row in finished], now))
    insert_rows(raw, _details, details)


def _run_step(context: StepContext, outcome: _Outcome) -> StepResult | ExternalCall | None:
    """Run one claimed job unless its conditions or preferences skip it; return None when it failed."""
    job = context.job
    handler = STEP_HANDLERS.get(job.type)
    try:
        if handler is None:
            raise PermanentStepError(f"step type {job.type!r} is not supported by this server")
        # A job that resumes after a wait left an output, and passed its conditions before it waited.
        resumed = job.output is not None
        return (None if resumed else gate.check(context)) or handler(context)
    except PERMANENT_ERRORS as exc:
        outcome.merge(_fail(context.connection, job, context.now, exc, transient=False))
        return None
    except TransientStepError as exc:
        outcome.merge(_fail(context.connection, job, context.now, exc, transient=True))
        return None


def _perform_calls(ctx: WorkerContext, calls: list[tuple[Any, ExternalCall]]) -> None:
    """Run claimed jobs' external calls, on the call pool when there is one, with their leases renewed."""
    pool = ctx.calls
    waiting, slots = (pool.backlog(), pool.threads) if pool is not None else (0, 1)
    if ctx.leases is not None:
        for index, (job, call) in enumerate(calls):
            # A call waits for those submitted before it, so renewal allows for that wait too.
            rounds = (waiting + index) // slots + 1
            ctx.leases.hold(job.id, job.attempt, rounds * call.max_seconds)
    if pool is not None:
        for job, call in calls:
            pool.submit(functools.partial(_perform_call, ctx, job, call))
        return
    try:
        for job, call in calls:
            _perform_call(ctx, job, call)
    finally:
        if ctx.leases is not None:
            for job, _ in calls:
                ctx.leases.release(job.id, job.attempt)


def _perform_call(ctx: WorkerContext, job: Any, call: ExternalCall) -> None:
    """Run one external call and record its outcome; skip it if the job was taken over while it waited."""
    try:
        if not _still_running(ctx, job):
            logger.warning("job %s attempt %d was taken over before its call started", job.id, job.attempt)
            return
        result: StepResult | None = None
        error: Exception | None = None
        try:
            result = call.perform(ctx)
        except (StepError, *PERMANENT_ERRORS) as exc:
            error = exc
        except Exception as exc:
            logger.exception("job %s (step %s) failed unexpectedly", job.id, job.step_id)
            error = exc
        # Released before recording, so renewal never meets the job finished and reports it lost.
        if ctx.leases is not None:
            ctx.leases.release(job.id, job.attempt)
        _follow_up(ctx, _record_call(ctx, job, call, result, error))
    finally:
        if ctx.leases is not None:
            ctx.leases.release(job.id, job.attempt)


def _still_running(ctx: WorkerContext, job: Any) -> bool:
    row = (
        ctx.store.raw_read()
        .execute(
            "SELECT 1 FROM job WHERE id = ? AND status = 'running' AND attempt = ?", [job.id, job.attempt]
        )
        .fetchone()
    )
    return row is not None


def _record_call(
    ctx: WorkerContext, job: Any, call: ExternalCall, result: StepResult | None, error: Exception | None
) -> _Outcome:
    """Record an external call's outcome, unless another worker took the job over meanwhile."""
    now = ctx.clock.now()
    with ctx.store.raw_write() as raw:
        # The fence: this attempt's outcome counts only while the job is still running under it.
        owned = raw.execute(
            "UPDATE job SET lease_until = NULL WHERE id = ? AND status = 'running' AND attempt = ?",
            [job.id, job.attempt],
        ).rowcount
        if not owned:
            logger.warning(
                "job %s (step %s) attempt %d finished after another worker took the job over; "
                "its outcome is discarded",
                job.id,
                job.step_id,
                job.attempt,
            )
            return _Outcome()
        if error is not None:
            transient = not isinstance(error, PERMANENT_ERRORS)
            return _fail(raw, job, now, error, transient=transient, failure_row=call.failure_row)
        outcome = _Outcome()
        assert result is not None
        _record_results(raw, now, [(job, result)], outcome)
        return outcome


# Statements that select a chain's later jobs write `+status`, which keeps SQLite from using the
# (status, run_at) index. Every job behind a waiting step is pending, so with many delays that
# index would scan all of them. The parent_id and notification_id indexes find a few rows instead.


def _queue_next(raw: sqlite3.Connection, parent_ids: list[str], now: dt.datetime) -> list[str]:
    """Queue the pending child of each job; return the queued ids."""
    at = db_datetime(now)
    rows = raw.execute(
        "UPDATE job SET status = 'queued', run_at = ?, updated_at = ? "
        f"WHERE parent_id IN ({placeholders(len(parent_ids))}) AND {not_indexed(raw, 'status')} = 'pending' "
        "RETURNING id",
        [at, at, *parent_ids],
    ).fetchall()
    return [row[0] for row in rows]


def retry_delay(attempt: int, retry_after: Any = None) -> float:
    """Return the seconds before the retry that follows `attempt`: full jitter, or what Retry-After requests.

    The wait is drawn uniformly from [0, RETRY_BASE_SECONDS * 2**(attempt-1)], so
    jobs that failed together do not retry together. A provider's Retry-After is
    a floor: retrying sooner would be refused again.
    """
    delay = random.uniform(0, RETRY_BASE_SECONDS * 2 ** (attempt - 1))
    if isinstance(retry_after, int | float) and not isinstance(retry_after, bool):
        delay = max(delay, float(retry_after))
    return delay


def _final_failure_text(job: Any, transient: bool) -> str:
    # A permanent failure's error gives the cause, and its "retryable": false shows that no retry follows.
    if not transient or job.max_attempts == 1:
        return "Step failed"
    return f"Step failed after {job.attempt} attempts"


def _fail(
    raw: sqlite3.Connection,
    job: Any,
    now: dt.datetime,
    exc: Exception,
    *,
    transient: bool,
    failure_row: dict[str, Any] | None = None,
) -> _Outcome:
    """Record a failed attempt: set a retry if one is left, else fail the job and move on.

    `failure_row` is the message row to keep, with status error, when the job fails for good.
    """
    error: dict[str, Any] = {
        "type": type(exc).__name__,
        "message": str(exc) or type(exc).__name__,
        "attempt": job.attempt,
        "retryable": transient,
        **(exc.info if isinstance(exc, StepError) else {}),
    }

    retry = transient and job.attempt < job.max_attempts
    delay = retry_delay(job.attempt, error.get("retryAfterSeconds")) if retry else 0.0
    run_at = now + dt.timedelta(seconds=delay) if retry else job.run_at
    error["maxAttempts"] = job.max_attempts
    error["nextRetryAt"] = run_at.isoformat() if retry else None

    # A retry waits as a delayed job, which the due-job timer releases on time; its claim counts
    # the next attempt because it left no output.
    raw.execute(
        "UPDATE job SET status = ?, run_at = ?, error = ?, output = NULL, lease_until = NULL, updated_at = ? "
        "WHERE id = ?",
        [
            "delayed" if retry else "failed",
            db_datetime(run_at),
            write_value(_jobs, "error", error),
            db_datetime(now),
            job.id,
        ],
    )
    text, status = (
        (f"Attempt {job.attempt} failed; retrying", "Warning")
        if retry
        else (_final_failure_text(job, transient), "Failed")
    )
    insert_rows(raw, _details, [detail_row(job, text, status, now, error)])
    if failure_row is not None and not retry:
        failed = dict(failure_row, status="error", error=error, created_at=now, updated_at=now)
        insert_rows(raw, _messages, [failed], MESSAGE_UPSERT)

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
        return _Outcome(waits=[run_at])
    deliveries: list[tuple[str, str | None, bool]] = []
    if job.type in DELIVERY_CHANNELS:
        provider = (failure_row or {}).get("provider_id") or error.get("provider")
        deliveries.append((job.type, provider, False))
    if _stops_chain(job):
        # `+status` keeps SQLite on the notification_id index, as in _queue_next.
        canceled = raw.execute(
            "UPDATE job SET status = 'canceled', updated_at = ? "
            f"WHERE notification_id = ? AND position > ? AND {not_indexed(raw, 'status')} = 'pending'",
            [db_datetime(now), job.notification_id, job.position],
        ).rowcount
        if canceled:
            steps = "step" if canceled == 1 else "steps"
            text = f"Workflow stopped because this step failed; canceled {canceled} later {steps}"
            insert_rows(raw, _details, [detail_row(job, text, "Warning", now, None)])
        return _Outcome(deliveries=deliveries)
    return _Outcome(next_job_ids=_queue_next(raw, [job.id], now), deliveries=deliveries)


def _stops_chain(job: Any) -> bool:
    controls = job.step.get("controlValues") or {}
    if "continueOnFailure" in controls:
        return not controls["continueOnFailure"]
    return bool(controls.get("stopOnFailure")) or job.type in STOP_CHAIN_ON_FAILURE


def _record_unexpected(ctx: WorkerContext, job_id: str, exc: Exception) -> _Outcome:
    """Count an attempt that raised; its transaction rolled back, so claim the job again first."""
    now = ctx.clock.now()
    with ctx.store.raw_write() as raw:
        jobs, _ = _claim(raw, [job_id], now, ctx.settings.job_lease_seconds)
        if not jobs:
            return _Outcome()
        return _fail(raw, jobs[0], now, exc, transient=True)
