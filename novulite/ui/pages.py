"""Admin pages: sign in and out, dashboard, workflows, failed jobs."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import Annotated, Any
from urllib.parse import urlencode

from litestar import Request, Response, Router, get, post
from litestar.di import Provide
from litestar.enums import RequestEncodingType
from litestar.params import Body
from litestar.response import Redirect, Template
from sqlalchemy import ColumnElement, func, or_, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from novulite import security
from novulite.api.activity import parse_instant
from novulite.api.auth import services_of
from novulite.db.models import AdminUser, ExecutionDetail, Job, Notification, Step, Subscriber, Workflow
from novulite.engine.failed_jobs import (
    RETRYABLE_SQL,
    discard_failed_jobs,
    is_retryable,
    not_retryable_reason,
    retry_failed_jobs,
)
from novulite.engine.runner import WORKER_LOST_PREFIX
from novulite.errors import FieldError
from novulite.queues import RUN_JOBS
from novulite.ui.activity import error_sentences
from novulite.ui.common import (
    PAGE_SIZE,
    SESSION_COOKIE,
    current_admin,
    flash_redirect,
    page_number,
    render,
    session_cookie,
)
from novulite.ui.hourly_chart import load_hourly_chart

logger = logging.getLogger("novulite.ui")

# How many jobs taken over from a lost worker the dashboard lists, newest first.
RECOVERED_JOBS_SHOWN = 10
# How many failed jobs the dashboard lists, newest first.
FAILURES_SHOWN = 10


def _safe_next(next_path: str | None) -> str:
    # Only same-site paths, so the sign-in form cannot redirect to another host.
    if next_path and next_path.startswith("/admin") and not next_path.startswith("//"):
        return next_path
    return "/admin/"


@get("/login", name="admin-login")
async def login_page(next: str | None = None) -> Template:
    return Template("admin/login.html", context={"next": _safe_next(next), "error": None})


async def _check_password(request: Request[Any, Any, Any], username: str, password: str) -> str | None:
    """Return the admin's stored password hash when `password` matches it, else None."""
    services = services_of(request)
    async with AsyncSession(services.reader) as session:
        stored = await session.scalar(select(AdminUser.password_hash).where(AdminUser.username == username))
    if stored is None:
        # Hash anyway so an unknown name takes as long to reject as a wrong password.
        await asyncio.to_thread(security.hash_password, password)
        return None
    matches = await asyncio.to_thread(security.verify_password, password, stored)
    return stored if matches else None


@post("/login")
async def login_submit(
    request: Request[Any, Any, Any],
    data: Annotated[dict[str, str], Body(media_type=RequestEncodingType.URL_ENCODED)],
) -> Response[Any]:
    username = data.get("username", "").strip()
    password = data.get("password", "")
    next_path = _safe_next(data.get("next"))
    stored = await _check_password(request, username, password) if username else None
    if stored is None:
        logger.info("failed admin sign-in for user %r", username[:100])
        return Template(
            "admin/login.html",
            context={"next": next_path, "error": "Wrong username or password."},
            status_code=401,
        )
    cookie = session_cookie(request, username, stored)
    logger.info("admin %s signed in", username)
    return Redirect(path=next_path, status_code=303, cookies=[cookie])


