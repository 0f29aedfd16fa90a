"""Web Push delivery (RFC 8030): encrypted with aes128gcm (RFC 8291) and signed with VAPID (RFC 8292).

The integration's credentials hold the VAPID key pair and contact: `apiKey` is the
public key, `secretKey` the private key and `from` the `sub` claim (a mailto: or
https: URL). `novulite vapid-keys` generates them.

A subscriber's subscriptions are the device tokens of its channel credentials that
parse as a browser PushSubscription JSON, in entries whose `integrationIdentifier`
is this integration's identifier or is not set. Tokens of other forms (FCM, APNs)
are left alone.

Each subscription gets its own encrypted request, sent through the shared HTTP
delivery, so the outbound guard applies: endpoint URLs come from browsers and are
untrusted. The outcome for several subscriptions:

- 404 or 410 means the subscription is gone; it is removed from the subscriber's
  credentials and noted in the details.
- If any request failed transiently (429, 5xx, not sent), the job is retried, and
  the retry sends only to the subscriptions not yet settled. The settled ones are
  kept, by endpoint hash, in the job's error as `settledSubscriptions`.
- Otherwise the step completes when at least one subscription got the message, with
  a warning detail per subscription that did not, and fails when none did.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import hashlib
import json
import logging
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec
from py_vapid import Vapid02, VapidException
from pywebpush import WebPusher, WebPushException

from novulite.db.sql import for_update
from novulite.engine.context import WorkerContext
from novulite.engine.steps import delivery
from novulite.engine.steps.base import (
    ExternalCall,
    PermanentStepError,
    StepContext,
    StepError,
    StepResult,
    TransientStepError,
)
from novulite.engine.templates import render
from novulite.errors import FieldError
from novulite.providers import vapid
from novulite.providers.base import Provider
from novulite.providers.http import (
    DEFAULT_TIMEOUT_SECONDS,
    LOOKUP_ALLOWANCE_SECONDS,
    OutcomeUnknownError,
    ProviderRequest,
    deliver,
    parse_url,
    post,
)

logger = logging.getLogger(__name__)

PROVIDER_ID = "webpush"
# Seconds a push service keeps an undelivered message for an offline browser (the TTL header).
TIME_TO_LIVE_SECONDS = 24 * 3600
# Lifetime of a VAPID token. RFC 8292 allows at most 24 hours.
VAPID_TOKEN_SECONDS = 12 * 3600
# The plaintext that a 4096-byte push message body carries (RFC 8291, section 4): 4096 bytes less the
# 86-byte aes128gcm header, the 16-byte tag and the 1-byte padding delimiter.
MAX_PLAINTEXT_BYTES = 3993
# A subscriber with more subscriptions gets the message on the most recently added ones only.
MAX_SUBSCRIPTIONS = 20
GONE_STATUSES = frozenset({404, 410})


@dataclasses.dataclass(frozen=True)
class _Send:
    job_id: str
    subscriber_pk: str
    private_key: ec.EllipticCurvePrivateKey
    # The VAPID `sub` claim.
    contact: str
    plaintext: bytes
    # The subscriptions to send to in this attempt.
    subscriptions: tuple[vapid.Subscription, ...]
    # Endpoint hashes settled by earlier attempts, and how many of those got the message.
    settled: tuple[str, ...]
    delivered_before: int
    # Notes for the completed detail, such as data left out for size.
    notes: tuple[str, ...]
    row: dict[str, Any]


@dataclasses.dataclass
class _Outcomes:
    delivered: list[vapid.Subscription] = dataclasses.field(default_factory=list)
    gone: list[tuple[vapid.Subscription, StepError]] = dataclasses.field(default_factory=list)
    failed: list[tuple[vapid.Subscription, StepError]] = dataclasses.field(default_factory=list)
    transient: list[tuple[vapid.Subscription, StepError]] = dataclasses.field(default_factory=list)


def check_credentials(credentials: dict[str, Any], active: bool, errors: list[FieldError]) -> None:
    """Check the VAPID key pair and contact, which an active integration must have."""
    public_text = credentials.get("apiKey")
    private_text = credentials.get("secretKey")
    contact = credentials.get("from")
    hint = "; generate a key pair with `novulite vapid-keys --subject mailto:you@example.com`"
    if active:
        if not public_text:
            errors.append(FieldError("credentials.apiKey", "is required: the VAPID public key" + hint))
        if not private_text:
            errors.append(FieldError("credentials.secretKey", "is required: the VAPID private key" + hint))
        if not contact:
            errors.append(
                FieldError("credentials.from", "is required: a mailto: address or https: URL for VAPID")
            )
    public_key = None
    if isinstance(public_text, str) and public_text:
        try:
            public_key = vapid.load_public_key(public_text)
        except vapid.InvalidKey as exc:
            errors.append(FieldError("credentials.apiKey", f"{exc}{hint}"))
    if isinstance(private_text, str) and private_text:
        try:
            private_key = vapid.load_private_key(private_text)
        except vapid.InvalidKey as exc:
            errors.append(FieldError("credentials.secretKey", f"{exc}{hint}"))
        else:
            if public_key is not None and vapid.public_key_text(private_key.public_key()) != public_text:
                errors.append(
                    FieldError("credentials.apiKey", "is not the public key of credentials.secretKey")
                )
    if isinstance(contact, str) and contact and not vapid.SUBJECT_PATTERN.match(contact):
        errors.append(
            FieldError(
                "credentials.from",
                "must be a mailto: address or an https: URL, such as mailto:ops@example.com",
                contact,
            )
        )


def prepare(ctx: StepContext, integration: Any) -> StepResult | ExternalCall:
    credentials = integration.credentials or {}
    try:
        private_key = vapid.load_private_key(str(credentials.get("secretKey") or ""))
    except vapid.InvalidKey as exc:
        raise PermanentStepError(
            f"{PROVIDER_ID}: integration {integration.identifier!r}: credentials.secretKey {exc}",
            provider=PROVIDER_ID,
        ) from exc
    contact = str(credentials.get("from") or "").strip()
    if not vapid.SUBJECT_PATTERN.match(contact):
        raise PermanentStepError(
            f"{PROVIDER_ID}: integration {integration.identifier!r}: credentials.from must be a mailto: "
            "address or an https: URL",
            provider=PROVIDER_ID,
        )

    subscriptions = subscriptions_of(ctx.subscriber.channels, integration.identifier)
    if not subscriptions:
        return delivery.skipped("push", "the subscriber has no Web Push subscription", "recipient")
    settled, delivered_before = _settled_earlier(ctx.job.error)
    pending = tuple(sub for sub in subscriptions if sub.key not in settled)

    variables = ctx.variables
    title = render(ctx.controls.get("subject"), variables, "subject")
    body = render(ctx.controls.get("body"), variables, "body")
    plaintext, notes = _plaintext(ctx, title, body)
    send = _Send(
        job_id=ctx.job.id,
        subscriber_pk=ctx.subscriber.id,
        private_key=private_key,
        contact=contact,
        plaintext=plaintext,
        subscriptions=pending,
        settled=tuple(settled),
        delivered_before=delivered_before,
        notes=notes,
        row=delivery.channel_row(ctx, PROVIDER_ID, body, subject=title or None),
    )
    max_seconds = max(len(pending), 1) * (DEFAULT_TIMEOUT_SECONDS + LOOKUP_ALLOWANCE_SECONDS)
    return ExternalCall(
        perform=functools.partial(_perform, send), max_seconds=max_seconds, failure_row=send.row
    )


def subscriptions_of(channels: Any, integration_identifier: str) -> list[vapid.Subscription]:
    """Return the subscriber's Web Push subscriptions for an integration, newest last, without repeats."""
    found: dict[str, vapid.Subscription] = {}
    for entry in channels or []:
        if not isinstance(entry, dict):
            continue
        named = entry.get("integrationIdentifier")
        if named and named != integration_identifier:
            continue
        for token in (entry.get("credentials") or {}).get("deviceTokens") or []:
            if not isinstance(token, str) or not vapid.looks_like_subscription(token):
                continue
            try:
                subscription = vapid.parse_subscription(token)
            except vapid.InvalidKey:
                continue
            found.pop(subscription.endpoint, None)
            found[subscription.endpoint] = subscription
    return list(found.values())[-MAX_SUBSCRIPTIONS:]


