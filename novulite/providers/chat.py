"""Chat through incoming webhooks: Slack, Discord, Microsoft Teams, Mattermost and a generic webhook.

Each message goes to one webhook URL. The subscriber's channel credentials come
first: an entry of the integration's provider whose integrationIdentifier is the
integration's, else one without an integrationIdentifier (entries for another
integration are ignored, and the first of equal entries wins). Without one, the
integration's own `webhookUrl` is used, and without that the step is skipped.

The step's `body` control is a Liquid template. Values it inserts are escaped for
the provider's markup (see chat_formats); the generic webhook gets plain text.

The generic webhook (`chat-webhook`) receives the content with the ids of the
subscriber, transaction, workflow and step. When the integration has a
`secretKey`, the `X-Novu-Signature` header carries the lowercase hex
HMAC-SHA256 of the exact body bytes under that key.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import hmac
import json
from collections.abc import Callable
from typing import Any

import httpx

from novulite.engine.context import WorkerContext
from novulite.engine.steps.base import ExternalCall, PermanentStepError, StepContext, StepResult
from novulite.engine.steps.delivery import channel_row, delivered, skipped
from novulite.engine.templates import Escape, render
from novulite.errors import FieldError
from novulite.providers import chat_formats, http
from novulite.providers.base import Provider

SIGNATURE_HEADER = "X-Novu-Signature"
CHAT_WEBHOOK = "chat-webhook"


@dataclasses.dataclass(frozen=True)
class ChatFormat:
    """A provider's webhook format: the escape for inserted values, and the request body."""

    provider_id: str
    # None for plain text, which is sent as rendered.
    escape: Escape | None
    # Builds the request body from the content; None for the generic webhook, whose body adds ids.
    body: Callable[[str], dict[str, Any]] | None
    # The maximum content length in characters, checked before sending; None when the provider sets none.
    max_content: int | None = None


@dataclasses.dataclass(frozen=True)
class _Delivery:
    provider_id: str
    url: str
    # The origin of the URL: "subscriber" or "integration".
    source: str
    body: dict[str, Any]
    secret_key: str | None
    job_id: str
    # The message row, without the status and times that the send decides.
    row: dict[str, Any]


def webhook_url(channels: Any, provider_id: str, integration_identifier: str) -> str | None:
    """Return the subscriber's webhook URL for the integration, or None when no entry sets one."""
    general = None
    for entry in channels or []:
        if not isinstance(entry, dict) or entry.get("providerId") != provider_id:
            continue
        credentials = entry.get("credentials")
        url = credentials.get("webhookUrl") if isinstance(credentials, dict) else None
        if not isinstance(url, str) or not url.strip():
            continue
        identifier = entry.get("integrationIdentifier")
        if identifier == integration_identifier:
            return url.strip()
        if not identifier and general is None:
            general = url.strip()
    return general


def _generic_body(ctx: StepContext, content: str) -> dict[str, Any]:
    return {
        "content": content,
        "subscriberId": ctx.subscriber.subscriber_id,
        "transactionId": ctx.job.transaction_id,
        "workflowId": ctx.workflow.workflow_id,
        "stepId": ctx.job.step_id,
    }


