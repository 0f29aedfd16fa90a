"""Loaders for the rows a batch of jobs needs besides its own, each one query per batch.

Preferences, earlier steps' outputs and actors are loaded for all jobs of a batch at
once, inside the batch's transaction, so the runner never queries per job.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import Any

from novulite.db.fast import fetch, placeholders
from novulite.db.models import Job, Message, Preference, Subscriber, table
from novulite.engine.preferences import GLOBAL_SCOPE, Resolution, StoredPreference, resolve
from novulite.engine.variables import actor_id, step_output
from novulite.messages import context_key


class PreferenceIndex:
    """The stored preferences of a batch's subscribers, by subscriber, scope and context."""

    def __init__(self, rows: Iterable[Any]) -> None:
        self._rows: dict[tuple[str, str, str], StoredPreference] = {
            (row.subscriber_pk, row.scope, row.context_key): StoredPreference(
                enabled=bool(row.enabled), channels=dict(row.channels or {}), row=row
            )
            for row in rows
        }

    def get(self, subscriber_pk: str, scope: str, context: str) -> StoredPreference | None:
        """Return the preference stored for this exact context, else the one stored without a context."""
        found = self._rows.get((subscriber_pk, scope, context))
        if found is None and context:
            found = self._rows.get((subscriber_pk, scope, ""))
        return found

    def resolve(self, workflow: Any, subscriber_pk: str, context: str) -> Resolution:
        return resolve(
            workflow.preferences,
            bool(workflow.critical),
            self.get(subscriber_pk, GLOBAL_SCOPE, context),
            self.get(subscriber_pk, workflow.id, context),
        )


def load_preferences(
    raw: sqlite3.Connection, subscriber_pks: set[str], contexts: set[str]
) -> PreferenceIndex:
    contexts = contexts | {""}
    rows = fetch(
        raw,
        "SELECT subscriber_pk, scope, enabled, channels, context_key FROM preference "
        f"WHERE subscriber_pk IN ({placeholders(len(subscriber_pks))}) "
        f"AND context_key IN ({placeholders(len(contexts))})",
        [*subscriber_pks, *contexts],
        table(Preference),
    )
    return PreferenceIndex(rows)


def notification_context(notification: Any) -> str:
    return context_key(notification.context_keys or [])


def load_step_outputs(raw: sqlite3.Connection, notification_ids: set[str]) -> dict[str, dict[str, Any]]:
    """Return, per notification, what later steps see of its completed steps, by stepId."""
    if not notification_ids:
        return {}
    rows = fetch(
        raw,
        "SELECT j.notification_id AS notification_id, j.step_id AS step_id, j.output AS output, "
        "m.read AS read, m.seen AS seen, m.read_at AS read_at, m.seen_at AS seen_at "
        "FROM job j LEFT JOIN message m ON m.job_id = j.id "
        f"WHERE j.notification_id IN ({placeholders(len(notification_ids))}) AND j.status = 'completed' "
        # In step order, so the older `step` namespace can take the latest digest.
        "ORDER BY j.position",
        list(notification_ids),
        table(Job),
        table(Message),
    )
    outputs: dict[str, dict[str, Any]] = {}
    for row in rows:
        outputs.setdefault(row.notification_id, {})[row.step_id] = step_output(row.output, row)
    return outputs


def load_actors(
    raw: sqlite3.Connection, triggers: Iterable[Any], environment_ids: set[str]
) -> dict[tuple[str, str], Any]:
    """Return the stored subscribers that the triggers name as actors, by (environment id, subscriberId)."""
    actor_ids = {actor_id(trigger.actor) for trigger in triggers} - {None}
    if not actor_ids:
        return {}
    rows = fetch(
        raw,
        f"SELECT * FROM subscriber WHERE environment_id IN ({placeholders(len(environment_ids))}) "
        f"AND subscriber_id IN ({placeholders(len(actor_ids))})",
        [*environment_ids, *actor_ids],
        table(Subscriber),
    )
    return {(row.environment_id, row.subscriber_id): row for row in rows}
