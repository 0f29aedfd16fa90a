"""ws_socket_queue: turn inbox changes into realtime frames for the subscriber's sockets."""

from __future__ import annotations

import logging
from typing import Any

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


def message_created(ctx: WorkerContext, message_id: str) -> None:
    with Session(ctx.engine) as session:
        message = session.get(Message, message_id)
        if message is None:
            logger.warning("message %s vanished before its realtime frame was sent", message_id)
            return
        subscriber = session.get_one(Subscriber, message.subscriber_pk)
        workflow = session.get_one(Workflow, message.workflow_pk)
        frames = [
            {
                "event": "notification_received",
                "data": {"message": to_raw_entity(message, subscriber, workflow)},
            },
            *count_frames(session, message.subscriber_pk, message.context_key),
        ]
    ctx.publish(message.subscriber_pk, message.context_key, frames)


def counts_changed(ctx: WorkerContext, subscriber_pk: str, context: str) -> None:
    with Session(ctx.engine) as session:
        frames = count_frames(session, subscriber_pk, context)
    ctx.publish(subscriber_pk, context, frames)