def _settled_earlier(error: Any) -> tuple[set[str], int]:
    """Return the subscriptions an earlier attempt settled, when this attempt is its automatic retry.

    A job that failed for good and is retried by hand sends to every subscription again.
    """
    if isinstance(error, str):
        try:
            error = json.loads(error)
        except ValueError:
            return set(), 0
    if not isinstance(error, dict) or not error.get("nextRetryAt") or error.get("provider") != PROVIDER_ID:
        return set(), 0
    settled = error.get("settledSubscriptions")
    delivered = error.get("deliveredCount")
    keys = {key for key in settled if isinstance(key, str)} if isinstance(settled, list) else set()
    return keys, delivered if isinstance(delivered, int) else 0


def _plaintext(ctx: StepContext, title: str, body: str) -> tuple[bytes, tuple[str, ...]]:
    """Return the JSON the service worker receives, leaving out `data` when it would not fit."""
    message: dict[str, Any] = {
        "title": title,
        "body": body,
        "data": ctx.trigger.payload or {},
        "transactionId": ctx.job.transaction_id,
        "workflowId": ctx.workflow.workflow_id,
        "stepId": ctx.job.step_id,
        "subscriberId": ctx.subscriber.subscriber_id,
    }
    encoded = json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode()
    if len(encoded) <= MAX_PLAINTEXT_BYTES:
        return encoded, ()
    message["data"] = {}
    message["dataOmitted"] = True
    encoded = json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode()
    if len(encoded) > MAX_PLAINTEXT_BYTES:
        raise PermanentStepError(
            f"{PROVIDER_ID}: the message is {len(encoded)} bytes of JSON, over the {MAX_PLAINTEXT_BYTES} "
            "bytes one Web Push message carries; shorten the step's subject or body",
            provider=PROVIDER_ID,
        )
    return encoded, ("the trigger payload was left out of `data` because it did not fit",)


