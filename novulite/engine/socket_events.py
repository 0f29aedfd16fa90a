"""ws_socket_queue: turn inbox changes into realtime frames for the subscriber's sockets."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from novulite.db.models import Message, Subscriber, Workflow
from novulite.engine.context import WorkerContext
from novulite.messages import (
    to_raw_entity,
    unread_by_severity_query,
    unread_counts,
    unread_frame,
    unseen_count_query,
    unseen_frame,
)

logger = logging.getLogger("novulite.ws")


def count_frames(session: Session, subscriber_pk: str, context: str) -> list[dict[str, Any]]:
    rows = session.execute(unread_by_severity_query(subscriber_pk, context)).all()
    unseen = session.scalar(unseen_count_query(subscriber_pk, context)) or 0
    return [unread_frame(unread_counts([(row[0], row[1]) for row in rows])), unseen_frame(unseen)]


def messages_created(ctx: WorkerContext, message_ids: list[str]) -> None:
    """Send each new message to its subscriber's sockets, then that subscriber's counts once."""
    with ctx.store.read() as session:
        messages = session.scalars(
            select(Message).where(Message.id.in_(message_ids)).order_by(Message.id)
        ).all()
        if len(messages) < len(set(message_ids)):
            logger.warning(
                "%d messages vanished before their frames were sent", len(set(message_ids)) - len(messages)
            )
        frames: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for message in messages:
            subscriber = session.get_one(Subscriber, message.subscriber_pk)
            workflow = session.get_one(Workflow, message.workflow_pk)
            entity = to_raw_entity(message, subscriber, workflow)
            frames.setdefault((message.subscriber_pk, message.context_key), []).append(
                {"event": "notification_received", "data": {"message": entity}}
            )
        for (subscriber_pk, context), received in frames.items():
            received.extend(count_frames(session, subscriber_pk, context))
    for (subscriber_pk, context), batch in frames.items():
        ctx.publish(subscriber_pk, context, batch)


def counts_changed(ctx: WorkerContext, subscriber_pk: str, context: str) -> None:
    with ctx.store.read() as session:
        frames = count_frames(session, subscriber_pk, context)
    ctx.publish(subscriber_pk, context, frames)
