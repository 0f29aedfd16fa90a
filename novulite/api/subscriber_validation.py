"""Checks of subscriber fields, shared by the subscribers API and the trigger's inline subscribers."""

from __future__ import annotations

from typing import Any

from novulite.api.body import json_type
from novulite.credentials import PROVIDER_IDS, STRING_CREDENTIALS, ChannelUpdate
from novulite.errors import FieldError
from novulite.providers import vapid
from novulite.subscribers import PROFILE_FIELDS

# The subscriber_id column's length.
MAX_SUBSCRIBER_ID_LENGTH = 255


def validate_subscriber_id(value: Any, field: str, errors: list[FieldError]) -> str | None:
    """Return the trimmed subscriberId, or None after appending what is wrong with it to `errors`."""
    if not isinstance(value, str):
        errors.append(FieldError(field, "is required: a non-empty subscriberId string", value))
        return None
    trimmed = value.strip()
    if not trimmed:
        errors.append(FieldError(field, "must not be empty or blank; send the subscriber's id", value))
        return None
    if len(trimmed) > MAX_SUBSCRIBER_ID_LENGTH:
        errors.append(FieldError(field, f"is longer than {MAX_SUBSCRIBER_ID_LENGTH} characters"))
        return None
    if any(ord(character) < 32 or ord(character) == 127 for character in trimmed):
        errors.append(FieldError(field, "contains a control character; use printable characters only", value))
        return None
    return trimmed


def validate_profile(entry: dict[str, Any], prefix: str, errors: list[FieldError]) -> dict[str, Any]:
    """Return the profile fields and `data` that `entry` carries, leaving out invalid ones.

    Each problem is appended to `errors` under the field name with `prefix` in front,
    such as `to[0].` for a trigger recipient or an empty prefix for a request body.
    """
    profile: dict[str, Any] = {}
    for key in PROFILE_FIELDS:
        if key not in entry:
            continue
        value = entry[key]
        if value is not None and not isinstance(value, str):
            errors.append(FieldError(f"{prefix}{key}", f"must be a string or null, got {json_type(value)}"))
            continue
        profile[key] = value
    if "data" in entry:
        data = entry["data"]
        if data is not None and not isinstance(data, dict):
            errors.append(FieldError(f"{prefix}data", f"must be an object or null, got {json_type(data)}"))
        else:
            profile["data"] = data
    return profile


def check_provider_id(value: Any, field: str, errors: list[FieldError]) -> str | None:
    if isinstance(value, str) and value in PROVIDER_IDS:
        return value
    errors.append(
        FieldError(field, f"must be a chat or push provider id, one of: {', '.join(PROVIDER_IDS)}", value)
    )
    return None


def validate_channel_update(body: dict[str, Any], errors: list[FieldError]) -> ChannelUpdate | None:
    """Check a `{providerId, credentials, integrationIdentifier?}` body, appending problems to `errors`."""
    provider_id = check_provider_id(body.get("providerId"), "providerId", errors)
    credentials = _credentials(body.get("credentials"), errors)
    identifier = body.get("integrationIdentifier")
    if identifier is not None and (not isinstance(identifier, str) or not identifier.strip()):
        errors.append(
            FieldError("integrationIdentifier", "must be a non-empty string or left out", identifier)
        )
        identifier = None
    if provider_id is None or credentials is None:
        return None
    return ChannelUpdate(provider_id, credentials, identifier.strip() if identifier else None)


def _credentials(value: Any, errors: list[FieldError]) -> dict[str, Any] | None:
    if not isinstance(value, dict):
        errors.append(
            FieldError(
                "credentials",
                f"is required: an object such as {{deviceTokens: [...]}} or {{webhookUrl}}, "
                f"got {json_type(value)}",
            )
        )
        return None
    credentials: dict[str, Any] = {}
    valid = True
    for key in STRING_CREDENTIALS:
        item = value.get(key)
        if item is None:
            continue
        if not isinstance(item, str):
            errors.append(FieldError(f"credentials.{key}", f"must be a string, got {json_type(item)}"))
            valid = False
            continue
        credentials[key] = item
    tokens = value.get("deviceTokens")
    if tokens is not None:
        if not isinstance(tokens, list) or not all(isinstance(token, str) and token for token in tokens):
            errors.append(
                FieldError("credentials.deviceTokens", "must be an array of non-empty strings", tokens)
            )
            valid = False
        elif _check_web_push_tokens(tokens, errors):
            credentials["deviceTokens"] = list(dict.fromkeys(tokens))
        else:
            valid = False
    return credentials if valid else None


def _check_web_push_tokens(tokens: list[str], errors: list[FieldError]) -> bool:
    """Check the tokens meant as Web Push subscriptions (JSON objects with an endpoint); others pass."""
    valid = True
    for index, token in enumerate(tokens):
        if not vapid.looks_like_subscription(token):
            continue
        try:
            vapid.parse_subscription(token)
        except vapid.InvalidKey as exc:
            errors.append(
                FieldError(
                    f"credentials.deviceTokens[{index}]",
                    f"is not a valid Web Push subscription: {exc}; "
                    "send JSON.stringify(subscription) of the browser's PushSubscription",
                )
            )
            valid = False
    return valid