def topic_of(job_id: str) -> str:
    """Return the Topic header for a job: a push service replaces a pending message with the same topic.

    RFC 8030 allows at most 32 characters of the base64url alphabet.
    """
    return vapid.b64url_encode(hashlib.sha256(job_id.encode()).digest())[:32]


def build_request(send: _Send, subscription: vapid.Subscription, now: dt.datetime) -> ProviderRequest:
    """Encrypt the message for one subscription and sign a VAPID token for its push service."""
    target = parse_url(subscription.endpoint, PROVIDER_ID)
    audience = f"{target.scheme}://{target.netloc.decode('ascii')}"
    claims = {"sub": send.contact, "aud": audience, "exp": int(now.timestamp()) + VAPID_TOKEN_SECONDS}
    try:
        # "no-strict" lets `sub` be any https: URL; check_credentials has checked its form.
        signer = Vapid02(send.private_key, conf={"no-strict": True})
        authorization = signer.sign(claims)["Authorization"]
        encrypted = WebPusher(subscription.as_info()).encode(send.plaintext, "aes128gcm")["body"]
    except (VapidException, WebPushException, ValueError) as exc:
        raise PermanentStepError(
            f"{PROVIDER_ID}: the message for subscription {subscription.key} cannot be built: {exc}",
            provider=PROVIDER_ID,
            subscription=subscription.key,
        ) from exc
    headers = [
        ("Authorization", authorization),
        ("Content-Encoding", "aes128gcm"),
        ("TTL", str(TIME_TO_LIVE_SECONDS)),
        ("Urgency", "normal"),
        ("Topic", topic_of(send.job_id)),
    ]
    return post(PROVIDER_ID, target, encrypted, "application/octet-stream", send.job_id, headers=headers)


def _perform(send: _Send, worker: WorkerContext) -> StepResult:
    outcomes = _Outcomes()
    for subscription in send.subscriptions:
        try:
            deliver(worker, build_request(send, subscription, worker.clock.now()))
        except TransientStepError as exc:
            outcomes.transient.append((subscription, exc))
        except OutcomeUnknownError as exc:
            outcomes.failed.append((subscription, exc))
        except PermanentStepError as exc:
            if exc.info.get("status") in GONE_STATUSES:
                outcomes.gone.append((subscription, exc))
            else:
                outcomes.failed.append((subscription, exc))
        else:
            outcomes.delivered.append(subscription)
    if outcomes.gone:
        remove_subscriptions(worker, send.subscriber_pk, {sub.endpoint for sub, _ in outcomes.gone})
    return _result(send, outcomes, worker.clock.now())


