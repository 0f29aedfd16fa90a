"""Admin activity pages: the notifications sent, filtered, and one notification's jobs as a timeline."""

from __future__ import annotations

import dataclasses
from typing import Any

from litestar import Request, Router, get
from litestar.di import Provide
from litestar.response import Template
from sqlalchemy import ColumnElement, exists, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from novulite.activity import job_provider
from novulite.api import query
from novulite.api.activity import feed_filters, feed_statement
from novulite.api.auth import services_of
from novulite.db.models import ExecutionDetail, Job, Message, Notification, Workflow
from novulite.engine.failed_jobs import is_retryable, not_retryable_reason
from novulite.errors import FieldError
from novulite.ui.common import PAGE_SIZE, current_admin, page_number, render

# The job statuses the activity API reports, in the order a job passes through them.
JOB_STATUSES = (
    "pending",
    "queued",
    "delayed",
    "running",
    "completed",
    "failed",
    "canceled",
    "merged",
    "skipped",
)
# The form's label of each query parameter, for error messages.
FIELD_LABELS = {
    "workflow": "Workflow",
    "subscriberIds": "Subscriber",
    "status": "Status",
    "transactionId": "Transaction id",
    "after": "From",
    "before": "To",
    "provider": "Provider",
    "error": "Error text",
}
# The filter form's fields, in the order the form shows them.
FILTER_FIELDS = ("workflow", "subscriberIds", "status", "transactionId", "after", "before")


def error_sentences(errors: list[FieldError]) -> list[str]:
    """Return one sentence per invalid filter, naming the field as the form labels it."""
    return [f"{FIELD_LABELS.get(error.field, error.field)}: {error.message}." for error in errors]


def activity_conditions(params: Any, errors: list[FieldError]) -> list[ColumnElement[bool]]:
    """Translate the page's filters into conditions, through the activity API's own filters.

    `subscriberIds`, `transactionId`, `after` and `before` work as on GET /v1/notifications.
    `workflow` is a workflow identifier. `status` selects the notifications that have a job
    in that status.
    """
    conditions = feed_filters(params, errors)
    workflow = (params.get("workflow") or "").strip()
    if workflow:
        conditions.append(Workflow.workflow_id == workflow)
    statuses = query.one_of(params, "status", JOB_STATUSES, errors)
    if statuses:
        conditions.append(exists().where(Job.notification_id == Notification.id, Job.status == statuses[0]))
    return conditions


@dataclasses.dataclass(frozen=True)
class ActivityRow:
    notification: Notification
    subscriber_id: str
    workflow_id: str
    workflow_name: str
    # The notification's jobs in step order.
    jobs: list[Job]


def _activity_page(
    session: Session, conditions: list[ColumnElement[bool]], number: int
) -> tuple[list[ActivityRow], bool]:
    statement = feed_statement(None, conditions)
    rows = list(
        session.execute(
            statement.order_by(Notification.created_at.desc(), Notification.id.desc())
            .offset((number - 1) * PAGE_SIZE)
            .limit(PAGE_SIZE + 1)
        )
    )
    page_rows = rows[:PAGE_SIZE]
    jobs: dict[str, list[Job]] = {row[0].id: [] for row in page_rows}
    if jobs:
        for job in session.scalars(
            select(Job).where(Job.notification_id.in_(list(jobs))).order_by(Job.position, Job.created_at)
        ):
            jobs[job.notification_id].append(job)
    entries = [
        ActivityRow(row[0], row[1].subscriber_id, row[2].workflow_id, row[2].name, jobs[row[0].id])
        for row in page_rows
    ]
    return entries, len(rows) > PAGE_SIZE


@get("/activity", dependencies={"admin": Provide(current_admin)})
async def activity_page(request: Request[Any, Any, Any], admin: str, page: int | None = None) -> Template:
    """List notifications newest first, filtered by the form's query parameters."""
    params = request.query_params
    errors: list[FieldError] = []
    conditions = activity_conditions(params, errors)
    number = page_number(page)
    filters = {name: params.get(name) or "" for name in FILTER_FIELDS}
    context: dict[str, Any] = {
        "filters": filters,
        "filtered": any(filters.values()),
        "statuses": JOB_STATUSES,
        "errors": error_sentences(errors),
        "rows": [],
        "page": number,
        "has_next": False,
    }
    if errors:
        return render(request, "admin/activity/list.html", admin, context, status_code=400)
    async with AsyncSession(services_of(request).reader) as session:
        rows, has_next = await session.run_sync(_activity_page, conditions, number)
    context.update(rows=rows, has_next=has_next)
    return render(request, "admin/activity/list.html", admin, context)


@dataclasses.dataclass(frozen=True)
class JobEntry:
    """One job on the detail page's timeline, with what it logged and what it sent."""

    job: Job
    details: list[ExecutionDetail]
    message: Message | None
    provider: str | None
    retryable: bool
    # The reason a retry cannot help, shown when the job failed and `retryable` is false.
    reason: str


@dataclasses.dataclass(frozen=True)
class NotificationView:
    notification: Notification
    subscriber: Any
    workflow: Workflow
    trigger: Any
    jobs: list[JobEntry]


def _notification(session: Session, notification_id: str) -> NotificationView | None:
    row = session.execute(feed_statement(None, [Notification.id == notification_id])).first()
    if row is None:
        return None
    jobs = list(
        session.scalars(
            select(Job).where(Job.notification_id == notification_id).order_by(Job.position, Job.created_at)
        )
    )
    details: dict[str, list[ExecutionDetail]] = {}
    for detail in session.scalars(
        select(ExecutionDetail)
        .where(ExecutionDetail.notification_id == notification_id)
        .order_by(ExecutionDetail.created_at, ExecutionDetail.id)
    ):
        details.setdefault(detail.job_id, []).append(detail)
    messages = {
        message.job_id: message
        for message in session.scalars(select(Message).where(Message.notification_id == notification_id))
    }
    entries = [
        JobEntry(
            job,
            details.get(job.id, []),
            messages.get(job.id),
            job_provider(job),
            is_retryable(job.error),
            "" if is_retryable(job.error) else not_retryable_reason(job.error),
        )
        for job in jobs
    ]
    return NotificationView(row[0], row[1], row[2], row[3], entries)


@get("/activity/{notification_id:str}", dependencies={"admin": Provide(current_admin)})
async def notification_page(request: Request[Any, Any, Any], admin: str, notification_id: str) -> Template:
    """Show one notification's facts and each of its jobs with its log, message and error."""
    async with AsyncSession(services_of(request).reader) as session:
        view = await session.run_sync(_notification, notification_id)
    if view is None:
        context = {"notification_id": notification_id}
        return render(request, "admin/activity/not_found.html", admin, context, status_code=404)
    return render(request, "admin/activity/detail.html", admin, {"view": view})


activity_router = Router(
    path="/admin",
    route_handlers=[activity_page, notification_page],
    include_in_schema=False,
)
