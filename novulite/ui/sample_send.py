"""Send one test message through an integration with the provider code that channel steps use.

The admin integrations page calls `send_sample`. Email goes through the smtp
provider's `build_message` and `send`. SMS, chat and push-webhook integrations go
through the provider's `prepare` and the returned call's `perform`, with a stand-in
job, subscriber and workflow, so the request is built and guarded exactly as a
step's would be. Nothing is written to the job store.
"""

from __future__ import annotations

import dataclasses
import types
from email.errors import HeaderParseError
from email.headerregistry import Address
from typing import Any

from novulite.engine.context import WorkerContext
from novulite.engine.steps.base import ExternalCall, StepContext, StepError
from novulite.ids import new_id
from novulite.providers import push_webhook, smtp
from novulite.providers.registry import PROVIDERS

SUBJECT = "Test message from novulite"
WORKFLOW_ID = "novulite-admin-test"


@dataclasses.dataclass(frozen=True)
class SampleOutcome:
    """A provider's result for a test message: whether it was sent, a one-line summary and its facts."""

    sent: bool
    summary: str
    facts: dict[str, Any] = dataclasses.field(default_factory=dict)


def recipient_kind(provider_id: str, channel: str) -> str | None:
    """Return what a test message to this provider is addressed to, or None when it cannot send one."""
    if provider_id in smtp.PROVIDER_IDS:
        return "email"
    if provider_id not in PROVIDERS:
        return None
    if channel == "sms":
        return "phone"
    if channel == "chat":
        return "webhook"
    if provider_id == push_webhook.PROVIDER_ID:
        return "device token"
    return None


def send_sample(worker: WorkerContext, integration: Any, recipient: str, admin: str) -> SampleOutcome:
    """Send one test message through `integration` to `recipient`. It blocks, so call it in a thread."""
    text = f"This test message was sent by the admin {admin} from the novulite admin UI."
    if integration.provider_id in smtp.PROVIDER_IDS:
        return _send_email(integration, recipient, text)
    return _send_by_step(worker, integration, recipient, text)


def _send_email(integration: Any, recipient: str, text: str) -> SampleOutcome:
    try:
        settings = smtp.SmtpSettings.from_credentials(integration.credentials or {})
    except smtp.SmtpSettingsError as exc:
        return SampleOutcome(False, f"The integration's credentials cannot send: {exc}")
    try:
        sender = Address(display_name=settings.sender_name, addr_spec=settings.sender)
        message = smtp.build_message(
            sender=sender,
            to=Address(addr_spec=recipient).addr_spec,
            subject=SUBJECT,
            html_body=f"<p>{text}</p>",
            message_id=f"<test-{new_id()}@novulite>",
            reply_to=settings.reply_to,
        )
    except (HeaderParseError, IndexError, ValueError) as exc:
        # The parser raises IndexError for some truncated addresses, such as "name@".
        return SampleOutcome(False, f"The message cannot be built: {exc}")
    try:
        receipt = smtp.send(settings, message)
    except smtp.SmtpSendError as exc:
        facts = {"stage": exc.stage, "code": exc.code} if exc.code else {"stage": exc.stage}
        return SampleOutcome(False, str(exc), facts)
    facts = {"host": settings.host, "port": settings.port, "accepted": ", ".join(receipt.accepted)}
    return SampleOutcome(True, f"The SMTP server accepted the message: {receipt.reply}", facts)


def _send_by_step(worker: WorkerContext, integration: Any, recipient: str, text: str) -> SampleOutcome:
    provider = PROVIDERS[integration.provider_id]
    context = _step_context(worker, integration, recipient, text)
    try:
        prepared = provider.prepare(context, integration)
        if not isinstance(prepared, ExternalCall):
            # A StepResult here is a skip, such as a chat integration with no webhook URL.
            reason = (prepared.output or {}).get("skipped") or prepared.details[0][0]
            return SampleOutcome(False, f"Not sent: {reason}")
        result = prepared.perform(worker)
    except StepError as exc:
        return SampleOutcome(
            False, str(exc), {key: value for key, value in exc.info.items() if value is not None}
        )
    summary = result.details[0][0] if result.details else "Sent."
    return SampleOutcome(True, summary, dict(result.output or {}))


def _step_context(worker: WorkerContext, integration: Any, recipient: str, text: str) -> StepContext:
    """Return a StepContext of a one-off job whose subscriber is addressed at `recipient`."""
    job_id = f"test-{new_id()}"
    channels: list[dict[str, Any]] = []
    phone = None
    if integration.channel == "chat" and recipient:
        credentials: dict[str, Any] = {"webhookUrl": recipient}
        channels.append(
            {
                "providerId": integration.provider_id,
                "integrationIdentifier": integration.identifier,
                "credentials": credentials,
            }
        )
    elif integration.provider_id == push_webhook.PROVIDER_ID and recipient:
        credentials = {"deviceTokens": [recipient]}
        channels.append({"providerId": integration.provider_id, "credentials": credentials})
    elif integration.channel == "sms":
        phone = recipient
    subscriber = types.SimpleNamespace(
        id=None,
        subscriber_id=WORKFLOW_ID,
        first_name=None,
        last_name=None,
        email=None,
        phone=phone,
        avatar=None,
        locale=None,
        timezone=None,
        data={},
        channels=channels,
    )
    job = types.SimpleNamespace(
        id=job_id,
        transaction_id=job_id,
        step_id="test-message",
        environment_id=integration.environment_id,
        type=integration.channel,
        step={"controlValues": {"subject": SUBJECT, "body": text}},
    )
    workflow = types.SimpleNamespace(
        id=None, workflow_id=WORKFLOW_ID, name=SUBJECT, description=None, tags=[], severity="none"
    )
    return StepContext(
        # NOTE: the providers listed in recipient_kind build their call without the job store, so
        # no connection is passed. A provider that reads it would fail here, not in a step.
        connection=None,  # type: ignore[arg-type]
        job=job,
        notification=types.SimpleNamespace(id=None, context_keys=[]),
        trigger=types.SimpleNamespace(payload={}, overrides={}, context=None, actor=None),
        subscriber=subscriber,
        workflow=workflow,
        now=worker.clock.now(),
    )
