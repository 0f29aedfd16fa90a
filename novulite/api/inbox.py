"""Novu's Inbox REST API under /v1/inbox, as @novu/js calls it."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from litestar import Request, Response, Router, get, patch, post
from litestar.di import Provide
from sqlalchemy import ColumnElement, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from novulite import inbox_filters, security
from novulite.api import query
from novulite.api.auth import InboxSubject, inbox_subject, issue_inbox_token, services_of
from novulite.api.body import json_type, read_json_object
from novulite.api.triggers_validation import validate_context, validate_recipients
from novulite.db.models import Message, Subscriber, Workflow
from novulite.directory import EnvironmentInfo
from novulite.engine.triggers import context_keys
from novulite.errors import (
    INVALID_CONTEXT_HASH,
    INVALID_FIELDS,
    INVALID_QUERY,
    INVALID_SUBSCRIBER_HASH,
    NOTIFICATION_NOT_FOUND,
    ApiError,
    FieldError,
)
from novulite.ids import ID_PATTERN
from novulite.messages import (
    MAX_SNOOZE_HOURS,
    SEVERITIES,
    context_key,
    filter_conditions,
    inbox_scope,
    to_inbox,
    unread_by_severity_query,
    unread_counts,
)
from novulite.queues import COUNTS_CHANGED
from novulite.services import Services
from novulite.subscribers import upsert_subscriber

MAX_LIMIT = 100
BOOLEAN_KEYS = ("read", "archived", "seen", "snoozed")
FILTER_KEYS = (*BOOLEAN_KEYS, "severity", "tags", "data", "createdGte", "createdLte")
LIST_PARAMETERS = (*FILTER_KEYS, "severity[]", "tags[]", "limit", "offset", "after")
REPEATABLE_PARAMETERS = ("severity", "severity[]", "tags", "tags[]")
# Each filter is one COUNT query, so one request may not start an unbounded number of them.
MAX_COUNT_FILTERS = 50


async def _environment_for_session(services: Services, body: dict[str, Any]) -> EnvironmentInfo:
    identifier = body.get("applicationIdentifier")
    if identifier is None or identifier == "":
        raise ApiError(
            INVALID_FIELDS,
            errors=[FieldError("applicationIdentifier", "is required: the application identifier string")],
        )
    if not isinstance(identifier, str):
        problem = f"must be the application identifier string, got {json_type(identifier)}"
        raise ApiError(INVALID_FIELDS, errors=[FieldError("applicationIdentifier", problem, identifier)])
    environment = await services.directory.environment_by_identifier(identifier)
    if environment is None:
        raise ApiError(
            INVALID_FIELDS,
            errors=[
                FieldError(
                    "applicationIdentifier",
                    "is not a known application identifier; copy it from the first-start output",
                    identifier,
                )
            ],
        )
    return environment


def _session_recipient(body: dict[str, Any]) -> dict[str, Any]:
    subscriber = body.get("subscriber", body.get("subscriberId"))
    errors: list[FieldError] = []
    recipients = validate_recipients(subscriber, errors)
    if errors:
        for error in errors:
            field = error.field.replace("to", "subscriber", 1)
            error_list = [FieldError(field, error.message, error.value)]
            raise ApiError(INVALID_FIELDS, errors=error_list)
    return recipients[0]


def _upsert_for_session(
    session: Session, environment_id: str, recipient: dict[str, Any], trusted: bool, now: Any
) -> Subscriber:
    existing = session.scalar(
        select(Subscriber).where(
            Subscriber.environment_id == environment_id,
            Subscriber.subscriber_id == recipient["subscriberId"],
        )
    )
    if existing is not None and not trusted:
        # Without a verified hash anyone could rewrite the profile, so it only applies on creation.
        return existing
    return upsert_subscriber(session, environment_id, recipient, now)


@post("/session", status_code=201)
async def create_session(request: Request[Any, Any, Any]) -> Response[Any]:
    services = services_of(request)

    body = await read_json_object(request)
    environment = await _environment_for_session(services, body)
    recipient = _session_recipient(body)
    subscriber_id = recipient["subscriberId"]
    hash_valid = security.verify_subscriber_hash(
        environment.api_key, subscriber_id, body.get("subscriberHash")
    )
    if environment.hmac_required and not hash_valid:
        raise ApiError(INVALID_SUBSCRIBER_HASH)

    context = body.get("context")
    context_errors: list[FieldError] = []
    if context is not None and not validate_context(context, context_errors):
        raise ApiError(INVALID_FIELDS, errors=context_errors)
    if context and environment.hmac_required:
        _check_context_hash(environment.api_key, context, body.get("contextHash"))
    keys = context_keys(context)

    now = services.clock.now()
    async with AsyncSession(services.writer, expire_on_commit=False) as session, session.begin():
        subscriber = await session.run_sync(_upsert_for_session, environment.id, recipient, hash_valid, now)
    subject = InboxSubject(environment.id, subscriber.id, subscriber_id, context_key(keys))

    counts = await _unread_counts(services, subject)
    data = {
        "token": issue_inbox_token(services, environment, subject),
        "totalUnreadCount": counts["total"],
        "unreadCount": counts,
        "removeNovuBranding": True,
        "maxSnoozeDurationHours": MAX_SNOOZE_HOURS,
        "isDevelopmentMode": False,
        "contextKeys": keys,
    }
    return Response(content={"data": data}, status_code=201)


def _check_context_hash(api_key: str, context: dict[str, Any], presented: Any) -> None:
    """Reject a context the application did not sign, so a subscriber cannot open another context."""
    try:
        valid = security.verify_context_hash(api_key, context, presented)
    except ValueError as exc:
        raise ApiError(INVALID_FIELDS, errors=[FieldError("context", str(exc))]) from exc
    if not valid:
        raise ApiError(INVALID_CONTEXT_HASH)


async def _unread_counts(services: Services, subject: InboxSubject) -> dict[str, Any]:
    now = services.clock.now()
    async with services.reader.connect() as connection:
        rows = (
            await connection.execute(unread_by_severity_query(subject.subscriber_pk, subject.context, now))
        ).all()
    return unread_counts([(row[0], row[1]) for row in rows])


def _parse_bool(raw: Any, field: str, errors: list[FieldError]) -> bool | None:
    if isinstance(raw, bool):
        return raw
    if raw in ("true", "false"):
        return raw == "true"
    errors.append(FieldError(field, "must be true or false", raw))
    return None


def _parse_filter(
    raw: Any, field: str, errors: list[FieldError]
) -> tuple[dict[str, Any], list[ColumnElement[bool]]]:
    """Check one filter object. Return it unchanged, for the echo, and its tag, data and time conditions."""
    if not isinstance(raw, dict):
        errors.append(FieldError(field, f"must be an object, got {json_type(raw)}"))
        return {}, []
    for key in raw:
        if key not in FILTER_KEYS:
            name = key if field == "filter" else f"{field}.{key}"
            errors.append(FieldError(name, f"is not a filter; use {', '.join(FILTER_KEYS)}"))
    for key in BOOLEAN_KEYS:
        if key in raw:
            _parse_bool(raw[key], f"{field}.{key}", errors)
    severity = raw.get("severity")
    if isinstance(severity, list):
        values = severity
    elif severity is None:
        values = []
    else:
        values = [severity]
    for value in values:
        if value not in SEVERITIES:
            errors.append(FieldError(f"{field}.severity", f"must be one of {', '.join(SEVERITIES)}", value))
    if raw.get("read") is False and raw.get("archived") is True:
        errors.append(FieldError(field, "cannot ask for unread and archived at once; archiving marks read"))
    nested: list[FieldError] = []
    tags = inbox_filters.parse_tags(raw.get("tags"), "tags", nested)
    data = inbox_filters.parse_data(raw.get("data"), nested)
    created_gte = inbox_filters.parse_instant(raw.get("createdGte"), "createdGte", nested)
    created_lte = inbox_filters.parse_instant(raw.get("createdLte"), "createdLte", nested)
    prefix = "" if field == "filter" else f"{field}."
    errors.extend(FieldError(prefix + error.field, error.message, error.value) for error in nested)
    conditions = [
        *inbox_filters.tag_conditions(tags),
        *inbox_filters.data_conditions(data),
        *inbox_filters.created_conditions(created_gte, created_lte),
    ]
    return raw, conditions


def _query_filter(
    request: Request[Any, Any, Any], errors: list[FieldError]
) -> tuple[dict[str, Any], list[ColumnElement[bool]]]:
    params = request.query_params
    _unknown_or_repeated(params, LIST_PARAMETERS, errors)
    filter_: dict[str, Any] = {}
    for key in BOOLEAN_KEYS:
        if key in params:
            value = _parse_bool(params.get(key), key, errors)
            if value is not None:
                filter_[key] = value
    severities = params.getall("severity", []) + params.getall("severity[]", [])
    if severities:
        filter_["severity"] = severities if len(severities) > 1 else severities[0]
    tags = inbox_filters.tags_from_query(params)
    if tags is not None:
        filter_["tags"] = tags
    if "data" in params:
        filter_["data"] = _json_or_text(params["data"])
    for key in ("createdGte", "createdLte"):
        if key in params:
            filter_[key] = _json_or_text(params[key])
    return _parse_filter(filter_, "filter", errors)


def _json_or_text(raw: str) -> Any:
    """Decode a query value that @novu/js JSON-encodes; keep the text when it is not JSON."""
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def _limit(request: Request[Any, Any, Any], errors: list[FieldError]) -> int:
    count = len(errors)
    limit = query.whole_number(request.query_params, "limit", 10, 1, errors)
    if len(errors) == count and limit > MAX_LIMIT:
        errors.append(
            FieldError("limit", f"must be between 1 and {MAX_LIMIT}", request.query_params["limit"])
        )
    return limit


def _unknown_or_repeated(params: Any, known: tuple[str, ...], errors: list[FieldError]) -> None:
    """Report query parameters this endpoint does not take, and single-valued ones given twice."""
    for key in params:
        if inbox_filters.is_indexed_tag(key) and "tags[]" in known:
            continue
        if key not in known:
            errors.append(FieldError(key, f"is not a parameter of this endpoint; use {', '.join(known)}"))
        elif key not in REPEATABLE_PARAMETERS and len(params.getall(key)) > 1:
            errors.append(FieldError(key, "is given more than once; send it once"))


@get("/notifications")
async def list_notifications(request: Request[Any, Any, Any], subject: InboxSubject) -> dict[str, Any]:
    services = services_of(request)
    errors: list[FieldError] = []
    limit = _limit(request, errors)
    offset = query.whole_number(request.query_params, "offset", 0, 0, errors)
    after = request.query_params.get("after")
    if after and not ID_PATTERN.fullmatch(after):
        errors.append(FieldError("after", "must be the id of a notification from an earlier page", after))
    filter_, extra = _query_filter(request, errors)
    if errors:
        raise ApiError(INVALID_QUERY, errors=errors)
    now = services.clock.now()
    conditions = [
        *inbox_scope(subject.subscriber_pk, subject.context),
        *filter_conditions(filter_, now),
        *extra,
    ]
    if after:
        conditions.append(Message.id < after)
    statement = select(Message).where(*conditions).order_by(Message.id.desc()).offset(offset).limit(limit + 1)
    async with AsyncSession(services.reader) as session:
        messages = list(await session.scalars(statement))
        subscriber = await session.get_one(Subscriber, subject.subscriber_pk)
        workflows = await _workflows(session, messages)
    page = messages[:limit]
    return {
        "data": [to_inbox(message, subscriber, workflows[message.workflow_pk], now) for message in page],
        "hasMore": len(messages) > limit,
        "filter": filter_,
    }


async def _workflows(session: AsyncSession, messages: list[Message]) -> dict[str, Workflow]:
    pks = {message.workflow_pk for message in messages}
    if not pks:
        return {}
    return {
        workflow.id: workflow
        for workflow in await session.scalars(select(Workflow).where(Workflow.id.in_(pks)))
    }


@get("/notifications/count")
async def count_notifications(request: Request[Any, Any, Any], subject: InboxSubject) -> dict[str, Any]:
    services = services_of(request)
    raw = request.query_params.get("filters", "[]")
    errors: list[FieldError] = []
    _unknown_or_repeated(request.query_params, ("filters",), errors)
    if errors:
        raise ApiError(INVALID_QUERY, errors=errors)
    try:
        filters = json.loads(raw)
    except ValueError:
        raise ApiError(
            INVALID_QUERY,
            errors=[FieldError("filters", "must be a JSON array of filter objects", raw)],
        ) from None
    if not isinstance(filters, list):
        filters = [filters]
    if len(filters) > MAX_COUNT_FILTERS:
        raise ApiError(
            INVALID_QUERY,
            errors=[FieldError("filters", f"has {len(filters)} filters; send at most {MAX_COUNT_FILTERS}")],
        )
    checked = [_parse_filter(item, f"filters[{index}]", errors) for index, item in enumerate(filters)]
    if errors:
        raise ApiError(INVALID_QUERY, errors=errors)
    results = []
    now = services.clock.now()
    async with services.reader.connect() as connection:
        for filter_, extra in checked:
            normalised = {
                k: (v == "true" if isinstance(v, str) and k in BOOLEAN_KEYS else v)
                for k, v in filter_.items()
            }
            count = await connection.scalar(
                select(func.count()).where(
                    *inbox_scope(subject.subscriber_pk, subject.context),
                    *filter_conditions(normalised, now),
                    *extra,
                )
            )
            results.append({"count": count or 0, "filter": filter_})
    return {"data": results}


async def _mark(
    request: Request[Any, Any, Any], subject: InboxSubject, message_id: str, read: bool
) -> dict[str, Any]:
    services = services_of(request)
    now = services.clock.now()
    values: dict[str, Any] = {"read": read, "read_at": now if read else None, "updated_at": now}
    if read:
        values["seen"] = True
    scope = [Message.id == message_id, *inbox_scope(subject.subscriber_pk, subject.context)]
    async with AsyncSession(services.writer, expire_on_commit=False) as session, session.begin():
        message = await session.scalar(select(Message).where(*scope))
        if message is None:
            raise ApiError(NOTIFICATION_NOT_FOUND, notification_id=message_id)
        changed = message.read != read
        if changed:
            await session.execute(update(Message).where(*scope, Message.read.is_(not read)).values(**values))
            await session.refresh(message)
    async with AsyncSession(services.reader) as session:
        subscriber = await session.get_one(Subscriber, subject.subscriber_pk)
        workflow = await session.get_one(Workflow, message.workflow_pk)
    if changed:
        await asyncio.to_thread(
            services.queues.enqueue, COUNTS_CHANGED, subject.subscriber_pk, subject.context
        )
    return {"data": to_inbox(message, subscriber, workflow, now)}


@patch("/notifications/{message_id:str}/read")
async def mark_read(
    request: Request[Any, Any, Any], subject: InboxSubject, message_id: str
) -> dict[str, Any]:
    return await _mark(request, subject, message_id, read=True)


@patch("/notifications/{message_id:str}/unread")
async def mark_unread(
    request: Request[Any, Any, Any], subject: InboxSubject, message_id: str
) -> dict[str, Any]:
    return await _mark(request, subject, message_id, read=False)


inbox_router = Router(
    path="/v1/inbox",
    route_handlers=[list_notifications, count_notifications, mark_read, mark_unread],
    dependencies={"subject": Provide(inbox_subject)},
)
session_router = Router(path="/v1/inbox", route_handlers=[create_session])