def remove_subscriptions(worker: WorkerContext, subscriber_pk: str, endpoints: set[str]) -> None:
    """Remove the device tokens of gone subscriptions from every channel entry of the subscriber."""
    with worker.store.raw_write() as raw:
        row = raw.execute(
            f"SELECT channels FROM subscriber WHERE id = ?{for_update(raw)}", [subscriber_pk]
        ).fetchone()
        if row is None or not row[0]:
            return
        channels = json.loads(row[0])
        changed = False
        for entry in channels:
            credentials = entry.get("credentials") if isinstance(entry, dict) else None
            if not isinstance(credentials, dict) or not isinstance(credentials.get("deviceTokens"), list):
                continue
            tokens = credentials["deviceTokens"]
            kept = [token for token in tokens if _endpoint_of(token) not in endpoints]
            if len(kept) != len(tokens):
                credentials["deviceTokens"] = kept
                changed = True
        if changed:
            raw.execute(
                "UPDATE subscriber SET channels = ? WHERE id = ?", [json.dumps(channels), subscriber_pk]
            )
    logger.info(
        "removed %d Web Push subscription(s) of subscriber %s that the push service reported gone",
        len(endpoints),
        subscriber_pk,
    )


def _endpoint_of(token: Any) -> str | None:
    if not isinstance(token, str) or not vapid.looks_like_subscription(token):
        return None
    try:
        return vapid.parse_subscription(token).endpoint
    except vapid.InvalidKey:
        return None


def _result(send: _Send, outcomes: _Outcomes, now: dt.datetime) -> StepResult:
    """Turn the outcomes of one attempt into a result, or the StepError that retries or fails the job."""
    delivered = send.delivered_before + len(outcomes.delivered)
    total = len(send.settled) + len(send.subscriptions)
    removed = [sub.key for sub, _ in outcomes.gone]
    if outcomes.transient:
        settled = [
            *send.settled,
            *(sub.key for sub in outcomes.delivered),
            *(sub.key for sub, _ in (*outcomes.gone, *outcomes.failed)),
        ]
        first = outcomes.transient[0][1]
        waits = [
            exc.info["retryAfterSeconds"] for _, exc in outcomes.transient if "retryAfterSeconds" in exc.info
        ]
        info = dict(first.info, settledSubscriptions=settled, deliveredCount=delivered, removed=removed)
        if waits:
            info["retryAfterSeconds"] = max(waits)
        raise TransientStepError(
            f"{len(outcomes.transient)} of {total} Web Push subscription(s) not delivered yet "
            f"({delivered} delivered): {first}",
            **info,
        )

    details: list[tuple[str, str, dict[str, Any] | None]] = []
    for subscription, exc in outcomes.gone:
        details.append(
            (
                f"Web Push subscription {subscription.key} is gone (HTTP {exc.info.get('status')}); "
                "removed from the subscriber's credentials",
                "Warning",
                dict(exc.info, subscription=subscription.key),
            )
        )
    for subscription, exc in outcomes.failed:
        details.append((f"Web Push subscription {subscription.key}: {exc}", "Warning", dict(exc.info)))

    if delivered == 0 and not (outcomes.failed or outcomes.gone):
        raise PermanentStepError(
            f"{PROVIDER_ID}: none of the subscriber's Web Push subscriptions is left to send to",
            provider=PROVIDER_ID,
        )
    if delivered == 0:
        # Nothing arrived anywhere: fail with the first failure's status and excerpt.
        first_failure = (outcomes.failed or outcomes.gone)[0][1]
        info = dict(first_failure.info, removed=removed, deliveredCount=0)
        summary = (
            f"no Web Push subscription got the message ({len(removed)} removed as gone): {first_failure}"
        )
        if isinstance(first_failure, OutcomeUnknownError):
            raise OutcomeUnknownError(summary, **info)
        raise PermanentStepError(summary, **info)

    text = f"Web Push delivered to {delivered} of {total} subscription(s)"
    if send.notes:
        text = f"{text}; {'; '.join(send.notes)}"
    output = {
        "provider": PROVIDER_ID,
        "delivered": delivered,
        "subscriptions": total,
        "removed": len(removed),
        "failed": len(outcomes.failed),
    }
    result = delivery.delivered(send.row, now, text, output, {"provider": PROVIDER_ID, "removed": removed})
    result.details[:0] = details
    return result


PROVIDERS = {PROVIDER_ID: Provider(frozenset({"push"}), prepare, check_credentials)}
