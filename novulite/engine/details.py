"""Execution details: the append-only log lines that explain what happened to a job."""

from __future__ import annotations

import datetime as dt
from typing import Any

from novulite.ids import new_id


def detail_row(
    job: Any, text: str, status: str, now: dt.datetime, raw: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Return an execution_detail row for `job` (a mapping or row with `id` and `notification_id`).

    `status` is Success, Warning, Failed, Pending or Queued.
    """
    job_id = job["id"] if isinstance(job, dict) else job.id
    notification_id = job["notification_id"] if isinstance(job, dict) else job.notification_id
    return {
        "id": new_id(),
        "job_id": job_id,
        "notification_id": notification_id,
        "status": status,
        "detail": text,
        "source": "Internal",
        "raw": raw,
        "created_at": now,
    }
