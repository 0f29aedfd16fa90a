"""trigger-handler: turn accepted triggers into one notification per recipient."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from novulite.db.dialect import insert
from novulite.db.models import Notification, Subscriber, TriggerEvent
from novulite.engine.context import WorkerContext
from novulite.ids import new_id
from novulite.messages import context_key
from novulite.queues import EXPAND_NOTIFICATIONS
from novulite.subscribers import upsert_subscriber

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


def _fan_out(ctx: WorkerContext, trigger_ids: list[str]) -> list[str]:
    """Create the notifications of the triggers still waiting; return their ids.

    The conditional UPDATE claims each trigger, so a second delivery of the same
    queue entry finds it processed and creates nothing.
    """
    now = ctx.clock.now()
    with ctx.store.write() as session:
        claimed = list(
            session.scalars(
                update(TriggerEvent)
                .where(TriggerEvent.id.in_(trigger_ids), TriggerEvent.status == "received")
                .values(status="processed", processed_at=now, error=None)
                .returning(TriggerEvent.id)
                .execution_options(synchronize_session=False)
            )
        )
        if not claimed:
            return []
        triggers = session.scalars(
            select(TriggerEvent).where(TriggerEvent.id.in_(claimed)).order_by(TriggerEvent.id)
        ).all()
        subscribers: dict[tuple[str, str], Subscriber] = {}
        rows = [
            _notification_row(trigger, subscriber_pk, now)
            for trigger in triggers
            for subscriber_pk in _recipient_pks(session, trigger, now, subscribers)
        ]
        # The new subscribers must exist before notifications refer to them.
        session.flush()
        if rows:
            statement = insert(session.get_bind().dialect.name, Notification).on_conflict_do_nothing()
            session.execute(statement, rows)
        notification_ids = list(
            session.scalars(select(Notification.id).where(Notification.trigger_id.in_(claimed)))
        )
    logger.debug("%d triggers fanned out to %d notifications", len(claimed), len(notification_ids))
    return notification_ids


def _recipient_pks(
    session: Session, trigger: TriggerEvent, now: dt.datetime, known: dict[tuple[str, str], Subscriber]
) -> list[str]:
    """Upsert each distinct recipient and return their primary keys, in request order."""
    actor_id = _actor_id(trigger.actor)
    seen: set[str] = set()
    pks: list[str] = []
    for spec in trigger.recipients:
        subscriber_id = spec["subscriberId"]
        if subscriber_id in seen or subscriber_id == actor_id:
            continue
        seen.add(subscriber_id)
        key = (trigger.environment_id, subscriber_id)
        subscriber = upsert_subscriber(session, trigger.environment_id, spec, now, known.get(key))
        known[key] = subscriber
        pks.append(subscriber.id)
    return pks


def _actor_id(actor: Any) -> str | None:
    if isinstance(actor, str):
        return actor
    if isinstance(actor, dict):
        return actor.get("subscriberId")
    return None


def _notification_row(trigger: TriggerEvent, subscriber_pk: str, now: dt.datetime) -> dict[str, Any]:
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