def prepare(chat_format: ChatFormat, ctx: StepContext, integration: Any) -> StepResult | ExternalCall:
    """Render the message and return the call that posts it, or a skip when no webhook URL is set."""
    provider_id = chat_format.provider_id
    credentials = integration.credentials or {}
    url = webhook_url(ctx.subscriber.channels, provider_id, integration.identifier)
    source = "subscriber"
    if url is None:
        url = str(credentials.get("webhookUrl") or "").strip() or None
        source = "integration"
    if url is None:
        return skipped(
            "chat",
            f"no {provider_id} webhook URL: the subscriber has no {provider_id} channel credentials "
            f"with a webhookUrl, and integration {integration.identifier!r} sets none",
            "recipient",
        )

    content = render(ctx.controls.get("body"), ctx.variables, "body", escape=chat_format.escape)
    if not content.strip():
        raise PermanentStepError("body: the message is empty after rendering; set the step's body")
    if chat_format.max_content is not None and len(content) > chat_format.max_content:
        raise PermanentStepError(
            f"body: the message has {len(content)} characters, and {provider_id} accepts at most "
            f"{chat_format.max_content}; shorten the step's body",
            provider=provider_id,
        )
    body = _generic_body(ctx, content) if chat_format.body is None else chat_format.body(content)
    delivery = _Delivery(
        provider_id=provider_id,
        url=url,
        source=source,
        body=body,
        secret_key=str(credentials.get("secretKey") or "") or None,
        job_id=ctx.job.id,
        row=channel_row(ctx, provider_id, content),
    )
    return ExternalCall(
        perform=functools.partial(_perform, delivery),
        max_seconds=http.DEFAULT_TIMEOUT_SECONDS + http.LOOKUP_ALLOWANCE_SECONDS,
        failure_row=delivery.row,
    )


def signature(secret_key: str, content: bytes) -> str:
    """Return the value of the signature header: the lowercase hex HMAC-SHA256 of `content`."""
    return hmac.new(secret_key.encode(), content, hashlib.sha256).hexdigest()


def _request(delivery: _Delivery) -> http.ProviderRequest:
    if delivery.secret_key is None:
        return http.json_request(delivery.provider_id, delivery.url, delivery.body, delivery.job_id)
    content = json.dumps(delivery.body, ensure_ascii=False).encode()
    headers = [(SIGNATURE_HEADER, signature(delivery.secret_key, content))]
    return http.post(
        delivery.provider_id, delivery.url, content, "application/json", delivery.job_id, headers=headers
    )


def _perform(delivery: _Delivery, worker: WorkerContext) -> StepResult:
    # The URL is parsed here, so that an invalid one fails the job with its message row kept.
    request = _request(delivery)
    response = http.deliver(worker, request)
    redacted_url = http.shown_url(request.request.url)
    raw = {
        "provider": delivery.provider_id,
        "url": redacted_url,
        "status": response.status,
        "webhookSource": delivery.source,
    }
    return delivered(
        delivery.row,
        worker.clock.now(),
        f"Message sent to the {delivery.source}'s {delivery.provider_id} webhook at {redacted_url}",
        {"provider": delivery.provider_id, "status": response.status, "webhookSource": delivery.source},
        raw,
    )


def check_credentials(credentials: dict[str, Any], active: bool, errors: list[FieldError]) -> None:
    """Check that a webhookUrl, which is optional because subscribers may set their own, is http(s).

    Errors never repeat the URL, which is a secret.
    """
    url = credentials.get("webhookUrl")
    if url is None:
        return
    if any(character.isspace() for character in url.strip()):
        errors.append(FieldError("credentials.webhookUrl", "must be a URL without spaces"))
        return
    try:
        parsed = httpx.URL(url.strip())
    except httpx.InvalidURL:
        errors.append(FieldError("credentials.webhookUrl", "must be a valid http or https URL"))
        return
    if parsed.scheme not in ("http", "https") or not parsed.host:
        errors.append(
            FieldError(
                "credentials.webhookUrl",
                "must be an http or https URL with a host, such as the incoming webhook URL the chat "
                "service shows",
            )
        )


FORMATS = (
    ChatFormat("slack", chat_formats.escape_slack, chat_formats.slack_body),
    ChatFormat(
        "discord",
        chat_formats.escape_discord,
        chat_formats.discord_body,
        max_content=chat_formats.DISCORD_MAX_CONTENT,
    ),
    ChatFormat("msteams", chat_formats.escape_teams, chat_formats.teams_body),
    ChatFormat("mattermost", chat_formats.escape_mattermost, chat_formats.mattermost_body),
    ChatFormat(CHAT_WEBHOOK, None, None),
)

PROVIDERS: dict[str, Provider] = {
    chat_format.provider_id: Provider(
        channels=frozenset({"chat"}),
        prepare=functools.partial(prepare, chat_format),
        check_credentials=check_credentials,
    )
    for chat_format in FORMATS
}
