"""In-app messages for the inbox: filters, unread counts and the two JSON shapes.

The inbox REST API returns Novu's InboxNotification shape; realtime frames carry
Novu's raw message entity, which @novu/js maps to the same shape itself.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import ColumnElement, false, func, or_, select, true
from sqlalchemy.sql import Select

from novulite.clock import isoformat
from novulite.db.models import Message
from novulite.ids import ORGANIZATION_ID
from novulite.subscribers import to_inbox_recipient, to_raw, to_response

SEVERITIES = ("high", "medium", "low", "none")
# Maximum snooze length in hours (90 days), sent to @novu/js as the session's maxSnoozeDurationHours.
MAX_SNOOZE_HOURS = 90 * 24
# Filter keys the inbox accepts, each a boolean except severity and tags.
BOOLEAN_FILTERS = {
    "read": Message.read,
    "archived": Message.archived,
    "seen": Message.seen,
}


def context_key(keys: list[str] | tuple[str, ...]) -> str:
    """Return the canonical form of a set of context keys: sorted, de-duplicated, comma-joined."""
    return ",".join(sorted(set(keys)))


def inbox_scope(subscriber_pk: Any, context: Any) -> list[ColumnElement[bool]]:
    """Return the conditions every inbox query starts from: one subscriber, one exact context."""
    return [
        Message.subscriber_pk == subscriber_pk,
        Message.context_key == context,
        Message.channel == "in_app",
    ]


def snoozed_condition(now: dt.datetime) -> ColumnElement[bool]:
    """Return the condition for a message still snoozed at `now`. A snooze whose time has passed has ended."""
    return Message.snoozed_until > now


def not_snoozed_condition(now: dt.datetime) -> ColumnElement[bool]:
    return or_(Message.snoozed_until.is_(None), Message.snoozed_until <= now)


def is_snoozed(message: Any, now: dt.datetime) -> bool:
    return message.snoozed_until is not None and message.snoozed_until > now


def filter_conditions(filter_: dict[str, Any], now: dt.datetime) -> list[ColumnElement[bool]]:
    """Translate a validated inbox filter into SQL conditions, with snoozes judged at `now`."""
    conditions: list[ColumnElement[bool]] = []
    for key, column in BOOLEAN_FILTERS.items():
        if key in filter_:
            conditions.append(column.is_(true() if filter_[key] else false()))
    if "snoozed" in filter_:
        conditions.append(snoozed_condition(now) if filter_["snoozed"] else not_snoozed_condition(now))
    severity = filter_.get("severity")
    if isinstance(severity, str):
        conditions.append(Message.severity == severity)
    elif isinstance(severity, list) and severity:
        conditions.append(Message.severity.in_(severity))
    return conditions


def unread_conditions(now: dt.datetime) -> list[ColumnElement[bool]]:
    return [
        Message.read.is_(false()),
        Message.archived.is_(false()),
        not_snoozed_condition(now),
    ]


def unseen_conditions(now: dt.datetime) -> list[ColumnElement[bool]]:
    return [
        Message.seen.is_(false()),
        Message.archived.is_(false()),
        not_snoozed_condition(now),
    ]


def unread_by_severity_query(subscriber_pk: Any, context: Any, now: dt.datetime) -> Select[str, int]:
    return (
        select(Message.severity, func.count())
        .where(*inbox_scope(subscriber_pk, context), *unread_conditions(now))
        .group_by(Message.severity)
    )


def unseen_count_query(subscriber_pk: Any, context: Any, now: dt.datetime) -> Select[Any]:
    return select(func.count()).where(*inbox_scope(subscriber_pk, context), *unseen_conditions(now))


def unread_counts(rows: list[tuple[str, int]]) -> dict[str, Any]:
    """Turn (severity, count) rows into `{total, severity: {high, medium, low, none}}`."""
    by_severity = dict.fromkeys(SEVERITIES, 0)
    for severity, count in rows:
        by_severity[severity if severity in by_severity else "none"] += count
    return {"total": sum(by_severity.values()), "severity": by_severity}


def unread_frame(counts: dict[str, Any]) -> dict[str, Any]:
    return {
        "event": "unread_count_changed",
        "data": {"unreadCount": counts["total"], "counts": counts, "hasMore": False},
    }


def unseen_frame(unseen: int) -> dict[str, Any]:
    return {"event": "unseen_count_changed", "data": {"unseenCount": unseen, "hasMore": False}}


def _action(cta: dict[str, Any], kind: str) -> dict[str, Any] | None:
    action = cta.get("action") or {}
    for button in action.get("buttons") or []:
        if button.get("type") != kind:
            continue
        result: dict[str, Any] = {
            "label": button.get("content", ""),
            "isCompleted": action.get("status") == "done"
            and (action.get("result") or {}).get("type") == kind,
        }
        if button.get("url"):
            result["redirect"] = {"url": button["url"], "target": button.get("target", "_self")}
        return result
    return None


def _workflow_summary(workflow: Any) -> dict[str, Any]:
    return {
        "id": workflow.id,
        "identifier": workflow.workflow_id,
        "name": workflow.name,
        "critical": workflow.critical,
        "tags": workflow.tags or [],
        "severity": workflow.severity,
    }


def to_inbox(message: Any, subscriber: Any, workflow: Any, now: dt.datetime) -> dict[str, Any]:
    """Return the InboxNotification JSON of a message at `now`. The arguments are ORM objects or Core rows."""
    redirect = (message.cta or {}).get("data") or None
    return {
        "id": message.id,
        "transactionId": message.transaction_id,
        "subject": message.subject,
        "body": message.content,
        "to": to_inbox_recipient(subscriber),
        "isRead": message.read,
        "isSeen": message.seen,
        "isArchived": message.archived,
        "isSnoozed": is_snoozed(message, now),
        "snoozedUntil": isoformat(message.snoozed_until) if is_snoozed(message, now) else None,
        "deliveredAt": [isoformat(message.created_at)],
        "createdAt": isoformat(message.created_at),
        "readAt": isoformat(message.read_at),
        "firstSeenAt": isoformat(message.seen_at),
        "archivedAt": isoformat(message.archived_at),
        "avatar": message.avatar,
        "primaryAction": _action(message.cta or {}, "primary"),
        "secondaryAction": _action(message.cta or {}, "secondary"),
        "channelType": message.channel,
        "tags": message.tags or [],
        "data": message.data,
        "redirect": redirect if redirect and redirect.get("url") else None,
        "workflow": _workflow_summary(workflow),
        "severity": message.severity,
    }


def to_raw_entity(message: Any, subscriber: Any, workflow: Any) -> dict[str, Any]:
    """Return Novu's raw message entity, as `notification_received` frames carry it."""
    return {
        "_id": message.id,
        "_environmentId": message.environment_id,
        "_notificationId": message.notification_id,
        "_subscriberId": message.subscriber_pk,
        "_templateId": message.workflow_pk,
        "_jobId": message.job_id,
        "transactionId": message.transaction_id,
        "channel": message.channel,
        "subject": message.subject,
        "content": message.content,
        "avatar": message.avatar,
        # @novu/js reads cta.action without a null check, so cta is always an object.
        "cta": message.cta or {},
        "read": message.read,
        "seen": message.seen,
        "archived": message.archived,
        "snoozedUntil": isoformat(message.snoozed_until),
        "lastReadDate": isoformat(message.read_at),
        "firstSeenDate": isoformat(message.seen_at),
        "archivedAt": isoformat(message.archived_at),
        "deliveredAt": [] if message.status == "error" else [isoformat(message.created_at)],
        "createdAt": isoformat(message.created_at),
        "updatedAt": isoformat(message.updated_at),
        "tags": message.tags or [],
        "data": message.data,
        "severity": message.severity,
        "status": message.status,
        "contextKeys": message.context_key.split(",") if message.context_key else [],
        "workflow": _workflow_summary(workflow),
        "subscriber": to_raw(subscriber),
    }


# Novu's ChannelTypeEnum, the values of a message's `channel`.
CHANNEL_TYPES = ("in_app", "email", "sms", "chat", "push", "tool")
# Novu's provider id for its own in-app channel. novu-py requires a provider id from a closed
# list on every activity job.
# NOTE: it is also shown for steps of other types, which have no provider on this server yet.
IN_APP_PROVIDER_ID = "novu"


def to_message_response(
    message: Any, subscriber: Any, workflow: Any, payload: dict[str, Any] | None
) -> dict[str, Any]:
    """Return Novu's MessageResponseDto, as GET /v1/messages lists it, with the trigger's `payload`."""
    return dict(
        to_raw_entity(message, subscriber, workflow),
        _organizationId=ORGANIZATION_ID,
        _feedId=None,
        templateIdentifier=workflow.workflow_id,
        lastSeenDate=isoformat(message.seen_at),
        providerId=IN_APP_PROVIDER_ID if message.channel == "in_app" else message.provider_id,
        # Novu's names for why a message failed: the error's type and its message.
        errorId=(message.error or {}).get("type") if message.status == "error" else None,
        errorText=(message.error or {}).get("message") if message.status == "error" else None,
        payload=payload or {},
        subscriber=to_response(subscriber),
    )
