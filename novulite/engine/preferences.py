"""Preference resolution: the channels a subscriber receives for a workflow.

Values are applied in this order, each later one overriding the earlier:

1. the workflow's defaults, its `preferences.workflow` and then `preferences.user`
   (each `{all: {enabled, readOnly}, channels: {<channel>: {enabled}}}`; `all.enabled`
   is the value of every channel the level does not name);
2. the subscriber's global preference;
3. the subscriber's preference for this workflow.

A `critical` workflow, or one whose defaults set `all.readOnly`, ignores steps 2 and 3.
Otherwise `enabled: false` on either subscriber preference turns off every channel step.
The API's preference listings and the job runner both use `resolve`, so a listing
shows what the runner applies.
"""

from __future__ import annotations

import dataclasses
from typing import Any

# Channel step types, in the order Novu lists them. `tool` is a Novu channel without steps here.
CHANNELS = ("email", "sms", "in_app", "chat", "push")
PREFERENCE_CHANNELS = (*CHANNELS, "tool")
GLOBAL_SCOPE = "global"

# The `source` of an override, as Novu's preference responses name it.
SOURCE_WORKFLOW = "template"
SOURCE_SUBSCRIBER = "subscriber"


@dataclasses.dataclass(frozen=True)
class StoredPreference:
    """One preference row: the subscriber's choices at one scope."""

    enabled: bool
    # channel -> bool, only for the channels the subscriber has set
    channels: dict[str, bool]
    # The row itself, for callers that show more of it, such as its schedule.
    row: Any = dataclasses.field(default=None, compare=False)


@dataclasses.dataclass(frozen=True)
class Resolution:
    """The effective preference of one subscriber for one workflow."""

    # False when a subscriber preference turned the whole workflow off.
    enabled: bool
    channels: dict[str, bool]
    # channel -> SOURCE_WORKFLOW or SOURCE_SUBSCRIBER: where the value came from
    sources: dict[str, str]
    # Which subscriber preference, "global" or "workflow", turned the workflow off.
    disabled_by: str | None = None


def merged_defaults(preferences: dict[str, Any] | None) -> dict[str, Any]:
    """Merge a workflow's `preferences.workflow` and `preferences.user` into one `{all, channels}` level.

    Parts that are not objects are ignored: workflows saved before preferences were checked may have them.
    """
    merged: dict[str, Any] = {"all": {}, "channels": {}}
    levels = preferences if isinstance(preferences, dict) else {}
    for level_name in ("workflow", "user"):
        level = levels.get(level_name)
        if not isinstance(level, dict):
            continue
        merged["all"].update(_flags(level.get("all")))
        channels = level.get("channels")
        for channel, setting in (channels if isinstance(channels, dict) else {}).items():
            merged["channels"].setdefault(channel, {}).update(_flags(setting))
    return merged


def _flags(setting: Any) -> dict[str, bool]:
    """Return the boolean `enabled` and `readOnly` entries of a preference setting."""
    if not isinstance(setting, dict):
        return {}
    return {
        key: value
        for key, value in setting.items()
        if key in ("enabled", "readOnly") and isinstance(value, bool)
    }


def workflow_defaults(preferences: dict[str, Any] | None) -> tuple[dict[str, bool], bool]:
    """Return the workflow's default value for every channel, and whether subscribers may change them."""
    merged = merged_defaults(preferences)
    fallback = merged["all"].get("enabled", True)
    channels = {}
    for channel in PREFERENCE_CHANNELS:
        setting = merged["channels"].get(channel) or {}
        channels[channel] = bool(setting.get("enabled", fallback))
    return channels, bool(merged["all"].get("readOnly", False))


def resolve(
    preferences: dict[str, Any] | None,
    critical: bool,
    global_preference: StoredPreference | None,
    workflow_preference: StoredPreference | None,
) -> Resolution:
    """Resolve one subscriber's channels for one workflow from its defaults and stored preferences."""
    channels, read_only = workflow_defaults(preferences)
    sources = dict.fromkeys(channels, SOURCE_WORKFLOW)
    if critical or read_only:
        return Resolution(enabled=True, channels=channels, sources=sources)
    disabled_by = None
    for scope, stored in (("global", global_preference), ("workflow", workflow_preference)):
        if stored is None:
            continue
        for channel, value in stored.channels.items():
            channels[channel] = value
            sources[channel] = SOURCE_SUBSCRIBER
        if not stored.enabled and disabled_by is None:
            disabled_by = scope
    return Resolution(
        enabled=disabled_by is None, channels=channels, sources=sources, disabled_by=disabled_by
    )


def step_channels(step_types: list[str]) -> list[str]:
    """Return the channels among a workflow's step types, once each, in Novu's channel order."""
    present = set(step_types)
    return [channel for channel in CHANNELS if channel in present]
