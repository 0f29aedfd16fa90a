"""process-subscriber: create the chain of job rows for each notification."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from novulite.db.fast import fetch, insert_rows, placeholders
from novulite.db.models import ExecutionDetail, Job, Notification, Step, table
from novulite.db.sql import claimable
from novulite.engine.context import WorkerContext
from novulite.engine.details import detail_row
from novulite.ids import new_id
from novulite.queues import RUN_JOBS

logger = logging.getLogger("novulite.worker")

# Attempts of a step that retries transient failures, unless its maxAttempts control sets another number.
DEFAULT_ATTEMPTS = 3

_jobs = table(Job)
_details = table(ExecutionDetail)
_PENDING = "expansion = 'pending'"


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
    with ctx.store.raw_write() as raw:
        claimed = fetch(
            raw,
            f"UPDATE notification SET expansion = 'done' "
            f"WHERE {claimable(raw, 'notification', len(notification_ids), _PENDING)} "
            "RETURNING id, environment_id, workflow_pk, subscriber_pk, transaction_id",
            notification_ids,
            table(Notification),
        )
        if not claimed:
            return []
        claimed.sort(key=lambda row: row.id)
        workflow_pks = list({notification.workflow_pk for notification in claimed})
        steps: dict[str, list[Any]] = {}
        active_steps = fetch(
            raw,
            "SELECT id, workflow_pk, step_id, name, type, control_values FROM step "
            f"WHERE workflow_pk IN ({placeholders(len(workflow_pks))}) AND active = TRUE "
            "ORDER BY workflow_pk, position",
            workflow_pks,
            table(Step),
        )
        for step in active_steps:
            steps.setdefault(step.workflow_pk, []).append(step)
        chains = [
            _job_chain(notification, steps.get(notification.workflow_pk, []), now) for notification in claimed
        ]
        insert_rows(raw, _jobs, [job for chain in chains for job in chain])
        first_jobs = [chain[0] for chain in chains if chain]
        insert_rows(raw, _details, [detail_row(job, "Step queued", "Queued", now) for job in first_jobs])
        return [job["id"] for job in first_jobs]


def _job_chain(notification: Any, steps: list[Any], now: dt.datetime) -> list[dict[str, Any]]:
    jobs: list[dict[str, Any]] = []
    parent_id: str | None = None
    for position, step in enumerate(steps):
        first = position == 0
        job = {
            "id": new_id(),
            "environment_id": notification.environment_id,
            "notification_id": notification.id,
            "subscriber_pk": notification.subscriber_pk,
            "transaction_id": notification.transaction_id,
            "step_pk": step.id,
            "step_id": step.step_id,
            "type": step.type,
            "position": position,
            "parent_id": parent_id,
            "step": {
                "stepId": step.step_id,
                "name": step.name,
                "type": step.type,
                "controlValues": step.control_values or {},
            },
            "status": "queued" if first else "pending",
            "attempt": 0,
            "max_attempts": max_attempts(step.control_values or {}),
            "run_at": now if first else None,
            "lease_until": None,
            "error": None,
            "output": None,
            "created_at": now,
            "updated_at": now,
        }
        jobs.append(job)
        parent_id = job["id"]
    return jobs


def max_attempts(controls: dict[str, Any]) -> int:
    """Return the attempts a step's job gets: its `maxAttempts` control, checked on save, or the default."""
    value = controls.get("maxAttempts")
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else DEFAULT_ATTEMPTS