@post("/logout", dependencies={"admin": Provide(current_admin)})
async def logout(admin: str) -> Response[Any]:
    response: Response[Any] = Redirect(path="/admin/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@get("/", dependencies={"admin": Provide(current_admin)})
async def dashboard(request: Request[Any, Any, Any], admin: str) -> Template:
    services = services_of(request)
    async with AsyncSession(services.reader) as session:
        workflows = await session.scalar(select(func.count()).select_from(Workflow))
        notifications = await session.scalar(select(func.count()).select_from(Notification))
        by_status = dict((await session.execute(select(Job.status, func.count()).group_by(Job.status))).all())
        recovered = (
            await session.execute(
                select(ExecutionDetail, Job, Workflow.workflow_id, Subscriber.subscriber_id)
                .join(Job, Job.id == ExecutionDetail.job_id)
                .join(Notification, Notification.id == Job.notification_id)
                .join(Workflow, Workflow.id == Notification.workflow_pk)
                .join(Subscriber, Subscriber.id == Job.subscriber_pk)
                .where(ExecutionDetail.detail.startswith(WORKER_LOST_PREFIX))
                .order_by(ExecutionDetail.created_at.desc(), ExecutionDetail.id.desc())
                .limit(RECOVERED_JOBS_SHOWN)
            )
        ).all()
        failures = (
            await session.execute(
                select(Job, Workflow.workflow_id, Subscriber.subscriber_id)
                .join(Notification, Notification.id == Job.notification_id)
                .join(Workflow, Workflow.id == Notification.workflow_pk)
                .join(Subscriber, Subscriber.id == Job.subscriber_pk)
                .where(Job.status == "failed")
                .order_by(Job.updated_at.desc(), Job.id.desc())
                .limit(FAILURES_SHOWN)
            )
        ).all()
        chart = await load_hourly_chart(session, services.clock.now())
    context = {
        "chart": chart,
        "failures": [tuple(row) for row in failures],
        "workflow_count": workflows or 0,
        "notification_count": notifications or 0,
        "jobs_by_status": by_status,
        "recovered_jobs": [tuple(row) for row in recovered],
        "queue_depths": await asyncio.to_thread(services.queues.pending_counts_or_empty),
        "socket_count": services.hub.connection_count,
    }
    return render(request, "admin/dashboard.html", admin, context)


@get("/workflows", dependencies={"admin": Provide(current_admin)})
async def workflows_page(request: Request[Any, Any, Any], admin: str, page: int | None = None) -> Template:
    services = services_of(request)
    number = page_number(page)
    async with AsyncSession(services.reader) as session:
        total = await session.scalar(select(func.count()).select_from(Workflow)) or 0
        rows = (
            await session.execute(
                select(Workflow, func.count(Step.id))
                .outerjoin(Step, Step.workflow_pk == Workflow.id)
                .group_by(Workflow.id)
                .order_by(Workflow.created_at.desc(), Workflow.id.desc())
                .limit(PAGE_SIZE)
                .offset((number - 1) * PAGE_SIZE)
            )
        ).all()
    context = {
        "workflows": [(row[0], row[1]) for row in rows],
        "page": number,
        "has_next": number * PAGE_SIZE < total,
        "total": total,
    }
    return render(request, "admin/workflows.html", admin, context)


# The failed-jobs page's filters: query parameters on the page, hidden fields on "Retry all matching".
FAILED_JOB_FILTERS = ("workflow", "provider", "error", "after", "before")
# The maximum number of failed jobs one "Retry all matching" queues. Pressing it again queues more.
RETRY_MATCHING_LIMIT = 1000


def failed_job_conditions(params: Any, errors: list[FieldError]) -> list[ColumnElement[bool]]:
    """Return the conditions on failed jobs that the filter values in `params` ask for.

    `workflow` is a workflow identifier, `provider` the provider the job delivered
    through, `error` a part of the error message or the provider's response, case
    ignored, and `after` and `before` bound when the job failed.
    """
    conditions: list[ColumnElement[bool]] = [Job.status == "failed"]
    workflow = (params.get("workflow") or "").strip()
    if workflow:
        conditions.append(Workflow.workflow_id == workflow)
    provider = (params.get("provider") or "").strip()
    if provider:
        conditions.append(Job.error["provider"].as_string() == provider)
    error_text = (params.get("error") or "").strip()
    if error_text:
        conditions.append(
            or_(
                *(
                    Job.error[key].as_string().icontains(error_text, autoescape=True)
                    for key in ("message", "responseExcerpt", "replyExcerpt", "exceptionType")
                )
            )
        )
    after = parse_instant(params, "after", errors)
    if after is not None:
        conditions.append(Job.updated_at >= after)
    before = parse_instant(params, "before", errors)
    if before is not None:
        conditions.append(Job.updated_at < before)
    return conditions


def _failed_jobs_statement(conditions: list[ColumnElement[bool]]) -> Any:
    return (
        select(Job, Workflow.workflow_id, Subscriber.subscriber_id)
        .join(Notification, Notification.id == Job.notification_id)
        .join(Workflow, Workflow.id == Notification.workflow_pk)
        .join(Subscriber, Subscriber.id == Job.subscriber_pk)
        .where(*conditions)
    )


@get("/failed-jobs", dependencies={"admin": Provide(current_admin)})
async def failed_jobs_page(
    request: Request[Any, Any, Any],
    admin: str,
    page: int | None = None,
    retried: int | None = None,
    refused: int | None = None,
    discarded: int | None = None,
) -> Template:
    notices = _action_notices(retried, refused, discarded)
    return await _failed_jobs_response(request, admin, request.query_params, page_number(page), notices)


async def _failed_jobs_response(
    request: Request[Any, Any, Any], admin: str, params: Any, number: int, notices: list[str]
) -> Template:
    """Render one page of the failed jobs that match the filters in `params`, or 400 on an invalid filter."""
    errors: list[FieldError] = []
    conditions = failed_job_conditions(params, errors)
    filters = {name: params.get(name) or "" for name in FAILED_JOB_FILTERS}
    context: dict[str, Any] = {
        "jobs": [],
        "page": number,
        "has_next": False,
        "total": 0,
        "notices": notices,
        "filters": filters,
        "filtered": any(filters.values()),
        "errors": error_sentences(errors),
        "retry_limit": RETRY_MATCHING_LIMIT,
    }
    if errors:
        return render(request, "admin/failed_jobs.html", admin, context, status_code=400)
    statement = _failed_jobs_statement(conditions)
    async with AsyncSession(services_of(request).reader) as session:
        total = await session.scalar(select(func.count()).select_from(statement.subquery())) or 0
        rows = (
            await session.execute(
                statement.order_by(Job.updated_at.desc(), Job.id.desc())
                .limit(PAGE_SIZE)
                .offset((number - 1) * PAGE_SIZE)
            )
        ).all()
    context.update(
        jobs=[_failed_job_view(row[0], row[1], row[2]) for row in rows],
        has_next=number * PAGE_SIZE < total,
        total=total,
    )
    return render(request, "admin/failed_jobs.html", admin, context)


@dataclasses.dataclass(frozen=True)
class FailedJobView:
    job: Job
    workflow_id: str
    subscriber_id: str
    retryable: bool
    # The reason a retry cannot help, shown when `retryable` is false.
    reason: str


def _failed_job_view(job: Job, workflow_id: str, subscriber_id: str) -> FailedJobView:
    retryable = is_retryable(job.error)
    reason = "" if retryable else not_retryable_reason(job.error)
    return FailedJobView(job, workflow_id, subscriber_id, retryable, reason)


def _action_notices(retried: int | None, refused: int | None, discarded: int | None) -> list[str]:
    notices = []
    if retried is not None:
        notices.append(f"Queued {_jobs_text(retried)} again." if retried else "No job was queued again.")
    if refused:
        notices.append(f"{_jobs_text(refused)} cannot be fixed by a retry and stayed failed.")
    if discarded is not None:
        notices.append(f"Discarded {_jobs_text(discarded)}." if discarded else "No job was discarded.")
    return notices


def _jobs_text(count: int) -> str:
    return "1 job" if count == 1 else f"{count} jobs"


def _selected_job_ids(data: dict[str, Any]) -> list[str]:
    """Return the job ids a failed-jobs form acts on: the row's button, else the checked rows."""
    if data.get("only"):
        return [str(data["only"])]
    value = data.get("job_id") or []
    ids = value if isinstance(value, list) else [value]
    return [str(job_id) for job_id in ids if job_id][:PAGE_SIZE]


@post("/failed-jobs/retry", dependencies={"admin": Provide(current_admin)})
async def retry_failed(
    request: Request[Any, Any, Any],
    admin: str,
    data: Annotated[dict[str, Any], Body(media_type=RequestEncodingType.URL_ENCODED)],
) -> Response[Any]:
    """Queue the selected failed jobs again, those a retry can help, and go back to the list."""
    services = services_of(request)
    requeued = await asyncio.to_thread(
        retry_failed_jobs, services.store, services.clock, _selected_job_ids(data), admin
    )
    if requeued.job_ids:
        # In Redis mode an enqueue is a network call, so it runs off the event loop.
        await asyncio.to_thread(services.queues.enqueue, RUN_JOBS, requeued.job_ids)
    counts = {"retried": len(requeued.job_ids), "refused": requeued.refused}
    return Redirect(path=_back_to_list(data, counts), status_code=303)


def _back_to_list(data: dict[str, Any], counts: dict[str, int]) -> str:
    """Return the failed-jobs path after an action: the counts, then the filters the list had."""
    filters = {name: str(data.get(name) or "").strip() for name in FAILED_JOB_FILTERS}
    kept = {name: value for name, value in filters.items() if value}
    return "/admin/failed-jobs?" + urlencode({**counts, **kept})


def _failed_jobs_path(filters: dict[str, str]) -> str:
    """Return the failed-jobs page's path with the filters that have a value."""
    query = urlencode({name: value for name, value in filters.items() if value})
    return f"/admin/failed-jobs?{query}" if query else "/admin/failed-jobs"


async def _retryable_job_ids(
    request: Request[Any, Any, Any], conditions: list[ColumnElement[bool]]
) -> list[str]:
    """Return the ids of up to RETRY_MATCHING_LIMIT + 1 retryable failed jobs that meet `conditions`.

    The oldest failures come first. One id past the limit shows that more jobs match.
    """
    statement = (
        _failed_jobs_statement(conditions)
        .where(text(RETRYABLE_SQL))
        .with_only_columns(Job.id)
        .order_by(Job.updated_at, Job.id)
        .limit(RETRY_MATCHING_LIMIT + 1)
    )
    async with AsyncSession(services_of(request).reader) as session:
        return list(await session.scalars(statement))


@post("/failed-jobs/retry-matching", dependencies={"admin": Provide(current_admin)})
async def retry_matching(
    request: Request[Any, Any, Any],
    admin: str,
    data: Annotated[dict[str, Any], Body(media_type=RequestEncodingType.URL_ENCODED)],
) -> Response[Any]:
    """Queue again the failed jobs that match the filters and that a retry can help.

    One request queues at most RETRY_MATCHING_LIMIT jobs, the oldest failures first.
    """
    filters = {name: str(data.get(name) or "").strip() for name in FAILED_JOB_FILTERS}
    errors: list[FieldError] = []
    conditions = failed_job_conditions(filters, errors)
    if errors:
        return await _failed_jobs_response(request, admin, filters, 1, [])

    job_ids = await _retryable_job_ids(request, conditions)
    services = services_of(request)
    requeued = await asyncio.to_thread(
        retry_failed_jobs, services.store, services.clock, job_ids[:RETRY_MATCHING_LIMIT], admin
    )
    if requeued.job_ids:
        await asyncio.to_thread(services.queues.enqueue, RUN_JOBS, requeued.job_ids)

    back = _failed_jobs_path(filters)
    if not requeued.job_ids:
        message = "No job was queued again: no failed job that matches the filters can be fixed by a retry."
        return flash_redirect(request, back, message, "info")
    message = f"Queued {_jobs_text(len(requeued.job_ids))} matching the filters again."
    if len(job_ids) > RETRY_MATCHING_LIMIT:
        message += (
            f" One press queues at most {RETRY_MATCHING_LIMIT}, so press the button again for the rest."
        )
    return flash_redirect(request, back, message)


@post("/failed-jobs/discard", dependencies={"admin": Provide(current_admin)})
async def discard_failed(
    request: Request[Any, Any, Any],
    admin: str,
    data: Annotated[dict[str, Any], Body(media_type=RequestEncodingType.URL_ENCODED)],
) -> Response[Any]:
    """Discard the selected failed jobs, and go back to the list."""
    services = services_of(request)
    count = await asyncio.to_thread(
        discard_failed_jobs, services.store, services.clock, _selected_job_ids(data), admin
    )
    return Redirect(path=_back_to_list(data, {"discarded": count}), status_code=303)


admin_router = Router(
    path="/admin",
    route_handlers=[
        login_page,
        login_submit,
        logout,
        dashboard,
        workflows_page,
        failed_jobs_page,
        retry_failed,
        retry_matching,
        discard_failed,
    ],
    include_in_schema=False,
)
