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

from sqlalchemy import bindparam, false, literal, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from novulite.api.triggers_validation import TriggerRequest
from novulite.db.models import Subscriber, TopicSubscription
from novulite.errors import TRIGGER_TOPIC_NOT_FOUND, ApiError, FieldError
from novulite.json_sql import json_text_items
from novulite.recipients import actor_id, is_topic

# Whether a topic has at least one member who is not deleted.
_TOPICS = text(
    "SELECT t.key, t.id, EXISTS (SELECT 1 FROM topic_subscription ts "
    "JOIN subscriber s ON s.id = ts.subscriber_pk WHERE ts.topic_pk = t.id AND NOT s.deleted) "
    "FROM topic t WHERE t.environment_id = :environment_id AND t.key IN :keys"
).bindparams(bindparam("keys", expanding=True))


def _member_left(topic_pk: str, excluded: list[str]) -> Any:
    """Select a member of the topic who is not deleted and not in `excluded`, a list of subscriberIds.

    The ids travel as one JSON array, so a long exclude list stays one bound parameter.
    """
    excluded_ids = json_text_items(literal(json.dumps(excluded))).table_valued("value")
    return (
        select(literal(1))
        .select_from(TopicSubscription)
        .join(Subscriber, Subscriber.id == TopicSubscription.subscriber_pk)
        .where(
            TopicSubscription.topic_pk == topic_pk,
            Subscriber.deleted.is_(false()),
            Subscriber.subscriber_id.not_in(select(excluded_ids.c.value)),
        )
        .limit(1)
    )


def _any_subscriber(environment_id: str, actor: str | None) -> Any:
    """Select a subscriber of the environment who is not deleted and is not the actor."""
    return (
        select(literal(1))
        .where(
            Subscriber.environment_id == environment_id,
            Subscriber.deleted.is_(false()),
            Subscriber.subscriber_id.is_distinct_from(actor),
        )
        .limit(1)
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
            left = await connection.execute(_member_left(topic.pk, excluded))
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
        found = await connection.execute(_any_subscriber(environment_id, actor_id(parsed.actor)))
        if found.first() is not None:
            return []
    return ["the environment has no subscribers other than the actor; nothing was sent"]
