"""Parsing and checking of preference update requests, v2 and legacy v1.

Each parser reports every problem at once as a 400 whose errors name the fields.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from novulite.api.body import json_type
from novulite.engine.preferences import PREFERENCE_CHANNELS
from novulite.engine.triggers import context_keys
from novulite.errors import INVALID_FIELDS, INVALID_QUERY, ApiError, FieldError
from novulite.messages import context_key

CRITICALITIES = ("critical", "nonCritical", "all")
MAX_BULK_PREFERENCES = 100
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


@dataclasses.dataclass(frozen=True)
class PreferenceUpdate:
    """The changes one request makes to one preference row; None means "leave as stored"."""

    channels: dict[str, bool]
    enabled: bool | None = None
    schedule: dict[str, Any] | None = None
    # The canonical context key the preference applies to; "" for no context.
    context: str = ""


def parse_criticality(raw: str | None) -> str:
    if raw is None:
        return "nonCritical"
    if raw not in CRITICALITIES:
        raise ApiError(
            INVALID_QUERY,
            errors=[FieldError("criticality", f"must be one of {', '.join(CRITICALITIES)}", raw)],
        )
    return raw


def _channels(value: Any, field: str, errors: list[FieldError]) -> dict[str, bool]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        errors.append(FieldError(field, f"must be an object of channel: boolean, got {json_type(value)}"))
        return {}
    channels: dict[str, bool] = {}
    for channel, enabled in value.items():
        if channel not in PREFERENCE_CHANNELS:
            errors.append(
                FieldError(f"{field}.{channel}", f"is not a channel; use {', '.join(PREFERENCE_CHANNELS)}")
            )
        elif not isinstance(enabled, bool):
            errors.append(
                FieldError(f"{field}.{channel}", f"must be true or false, got {json_type(enabled)}")
            )
        else:
            channels[channel] = enabled
    return channels


def _boolean(body: dict[str, Any], key: str, errors: list[FieldError]) -> bool | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, bool):
        errors.append(FieldError(key, f"must be true or false, got {json_type(value)}"))
        return None
    return value


def _context(value: Any, errors: list[FieldError]) -> str:
    if value is None:
        return ""
    if not isinstance(value, dict):
        errors.append(FieldError("context", f"must be an object of type: id, got {json_type(value)}"))
        return ""
    count = len(errors)
    for kind, entry in value.items():
        identifier = entry.get("id") if isinstance(entry, dict) else entry
        if not isinstance(identifier, str) or not identifier.strip():
            errors.append(
                FieldError(f"context.{kind}", "must be a non-empty string id or an object {id, data?}")
            )
    return "" if len(errors) > count else context_key(context_keys(value))


def _schedule(value: Any, errors: list[FieldError]) -> dict[str, Any] | None:
    """Check a schedule {isEnabled, weeklySchedule?}; each weekday is {isEnabled, hours?: [{start, end}]}."""
    if value is None:
        return None
    count = len(errors)
    if not isinstance(value, dict):
        errors.append(
            FieldError(
                "schedule", f"must be an object {{isEnabled, weeklySchedule?}}, got {json_type(value)}"
            )
        )
        return None
    if not isinstance(value.get("isEnabled"), bool):
        errors.append(FieldError("schedule.isEnabled", "is required: true or false"))
    weekly = value.get("weeklySchedule")
    if weekly is not None:
        if not isinstance(weekly, dict):
            errors.append(FieldError("schedule.weeklySchedule", "must be an object keyed by weekday"))
        else:
            for day, setting in weekly.items():
                _day(day, setting, errors)
    return value if len(errors) == count else None


def _day(day: str, setting: Any, errors: list[FieldError]) -> None:
    field = f"schedule.weeklySchedule.{day}"
    if day not in WEEKDAYS:
        errors.append(FieldError(field, f"is not a weekday; use {', '.join(WEEKDAYS)}"))
        return
    if not isinstance(setting, dict) or not isinstance(setting.get("isEnabled"), bool):
        errors.append(FieldError(f"{field}.isEnabled", "is required: true or false"))
        return
    hours = setting.get("hours", [])
    if not isinstance(hours, list):
        errors.append(FieldError(f"{field}.hours", "must be an array of {start, end}"))
        return
    for index, span in enumerate(hours):
        if not isinstance(span, dict) or not all(isinstance(span.get(key), str) for key in ("start", "end")):
            errors.append(
                FieldError(f"{field}.hours[{index}]", 'must be {start, end} with times such as "09:00 AM"')
            )


def _workflow_reference(value: Any, field: str, errors: list[FieldError]) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        errors.append(FieldError(field, "must be a workflow identifier or id, a non-empty string", value))
        return None
    return value.strip()


def _raise_if(errors: list[FieldError]) -> None:
    if errors:
        raise ApiError(INVALID_FIELDS, errors=errors)


def parse_update(body: dict[str, Any]) -> tuple[str | None, PreferenceUpdate]:
    """Parse PATCH /v2/subscribers/{id}/preferences: {channels?, workflowId?, schedule?, context?}."""
    errors: list[FieldError] = []
    reference = _workflow_reference(body.get("workflowId"), "workflowId", errors)
    channels = _channels(body.get("channels"), "channels", errors)
    schedule = _schedule(body.get("schedule"), errors)
    if schedule is not None and reference is not None:
        errors.append(
            FieldError("schedule", "applies to the global preference only; send it without workflowId")
        )
    context = _context(body.get("context"), errors)
    _raise_if(errors)
    return reference, PreferenceUpdate(channels=channels, schedule=schedule, context=context)


def parse_bulk(body: dict[str, Any]) -> list[tuple[str, PreferenceUpdate]]:
    """Parse PATCH /v2/subscribers/{id}/preferences/bulk.

    The body is {preferences: [{workflowId, channels}], context?}.
    """
    errors: list[FieldError] = []
    items = body.get("preferences")
    if not isinstance(items, list) or not items:
        errors.append(FieldError("preferences", "is required: a non-empty array of {workflowId, channels}"))
        items = []
    elif len(items) > MAX_BULK_PREFERENCES:
        errors.append(
            FieldError(
                "preferences", f"has {len(items)} entries; send at most {MAX_BULK_PREFERENCES} per request"
            )
        )
        items = []
    context = _context(body.get("context"), errors)
    updates: list[tuple[str, PreferenceUpdate]] = []
    for index, item in enumerate(items):
        field = f"preferences[{index}]"
        if not isinstance(item, dict):
            errors.append(
                FieldError(field, f"must be an object {{workflowId, channels}}, got {json_type(item)}")
            )
            continue
        reference = _workflow_reference(item.get("workflowId"), f"{field}.workflowId", errors)
        if reference is None and "workflowId" not in item:
            errors.append(FieldError(f"{field}.workflowId", "is required: the workflow identifier or id"))
        channels = _channels(item.get("channels"), f"{field}.channels", errors)
        if reference is not None:
            updates.append((reference, PreferenceUpdate(channels=channels, context=context)))
    _raise_if(errors)
    return updates


def parse_legacy_workflow(body: dict[str, Any]) -> PreferenceUpdate:
    """Parse PATCH /v1/subscribers/{id}/preferences/{workflowId}: {channel?: {type, enabled}, enabled?}."""
    errors: list[FieldError] = []
    enabled = _boolean(body, "enabled", errors)
    channels: dict[str, bool] = {}
    channel = body.get("channel")
    if channel is not None:
        channels = _legacy_channel(channel, "channel", errors)
    if channel is None and enabled is None and not errors:
        errors.append(FieldError("channel", "is required unless enabled is sent: {type, enabled}"))
    _raise_if(errors)
    return PreferenceUpdate(channels=channels, enabled=enabled)


def parse_legacy_global(body: dict[str, Any]) -> PreferenceUpdate:
    """Parse PATCH /v1/subscribers/{id}/preferences: {enabled?, preferences?: [{type, enabled}]}."""
    errors: list[FieldError] = []
    enabled = _boolean(body, "enabled", errors)
    items = body.get("preferences")
    channels: dict[str, bool] = {}
    if items is not None:
        if not isinstance(items, list):
            errors.append(
                FieldError("preferences", f"must be an array of {{type, enabled}}, got {json_type(items)}")
            )
        else:
            for index, item in enumerate(items):
                channels.update(_legacy_channel(item, f"preferences[{index}]", errors))
    if items is None and enabled is None and not errors:
        errors.append(FieldError("preferences", "is required unless enabled is sent: [{type, enabled}]"))
    _raise_if(errors)
    return PreferenceUpdate(channels=channels, enabled=enabled)


def _legacy_channel(value: Any, field: str, errors: list[FieldError]) -> dict[str, bool]:
    """Parse Novu's v1 channel preference {type, enabled} into {type: enabled}."""
    if not isinstance(value, dict):
        errors.append(FieldError(field, f"must be an object {{type, enabled}}, got {json_type(value)}"))
        return {}
    channel_type = value.get("type")
    if channel_type not in PREFERENCE_CHANNELS:
        errors.append(
            FieldError(
                f"{field}.type", f"is not a channel; use {', '.join(PREFERENCE_CHANNELS)}", channel_type
            )
        )
        return {}
    enabled = value.get("enabled")
    if not isinstance(enabled, bool):
        errors.append(FieldError(f"{field}.enabled", f"is required: true or false, got {json_type(enabled)}"))
        return {}
    return {channel_type: enabled}


