"""Inbox notification actions under /v1/inbox: archive, snooze, cta actions, delete and the bulk calls.

Paths, bodies and status codes follow what @novu/js 3.19.2 sends and accepts: a
changed notification comes back as `{data: InboxNotification}`, and a delete or a
bulk call returns 204 with no body.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from typing import Any

from litestar import Request, Response, Router, delete, patch, post
from litestar.di import Provide
from sqlalchemy import ColumnElement, false, func, select, true, update
from sqlalchemy import delete as sql_delete
from sqlalchemy.ext.asyncio import AsyncSession

from novulite import inbox_filters
from novulite.api.auth import InboxSubject, inbox_subject, services_of
from novulite.api.body import json_type, read_json_object
from novulite.db.models import Message, Subscriber, Workflow
from novulite.errors import INVALID_FIELDS, NOTIFICATION_NOT_FOUND, ApiError, FieldError
from novulite.ids import ID_PATTERN
from novulite.messages import MAX_SNOOZE_HOURS, inbox_scope, not_snoozed_condition, to_inbox
from novulite.queues import COUNTS_CHANGED
from novulite.services import Services

ACTION_TYPES = ("primary", "secondary")
# Bounds on a bulk body, so one request cannot build an unbounded SQL statement.
MAX_NOTIFICATION_IDS = 1000
BULK_KEYS = ("notificationIds", "tags", "data")

# A change applied to a loaded message at `now`. It returns whether the unread or unseen counts changed.
Change = Callable[[Message, dt.datetime], bool]


async def _enqueue_counts(services: Services, subject: InboxSubject) -> None:
    """Ask the socket queue to send the subscriber's new unread and unseen counts."""
    await asyncio.to_thread(services.queues.enqueue, COUNTS_CHANGED, subject.subscriber_pk, subject.context)


async def _change_one(
    request: Request[Any, Any, Any], subject: InboxSubject, message_id: str, change: Change
) -> dict[str, Any]:
    """Apply `change` to one of the subject's messages and return it as `{data: InboxNotification}`.

    Raises a 404 for an id outside the subject's inbox, which includes another subscriber's message.
    """
    services = services_of(request)
    now = services.clock.now()
    scope = [Message.id == message_id, *inbox_scope(subject.subscriber_pk, subject.context)]
    async with AsyncSession(services.writer, expire_on_commit=False) as session, session.begin():
        message = await session.scalar(select(Message).where(*scope))
        if message is None:
            raise ApiError(NOTIFICATION_NOT_FOUND, notification_id=message_id)
        counts_changed = change(message, now)
        message.updated_at = now
    async with AsyncSession(services.reader) as session:
        subscriber = await session.get_one(Subscriber, subject.subscriber_pk)
        workflow = await session.get_one(Workflow, message.workflow_pk)
    if counts_changed:
        await _enqueue_counts(services, subject)
    return {"data": to_inbox(message, subscriber, workflow, now)}


def _archive(message: Message, now: dt.datetime) -> bool:
    """Archive a message and mark it read and seen."""
    if message.archived:
        return False
    message.archived = True
    message.archived_at = now
    if not message.read:
        message.read = True
        message.read_at = now
    if not message.seen:
        message.seen = True
        message.seen_at = now
    return True


def _unarchive(message: Message, now: dt.datetime) -> bool:
    if not message.archived:
        return False
    message.archived = False
    message.archived_at = None
    return True


def _unsnooze(message: Message, now: dt.datetime) -> bool:
    was_snoozed = message.snoozed_until is not None and message.snoozed_until > now
    message.snoozed_until = None
    return was_snoozed


def _set_action_status(action_type: str, done: bool) -> Change:
    """Return a change that marks the message's primary or secondary action done or pending."""

    def apply(message: Message, now: dt.datetime) -> bool:
        cta = dict(message.cta or {})
        action = dict(cta.get("action") or {})
        buttons = action.get("buttons") or []
        if not any(button.get("type") == action_type for button in buttons):
            raise ApiError(
                INVALID_FIELDS,
                errors=[
                    FieldError(
                        "actionType",
                        f"this notification has no {action_type} action; use one of its buttons",
                        action_type,
                    )
                ],
            )
        action["status"] = "done" if done else "pending"
        action["result"] = {"type": action_type}
        cta["action"] = action
        # SQLAlchemy tracks a JSON column only on assignment, so the cta is replaced, not edited in place.
        message.cta = cta
        return False

    return apply


def _action_type(body: dict[str, Any]) -> str:
    value = body.get("actionType")
    if value not in ACTION_TYPES:
        problem = "is required" if value is None else "is invalid"
        raise ApiError(
            INVALID_FIELDS,
            errors=[FieldError("actionType", f"{problem}: use one of {', '.join(ACTION_TYPES)}", value)],
        )
    return str(value)


