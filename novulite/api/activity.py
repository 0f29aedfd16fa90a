"""The activity feed under /v1/notifications: one entry per notification, with its jobs and their log."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from litestar import Request, Router, get
from litestar.di import Provide
from sqlalchemy import ColumnElement, String, exists, func, literal, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from novulite.activity import ActivityRows, to_activity, to_job_entry
from novulite.api import query
from novulite.api.auth import environment_from_api_key, services_of
from novulite.db.models import (
    ExecutionDetail,
    Job,
    Notification,
    Subscriber,
    Topic,
    TopicSubscription,
    TriggerEvent,
    Workflow,
)
from novulite.directory import EnvironmentInfo
from novulite.errors import INVALID_QUERY, JOB_NOT_FOUND, NOTIFICATION_NOT_FOUND, ApiError, FieldError
from novulite.json_sql import canonical_json, json_text_items
from novulite.messages import CHANNEL_TYPES, SEVERITIES

# The severity a notification was sent with: the trigger's override, else the workflow's.
SEVERITY = func.coalesce(TriggerEvent.overrides["severity"].as_string(), Workflow.severity)


def parse_instant(params: Any, name: str, errors: list[FieldError]) -> dt.datetime | None:
    """Return the parameter as an aware date-time, reading one without a zone as UTC."""
    raw = params.get(name)
    if not raw:
        return None
    try:
        instant = dt.datetime.fromisoformat(raw)
    except ValueError:
        errors.append(
            FieldError(name, "must be an ISO 8601 date or date-time, such as 2025-01-31T12:00:00Z", raw)
        )
        return None
    return instant if instant.tzinfo else instant.replace(tzinfo=dt.UTC)


def _topic_keys(notification_topics: Any) -> Any:
    return json_text_items(notification_topics).table_valued("value")


def feed_filters(params: Any, errors: list[FieldError]) -> list[ColumnElement[bool]]:
    """Translate the activity feed's query filters into conditions on the joined rows."""
    conditions = [*_recipient_filters(params), *_topic_filters(params)]

    channels = query.one_of(params, "channels", CHANNEL_TYPES, errors, many=True)
    if channels:
        conditions.append(exists().where(Job.notification_id == Notification.id, Job.type.in_(channels)))
    severities = query.one_of(params, "severity", SEVERITIES, errors, many=True)
    if severities:
        conditions.append(SEVERITY.in_(severities))

    after = parse_instant(params, "after", errors)
    if after:
        conditions.append(Notification.created_at >= after)
    before = parse_instant(params, "before", errors)
    if before:
        conditions.append(Notification.created_at < before)
    return conditions


def _recipient_filters(params: Any) -> list[ColumnElement[bool]]:
    """Return the conditions on the workflow, the subscriber and the transaction."""
    conditions: list[ColumnElement[bool]] = []
    for name, column in (
        ("templates", Notification.workflow_pk),
        ("emails", Subscriber.email),
        ("subscriberIds", Subscriber.subscriber_id),
    ):
        requested = query.values(params, name)
        if requested:
            conditions.append(column.in_(requested))
    search = (params.get("search") or "").strip()
    if search:
        # As in Novu: a part of the subscriber's email, or the whole subscriberId.
        conditions.append(
            Subscriber.email.icontains(search, autoescape=True) | (Subscriber.subscriber_id == search)
        )
    transaction_id = params.get("transactionId")
    if transaction_id:
        conditions.append(Notification.transaction_id == transaction_id)
    return conditions


def _topic_filters(params: Any) -> list[ColumnElement[bool]]:
    """Return the conditions on the topics that reached the subscriber and on the context keys."""
    conditions: list[ColumnElement[bool]] = []
    topic_key = params.get("topicKey")
    if topic_key:
        keys = _topic_keys(Notification.topics)
        conditions.append(exists(select(keys.c.value).where(keys.c.value == topic_key)))
    subscription_id = params.get("subscriptionId")
    if subscription_id:
        # Notifications that reached the subscription's subscriber through the subscription's topic.
        keys = _topic_keys(Notification.topics)
        conditions.append(
            exists(
                select(TopicSubscription.id)
                .join(Topic, Topic.id == TopicSubscription.topic_pk)
                .where(
                    TopicSubscription.id == subscription_id,
                    TopicSubscription.subscriber_pk == Notification.subscriber_pk,
                    Topic.key.in_(select(keys.c.value)),
                )
            )
        )
    context_keys = query.values(params, "contextKeys")
    if context_keys:
        # Stored keys are sorted and unique, so an order-free match compares canonical JSON.
        canonical = json.dumps(sorted(set(context_keys)))
        conditions.append(
            canonical_json(Notification.context_keys) == canonical_json(literal(canonical, String))
        )
    return conditions