def _inbox_fields(
    body: dict[str, Any], prefix: str, allowed: tuple[str, ...], errors: list[FieldError]
) -> tuple[dict[str, bool], bool | None]:
    """Parse the channel booleans and `enabled` that @novu/js sends at the top level of a body."""
    for key in body:
        if key == "condition":
            # NOTE: Novu can gate a workflow preference on a JSONLogic condition, which nothing here stores.
            message = "is not supported by this server; remove it from the request"
            errors.append(FieldError(f"{prefix}condition", message))
        elif key == "schedule" and key not in allowed:
            errors.append(
                FieldError(
                    f"{prefix}schedule",
                    "applies to the global preference only; send it to PATCH /v1/inbox/preferences",
                )
            )
        elif key not in allowed:
            errors.append(
                FieldError(f"{prefix}{key}", f"is not a preference field; use {', '.join(allowed)}")
            )
    channels: dict[str, bool] = {}
    for channel in PREFERENCE_CHANNELS:
        if channel not in body:
            continue
        value = body[channel]
        if isinstance(value, bool):
            channels[channel] = value
        else:
            errors.append(FieldError(f"{prefix}{channel}", f"must be true or false, got {json_type(value)}"))
    enabled = None
    if "enabled" in allowed:
        enabled = _boolean(body, "enabled", errors)
    return channels, enabled