def _snooze_until(body: dict[str, Any], now: dt.datetime) -> dt.datetime:
    """Parse `snoozeUntil`: an ISO 8601 instant with a time zone, in the future and within the maximum."""
    raw = body.get("snoozeUntil")
    field = "snoozeUntil"
    if raw is None:
        raise ApiError(
            INVALID_FIELDS, errors=[FieldError(field, "is required: an ISO 8601 time in the future")]
        )
    if not isinstance(raw, str):
        raise ApiError(
            INVALID_FIELDS,
            errors=[FieldError(field, f"must be an ISO 8601 string, got {json_type(raw)}", raw)],
        )
    try:
        until = dt.datetime.fromisoformat(raw)
    except ValueError:
        example = (now + dt.timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
        raise ApiError(
            INVALID_FIELDS,
            errors=[FieldError(field, f"is not an ISO 8601 time such as {example}", raw)],
        ) from None
    if until.tzinfo is None:
        raise ApiError(
            INVALID_FIELDS,
            errors=[FieldError(field, "has no time zone; end it with Z or an offset such as +02:00", raw)],
        )
    if until <= now:
        raise ApiError(INVALID_FIELDS, errors=[FieldError(field, "must be in the future", raw)])
    if until > now + dt.timedelta(hours=MAX_SNOOZE_HOURS):
        raise ApiError(
            INVALID_FIELDS,
            errors=[FieldError(field, f"must be at most {MAX_SNOOZE_HOURS} hours from now", raw)],
        )
    return until.astimezone(dt.UTC)


@patch("/notifications/{message_id:str}/archive")
async def archive(request: Request[Any, Any, Any], subject: InboxSubject, message_id: str) -> dict[str, Any]:
    return await _change_one(request, subject, message_id, _archive)


@patch("/notifications/{message_id:str}/unarchive")
async def unarchive(
    request: Request[Any, Any, Any], subject: InboxSubject, message_id: str
) -> dict[str, Any]:
    return await _change_one(request, subject, message_id, _unarchive)


@patch("/notifications/{message_id:str}/snooze")
async def snooze(request: Request[Any, Any, Any], subject: InboxSubject, message_id: str) -> dict[str, Any]:
    services = services_of(request)
    body = await read_json_object(request)
    until = _snooze_until(body, services.clock.now())

    def apply(message: Message, now: dt.datetime) -> bool:
        message.snoozed_until = until
        return True

    result = await _change_one(request, subject, message_id, apply)
    # The counts change again when the snooze ends, with no request to announce it, so the
    # socket queue is asked to send them at that time as well.
    delay = max((until - services.clock.now()).total_seconds(), 0.0) + 1.0
    await asyncio.to_thread(
        services.queues.schedule, COUNTS_CHANGED, delay, subject.subscriber_pk, subject.context
    )
    return result


@patch("/notifications/{message_id:str}/unsnooze")
async def unsnooze(request: Request[Any, Any, Any], subject: InboxSubject, message_id: str) -> dict[str, Any]:
    return await _change_one(request, subject, message_id, _unsnooze)


@patch("/notifications/{message_id:str}/complete")
async def complete_action(
    request: Request[Any, Any, Any], subject: InboxSubject, message_id: str
) -> dict[str, Any]:
    action_type = _action_type(await read_json_object(request))
    return await _change_one(request, subject, message_id, _set_action_status(action_type, done=True))


@patch("/notifications/{message_id:str}/revert")
async def revert_action(
    request: Request[Any, Any, Any], subject: InboxSubject, message_id: str
) -> dict[str, Any]:
    action_type = _action_type(await read_json_object(request))
    return await _change_one(request, subject, message_id, _set_action_status(action_type, done=False))


@delete("/notifications/{message_id:str}/delete", status_code=204)
async def delete_one(request: Request[Any, Any, Any], subject: InboxSubject, message_id: str) -> None:
    services = services_of(request)
    scope = [Message.id == message_id, *inbox_scope(subject.subscriber_pk, subject.context)]
    async with AsyncSession(services.writer) as session, session.begin():
        deleted = (await session.execute(sql_delete(Message).where(*scope))).rowcount  # type: ignore[attr-defined]
    if not deleted:
        raise ApiError(NOTIFICATION_NOT_FOUND, notification_id=message_id)
    await _enqueue_counts(services, subject)


# Bulk calls


def _notification_ids(body: dict[str, Any], errors: list[FieldError]) -> list[str] | None:
    raw = body.get("notificationIds")
    if raw is None:
        return None
    if not isinstance(raw, list):
        errors.append(
            FieldError("notificationIds", f"must be an array of notification ids, got {json_type(raw)}")
        )
        return None
    if len(raw) > MAX_NOTIFICATION_IDS:
        errors.append(
            FieldError(
                "notificationIds", f"has {len(raw)} ids; send at most {MAX_NOTIFICATION_IDS} per request"
            )
        )
        return None
    for index, value in enumerate(raw):
        if not isinstance(value, str) or not ID_PATTERN.fullmatch(value):
            errors.append(
                FieldError(
                    f"notificationIds[{index}]", "must be the id of a notification from the list", value
                )
            )
    return [value for value in raw if isinstance(value, str)]


async def _bulk_filter(request: Request[Any, Any, Any]) -> tuple[list[str] | None, list[ColumnElement[bool]]]:
    """Read a bulk body: the optional `notificationIds` and the tags/data conditions."""
    body = await read_json_object(request, allow_empty=True)
    errors: list[FieldError] = []
    # An unknown key would otherwise widen the call to the whole inbox, so a typo is an error.
    for key in body:
        if key not in BULK_KEYS:
            errors.append(FieldError(key, f"is not a field of this call; use {', '.join(BULK_KEYS)}"))
    ids = _notification_ids(body, errors)
    tags = inbox_filters.parse_tags(body.get("tags"), "tags", errors)
    data = inbox_filters.parse_data(body.get("data"), errors)
    if errors:
        raise ApiError(INVALID_FIELDS, errors=errors)
    conditions = [*inbox_filters.tag_conditions(tags), *inbox_filters.data_conditions(data)]
    if ids is not None:
        conditions.append(Message.id.in_(ids))
    return ids, conditions


async def _update_many(
    request: Request[Any, Any, Any],
    subject: InboxSubject,
    conditions: list[ColumnElement[bool]],
    values: dict[str, Any],
) -> Response[None]:
    """Update the subject's messages that meet `conditions` and send new counts if any changed."""
    services = services_of(request)
    scope = [*inbox_scope(subject.subscriber_pk, subject.context), *conditions]
    async with AsyncSession(services.writer) as session, session.begin():
        result = await session.execute(update(Message).where(*scope).values(**values))
    if result.rowcount:  # type: ignore[attr-defined]
        await _enqueue_counts(services, subject)
    return Response(content=None, status_code=204)


@post("/notifications/seen", status_code=204)
async def mark_seen(request: Request[Any, Any, Any], subject: InboxSubject) -> Response[None]:
    """Mark the given notifications seen, or all that match the tags and data when no ids are given."""
    _, conditions = await _bulk_filter(request)
    now = services_of(request).clock.now()
    conditions.append(Message.seen.is_(false()))
    return await _update_many(request, subject, conditions, {"seen": True, "seen_at": now, "updated_at": now})


@post("/notifications/read", status_code=204)
async def read_all(request: Request[Any, Any, Any], subject: InboxSubject) -> Response[None]:
    """Mark every unread notification read that matches the tags and data and is not snoozed now."""
    _, conditions = await _bulk_filter(request)
    now = services_of(request).clock.now()
    conditions += [Message.read.is_(false()), not_snoozed_condition(now)]
    values = {"read": True, "read_at": now, "seen": True, "seen_at": func.coalesce(Message.seen_at, now)}
    return await _update_many(request, subject, conditions, {**values, "updated_at": now})


async def _archive_many(
    request: Request[Any, Any, Any], subject: InboxSubject, only_read: bool
) -> Response[None]:
    _, conditions = await _bulk_filter(request)
    now = services_of(request).clock.now()
    conditions += [Message.archived.is_(false()), not_snoozed_condition(now)]
    if only_read:
        conditions.append(Message.read.is_(true()))
    values = {
        "archived": True,
        "archived_at": now,
        "read": True,
        "read_at": func.coalesce(Message.read_at, now),
        "seen": True,
        "seen_at": func.coalesce(Message.seen_at, now),
        "updated_at": now,
    }
    return await _update_many(request, subject, conditions, values)


@post("/notifications/archive", status_code=204)
async def archive_all(request: Request[Any, Any, Any], subject: InboxSubject) -> Response[None]:
    """Archive every notification that matches the tags and data and is not snoozed now."""
    return await _archive_many(request, subject, only_read=False)


@post("/notifications/read-archive", status_code=204)
async def archive_all_read(request: Request[Any, Any, Any], subject: InboxSubject) -> Response[None]:
    """Archive every read notification that matches the tags and data and is not snoozed now."""
    return await _archive_many(request, subject, only_read=True)


@post("/notifications/delete", status_code=204)
async def delete_many(request: Request[Any, Any, Any], subject: InboxSubject) -> Response[None]:
    """Delete the given notifications, or all that match the tags and data when no ids are given."""
    services = services_of(request)
    _, conditions = await _bulk_filter(request)
    scope = [*inbox_scope(subject.subscriber_pk, subject.context), *conditions]
    async with AsyncSession(services.writer) as session, session.begin():
        result = await session.execute(sql_delete(Message).where(*scope))
    if result.rowcount:  # type: ignore[attr-defined]
        await _enqueue_counts(services, subject)
    return Response(content=None, status_code=204)


inbox_actions_router = Router(
    path="/v1/inbox",
    route_handlers=[
        archive,
        unarchive,
        snooze,
        unsnooze,
        complete_action,
        revert_action,
        delete_one,
        mark_seen,
        read_all,
        archive_all,
        archive_all_read,
        delete_many,
    ],
    dependencies={"subject": Provide(inbox_subject)},
)
