"""Notification rows as trigger-handler creates them, one per trigger and subscriber."""

from __future__ import annotations

import datetime as dt
from typing import Any

from novulite.ids import new_id
from novulite.messages import context_key


def notification_row(
    trigger: Any, subscriber_pk: str, now: dt.datetime, topics: list[str] | None = None
) -> dict[str, Any]:
    """Return a new notification of `trigger` for one subscriber, reached through `topics` if any."""
    return {
        "id": new_id(),
        "environment_id": trigger.environment_id,
        "trigger_id": trigger.id,
        "workflow_pk": trigger.workflow_pk,
        "subscriber_pk": subscriber_pk,
        "transaction_id": trigger.transaction_id,
        "context_keys": context_keys(trigger.context),
        "topics": topics or [],
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
