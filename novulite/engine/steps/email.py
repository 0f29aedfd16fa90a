"""The email step: render the subject and HTML body, and send them through the environment's integration.

The integration is the one the step names in its `integrationIdentifier` control,
or else the environment's primary active email integration. Without one, or
without an email address on the subscriber, the step is skipped with the reason,
as a step blocked by preferences is, and the chain goes on.

Only the body is HTML: values inserted into it are HTML-escaped, while the
subject is plain text that the message header encodes (RFC 2047) as needed.

The message is sent after the claim has committed, with no transaction open (see
ExternalCall). Every attempt of a job carries the same Message-ID, made from the
job's id, so a repeat that at-least-once delivery brings can be recognised.
"""

from __future__ import annotations

import dataclasses
import functools
from email.errors import HeaderParseError
from email.headerregistry import Address
from typing import Any

from novulite.engine.context import WorkerContext
from novulite.engine.steps.base import (
    ExternalCall,
    PermanentStepError,
    StepContext,
    StepResult,
    TransientStepError,
)
from novulite.engine.steps.in_app import message_row
from novulite.engine.templates import render
from novulite.integrations import find_integration
from novulite.providers import smtp
from novulite.providers.attachments import Attachment, AttachmentError, read_attachments

# Each SMTP command may take the provider's timeout, and a send issues fewer than six that can wait.
MAX_CALL_SECONDS = smtp.TIMEOUT_SECONDS * 6


class OutcomeUnknownError(PermanentStepError):
    """A message whose content was sent, but whose acceptance was never confirmed."""


@dataclasses.dataclass(frozen=True)
class _Send:
    settings: smtp.SmtpSettings
    sender: Address
    to: str
    subject: str
    html: str
    reply_to: str
    message_id: str
    attachments: tuple[Attachment, ...]
    # The message row, without the status and times that the send decides.
    row: dict[str, Any]


def run(ctx: StepContext) -> StepResult | ExternalCall:
    controls = ctx.controls
    identifier = str(controls.get("integrationIdentifier") or "").strip() or None
    integration = find_integration(
        ctx.connection, ctx.job.environment_id, "email", identifier, smtp.PROVIDER_IDS
    )
    if integration is None:
        if identifier:
            return _skipped(f"no active email integration has the identifier {identifier!r}", "provider")
        return _skipped("no email provider is configured", "provider")
    if integration.provider_id not in smtp.PROVIDER_IDS:
        return _skipped(
            f"the email provider {integration.provider_id!r} is not supported; use an smtp integration",
            "provider",
        )

    to = (ctx.subscriber.email or "").strip()
    if not to:
        return _skipped("the subscriber has no email address", "recipient")

    try:
        settings = smtp.SmtpSettings.from_credentials(integration.credentials or {})
    except smtp.SmtpSettingsError as exc:
        raise PermanentStepError(
            f"integration {integration.identifier}: {exc}", provider=smtp.PROVIDER_ID
        ) from exc
    if controls.get("editorType") == "block":
        raise PermanentStepError(
            "editorType: block editor bodies are not rendered by this server; set editorType to html"
        )

    variables = ctx.variables
    subject = render(controls.get("subject"), variables, "subject")
    html = render(controls.get("body"), variables, "body", escape_html=True)
    payload = ctx.trigger.payload or {}
    try:
        attachments = read_attachments(payload.get("attachments") if isinstance(payload, dict) else None)
    except AttachmentError as exc:
        raise PermanentStepError(str(exc), provider=smtp.PROVIDER_ID) from exc
    send = _Send(
        settings=settings,
        sender=_sender(controls, settings),
        to=_address(to, "subscriber.email").addr_spec,
        subject=" ".join(subject.split()),
        html=html,
        reply_to=str(controls.get("replyTo") or "").strip() or settings.reply_to,
        message_id=f"<{ctx.job.id}@novulite>",
        attachments=tuple(attachments),
        row=message_row(
            ctx, "email", subject=subject or None, content=html, provider_id=integration.provider_id
        ),
    )
    return ExternalCall(
        perform=functools.partial(_perform, send), max_seconds=MAX_CALL_SECONDS, failure_row=send.row
    )


def _skipped(reason: str, kind: str) -> StepResult:
    return StepResult(
        status="skipped",
        output={"skipped": reason},
        details=[(reason, "Warning", {"reason": kind, "channel": "email"})],
    )


def _sender(controls: dict[str, Any], settings: smtp.SmtpSettings) -> Address:
    """Return the From address: the step's `from` control where set, else the integration's sender."""
    override = controls.get("from")
    if not isinstance(override, dict):
        override = {}
    address = str(override.get("email") or "").strip() or settings.sender
    name = str(override.get("name") or "").strip() or settings.sender_name
    return _address(address, "from", name)


def _address(addr_spec: str, field: str, display_name: str = "") -> Address:
    """Parse an email address, raising PermanentStepError that names `field` when it is invalid."""
    try:
        return Address(display_name=display_name, addr_spec=addr_spec)
    except (HeaderParseError, IndexError, ValueError) as exc:
        # The parser raises IndexError for some truncated addresses, such as "name@".
        raise PermanentStepError(f"{field}: {addr_spec!r} is not a valid email address: {exc}") from exc


def _perform(send: _Send, worker: WorkerContext) -> StepResult:
    settings = send.settings
    info: dict[str, Any] = {"provider": smtp.PROVIDER_ID, "host": settings.host, "port": settings.port}
    try:
        message = smtp.build_message(
            sender=send.sender,
            to=send.to,
            subject=send.subject,
            html_body=send.html,
            message_id=send.message_id,
            reply_to=send.reply_to,
            attachments=send.attachments,
        )
    except (HeaderParseError, IndexError, ValueError) as exc:
        raise PermanentStepError(f"the message cannot be built: {exc}", **info) from exc
    try:
        receipt = smtp.send(settings, message)
    except smtp.SmtpSendError as exc:
        _raise_failure(exc, info)
    now = worker.clock.now()
    row = dict(send.row, status="sent", created_at=now, updated_at=now)
    return StepResult(
        output={
            "provider": smtp.PROVIDER_ID,
            "messageId": send.message_id,
            "accepted": receipt.accepted,
            "response": receipt.reply,
            "attachments": [
                {"name": item.name, "mime": item.media_type, "size": len(item.content)}
                for item in send.attachments
            ],
        },
        details=[(f"Email sent through {settings.host}", "Success", dict(info, reply=receipt.reply))],
        messages=[row],
    )


def _raise_failure(exc: smtp.SmtpSendError, info: dict[str, Any]) -> None:
    cause = exc.__cause__ or exc
    failure = dict(info, stage=exc.stage, exceptionType=type(cause).__name__)
    if exc.code is not None:
        failure.update(code=exc.code, replyExcerpt=exc.reply)
    message = f"SMTP {info['host']}:{info['port']}: {exc}"
    if exc.retryable is None:
        raise OutcomeUnknownError(
            f"{message}; it is not retried automatically, so check the recipient's mailbox or the "
            "server's log and retry the job if needed (the retry carries the same Message-ID)",
            outcome="unknown",
            **failure,
        ) from exc
    if exc.retryable:
        raise TransientStepError(message, **failure) from exc
    raise PermanentStepError(message, **failure) from exc
