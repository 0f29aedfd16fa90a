"""Messages under /v1/messages: list every channel's messages and delete one."""

from __future__ import annotations

from typing import Any

from litestar import Request, Router, delete, get
from litestar.di import Provide
from sqlalchemy import ColumnElement, func, select
from sqlalchemy import delete as sql_delete
from sqlalchemy.ext.asyncio import AsyncSession

from novulite.api import query
from novulite.api.auth import environment_from_api_key, services_of
from novulite.api.subscribers import notify_counts_changed
from novulite.db.models import Message, Notification, Subscriber, TriggerEvent, Workflow
from novulite.directory import EnvironmentInfo
from novulite.errors import INVALID_QUERY, MESSAGE_NOT_FOUND, ApiError, FieldError
from novulite.messages import CHANNEL_TYPES, context_key, to_message_response


def _conditions(environment_id: str, params: Any, errors: list[FieldError]) -> list[ColumnElement[bool]]:
    conditions = [Message.environment_id == environment_id]
    channels = query.one_of(params, "channel", CHANNEL_TYPES, errors)
    if channels:
        conditions.append(Message.channel == channels[0])
    subscriber_id = (params.get("subscriberId") or "").strip()
    if subscriber_id:
        conditions.append(Subscriber.subscriber_id == subscriber_id)
    transaction_ids = query.values(params, "transactionId")
    if transaction_ids:
        conditions.append(Message.transaction_id.in_(transaction_ids))
    context_keys = query.values(params, "contextKeys")
    if context_keys:
        # Context keys match as a set, the way the inbox matches them.
        conditions.append(Message.context_key == context_key(context_keys))
    return conditions


@get("/")
async def list_messages(request: Request[Any, Any, Any], environment: EnvironmentInfo) -> dict[str, Any]:
    """Return one page of messages, newest first, unwrapped as Novu sends paged lists."""
    services = services_of(request)
    params = request.query_params
    errors: list[FieldError] = []
    page, limit = query.page_number(params, errors)
    conditions = _conditions(environment.id, params, errors)
    if errors:
        raise ApiError(INVALID_QUERY, errors=errors)
    statement = (
        select(Message, Subscriber, Workflow, TriggerEvent.payload)
        .join(Subscriber, Subscriber.id == Message.subscriber_pk)
        .join(Workflow, Workflow.id == Message.workflow_pk)
        .join(Notification, Notification.id == Message.notification_id)
        .join(TriggerEvent, TriggerEvent.id == Notification.trigger_id)
        .where(*conditions)
    )
    async with AsyncSession(services.reader) as session:
        rows = (
            await session.execute(statement.order_by(Message.id.desc()).offset(page * limit).limit(limit + 1))
        ).all()
        total = await session.scalar(
            select(func.count())
            .select_from(Message)
            .join(Subscriber, Subscriber.id == Message.subscriber_pk)
            .where(*conditions)
        )
    return {
        "hasMore": len(rows) > limit,
        "data": [to_message_response(*row) for row in rows[:limit]],
        "pageSize": limit,
        "page": page,
        "totalCount": total or 0,
    }


@delete("/{message_id:str}", status_code=200)
async def delete_message(
    request: Request[Any, Any, Any], environment: EnvironmentInfo, message_id: str
) -> dict[str, Any]:
    """Delete a message. An in-app one leaves the inbox, and the inbox's sockets get the new counts."""
    services = services_of(request)
    scope = [Message.id == message_id, Message.environment_id == environment.id]
    async with AsyncSession(services.writer) as session, session.begin():
        columns = (Message.subscriber_pk, Message.context_key, Message.channel, Message.read, Message.seen)
        message = (await session.execute(select(*columns).where(*scope))).first()
        if message is None:
            raise ApiError(MESSAGE_NOT_FOUND, message_id=message_id)
        await session.execute(sql_delete(Message).where(*scope))
    if message.channel == "in_app" and not (message.read and message.seen):
        await notify_counts_changed(services, message.subscriber_pk, [message.context_key])
    return {"data": {"acknowledged": True, "status": "deleted"}}


messages_router = Router(
    path="/v1/messages",
    route_handlers=[list_messages, delete_message],
    dependencies={"environment": Provide(environment_from_api_key)},
)
