"""Provider integrations: which one a channel step uses, and how their secrets are shown."""

from __future__ import annotations

import sqlite3
from collections.abc import Collection
from typing import Any

from novulite.db.fast import fetch
from novulite.db.models import Integration, table

CHANNELS = ("email", "sms", "chat", "push", "in_app")
# Credential fields that API responses and the admin UI show masked.
SECRET_CREDENTIALS = frozenset(
    {
        "apiKey",
        "secretKey",
        "password",
        "token",
        "authToken",
        "apiToken",
        "webhookUrl",
        "privateKey",
        "user",
        "accessKey",
        "serviceAccount",
        "signingSecret",
        "clientSecret",
    }
)
# Fields that a provider uses for public values, shown unmasked. A webpush integration's apiKey is
# its VAPID public key, which every subscribing page embeds as its applicationServerKey.
PUBLIC_CREDENTIALS: dict[str, frozenset[str]] = {"webpush": frozenset({"apiKey"})}

_integrations = table(Integration)


def find_integration(
    raw: sqlite3.Connection,
    environment_id: str,
    channel: str,
    identifier: str | None = None,
    provider_ids: Collection[str] | None = None,
) -> Any | None:
    """Return the active integration a step of `channel` uses, or None when there is none.

    A step that names an integration identifier gets that one, whatever its provider.
    Otherwise only integrations of `provider_ids` (when given), the providers this
    server can deliver the channel through, are candidates: the primary one wins, then
    the most recently created one. Novu's clients may store integrations of providers
    this server cannot send with, and those must not stand in the way of one it can.
    """
    if identifier:
        rows = fetch(
            raw,
            "SELECT * FROM integration WHERE environment_id = ? AND identifier = ? AND active = TRUE",
            [environment_id, identifier],
            _integrations,
        )
        return rows[0] if rows else None
    sql = "SELECT * FROM integration WHERE environment_id = ? AND channel = ? AND active = TRUE"
    parameters: list[Any] = [environment_id, channel]
    if provider_ids is not None:
        providers = sorted(provider_ids)
        sql += f" AND provider_id IN ({', '.join('?' for _ in providers)})"
        parameters.extend(providers)
    rows = fetch(
        raw,
        sql + ' ORDER BY "primary" DESC, created_at DESC, id DESC LIMIT 1',
        parameters,
        _integrations,
    )
    return rows[0] if rows else None


def mask_secret(value: Any) -> Any:
    """Return a secret credential with all but its last four characters hidden."""
    if not isinstance(value, str) or not value:
        return value
    if len(value) <= 8:
        return "*" * len(value)
    return "*" * (len(value) - 4) + value[-4:]


def masked_credentials(credentials: dict[str, Any], provider_id: str | None = None) -> dict[str, Any]:
    """Return the credentials as an API response shows them: secret fields masked, others as stored."""
    public = PUBLIC_CREDENTIALS.get(provider_id or "", frozenset())
    return {
        key: mask_secret(value) if key in SECRET_CREDENTIALS and key not in public else value
        for key, value in credentials.items()
    }
