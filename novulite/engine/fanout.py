"""Paged fan-out for triggers to topics and broadcasts.

A topic may have any number of members, so a trigger that names one is expanded a
page at a time, each page in its own transaction. One commit reads up to PAGE_SIZE
recipients after the stored cursor, inserts their notifications and moves the
cursor. A crash between pages therefore resumes at the last committed cursor,
and the unique (trigger_id, subscriber_pk) constraint keeps a subscriber from
getting two notifications for one trigger, however often a page is repeated.

The fan-out walks the trigger's steps in order: first the subscribers named
directly (upserted, as for any trigger), then each topic of `to` in request order,
or for a broadcast every subscriber of the environment. The cursor stored in
`trigger_event.cursor` is `{"step": <index>, "after": <last key read, or null>}`;
a topic is read in subscription-identifier order and a broadcast in subscriberId
order, each over a unique index.

After each page the trigger is enqueued again, so other triggers waiting on the
queue run between pages instead of behind the whole fan-out.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import sqlite3
from typing import Any

from novulite.db.fast import db_datetime, fetch, insert_rows, placeholders
from novulite.db.models import Notification, TriggerEvent, table
from novulite.db.sql import for_update
from novulite.engine.context import WorkerContext
from novulite.engine.notifications import notification_row
from novulite.queues import EXPAND_NOTIFICATIONS, HANDLE_TRIGGERS
from novulite.recipients import actor_id, is_topic
from novulite.subscribers import upsert_subscribers

logger = logging.getLogger("novulite.worker")

# Recipients read and notifications inserted per transaction.
PAGE_SIZE = 500
EXPANSION_CHUNK = 100
# The cursor of a paged trigger before its first page; a non-null cursor marks a trigger as paged.
START: dict[str, Any] = {"step": 0, "after": None}

_notifications = table(Notification)
_SKIP_EXISTING = "ON CONFLICT (trigger_id, subscriber_pk) DO NOTHING"
_TRIGGER_COLUMNS = "id, environment_id, workflow_pk, transaction_id, recipients, actor, context, kind, cursor"


@dataclasses.dataclass
class _Page:
    """Recipients gathered for one page: subscriber pk -> keys of the topics that reached it."""

    reached: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    step: int = 0
    after: str | None = None

    def add(self, subscriber_pk: str, topic_key: str | None) -> None:
        keys = self.reached.setdefault(subscriber_pk, [])
        if topic_key is not None and topic_key not in keys:
            keys.append(topic_key)


def paged_triggers(ctx: WorkerContext, trigger_ids: list[str]) -> list[str]:
    """Return which of these triggers are paged and still waiting for pages."""
    rows = ctx.store.raw_read().execute(
        f"SELECT id FROM trigger_event WHERE id IN ({placeholders(len(trigger_ids))}) "
        "AND status = 'received' AND cursor IS NOT NULL",
        trigger_ids,
    )
    return [row[0] for row in rows]


def fan_out_page(ctx: WorkerContext, trigger_id: str) -> None:
    """Fan out the next page of a paged trigger, then queue its notifications and the page after."""
    notification_ids, finished = _next_page(ctx, trigger_id)
    for start in range(0, len(notification_ids), EXPANSION_CHUNK):
        ctx.queues.enqueue(EXPAND_NOTIFICATIONS, notification_ids[start : start + EXPANSION_CHUNK])
    if not finished:
        ctx.queues.enqueue(HANDLE_TRIGGERS, [trigger_id])


def _next_page(ctx: WorkerContext, trigger_id: str) -> tuple[list[str], bool]:
    """Insert the notifications of the next page; return their ids and whether the trigger is done."""
    now = ctx.clock.now()
    with ctx.store.raw_write() as raw:
        found = fetch(
            raw,
            f"SELECT {_TRIGGER_COLUMNS} FROM trigger_event "
            # The row lock makes processes that were handed the same trigger take its pages in turn.
            f"WHERE id = ? AND status = 'received' AND cursor IS NOT NULL{for_update(raw)}",
            [trigger_id],
            table(TriggerEvent),
        )
        if not found:
            return [], True
        trigger = found[0]
        page = _gather(raw, trigger, now)
        notification_ids = _insert_notifications(raw, trigger, page, now)
        finished = page.step >= len(_steps(trigger))
        _save_progress(raw, trigger, page, finished, now, ctx.settings.reconcile_grace_seconds)
        if finished:
            reached = raw.execute("SELECT 1 FROM notification WHERE trigger_id = ? LIMIT 1", (trigger.id,))
            if reached.fetchone() is None:
                _record_nobody_reached(raw, trigger)
    if finished:
        logger.debug("trigger %s fanned out; the last page added %d", trigger_id, len(notification_ids))
    return notification_ids, finished


def _record_nobody_reached(raw: sqlite3.Connection, trigger: Any) -> None:
    """Note on a finished trigger that it reached no subscriber, so its empty outcome leaves a trace.

    The API checks the audience before it stores a trigger, so this happens only
    when subscribers or topics change between acceptance and fan-out.
    """
    reason = (
        "reached no subscriber: its topics or subscribers were emptied or deleted before it was fanned out"
    )
    raw.execute("UPDATE trigger_event SET error = ? WHERE id = ?", (reason, trigger.id))
    logger.warning("trigger %s (transaction %s) %s", trigger.id, trigger.transaction_id, reason)


def _steps(trigger: Any) -> list[dict[str, Any] | None]:
    """Return the trigger's fan-out steps: None for the direct recipients or everyone, else a topic."""
    if trigger.kind == "broadcast":
        return [None]
    return [None, *(recipient for recipient in trigger.recipients if is_topic(recipient))]


