"""ws_socket_queue: turn inbox changes into realtime frames for the subscriber's sockets."""

from __future__ import annotations

import datetime as dt
import logging
import sqlite3
from typing import Any

from novulite.db.fast import fetch, placeholders
from novulite.db.models import Message, Subscriber, Workflow, table
from novulite.db.sql import begin_snapshot
from novulite.engine.context import WorkerContext
from novulite.messages import to_raw_entity, unread_counts, unread_frame, unseen_frame

logger = logging.getLogger("novulite.ws")

# Unread counts by severity and the unseen count of every inbox (subscriber and context) of a
# batch, in one statement over ix_message_inbox, with the inboxes given as a VALUES table. The
# conditions are those of novulite.messages.unread_conditions and unseen_conditions.
_COUNTS = (
    "SELECT m.subscriber_pk, m.context_key, m.severity, "
    "count(*) FILTER (WHERE NOT m.read), count(*) FILTER (WHERE NOT m.seen) "
    "FROM message m JOIN inbox "
    "ON m.subscriber_pk = inbox.subscriber_pk AND m.context_key = inbox.context_key "
    "WHERE m.channel = 'in_app' AND NOT m.archived AND (m.snoozed_until IS NULL OR m.snoozed_until <= ?) "
    "AND (NOT m.read OR NOT m.seen) GROUP BY m.subscriber_pk, m.context_key, m.severity"
)
# Inboxes counted per statement, two bound parameters each.
_COUNT_CHUNK = 400

Inbox = tuple[str, str]


def _stored_instant(instant: dt.datetime) -> str:
    """Format an instant as SQLAlchemy stores a DateTime in SQLite, so text comparison orders it."""
    return instant.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def count_frames(
    raw: sqlite3.Connection, subscriber_pk: str, context: str, now: dt.datetime
) -> list[dict[str, Any]]:
    return count_frames_of(raw, [(subscriber_pk, context)], now)[(subscriber_pk, context)]


def count_frames_of(
    raw: sqlite3.Connection, inboxes: list[Inbox], now: dt.datetime
) -> dict[Inbox, list[dict[str, Any]]]:
    """Return the unread_count_changed and unseen_count_changed frames of each inbox."""
    unread: dict[Inbox, list[tuple[str, int]]] = {inbox: [] for inbox in inboxes}
    unseen: dict[Inbox, int] = dict.fromkeys(unread, 0)
    distinct = list(unread)
    for start in range(0, len(distinct), _COUNT_CHUNK):
        chunk = distinct[start : start + _COUNT_CHUNK]
        rows = ", ".join(["(?, ?)"] * len(chunk))
        sql = f"WITH inbox(subscriber_pk, context_key) AS (VALUES {rows}) {_COUNTS}"
        parameters = [value for inbox in chunk for value in inbox]
        for subscriber_pk, context, severity, unread_count, unseen_count in raw.execute(
            sql, [*parameters, _stored_instant(now)]
        ):
            inbox = (subscriber_pk, context)
            if unread_count:
                unread[inbox].append((severity, unread_count))
            unseen[inbox] += unseen_count
    return {
        inbox: [unread_frame(unread_counts(unread[inbox])), unseen_frame(unseen[inbox])] for inbox in distinct
    }


def _rows_by_id(raw: sqlite3.Connection, table_name: str, ids: set[str], model_table: Any) -> dict[str, Any]:
    sql = f"SELECT * FROM {table_name} WHERE id IN ({placeholders(len(ids))})"
    return {row.id: row for row in fetch(raw, sql, list(ids), model_table)}


def messages_created(ctx: WorkerContext, message_ids: list[str]) -> None:
    """Send each new message to its subscriber's sockets, then that subscriber's counts once."""
    raw = ctx.store.raw_read()
    # One read transaction, so the messages and the counts come from the same snapshot.
    raw.execute(begin_snapshot(raw))
    try:
        frames = _frames(raw, _with_sockets(ctx, raw, message_ids), ctx.clock.now())
    finally:
        raw.execute("COMMIT")
    if frames:
        ctx.publish(frames)


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
    for inbox, counts in count_frames_of(raw, list(frames), now).items():
        frames[inbox].extend(counts)
    return frames


def counts_changed(ctx: WorkerContext, subscriber_pk: str, context: str) -> None:
    frames = count_frames(ctx.store.raw_read(), subscriber_pk, context, ctx.clock.now())
    ctx.publish({(subscriber_pk, context): frames})
