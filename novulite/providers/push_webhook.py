"""The push-webhook provider: a push step as one signed JSON POST to the integration's webhook URL.

The body has the shape of Novu's push-webhook provider, so a receiver written for
Novu works unchanged:

    {"target": [device tokens], "title": ..., "content": ...,
     "payload": {...trigger payload, "subscriber": {...}, "step": {digest, events, total_count}}}

`target` is the device tokens of the subscriber's push-webhook channel entries whose
`integrationIdentifier` is this integration's identifier or is not set, and may be
empty. With `secretKey` set, the `X-Novu-Signature` header carries the hex HMAC-SHA256
of the exact body bytes, keyed with it.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
from typing import Any

from novulite.engine.context import WorkerContext
from novulite.engine.steps import delivery
from novulite.engine.steps.base import ExternalCall, PermanentStepError, StepContext, StepResult
from novulite.engine.templates import render
from novulite.errors import FieldError
from novulite.providers.base import Provider
from novulite.providers.http import ProviderRequest, deliver, excerpt, parse_url, post, shown_url

PROVIDER_ID = "push-webhook"
SIGNATURE_HEADER = "X-Novu-Signature"


def check_credentials(credentials: dict[str, Any], active: bool, errors: list[FieldError]) -> None:
    url = credentials.get("webhookUrl")
    if not url:
        if active:
            errors.append(
                FieldError("credentials.webhookUrl", "is required: the http or https URL to POST pushes to")
            )
        return
    try:
        parse_url(url, PROVIDER_ID)
    except PermanentStepError:
        # The message would repeat the URL, which may carry a secret.
        errors.append(FieldError("credentials.webhookUrl", "must be an http or https URL with a host"))


def signature(secret: str, body: bytes) -> str:
    """Return the hex HMAC-SHA256 of `body` keyed with `secret`, as the signature header carries it."""
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def device_tokens(channels: Any, integration_identifier: str) -> list[str]:
    tokens: list[str] = []
    for entry in channels or []:
        if not isinstance(entry, dict) or entry.get("providerId") != PROVIDER_ID:
            continue
        named = entry.get("integrationIdentifier")
        if named and named != integration_identifier:
            continue
        for token in (entry.get("credentials") or {}).get("deviceTokens") or []:
            if isinstance(token, str) and token not in tokens:
                tokens.append(token)
    return tokens


def prepare(ctx: StepContext, integration: Any) -> StepResult | ExternalCall:
    credentials = integration.credentials or {}
    variables = ctx.variables
    title = render(ctx.controls.get("subject"), variables, "subject")
    content = render(ctx.controls.get("body"), variables, "body")
    payload = ctx.trigger.payload if isinstance(ctx.trigger.payload, dict) else {}
    body = {
        "target": device_tokens(ctx.subscriber.channels, integration.identifier),
        "title": title,
        "content": content,
        "payload": {**payload, "subscriber": variables["subscriber"], "step": variables["step"]},
    }
    encoded = json.dumps(body, ensure_ascii=False).encode()
    headers: list[tuple[str, str]] = []
    secret = credentials.get("secretKey")
    if isinstance(secret, str) and secret:
        headers.append((SIGNATURE_HEADER, signature(secret, encoded)))
    request = post(
        PROVIDER_ID,
        str(credentials.get("webhookUrl") or ""),
        encoded,
        "application/json",
        ctx.job.id,
        headers=headers,
    )
    row = delivery.channel_row(ctx, PROVIDER_ID, content, subject=title or None)
    return ExternalCall(
        perform=functools.partial(_perform, request, row), max_seconds=request.max_seconds, failure_row=row
    )


def _perform(request: ProviderRequest, row: dict[str, Any], worker: WorkerContext) -> StepResult:
    response = deliver(worker, request)
    raw = {"provider": PROVIDER_ID, "status": response.status, "responseExcerpt": excerpt(response.body)}
    output = {"provider": PROVIDER_ID, "status": response.status}
    return delivery.delivered(
        row, worker.clock.now(), f"Push sent to the webhook {shown_url(request.request.url)}", output, raw
    )


PROVIDERS = {PROVIDER_ID: Provider(frozenset({"push"}), prepare, check_credentials)}
