"""ws_socket_queue: turn inbox changes into realtime frames for the subscriber's sockets."""

from __future__ import annotations

import datetime as dt
import logging
import sqlite3
from typing import Any

from novulite.db.fast import fetch, placeholders
from novulite.db.models import Message, Subscriber, Workflow, table
from novulite.engine.context import WorkerContext
from novulite.messages import to_raw_entity, unread_counts, unread_frame, unseen_frame

logger = logging.getLogger("novulite.ws")

_INBOX = (
    "subscriber_pk = ? AND context_key = ? AND channel = 'in_app' AND archived = 0"
    " AND (snoozed_until IS NULL OR snoozed_until <= ?)"
)
# The same conditions as novulite.messages.unread_conditions and unseen_conditions.
_UNREAD_BY_SEVERITY = f"SELECT severity, count(*) FROM message WHERE {_INBOX} AND read = 0 GROUP BY severity"
_UNSEEN = f"SELECT count(*) FROM message WHERE {_INBOX} AND seen = 0"


def _stored_instant(instant: dt.datetime) -> str:
    """Format an instant as SQLAlchemy stores a DateTime in SQLite, so text comparison orders it."""
    return instant.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def count_frames(
    raw: sqlite3.Connection, subscriber_pk: str, context: str, now: dt.datetime
) -> list[dict[str, Any]]:
    parameters = (subscriber_pk, context, _stored_instant(now))
    rows = raw.execute(_UNREAD_BY_SEVERITY, parameters).fetchall()
    unseen = raw.execute(_UNSEEN, parameters).fetchone()[0]
    return [unread_frame(unread_counts([(row[0], row[1]) for row in rows])), unseen_frame(unseen)]


def _rows_by_id(raw: sqlite3.Connection, table_name: str, ids: set[str], model_table: Any) -> dict[str, Any]:
    sql = f"SELECT * FROM {table_name} WHERE id IN ({placeholders(len(ids))})"
    return {row.id: row for row in fetch(raw, sql, list(ids), model_table)}


def messages_created(ctx: WorkerContext, message_ids: list[str]) -> None:
    """Send each new message to its subscriber's sockets, then that subscriber's counts once."""
    raw = ctx.store.raw_read()
    # One read transaction, so the messages and the counts come from the same snapshot.
    raw.execute("BEGIN")
    try:
        frames = _frames(raw, _with_sockets(ctx, raw, message_ids), ctx.clock.now())
    finally:
        raw.execute("COMMIT")
    for (subscriber_pk, context), batch in frames.items():
        ctx.publish(subscriber_pk, context, batch)


def _with_sockets(ctx: WorkerContext, raw: sqlite3.Connection, message_ids: list[str]) -> set[str]:
    """Return the ids of the messages whose subscriber has a socket open, the only ones worth a frame.

    Most recipients of a large fan-out are offline. Building their frames took about
    a quarter of the pipeline's CPU time in bench/fanout.py on a 2-vCPU machine.
    """
    requested = list(set(message_ids))
    rows = raw.execute(
        f"SELECT id, subscriber_pk FROM message WHERE id IN ({placeholders(len(requested))})", requested
    ).fetchall()
    if len(rows) < len(requested):
        logger.warning("%d messages vanished before their frames were sent", len(requested) - len(rows))
    return {message_id for message_id, subscriber_pk in rows if ctx.has_sockets(subscriber_pk)}


def _frames(
    raw: sqlite3.Connection, message_ids: set[str], now: dt.datetime
) -> dict[tuple[str, str], list[dict[str, Any]]]:
    if not message_ids:
        return {}
    messages = sorted(_rows_by_id(raw, "message", message_ids, table(Message)).values(), key=lambda m: m.id)
    subscribers = _rows_by_id(raw, "subscriber", {m.subscriber_pk for m in messages}, table(Subscriber))
    workflows = _rows_by_id(raw, "workflow", {m.workflow_pk for m in messages}, table(Workflow))
    frames: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for message in messages:
        entity = to_raw_entity(message, subscribers[message.subscriber_pk], workflows[message.workflow_pk])
        frames.setdefault((message.subscriber_pk, message.context_key), []).append(
            {"event": "notification_received", "data": {"message": entity}}
        )
    for (subscriber_pk, context), received in frames.items():
        received.extend(count_frames(raw, subscriber_pk, context, now))
    return frames


def counts_changed(ctx: WorkerContext, subscriber_pk: str, context: str) -> None:
    frames = count_frames(ctx.store.raw_read(), subscriber_pk, context, ctx.clock.now())
    ctx.publish(subscriber_pk, context, frames)
