"""process-subscriber: create the chain of job rows for one notification."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from novulite.db.dialect import rowcount
from novulite.db.models import ExecutionDetail, Job, Notification, Step
from novulite.engine.context import WorkerContext
from novulite.ids import new_id
from novulite.queues import RUN_JOB

logger = logging.getLogger("novulite.worker")


def expand_notifications(ctx: WorkerContext, notification_ids: list[str]) -> None:
    for notification_id in notification_ids:
        try:
            first_job_id = _create_jobs(ctx, notification_id)
        except Exception:
            # The notification stays pending, so the reconciler retries it.
            logger.exception("creating jobs for notification %s failed", notification_id)
            continue
        if first_job_id is not None:
            ctx.queues.enqueue(RUN_JOB, first_job_id)


def _create_jobs(ctx: WorkerContext, notification_id: str) -> str | None:
    """Create the jobs in one transaction, claimed by flipping `expansion`; return the first job id."""
    now = ctx.clock.now()
    with Session(ctx.engine) as session, session.begin():
        claimed = rowcount(
            session.execute(
                update(Notification)
                .where(Notification.id == notification_id, Notification.expansion == "pending")
                .values(expansion="done")
            )
        )
        if not claimed:
            return None
        notification = session.get_one(Notification, notification_id)
        steps = session.scalars(
            select(Step)
            .where(Step.workflow_pk == notification.workflow_pk, Step.active.is_(True))
            .order_by(Step.position)
        ).all()
        jobs = _job_chain(notification, steps, now)
        if not jobs:
            return None
        session.add_all(jobs)
        # The models declare no relationships, so the jobs must reach the database before their details.
        session.flush()
        session.add(_detail(jobs[0], "Step queued", "Queued", now))
        return jobs[0].id


def _job_chain(notification: Notification, steps: Any, now: dt.datetime) -> list[Job]:
    jobs: list[Job] = []
    parent_id: str | None = None
    for position, step in enumerate(steps):
        first = position == 0
        job = Job(
            id=new_id(),
            environment_id=notification.environment_id,
            notification_id=notification.id,
            subscriber_pk=notification.subscriber_pk,
            transaction_id=notification.transaction_id,
            step_pk=step.id,
            step_id=step.step_id,
            type=step.type,
            position=position,
            parent_id=parent_id,
            step={
                "stepId": step.step_id,
                "name": step.name,
                "type": step.type,
                "controlValues": step.control_values or {},
            },
            status="queued" if first else "pending",
            attempt=0,
            max_attempts=3,
            run_at=now if first else None,
            created_at=now,
            updated_at=now,
        )
        jobs.append(job)
        parent_id = job.id
    return jobs


def _detail(job: Job, text: str, status: str, now: dt.datetime) -> ExecutionDetail:
    return ExecutionDetail(
        job_id=job.id,
        notification_id=job.notification_id,
        status=status,
        detail=text,
        source="Internal",
        created_at=now,
    )
