"""Validation of trigger requests: every problem is reported at once, each naming its field."""

from __future__ import annotations

import dataclasses
from typing import Any

from novulite.api.body import json_type
from novulite.api.subscriber_validation import validate_profile, validate_subscriber_id
from novulite.errors import FieldError

MAX_RECIPIENTS = 100
MAX_ID_LENGTH = 255


@dataclasses.dataclass
class TriggerRequest:
    name: str
    recipients: list[dict[str, Any]]
    payload: dict[str, Any]
    overrides: dict[str, Any]
    transaction_id: str | None
    actor: Any
    context: dict[str, Any] | None


def validate_trigger(body: dict[str, Any], errors: list[FieldError]) -> TriggerRequest:
    """Check a trigger body; append problems to `errors` and return what could be read."""
    name = body.get("name")
    if not isinstance(name, str) or not name.strip():
        errors.append(
            FieldError(
                "name",
                "is required: the identifier of the workflow to trigger, a non-empty string",
                name,
            )
        )
        name = ""
    recipients = validate_recipients(body.get("to", _MISSING), errors)
    return TriggerRequest(
        name=name.strip(),
        recipients=recipients,
        payload=_optional_object(body, "payload", errors),
        overrides=_optional_object(body, "overrides", errors),
        transaction_id=_transaction_id(body, errors),
        actor=_actor(body, errors),
        context=_context(body, errors),
    )


_MISSING: Any = object()


def validate_recipients(to: Any, errors: list[FieldError]) -> list[dict[str, Any]]:
    """Normalise `to` into a list of `{subscriberId, ...profile}` dicts."""
    if to is _MISSING or to is None:
        errors.append(
            FieldError("to", "is required: a subscriberId, a subscriber object or an array of them")
        )
        return []
    entries = to if isinstance(to, list) else [to]
    if not entries:
        errors.append(FieldError("to", "must name at least one recipient; the array is empty", to))
        return []
    if len(entries) > MAX_RECIPIENTS:
        errors.append(
            FieldError(
                "to",
                f"has {len(entries)} recipients; send at most {MAX_RECIPIENTS} per trigger "
                "and split larger audiences across several triggers",
            )
        )
        return []
    recipients = []
    for index, entry in enumerate(entries):
        field = f"to[{index}]" if isinstance(to, list) else "to"
        recipient = _recipient(entry, field, errors)
        if recipient is not None:
            recipients.append(recipient)
    return recipients


def _recipient(entry: Any, field: str, errors: list[FieldError]) -> dict[str, Any] | None:
    if isinstance(entry, str):
        subscriber_id = validate_subscriber_id(entry, field, errors)
        return None if subscriber_id is None else {"subscriberId": subscriber_id}
    if not isinstance(entry, dict):
        errors.append(
            FieldError(
                field,
                f"must be a subscriberId string or a subscriber object, got {json_type(entry)}",
            )
        )
        return None
    if entry.get("type") == "Topic" or "topicKey" in entry:
        # TODO: topic recipients are rejected until topics exist on this server.
        errors.append(
            FieldError(
                field,
                "topic recipients are not supported by this server yet; name each subscriber "
                "by its subscriberId or as a subscriber object instead",
                entry,
            )
        )
        return None
    subscriber_id = validate_subscriber_id(entry.get("subscriberId"), f"{field}.subscriberId", errors)
    if subscriber_id is None:
        return None
    return {"subscriberId": subscriber_id, **validate_profile(entry, f"{field}.", errors)}


def _optional_object(body: dict[str, Any], key: str, errors: list[FieldError]) -> dict[str, Any]:
    value = body.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        errors.append(FieldError(key, f"must be a JSON object, got {json_type(value)}", value))
        return {}
    return value


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
    recipient = _recipient(actor, "actor", errors)
    if recipient is None:
        return None
    return recipient["subscriberId"] if isinstance(actor, str) else recipient


def _context(body: dict[str, Any], errors: list[FieldError]) -> dict[str, Any] | None:
    context = body.get("context")
    if context is None:
        return None
    if not isinstance(context, dict):
        errors.append(FieldError("context", f"must be an object, got {json_type(context)}", context))
        return None
    for kind, value in context.items():
        identifier = value.get("id") if isinstance(value, dict) else value
        if not isinstance(identifier, str) or not identifier.strip():
            errors.append(
                FieldError(
                    f"context.{kind}",
                    "must be a non-empty string id or an object {id, data?}",
                    value,
                )
            )
    return context
