"""Recipients of a trigger as stored in `trigger_event.recipients`: subscribers and topics.

A validated trigger keeps its `to` entries in request order. A subscriber entry is
`{subscriberId, ...profile}` and a topic entry is `{type: "Topic", topicKey, exclude}`.
"""

from __future__ import annotations

from typing import Any


def is_topic(recipient: dict[str, Any]) -> bool:
    return recipient.get("type") == "Topic"


def actor_id(actor: Any) -> str | None:
    """Return the subscriberId of a trigger's actor, given as an id string or a subscriber object."""
    if isinstance(actor, str):
        return actor
    if isinstance(actor, dict):
        return actor.get("subscriberId")
    return None


def default_identifier(topic_key: str, subscriber_id: str) -> str:
    """Return the subscription identifier Novu's clients assume when none is given."""
    return f"tk_{topic_key}:si_{subscriber_id}"
