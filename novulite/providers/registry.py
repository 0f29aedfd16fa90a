"""The provider ids this server can deliver through, and the channels of each.

Each provider module exports PROVIDERS, a dict from provider id to Provider; this
module joins them. A channel step looks up its integration's provider here, and the
integrations API uses `check_credentials` to refuse, on save, credentials the
provider could not send with.
"""

from __future__ import annotations

from novulite.providers import apprise, chat, push_webhook, sms, webpush
from novulite.providers.base import Provider

PROVIDERS: dict[str, Provider] = {
    **sms.PROVIDERS,
    **chat.PROVIDERS,
    **push_webhook.PROVIDERS,
    **webpush.PROVIDERS,
    **apprise.PROVIDERS,
}


def provider_for(provider_id: str, channel: str) -> Provider | None:
    """Return the provider that delivers `channel` for `provider_id`, or None."""
    provider = PROVIDERS.get(provider_id)
    if provider is None or channel not in provider.channels:
        return None
    return provider


def channels_of(provider_id: str) -> frozenset[str]:
    """Return the channels `provider_id` can deliver; empty when this server does not know it."""
    provider = PROVIDERS.get(provider_id)
    return provider.channels if provider else frozenset()


def provider_ids_for(channel: str) -> frozenset[str]:
    """Return the provider ids this server can deliver `channel` through."""
    return frozenset(
        provider_id for provider_id, provider in PROVIDERS.items() if channel in provider.channels
    )