def feed_statement(environment_id: str | None, conditions: list[ColumnElement[bool]]) -> Any:
    """Select the notifications that meet `conditions`, with their subscriber, workflow, trigger and severity.

    The admin UI passes None as `environment_id` to select from every environment.
    """
    if environment_id is not None:
        conditions = [Notification.environment_id == environment_id, *conditions]
    return (
        select(Notification, Subscriber, Workflow, TriggerEvent, SEVERITY)
        .join(Subscriber, Subscriber.id == Notification.subscriber_pk)
        .join(Workflow, Workflow.id == Notification.workflow_pk)
        .join(TriggerEvent, TriggerEvent.id == Notification.trigger_id)
        .where(*conditions)
    )


def _activities(session: Session, environment_id: str, rows: list[Any]) -> list[dict[str, Any]]:
    """Load the jobs, execution details and topics of the notifications in `rows` and return their entries."""
    notification_ids = [row[0].id for row in rows]
    jobs: dict[str, list[Job]] = {notification_id: [] for notification_id in notification_ids}
    for job in session.scalars(
        select(Job).where(Job.notification_id.in_(notification_ids)).order_by(Job.position)
    ):
        jobs[job.notification_id].append(job)
    details: dict[str, list[ExecutionDetail]] = {}
    for detail in session.scalars(
        select(ExecutionDetail)
        .where(ExecutionDetail.notification_id.in_(notification_ids))
        .order_by(ExecutionDetail.created_at, ExecutionDetail.id)
    ):
        details.setdefault(detail.job_id, []).append(detail)
    topic_keys = {key for row in rows for key in row[0].topics or []}
    topic_ids = {
        topic.key: topic.id
        for topic in session.scalars(
            select(Topic).where(Topic.environment_id == environment_id, Topic.key.in_(topic_keys))
        )
    }
    return [
        to_activity(
            ActivityRows(
                notification=row[0],
                subscriber=row[1],
                workflow=row[2],
                trigger=row[3],
                severity=row[4],
                jobs=jobs[row[0].id],
                details=details,
                topic_ids=topic_ids,
            )
        )
        for row in rows
    ]


def _feed_page(
    session: Session, environment_id: str, conditions: list[ColumnElement[bool]], page: int, limit: int
) -> tuple[list[dict[str, Any]], bool]:
    statement = feed_statement(environment_id, conditions)
    rows = list(
        session.execute(statement.order_by(Notification.id.desc()).offset(page * limit).limit(limit + 1))
    )
    return _activities(session, environment_id, rows[:limit]), len(rows) > limit


@get("/")
async def list_activity(request: Request[Any, Any, Any], environment: EnvironmentInfo) -> dict[str, Any]:
    """Return one page of notifications, newest first, unwrapped as Novu sends paged lists."""
    services = services_of(request)
    params = request.query_params
    errors: list[FieldError] = []
    page, limit = query.page_number(params, errors)
    conditions = feed_filters(params, errors)
    if errors:
        raise ApiError(INVALID_QUERY, errors=errors)
    async with AsyncSession(services.reader) as session:
        data, has_more = await session.run_sync(_feed_page, environment.id, conditions, page, limit)
    return {"hasMore": has_more, "data": data, "pageSize": limit, "page": page}


def _one(session: Session, environment_id: str, notification_id: str) -> dict[str, Any]:
    statement = feed_statement(environment_id, [Notification.id == notification_id])
    rows = list(session.execute(statement))
    if not rows:
        raise ApiError(NOTIFICATION_NOT_FOUND, notification_id=notification_id)
    return _activities(session, environment_id, rows)[0]


@get("/{notification_id:str}")
async def get_activity(
    request: Request[Any, Any, Any], environment: EnvironmentInfo, notification_id: str
) -> dict[str, Any]:
    services = services_of(request)
    async with AsyncSession(services.reader) as session:
        activity = await session.run_sync(_one, environment.id, notification_id)
    return {"data": activity}


def _one_job(session: Session, environment_id: str, job_id: str) -> dict[str, Any]:
    job = session.scalar(select(Job).where(Job.id == job_id, Job.environment_id == environment_id))
    if job is None:
        raise ApiError(JOB_NOT_FOUND, job_id=job_id)
    details = session.scalars(
        select(ExecutionDetail)
        .where(ExecutionDetail.job_id == job_id)
        .order_by(ExecutionDetail.created_at, ExecutionDetail.id)
    )
    return to_job_entry(job, list(details))


@get("/{job_id:str}")
async def get_job(
    request: Request[Any, Any, Any], environment: EnvironmentInfo, job_id: str
) -> dict[str, Any]:
    """Return one job with its error and execution details; Novu has no such route."""
    services = services_of(request)
    async with AsyncSession(services.reader) as session:
        job = await session.run_sync(_one_job, environment.id, job_id)
    return {"data": job}


activity_router = Router(
    path="/v1/notifications",
    route_handlers=[list_activity, get_activity],
    dependencies={"environment": Provide(environment_from_api_key)},
)
jobs_router = Router(
    path="/v1/jobs",
    route_handlers=[get_job],
    dependencies={"environment": Provide(environment_from_api_key)},
)
