"""trigger-handler: turn accepted triggers into one notification per recipient.

A trigger that names subscribers only is fanned out whole, together with the other
triggers of its batch, in one transaction. A trigger to a topic, or a broadcast,
is paged (its cursor is set when it is stored) and fans out a page per
transaction, see novulite.engine.fanout.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from novulite.db.fast import db_datetime, fetch, insert_rows
from novulite.db.models import Notification, Subscriber, TriggerEvent, table
from novulite.db.sql import claimable
from novulite.engine.context import WorkerContext
from novulite.engine.fanout import fan_out_page, paged_triggers
from novulite.engine.notifications import context_keys as context_keys
from novulite.engine.notifications import notification_row
from novulite.queues import EXPAND_NOTIFICATIONS
from novulite.recipients import actor_id
from novulite.subscribers import upsert_subscribers

logger = logging.getLogger("novulite.worker")

MAX_TRIGGER_ATTEMPTS = 5
EXPANSION_CHUNK = 100


def handle_triggers(ctx: WorkerContext, trigger_ids: list[str]) -> None:
    """Fan out a batch of triggers; on failure, retry them one by one.

    Direct triggers share one transaction. Each paged trigger of the batch gets its
    next page, in a transaction of its own.
    """
    trigger_ids = list(dict.fromkeys(trigger_ids))
    try:
        notification_ids, claimed = _fan_out(ctx, trigger_ids)
    except Exception:
        if len(trigger_ids) == 1:
            logger.exception("trigger %s failed", trigger_ids[0])
            _record_failure(ctx, trigger_ids[0])
            return
        logger.warning("a batch of %d triggers failed; retrying them one by one", len(trigger_ids))
        for trigger_id in trigger_ids:
            handle_triggers(ctx, [trigger_id])
        return
    for start in range(0, len(notification_ids), EXPANSION_CHUNK):
        ctx.queues.enqueue(EXPAND_NOTIFICATIONS, notification_ids[start : start + EXPANSION_CHUNK])
    if claimed < len(trigger_ids):
        _next_pages(ctx, trigger_ids)


def _next_pages(ctx: WorkerContext, trigger_ids: list[str]) -> None:
    for trigger_id in paged_triggers(ctx, trigger_ids):
        try:
            fan_out_page(ctx, trigger_id)
        except Exception:
            logger.exception("a fan-out page of trigger %s failed", trigger_id)
            _record_failure(ctx, trigger_id)


_notifications = table(Notification)
_subscribers = table(Subscriber)
_TRIGGER_COLUMNS = "id, environment_id, workflow_pk, transaction_id, recipients, actor, context"
# A direct trigger not yet fanned out. Paged triggers have a cursor.
_WAITING_DIRECT = "status = 'received' AND cursor IS NULL"


def _fan_out(ctx: WorkerContext, trigger_ids: list[str]) -> tuple[list[str], int]:
    """Create the notifications of the direct triggers still waiting; return their ids and the claim count.

    The conditional UPDATE claims each trigger, so a second delivery of the same
    queue entry finds it processed and creates nothing. Paged triggers have a
    cursor and are left to the paged fan-out.
    """
    now = ctx.clock.now()
    with ctx.store.raw_write() as raw:
        claimed = fetch(
            raw,
            "UPDATE trigger_event SET status = 'processed', processed_at = ?, error = NULL "
            f"WHERE {claimable(raw, 'trigger_event', len(trigger_ids), _WAITING_DIRECT)} "
            f"RETURNING {_TRIGGER_COLUMNS}",
            [db_datetime(now), *trigger_ids],
            table(TriggerEvent),
        )
        claimed.sort(key=_by_id)
        rows: list[dict[str, Any]] = []
        for environment_id, triggers in _by_environment(claimed).items():
            recipients = [spec for trigger in triggers for spec in _distinct_recipients(trigger)]
            pks = upsert_subscribers(raw, environment_id, recipients, now)
            for trigger in triggers:
                rows.extend(
                    notification_row(trigger, pks[spec["subscriberId"]], now)
                    for spec in _distinct_recipients(trigger)
                )
        insert_rows(raw, _notifications, rows)
    logger.debug("%d triggers fanned out to %d notifications", len(claimed), len(rows))
    return [row["id"] for row in rows], len(claimed)


def _by_id(row: Any) -> str:
    return str(row.id)


def _by_environment(triggers: list[Any]) -> dict[str, list[Any]]:
    grouped: dict[str, list[Any]] = {}
    for trigger in triggers:
        grouped.setdefault(trigger.environment_id, []).append(trigger)
    return grouped


def _distinct_recipients(trigger: Any) -> list[dict[str, Any]]:
    """Return the trigger's recipients once each, in request order, leaving out the actor."""
    actor = actor_id(trigger.actor)
    seen: set[str] = set()
    recipients = []
    for spec in trigger.recipients:
        subscriber_id = spec["subscriberId"]
        if subscriber_id in seen or subscriber_id == actor:
            continue
        seen.add(subscriber_id)
        recipients.append(spec)
    return recipients


def _record_failure(ctx: WorkerContext, trigger_id: str) -> None:
    """Count a failed attempt; the reconciler retries later, until the attempts run out."""
    now = ctx.clock.now()
    with ctx.store.write() as session:
        # Locked on PostgreSQL, where another process may record a failure of the same trigger.
        trigger = session.get(TriggerEvent, trigger_id, with_for_update=True)
        if trigger is None or trigger.status != "received":
            return
        trigger.attempts += 1
        trigger.error = "fan-out failed; the server log has the traceback"
        trigger.retry_after = now + dt.timedelta(seconds=2**trigger.attempts)
        if trigger.attempts >= MAX_TRIGGER_ATTEMPTS:
            trigger.status = "failed"
            logger.error("trigger %s failed %d times; giving up", trigger_id, trigger.attempts)