def _gather(raw: sqlite3.Connection, trigger: Any, now: dt.datetime) -> _Page:
    """Collect up to PAGE_SIZE recipients from the cursor on, moving across steps as each runs out."""
    steps = _steps(trigger)
    page = _Page(step=trigger.cursor["step"], after=trigger.cursor.get("after"))
    actor = actor_id(trigger.actor)
    budget = PAGE_SIZE
    while budget > 0 and page.step < len(steps):
        topic = steps[page.step]
        if topic is None and trigger.kind != "broadcast":
            budget -= _direct(raw, trigger, page, actor, now)
            page.step, page.after = page.step + 1, None
            continue
        if topic is not None:
            read, last = _topic_members(raw, trigger, topic, page, budget, actor)
        else:
            read, last = _everyone(raw, trigger, page, budget, actor)
        if read < budget:
            page.step, page.after = page.step + 1, None
        else:
            page.after = last
        budget -= read
    return page


def _direct(raw: sqlite3.Connection, trigger: Any, page: _Page, actor: str | None, now: dt.datetime) -> int:
    """Add the subscribers named directly, upserting them as every trigger does; return how many."""
    specs = [
        recipient
        for recipient in trigger.recipients
        if not is_topic(recipient) and recipient["subscriberId"] != actor
    ]
    if not specs:
        return 0
    pks = upsert_subscribers(raw, trigger.environment_id, specs, now)
    for spec in specs:
        page.add(pks[spec["subscriberId"]], None)
    return len(specs)


def _topic_members(
    raw: sqlite3.Connection, trigger: Any, topic: dict[str, Any], page: _Page, limit: int, actor: str | None
) -> tuple[int, str | None]:
    """Add the next members of a topic; return how many subscriptions were read and the last identifier."""
    rows = raw.execute(
        "SELECT ts.identifier, s.id, s.subscriber_id, s.deleted FROM topic t "
        "JOIN topic_subscription ts ON ts.topic_pk = t.id JOIN subscriber s ON s.id = ts.subscriber_pk "
        "WHERE t.environment_id = ? AND t.key = ? AND ts.identifier > ? ORDER BY ts.identifier LIMIT ?",
        (trigger.environment_id, topic["topicKey"], page.after or "", limit),
    ).fetchall()
    excluded = set(topic["exclude"])
    if actor is not None:
        excluded.add(actor)
    for _, subscriber_pk, subscriber_id, deleted in rows:
        if not deleted and subscriber_id not in excluded:
            page.add(subscriber_pk, topic["topicKey"])
    return len(rows), rows[-1][0] if rows else None


def _everyone(
    raw: sqlite3.Connection, trigger: Any, page: _Page, limit: int, actor: str | None
) -> tuple[int, str | None]:
    """Add the next subscribers of the environment; return how many were read and the last subscriberId."""
    rows = raw.execute(
        "SELECT id, subscriber_id FROM subscriber WHERE environment_id = ? AND subscriber_id > ? "
        "AND deleted = FALSE ORDER BY subscriber_id LIMIT ?",
        (trigger.environment_id, page.after or "", limit),
    ).fetchall()
    for subscriber_pk, subscriber_id in rows:
        if subscriber_id != actor:
            page.add(subscriber_pk, None)
    return len(rows), rows[-1][1] if rows else None


def _insert_notifications(raw: sqlite3.Connection, trigger: Any, page: _Page, now: dt.datetime) -> list[str]:
    """Insert a notification per new recipient and add topic keys to existing ones; return the new ids."""
    if not page.reached:
        return []
    existing = {
        row[0]: (row[1], json.loads(row[2]))
        for row in raw.execute(
            "SELECT subscriber_pk, id, topics FROM notification "
            f"WHERE trigger_id = ? AND subscriber_pk IN ({placeholders(len(page.reached))})",
            [trigger.id, *page.reached],
        )
    }
    rows = []
    updates = []
    for subscriber_pk, topic_keys in page.reached.items():
        if subscriber_pk in existing:
            notification_id, stored = existing[subscriber_pk]
            added = [key for key in topic_keys if key not in stored]
            if added:
                updates.append((json.dumps([*stored, *added]), notification_id))
            continue
        rows.append(notification_row(trigger, subscriber_pk, now, topics=topic_keys))
    insert_rows(raw, _notifications, rows, _SKIP_EXISTING)
    if updates:
        raw.executemany("UPDATE notification SET topics = ? WHERE id = ?", updates)
    return [row["id"] for row in rows]


def _save_progress(
    raw: sqlite3.Connection, trigger: Any, page: _Page, finished: bool, now: dt.datetime, lease_seconds: float
) -> None:
    if finished:
        raw.execute(
            "UPDATE trigger_event SET status = 'processed', processed_at = ?, cursor = ?, "
            "retry_after = NULL, error = NULL WHERE id = ?",
            (db_datetime(now), json.dumps({"step": page.step, "after": None}), trigger.id),
        )
        return
    # The reconciler leaves a trigger alone until retry_after, and each page moves it forward.
    # So the reconciler enqueues only a fan-out that stopped, such as one whose queue entry a crash lost.
    raw.execute(
        "UPDATE trigger_event SET cursor = ?, retry_after = ? WHERE id = ?",
        (
            json.dumps({"step": page.step, "after": page.after}),
            db_datetime(now + dt.timedelta(seconds=lease_seconds)),
            trigger.id,
        ),
    )
