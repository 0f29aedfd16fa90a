"""Validation of trigger requests: every problem is reported at once, each naming its field."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from novulite.api.body import json_type
from novulite.api.subscriber_validation import validate_profile, validate_subscriber_id
from novulite.engine.steps.delay import duration_problems
from novulite.errors import FieldError
from novulite.recipients import is_topic

MAX_RECIPIENTS = 100
MAX_ID_LENGTH = 255
# A context entry becomes the key `type:id`, so types exclude `:` and `,`, and ids exclude `,`.
CONTEXT_TYPE_PATTERN = re.compile(r"[A-Za-z0-9_.\-]{1,100}")
MAX_CONTEXT_ID_LENGTH = 200


@dataclasses.dataclass
class TriggerRequest:
    name: str
    recipients: list[dict[str, Any]]
    payload: dict[str, Any]
    overrides: dict[str, Any]
    transaction_id: str | None
    actor: Any
    context: dict[str, Any] | None

    @property
    def topics(self) -> list[dict[str, Any]]:
        return [recipient for recipient in self.recipients if is_topic(recipient)]


def validate_trigger(body: dict[str, Any], errors: list[FieldError]) -> TriggerRequest:
    """Check a trigger body; append problems to `errors` and return what could be read."""
    name = _name(body, errors)
    recipients = validate_recipients(body.get("to", _MISSING), errors, topics=True)
    return _with_options(body, errors, name, recipients)


def validate_broadcast(body: dict[str, Any], errors: list[FieldError]) -> TriggerRequest:
    """Check a broadcast body, which names no recipients because it reaches every subscriber."""
    name = _name(body, errors)
    if "to" in body:
        errors.append(
            FieldError(
                "to",
                "is not accepted by a broadcast, which sends to every subscriber; "
                "use POST /v1/events/trigger to name recipients",
            )
        )
    if body.get("payload") is None:
        errors.append(
            FieldError("payload", "is required for a broadcast: a JSON object, {} when no data is needed")
        )
    return _with_options(body, errors, name, [])


def _with_options(
    body: dict[str, Any], errors: list[FieldError], name: str, recipients: list[dict[str, Any]]
) -> TriggerRequest:
    """Read the fields a trigger and a broadcast share, around an already checked name and `to`."""
    return TriggerRequest(
        name=name,
        recipients=recipients,
        payload=_optional_object(body, "payload", errors),
        overrides=_overrides(body, errors),
        transaction_id=_transaction_id(body, errors),
        actor=_actor(body, errors),
        context=_context(body, errors),
    )


def _name(body: dict[str, Any], errors: list[FieldError]) -> str:
    name = body.get("name")
    if not isinstance(name, str) or not name.strip():
        message = "is required: the identifier of the workflow to trigger, a non-empty string"
        # An error echoes the value only when the request sent one, as for every other field.
        if "name" in body:
            errors.append(FieldError("name", message, name))
        else:
            errors.append(FieldError("name", message))
        return ""
    return name.strip()


_MISSING: Any = object()


def validate_recipients(to: Any, errors: list[FieldError], *, topics: bool = False) -> list[dict[str, Any]]:
    """Normalise `to` into a list of recipients, each a subscriber or (when `topics`) a topic.

    A subscriber becomes `{subscriberId, ...profile}` and a topic becomes
    `{type: "Topic", topicKey, exclude}`, with ids and keys trimmed.
    """
    forms = "a subscriberId, a subscriber object, a topic object or an array of them"
    if not topics:
        forms = "a subscriberId, a subscriber object or an array of them"
    if to is _MISSING or to is None:
        errors.append(FieldError("to", f"is required: {forms}"))
        return []
    entries = to if isinstance(to, list) else [to]
    if not entries:
        errors.append(FieldError("to", "must name at least one recipient; the array is empty", to))
        return []
    if len(entries) > MAX_RECIPIENTS:
        errors.append(
            FieldError(
                "to",
                f"has {len(entries)} recipients; send at most {MAX_RECIPIENTS} per trigger. "
                "Put a larger audience in a topic, or split it across several triggers",
            )
        )
        return []
    recipients = []
    for index, entry in enumerate(entries):
        field = f"to[{index}]" if isinstance(to, list) else "to"
        recipient = _recipient(entry, field, errors, topics=topics)
        if recipient is not None:
            recipients.append(recipient)
    return recipients


def _recipient(entry: Any, field: str, errors: list[FieldError], *, topics: bool) -> dict[str, Any] | None:
    if isinstance(entry, str):
        subscriber_id = validate_subscriber_id(entry, field, errors)
        return None if subscriber_id is None else {"subscriberId": subscriber_id}
    if not isinstance(entry, dict):
        kinds = (
            "a subscriberId string, a subscriber object or a topic object"
            if topics
            else ("a subscriberId string or a subscriber object")
        )
        errors.append(FieldError(field, f"must be {kinds}, got {json_type(entry)}"))
        return None
    kind = entry.get("type")
    if kind == "Topic" or (kind is None and "topicKey" in entry):
        if not topics:
            errors.append(FieldError(field, "must be a subscriber; a topic is not accepted here", entry))
            return None
        return _topic(entry, field, errors)
    if kind is not None and kind != "Subscriber":
        errors.append(FieldError(f"{field}.type", 'must be "Subscriber" or "Topic", or left out', kind))
        return None
    subscriber_id = validate_subscriber_id(entry.get("subscriberId"), f"{field}.subscriberId", errors)
    if subscriber_id is None:
        return None
    return {"subscriberId": subscriber_id, **validate_profile(entry, f"{field}.", errors)}


def _topic(entry: dict[str, Any], field: str, errors: list[FieldError]) -> dict[str, Any] | None:
    key = entry.get("topicKey")
    key_field = f"{field}.topicKey"
    if not isinstance(key, str):
        errors.append(
            FieldError(key_field, "is required: the key of the topic to send to, a non-empty string", key)
        )
        return None
    key = key.strip()
    if not key:
        errors.append(
            FieldError(key_field, "must not be empty or blank; send the topic's key", entry["topicKey"])
        )
        return None
    if len(key) > MAX_ID_LENGTH:
        errors.append(FieldError(key_field, f"is longer than {MAX_ID_LENGTH} characters"))
        return None

    exclude = entry.get("exclude")
    if exclude is None:
        exclude = []
    if not isinstance(exclude, list):
        errors.append(
            FieldError(f"{field}.exclude", f"must be an array of subscriberIds, got {json_type(exclude)}")
        )
        return None

    excluded: list[str] = []
    for index, value in enumerate(exclude):
        subscriber_id = validate_subscriber_id(value, f"{field}.exclude[{index}]", errors)
        if subscriber_id is not None:
            excluded.append(subscriber_id)
    if len(excluded) != len(exclude):
        return None
    return {"type": "Topic", "topicKey": key, "exclude": list(dict.fromkeys(excluded))}


def _optional_object(body: dict[str, Any], key: str, errors: list[FieldError]) -> dict[str, Any]:
    value = body.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        errors.append(FieldError(key, f"must be a JSON object, got {json_type(value)}", value))
        return {}
    return value


def _overrides(body: dict[str, Any], errors: list[FieldError]) -> dict[str, Any]:
    overrides = _optional_object(body, "overrides", errors)
    delay = overrides.get("delay")
    if delay is None:
        return overrides
    if not isinstance(delay, dict):
        errors.append(FieldError("overrides.delay", "must be an object {amount, unit}", delay))
    else:
        for name, problem in duration_problems(delay, "overrides.delay"):
            errors.append(FieldError(f"overrides.delay.{name}", problem, delay.get(name)))
    return overrides


def _transaction_id(body: dict[str, Any], errors: list[FieldError]) -> str | None:
    value = body.get("transactionId")
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_ID_LENGTH:
        errors.append(
            FieldError(
                "transactionId",
                f"must be a non-empty string of at most {MAX_ID_LENGTH} characters, or left out",
                value,
            )
        )
        return None
    return value.strip()


def _actor(body: dict[str, Any], errors: list[FieldError]) -> Any:
    actor = body.get("actor")
    if actor is None:
        return None
    recipient = _recipient(actor, "actor", errors, topics=False)
    if recipient is None:
        return None
    return recipient["subscriberId"] if isinstance(actor, str) else recipient


def _context(body: dict[str, Any], errors: list[FieldError]) -> dict[str, Any] | None:
    context = body.get("context")
    if context is None:
        return None
    return context if validate_context(context, errors) else None


def validate_context(context: Any, errors: list[FieldError]) -> bool:
    """Check a trigger's or an inbox session's `context` and return whether it is valid.

    Each entry becomes the key `type:id`, and a set of keys is stored comma-joined, so a
    type may not contain `:` or `,` and an id may not contain `,`. Otherwise two different
    contexts could produce the same keys and share an inbox.
    """
    if not isinstance(context, dict):
        errors.append(FieldError("context", f"must be an object, got {json_type(context)}", context))
        return False
    count = len(errors)
    for kind, value in context.items():
        if not CONTEXT_TYPE_PATTERN.fullmatch(kind):
            errors.append(
                FieldError(f"context.{kind}", "is not a valid context type; use letters, digits, _, - and .")
            )
            continue
        identifier = value.get("id") if isinstance(value, dict) else value
        if not isinstance(identifier, str) or not identifier.strip():
            errors.append(
                FieldError(
                    f"context.{kind}",
                    "must be a non-empty string id or an object {id, data?}",
                    value,
                )
            )
        elif "," in identifier or len(identifier) > MAX_CONTEXT_ID_LENGTH:
            problem = f"must be an id of at most {MAX_CONTEXT_ID_LENGTH} characters without commas"
            errors.append(FieldError(f"context.{kind}", problem, identifier))
    return len(errors) == count
