"""Request-time checks of who a topic trigger or a broadcast reaches.

The trigger API responds before the fan-out runs, so it checks here what it can
cheaply: every topic named in `to` must exist (one indexed lookup), and someone
must be left to notify. A trigger that would reach no subscriber is not stored,
and the response gives the reason, so a caller never gets a plain success for a trigger that
sends nothing. The fan-out reads the topics again when it runs, so a member
added or removed in between is honoured there.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from sqlalchemy import bindparam, text
from sqlalchemy.ext.asyncio import AsyncEngine

from novulite.api.triggers_validation import TriggerRequest
from novulite.errors import TRIGGER_TOPIC_NOT_FOUND, ApiError, FieldError
from novulite.recipients import actor_id, is_topic

# Whether a topic has at least one member who is not deleted.
_TOPICS = text(
    "SELECT t.key, t.id, EXISTS (SELECT 1 FROM topic_subscription ts "
    "JOIN subscriber s ON s.id = ts.subscriber_pk WHERE ts.topic_pk = t.id AND s.deleted = 0) "
    "FROM topic t WHERE t.environment_id = :environment_id AND t.key IN :keys"
).bindparams(bindparam("keys", expanding=True))

# Whether a topic has a member left once `excluded` (a JSON array of subscriberIds) is taken out.
_MEMBER_LEFT = text(
    "SELECT 1 FROM topic_subscription ts JOIN subscriber s ON s.id = ts.subscriber_pk "
    "WHERE ts.topic_pk = :topic_pk AND s.deleted = 0 "
    "AND s.subscriber_id NOT IN (SELECT value FROM json_each(:excluded)) LIMIT 1"
)

_ANY_SUBSCRIBER = text(
    "SELECT 1 FROM subscriber WHERE environment_id = :environment_id AND deleted = 0 "
    "AND subscriber_id IS NOT :actor LIMIT 1"
)


@dataclasses.dataclass(frozen=True)
class _Topic:
    pk: str
    has_members: bool


async def topic_trigger_problems(
    reader: AsyncEngine, environment_id: str, parsed: TriggerRequest, to: Any
) -> list[str]:
    """Check the topics of a trigger; return why it reaches no subscriber, or [] when it reaches one.

    Raises a 422 ApiError naming each topic key that does not exist. `to` is the
    request's raw `to`, used to name fields as the caller wrote them.
    """
    keys = list(dict.fromkeys(recipient["topicKey"] for recipient in parsed.topics))
    async with reader.connect() as connection:
        rows = await connection.execute(_TOPICS, {"environment_id": environment_id, "keys": keys})
        topics = {row[0]: _Topic(pk=row[1], has_members=bool(row[2])) for row in rows}
        _raise_unknown(parsed, topics, to)

        actor = actor_id(parsed.actor)
        if any(not is_topic(r) and r["subscriberId"] != actor for r in parsed.recipients):
            return []
        problems = []
        for recipient in parsed.topics:
            key = recipient["topicKey"]
            topic = topics[key]
            if not topic.has_members:
                problems.append(f"topic {key!r} has no subscribers; nothing was sent")
                continue
            excluded = [*recipient["exclude"], *([actor] if actor else [])]
            if not excluded:
                return []
            left = await connection.execute(
                _MEMBER_LEFT, {"topic_pk": topic.pk, "excluded": json.dumps(excluded)}
            )
            if left.first() is not None:
                return []
            problems.append(
                f"every subscriber of topic {key!r} is excluded or is the actor; nothing was sent"
            )
    return problems


def _raise_unknown(parsed: TriggerRequest, topics: dict[str, _Topic], to: Any) -> None:
    errors = []
    for index, recipient in enumerate(parsed.recipients):
        if not is_topic(recipient) or recipient["topicKey"] in topics:
            continue
        field = f"to[{index}].topicKey" if isinstance(to, list) else "to.topicKey"
        errors.append(
            FieldError(
                field,
                "no topic has this key in this environment; create it with POST /v2/topics",
                recipient["topicKey"],
            )
        )
    if errors:
        keys = ", ".join(repr(error.value) for error in errors)
        raise ApiError(TRIGGER_TOPIC_NOT_FOUND, keys=keys, errors=errors)


def actor_only_problems(parsed: TriggerRequest) -> list[str]:
    """Return why a trigger to subscribers only reaches none of them: each recipient is the actor."""
    actor = actor_id(parsed.actor)
    if actor is None or any(recipient["subscriberId"] != actor for recipient in parsed.recipients):
        return []
    return [f"the only recipient, {actor!r}, is the trigger's actor, who is not notified; nothing was sent"]


async def broadcast_problems(reader: AsyncEngine, environment_id: str, parsed: TriggerRequest) -> list[str]:
    """Return why a broadcast reaches no subscriber, or [] when the environment has a subscriber to notify."""
    async with reader.connect() as connection:
        found = await connection.execute(
            _ANY_SUBSCRIBER, {"environment_id": environment_id, "actor": actor_id(parsed.actor)}
        )
        if found.first() is not None:
            return []
    return ["the environment has no subscribers other than the actor; nothing was sent"]
