"""Admin pages: sign in and out, dashboard, workflows, failed jobs."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import Annotated, Any

from litestar import Request, Response, Router, get, post
from litestar.datastructures import Cookie
from litestar.di import Provide
from litestar.enums import RequestEncodingType
from litestar.params import Body
from litestar.response import Redirect, Template
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from novulite import security
from novulite.api.auth import services_of
from novulite.db.models import AdminUser, ExecutionDetail, Job, Notification, Step, Subscriber, Workflow
from novulite.engine.failed_jobs import (
    discard_failed_jobs,
    is_retryable,
    not_retryable_reason,
    retry_failed_jobs,
)
from novulite.engine.runner import WORKER_LOST_PREFIX
from novulite.queues import RUN_JOBS
from novulite.ui.common import (
    PAGE_SIZE,
    SESSION_COOKIE,
    SESSION_SECONDS,
    current_admin,
    page_number,
    render,
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


async def _check_password(request: Request[Any, Any, Any], username: str, password: str) -> bool:
    services = services_of(request)
    async with AsyncSession(services.reader) as session:
        stored = await session.scalar(select(AdminUser.password_hash).where(AdminUser.username == username))
    if stored is None:
        # Hash anyway so an unknown name takes as long to reject as a wrong password.
        await asyncio.to_thread(security.hash_password, password)
        return False
    return await asyncio.to_thread(security.verify_password, password, stored)


@post("/login")
async def login_submit(
    request: Request[Any, Any, Any],
    data: Annotated[dict[str, str], Body(media_type=RequestEncodingType.URL_ENCODED)],
) -> Response[Any]:
    username = data.get("username", "").strip()
    password = data.get("password", "")
    next_path = _safe_next(data.get("next"))
    if not username or not await _check_password(request, username, password):
        logger.info("failed admin sign-in for user %r", username[:100])
        return Template(
            "admin/login.html",
            context={"next": next_path, "error": "Wrong username or password."},
            status_code=401,
        )
    services = services_of(request)
    token = services.admin_sessions.sign({"user": username}, SESSION_SECONDS)
    cookie = Cookie(
        key=SESSION_COOKIE,
        value=token,
        path="/",
        httponly=True,
        samesite="lax",
        max_age=SESSION_SECONDS,
    )
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
        "queue_depths": await asyncio.to_thread(services.queues.pending_counts),
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


@get("/failed-jobs", dependencies={"admin": Provide(current_admin)})
async def failed_jobs_page(
    request: Request[Any, Any, Any],
    admin: str,
    page: int | None = None,
    retried: int | None = None,
    refused: int | None = None,
    discarded: int | None = None,
) -> Template:
    services = services_of(request)
    number = page_number(page)
    condition = Job.status == "failed"
    async with AsyncSession(services.reader) as session:
        total = await session.scalar(select(func.count()).select_from(Job).where(condition)) or 0
        rows = (
            await session.execute(
                select(Job, Workflow.workflow_id, Subscriber.subscriber_id)
                .join(Notification, Notification.id == Job.notification_id)
                .join(Workflow, Workflow.id == Notification.workflow_pk)
                .join(Subscriber, Subscriber.id == Job.subscriber_pk)
                .where(condition)
                .order_by(Job.updated_at.desc(), Job.id.desc())
                .limit(PAGE_SIZE)
                .offset((number - 1) * PAGE_SIZE)
            )
        ).all()
    context = {
        "jobs": [
            FailedJobView(
                row[0], row[1], row[2], is_retryable(row[0].error), not_retryable_reason(row[0].error)
            )
            for row in rows
        ],
        "page": number,
        "has_next": number * PAGE_SIZE < total,
        "total": total,
        "notices": _action_notices(retried, refused, discarded),
    }
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
        services.queues.enqueue(RUN_JOBS, requeued.job_ids)
    return Redirect(
        path=f"/admin/failed-jobs?retried={len(requeued.job_ids)}&refused={requeued.refused}", status_code=303
    )


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
    return Redirect(path=f"/admin/failed-jobs?discarded={count}", status_code=303)


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
        discard_failed,
    ],
    include_in_schema=False,
)