def parse_inbox_global(body: dict[str, Any], context: str) -> PreferenceUpdate:
    """Parse PATCH /v1/inbox/preferences: channel booleans such as {email: false}, or {schedule}."""
    errors: list[FieldError] = []
    channels, _ = _inbox_fields(body, "", (*PREFERENCE_CHANNELS, "schedule"), errors)
    schedule = _schedule(body.get("schedule"), errors)
    _raise_if(errors)
    return PreferenceUpdate(channels=channels, schedule=schedule, context=context)


def parse_inbox_workflow(body: dict[str, Any], context: str) -> PreferenceUpdate:
    """Parse PATCH /v1/inbox/preferences/{workflow}: channel booleans and enabled."""
    errors: list[FieldError] = []
    channels, enabled = _inbox_fields(body, "", (*PREFERENCE_CHANNELS, "enabled"), errors)
    _raise_if(errors)
    return PreferenceUpdate(channels=channels, enabled=enabled, context=context)


def parse_inbox_bulk(body: dict[str, Any], context: str) -> list[tuple[str, PreferenceUpdate]]:
    """Parse PATCH /v1/inbox/preferences/bulk: {preferences: [{workflowId, email?, sms?, ...}]}."""
    errors: list[FieldError] = []
    for key in body:
        if key != "preferences":
            errors.append(FieldError(key, "is not a bulk preference field; send only preferences"))
    items = body.get("preferences")
    if not isinstance(items, list) or not items:
        errors.append(
            FieldError("preferences", "is required: a non-empty array of {workflowId, email?, in_app?, ...}")
        )
        items = []
    elif len(items) > MAX_BULK_PREFERENCES:
        errors.append(
            FieldError(
                "preferences", f"has {len(items)} entries; send at most {MAX_BULK_PREFERENCES} per request"
            )
        )
        items = []
    updates: list[tuple[str, PreferenceUpdate]] = []
    for index, item in enumerate(items):
        field = f"preferences[{index}]"
        if not isinstance(item, dict):
            errors.append(
                FieldError(
                    field, f"must be an object {{workflowId, email?, in_app?, ...}}, got {json_type(item)}"
                )
            )
            continue
        reference = _workflow_reference(item.get("workflowId"), f"{field}.workflowId", errors)
        if reference is None and "workflowId" not in item:
            errors.append(FieldError(f"{field}.workflowId", "is required: the workflow identifier or id"))
        fields = {key: value for key, value in item.items() if key != "workflowId"}
        channels, _ = _inbox_fields(fields, f"{field}.", PREFERENCE_CHANNELS, errors)
        if reference is not None:
            updates.append((reference, PreferenceUpdate(channels=channels, context=context)))
    _raise_if(errors)
    return updates
