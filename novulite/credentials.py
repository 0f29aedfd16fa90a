"""Subscriber channel credentials: push device tokens and chat webhooks, per provider.

A subscriber's `channels` column contains a list of `{providerId, credentials,
integrationIdentifier?}` entries, at most one per provider and integration identifier.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

# Novu's ChatOrPushProviderEnum (novu-py 3.19.0): novu-py rejects any other providerId in responses.
PROVIDER_IDS = (
    "slack", "discord", "msteams", "webex-messaging", "mattermost", "ryver", "zulip",
    "grafana-on-call", "getstream", "rocket-chat", "whatsapp-business", "line", "chat-webhook",
    "novu-slack", "telegram", "sendblue", "novu-web-chat", "fcm", "apns", "expo", "one-signal",
    "pushpad", "push-webhook", "pusher-beams", "appio",
)  # fmt: skip
STRING_CREDENTIALS = ("webhookUrl", "channel", "alertUid", "title", "imageUrl", "state", "externalUrl")


@dataclasses.dataclass(frozen=True)
class ChannelUpdate:
    """A validated credentials request body."""

    provider_id: str
    credentials: dict[str, Any]
    integration_identifier: str | None


def _matches(entry: dict[str, Any], update: ChannelUpdate) -> bool:
    return (
        entry.get("providerId") == update.provider_id
        and entry.get("integrationIdentifier") == update.integration_identifier
    )


def set_channel(channels: list[Any] | None, update: ChannelUpdate, *, append: bool) -> list[Any]:
    """Return `channels` with the update applied to its provider's entry, which is added if missing.

    Without `append` the entry's credentials are replaced. With it, the new credential
    fields are merged in and deviceTokens are added to the stored ones without repeats.
    """
    result = [dict(entry) for entry in channels or []]
    entry = next((entry for entry in result if _matches(entry, update)), None)
    if entry is None:
        entry = {"providerId": update.provider_id, "credentials": {}}
        if update.integration_identifier:
            entry["integrationIdentifier"] = update.integration_identifier
        result.append(entry)
    if not append:
        entry["credentials"] = dict(update.credentials)
        return result
    stored = entry.get("credentials") or {}
    merged = {**stored, **update.credentials}
    tokens = [*(stored.get("deviceTokens") or []), *(update.credentials.get("deviceTokens") or [])]
    if tokens:
        merged["deviceTokens"] = list(dict.fromkeys(tokens))
    entry["credentials"] = merged
    return result


def remove_provider(channels: list[Any] | None, provider_id: str) -> list[Any]:
    """Return `channels` without any entry of `provider_id`."""
    return [entry for entry in channels or [] if entry.get("providerId") != provider_id]


def integration_id(environment_id: str, provider_id: str, identifier: str | None) -> str:
    """Return the `_integrationId` that responses show for a provider.

    novulite has no integration records, but novu-py requires `_integrationId` on each
    channel. The id is a 24-hex-digit hash of the environment, provider and integration
    identifier, so it is the same on every response and every server.
    """
    text = f"{environment_id}:{provider_id}:{identifier or ''}"
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def to_channel_settings(environment_id: str, channels: list[Any] | None) -> list[dict[str, Any]]:
    """Return the channels as Novu's ChannelSettingsDto list."""
    settings = []
    for entry in channels or []:
        identifier = entry.get("integrationIdentifier")
        item = {
            "providerId": entry["providerId"],
            "credentials": entry.get("credentials") or {},
            "_integrationId": integration_id(environment_id, entry["providerId"], identifier),
        }
        if identifier:
            item["integrationIdentifier"] = identifier
        settings.append(item)
    return settings
