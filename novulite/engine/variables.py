"""The data that templates and step conditions see, by namespace.

`payload`, `subscriber` (subscriberId, firstName, lastName, email, phone, avatar,
locale, timezone, data), `workflow` (name, identifier, description, tags,
severity), `steps` (earlier steps' outputs by stepId), `context`, `actor`, and
`step`, the older digest namespace (`step.events`, `step.total_count`, `step.digest`).
"""

from __future__ import annotations

from typing import Any

from novulite.clock import isoformat
from novulite.subscribers import PROFILE_FIELDS, template_variables


def workflow_variables(workflow: Any) -> dict[str, Any]:
    return {
        "identifier": workflow.workflow_id,
        "name": workflow.name,
        "description": workflow.description,
        "tags": workflow.tags or [],
        "severity": workflow.severity,
    }


def context_variables(context: dict[str, Any] | None) -> dict[str, Any]:
    """Return the trigger's context as `{<type>: {id, data}}`, whichever form each entry was sent in."""
    variables: dict[str, Any] = {}
    for kind, value in (context or {}).items():
        if isinstance(value, dict):
            variables[kind] = {"id": value.get("id"), "data": value.get("data") or {}}
        else:
            variables[kind] = {"id": value, "data": {}}
    return variables


def actor_id(actor: Any) -> str | None:
    """Return the subscriberId of a trigger's actor, sent as an id or as a subscriber object."""
    if isinstance(actor, str):
        return actor
    if isinstance(actor, dict) and isinstance(actor.get("subscriberId"), str):
        return str(actor["subscriberId"])
    return None


def actor_variables(actor: Any, stored: Any | None) -> dict[str, Any]:
    """Return the `actor` namespace: the stored subscriber's fields, then any the trigger sent with it.

    Without an actor the namespace is empty, so `{{ actor.firstName }}` renders as "".
    """
    subscriber_id = actor_id(actor)
    if subscriber_id is None:
        return {}
    variables = (
        template_variables(stored)
        if stored is not None
        else {"subscriberId": subscriber_id, **dict.fromkeys(PROFILE_FIELDS), "data": {}}
    )
    if isinstance(actor, dict):
        for key in (*PROFILE_FIELDS, "data"):
            if key in actor:
                variables[key] = actor[key] if key != "data" else actor[key] or {}
    return variables


def step_output(output: dict[str, Any] | None, message: Any | None) -> dict[str, Any]:
    """Return what later steps see of a completed step: its output, plus read and seen for an in-app message.

    `message` has the message row's `read`, `seen`, `read_at` and `seen_at`, or is None.
    """
    result = dict(output or {})
    if message is not None and message.read is not None:
        result.update(
            read=bool(message.read),
            seen=bool(message.seen),
            lastReadDate=isoformat(message.read_at),
            lastSeenDate=isoformat(message.seen_at),
        )
    return result


def digest_variables(steps: dict[str, Any]) -> dict[str, Any]:
    """Return the older `step` namespace from the latest digest among `steps` (outputs in step order).

    `events` lists the events' payloads, `total_count` counts them and `digest` is true
    when there are any. Without a digest step the namespace has no events.
    """
    events: list[Any] = []
    for output in reversed(steps.values()):
        if isinstance(output.get("events"), list) and "eventCount" in output:
            events = output["events"]
            break
    payloads = [event.get("payload") if isinstance(event, dict) else None for event in events]
    return {"digest": bool(events), "events": payloads, "total_count": len(events)}
