"""Activity feed entries: a notification with its subscriber, workflow, jobs and execution details.

The shapes are Novu's ActivityNotificationResponseDto and the DTOs nested in it, as
novu-py 3.19.0 validates them: closed enums for job types, provider ids, severities
and execution detail statuses, and required ids on every job and step.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from novulite.clock import isoformat
from novulite.ids import ORGANIZATION_ID
from novulite.messages import IN_APP_PROVIDER_ID, SEVERITIES


@dataclasses.dataclass(frozen=True)
class ActivityRows:
    """The ORM rows one activity entry is built from: a notification and the rows around it."""

    notification: Any
    subscriber: Any
    workflow: Any
    trigger: Any
    # The trigger's severity override, else the workflow's.
    severity: str | None
    jobs: list[Any]
    # job id -> execution details in time order, for any number of jobs
    details: dict[str, list[Any]]
    # topic key -> topic pk
    topic_ids: dict[str, str]


def _execution_detail(detail: Any) -> dict[str, Any]:
    return {
        "_id": detail.id,
        "status": detail.status,
        "detail": detail.detail,
        "isRetry": False,
        "isTest": False,
        "source": detail.source,
        "createdAt": isoformat(detail.created_at),
        "providerId": IN_APP_PROVIDER_ID,
        # novu-py types `raw` as a string, so structured data is sent as JSON text.
        "raw": None if detail.raw is None else json.dumps(detail.raw),
    }


# Provider ids this server delivers through, as Novu's closed ProvidersIdEnum names them. Novu
# calls custom SMTP nodemailer; a provider Novu does not have is shown as its own "novu".
ACTIVITY_PROVIDER_IDS = {
    "smtp": "nodemailer",
    "nodemailer": "nodemailer",
    "twilio": "twilio",
    "generic-sms": "generic-sms",
    "slack": "slack",
    "discord": "discord",
    "msteams": "msteams",
    "mattermost": "mattermost",
    "chat-webhook": "chat-webhook",
    "push-webhook": "push-webhook",
}


def job_provider(job: Any) -> str | None:
    """Return the provider id a job delivered through, or tried to, from its output or its error."""
    for record in (job.output, job.error):
        if isinstance(record, dict) and isinstance(record.get("provider"), str):
            return str(record["provider"])
    return None


def _job(job: Any, details: list[Any]) -> dict[str, Any]:
    # A job keeps a copy of its step, and the step row may since have been deleted.
    step_pk = job.step_pk or job.id
    step = job.step or {}
    provider = job_provider(job)
    return {
        "_id": job.id,
        "type": job.type,
        "status": job.status,
        "providerId": ACTIVITY_PROVIDER_IDS.get(provider or "", IN_APP_PROVIDER_ID),
        # Not in Novu's response: the provider as configured, and why the last attempt failed.
        "provider": provider,
        "attempt": job.attempt,
        "maxAttempts": job.max_attempts,
        "error": job.error,
        "step": {
            "_id": step_pk,
            "_templateId": step_pk,
            "_parentId": None,
            "active": True,
            "filters": [],
            "name": step.get("name") or job.step_id,
            "stepId": job.step_id,
            "controlVariables": step.get("controlValues") or {},
        },
        "executionDetails": [_execution_detail(detail) for detail in details],
        "updatedAt": isoformat(job.updated_at),
    }


def to_job_entry(job: Any, details: list[Any]) -> dict[str, Any]:
    """Return one job as GET /v1/jobs/{id} shows it: the activity feed's job, with its ids."""
    return dict(
        _job(job, details),
        _notificationId=job.notification_id,
        transactionId=job.transaction_id,
        createdAt=isoformat(job.created_at),
    )


def _subscriber(subscriber: Any) -> dict[str, Any]:
    summary = {
        "_id": subscriber.id,
        "subscriberId": subscriber.subscriber_id,
        "firstName": subscriber.first_name,
        "lastName": subscriber.last_name,
        "email": subscriber.email,
        "phone": subscriber.phone,
    }
    return {key: value for key, value in summary.items() if value is not None}


def _recipient(trigger: Any, subscriber: Any) -> dict[str, Any]:
    """Return the `to` entry that named this subscriber, or just its subscriberId when a topic did."""
    for entry in trigger.recipients or []:
        if isinstance(entry, dict) and entry.get("subscriberId") == subscriber.subscriber_id:
            return dict(entry)
    return {"subscriberId": subscriber.subscriber_id}


def to_activity(rows: ActivityRows) -> dict[str, Any]:
    """Return the activity feed entry of one notification."""
    notification, workflow = rows.notification, rows.workflow
    job_types = list(dict.fromkeys(job.type for job in rows.jobs))
    updated = max((job.updated_at for job in rows.jobs), default=notification.created_at)
    return {
        "_id": notification.id,
        "_environmentId": notification.environment_id,
        "_organizationId": ORGANIZATION_ID,
        "_subscriberId": notification.subscriber_pk,
        "_templateId": notification.workflow_pk,
        "transactionId": notification.transaction_id,
        "createdAt": isoformat(notification.created_at),
        "updatedAt": isoformat(updated),
        "channels": job_types,
        "subscriber": _subscriber(rows.subscriber),
        "template": {
            "_id": workflow.id,
            "name": workflow.name,
            "origin": "novu-cloud",
            "triggers": [{"type": "event", "identifier": workflow.workflow_id, "variables": []}],
        },
        "jobs": [_job(job, rows.details.get(job.id, [])) for job in rows.jobs],
        "payload": rows.trigger.payload or {},
        "tags": workflow.tags or [],
        "to": _recipient(rows.trigger, rows.subscriber),
        # NOTE: a topic deleted since the notification has no id left; its entry shows an empty one.
        "topics": [
            {"_topicId": rows.topic_ids.get(key, ""), "topicKey": key} for key in notification.topics or []
        ],
        # novu-py accepts only Novu's severities; trigger overrides are not checked against them.
        "severity": rows.severity if rows.severity in SEVERITIES else "none",
        "critical": workflow.critical,
        "contextKeys": notification.context_keys or [],
    }
