"""process-subscriber: create the chain of job rows for each notification."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from novulite.db.models import ExecutionDetail, Job, Notification, Step
from novulite.engine.context import WorkerContext
from novulite.ids import new_id
from novulite.queues import RUN_JOBS

logger = logging.getLogger("novulite.worker")


def expand_notifications(ctx: WorkerContext, notification_ids: list[str]) -> None:
    """Create the jobs of a batch of notifications in one transaction and queue each first job."""
    try:
        first_job_ids = _create_jobs(ctx, notification_ids)
    except Exception:
        if len(notification_ids) == 1:
            # The notification stays pending, so the reconciler retries it.
            logger.exception("creating jobs for notification %s failed", notification_ids[0])
            return
        logger.warning("a batch of %d notifications failed; retrying them one by one", len(notification_ids))
        for notification_id in notification_ids:
            expand_notifications(ctx, [notification_id])
        return
    if first_job_ids:
        ctx.queues.enqueue(RUN_JOBS, first_job_ids)


def _create_jobs(ctx: WorkerContext, notification_ids: list[str]) -> list[str]:
    """Claim pending notifications by flipping `expansion` and create their jobs; return the first jobs."""
    now = ctx.clock.now()
    with ctx.store.write() as session:
        claimed = list(
            session.scalars(
                update(Notification)
                .where(Notification.id.in_(notification_ids), Notification.expansion == "pending")
                .values(expansion="done")
                .returning(Notification.id)
                .execution_options(synchronize_session=False)
            )
        )
        if not claimed:
            return []
        notifications = session.scalars(
            select(Notification).where(Notification.id.in_(claimed)).order_by(Notification.id)
        ).all()
        steps = _active_steps(session, {notification.workflow_pk for notification in notifications})
        chains = [
            _job_chain(notification, steps.get(notification.workflow_pk, []), now)
            for notification in notifications
        ]
        jobs = [job for chain in chains for job in chain]
        if not jobs:
            return []
        session.add_all(jobs)
        # The models declare no relationships, so the jobs must reach the database before their details.
        session.flush()
        first_jobs = [chain[0] for chain in chains if chain]
        session.add_all(_detail(job, "Step queued", "Queued", now) for job in first_jobs)
        return [job.id for job in first_jobs]


def _active_steps(session: Session, workflow_pks: set[str]) -> dict[str, list[Step]]:
    grouped: dict[str, list[Step]] = {}
    rows = session.scalars(
        select(Step).where(Step.workflow_pk.in_(workflow_pks), Step.active.is_(True)).order_by(Step.position)
    )
    for step in rows:
        grouped.setdefault(step.workflow_pk, []).append(step)
    return grouped


def _job_chain(notification: Notification, steps: Sequence[Step], now: dt.datetime) -> list[Job]:
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
        id=new_id(),
        job_id=job.id,
        notification_id=job.notification_id,
        status=status,
        detail=text,
        source="Internal",
        created_at=now,
    )
