"""trigger-handler: turn accepted triggers into one notification per recipient."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from novulite.db.fast import db_datetime, fetch, insert_rows, placeholders
from novulite.db.models import Notification, Subscriber, TriggerEvent, table
from novulite.engine.context import WorkerContext
from novulite.ids import new_id
from novulite.messages import context_key
from novulite.queues import EXPAND_NOTIFICATIONS
from novulite.subscribers import upsert_subscribers

logger = logging.getLogger("novulite.worker")

MAX_TRIGGER_ATTEMPTS = 5
EXPANSION_CHUNK = 100


def handle_triggers(ctx: WorkerContext, trigger_ids: list[str]) -> None:
    """Fan out a batch of triggers in one transaction; on failure, retry them one by one."""
    try:
        notification_ids = _fan_out(ctx, trigger_ids)
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


_notifications = table(Notification)
_subscribers = table(Subscriber)
_TRIGGER_COLUMNS = "id, environment_id, workflow_pk, transaction_id, recipients, actor, context"


def _fan_out(ctx: WorkerContext, trigger_ids: list[str]) -> list[str]:
    """Create the notifications of the triggers still waiting; return their ids.

    The conditional UPDATE claims each trigger, so a second delivery of the same
    queue entry finds it processed and creates nothing.
    """
    now = ctx.clock.now()
    with ctx.store.raw_write() as raw:
        claimed = fetch(
            raw,
            "UPDATE trigger_event SET status = 'processed', processed_at = ?, error = NULL "
            f"WHERE id IN ({placeholders(len(trigger_ids))}) AND status = 'received' "
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
                    _notification_row(trigger, pks[spec["subscriberId"]], now)
                    for spec in _distinct_recipients(trigger)
                )
        insert_rows(raw, _notifications, rows)
    logger.debug("%d triggers fanned out to %d notifications", len(claimed), len(rows))
    return [row["id"] for row in rows]


def _by_id(row: Any) -> str:
    return str(row.id)


def _by_environment(triggers: list[Any]) -> dict[str, list[Any]]:
    grouped: dict[str, list[Any]] = {}
    for trigger in triggers:
        grouped.setdefault(trigger.environment_id, []).append(trigger)
    return grouped


def _distinct_recipients(trigger: Any) -> list[dict[str, Any]]:
    """Return the trigger's recipients once each, in request order, leaving out the actor."""
    actor_id = _actor_id(trigger.actor)
    seen: set[str] = set()
    recipients = []
    for spec in trigger.recipients:
        subscriber_id = spec["subscriberId"]
        if subscriber_id in seen or subscriber_id == actor_id:
            continue
        seen.add(subscriber_id)
        recipients.append(spec)
    return recipients


def _actor_id(actor: Any) -> str | None:
    if isinstance(actor, str):
        return actor
    if isinstance(actor, dict):
        return actor.get("subscriberId")
    return None


def _notification_row(trigger: Any, subscriber_pk: str, now: dt.datetime) -> dict[str, Any]:
    return {
        "id": new_id(),
        "environment_id": trigger.environment_id,
        "trigger_id": trigger.id,
        "workflow_pk": trigger.workflow_pk,
        "subscriber_pk": subscriber_pk,
        "transaction_id": trigger.transaction_id,
        "context_keys": context_keys(trigger.context),
        "expansion": "pending",
        "created_at": now,
    }


def context_keys(context: dict[str, Any] | None) -> list[str]:
    """Turn a trigger's `context` into sorted `type:id` keys."""
    if not context:
        return []
    keys = []
    for kind, value in context.items():
        identifier = value.get("id") if isinstance(value, dict) else value
        keys.append(f"{kind}:{identifier}")
    return context_key(keys).split(",")


def _record_failure(ctx: WorkerContext, trigger_id: str) -> None:
    """Count a failed attempt; the reconciler retries later, until the attempts run out."""
    now = ctx.clock.now()
    with ctx.store.write() as session:
        trigger = session.get(TriggerEvent, trigger_id)
        if trigger is None or trigger.status != "received":
            return
        trigger.attempts += 1
        trigger.error = "fan-out failed; the server log has the traceback"
        trigger.retry_after = now + dt.timedelta(seconds=2**trigger.attempts)
        if trigger.attempts >= MAX_TRIGGER_ATTEMPTS:
            trigger.status = "failed"
            logger.error("trigger %s failed %d times; giving up", trigger_id, trigger.attempts)
