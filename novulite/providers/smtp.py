"""Email over SMTP with the standard library: message building, TLS, AUTH and failure stages.

A failure is classified by how far the exchange got. Until the server has
replied 354 to DATA, nothing can have been delivered, so a refused connection,
a timeout or a 4xx reply may be retried, and a 5xx reply is final. Once the
message content is on its way, a timeout or a lost connection leaves the outcome
unknown: the server may have queued the message before the reply was lost.
"""

from __future__ import annotations

import contextlib
import dataclasses
import email.policy
import email.utils
import html
import re
import smtplib
import ssl
from collections.abc import Sequence
from email.headerregistry import Address
from email.message import EmailMessage
from typing import Any

from novulite.providers.attachments import Attachment

PROVIDER_ID = "smtp"
# Provider ids whose integrations this module sends through: novulite's own, and "nodemailer", the
# id Novu and its SDKs give their custom SMTP provider, with the same credential names.
PROVIDER_IDS = frozenset({PROVIDER_ID, "nodemailer"})
# Seconds each connect, command or reply may take.
TIMEOUT_SECONDS = 20.0
# Characters of a server reply kept in a failure.
REPLY_EXCERPT_CHARS = 300
# A dot at the start of a line would end the data, so it is doubled, as smtplib does.
_LEADING_DOT = re.compile(rb"(?m)^\.")


class SmtpSettingsError(ValueError):
    """Integration credentials that cannot work, such as a missing host or sender."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field} {problem}")
        self.field = field
        self.problem = problem


class SmtpSendError(Exception):
    """A failed send: the reply code and text when the server gave one, and whether a retry may help.

    `retryable` is None when the outcome is unknown: the content was sent, but no reply came.
    """

    def __init__(
        self, message: str, *, retryable: bool | None, code: int | None = None, reply: str = "", stage: str
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.code = code
        self.reply = reply
        self.stage = stage


@dataclasses.dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int
    # Implicit TLS from the first byte, usually on port 465.
    secure: bool
    # Fail unless the connection can be upgraded with STARTTLS.
    require_tls: bool
    # Never upgrade with STARTTLS, even when the server offers it.
    ignore_tls: bool
    user: str
    password: str
    sender: str
    sender_name: str
    reply_to: str
    # PEM certificates from tlsOptions.ca that replace the system's trusted CAs, or "" to keep them.
    ca_certificates: str = ""

    @classmethod
    def from_credentials(cls, credentials: dict[str, Any]) -> SmtpSettings:
        """Read an smtp integration's credentials, raising SmtpSettingsError that names a bad field."""
        host = str(credentials.get("host") or "").strip()
        if not host:
            raise SmtpSettingsError("credentials.host", "is missing: set the SMTP server's host name")
        sender = str(credentials.get("from") or "").strip()
        if not sender:
            raise SmtpSettingsError("credentials.from", "is missing: set the sender's email address")
        secure = _flag(credentials.get("secure"))
        port_value = credentials.get("port") or (465 if secure else 587)
        try:
            port = int(port_value)
        except (TypeError, ValueError):
            port = 0
        if not 0 < port < 65536:
            raise SmtpSettingsError("credentials.port", f"must be a port number, got {port_value!r}")
        return cls(
            host=host,
            port=port,
            secure=secure,
            require_tls=_flag(credentials.get("requireTls")),
            ignore_tls=_flag(credentials.get("ignoreTls")),
            user=str(credentials.get("user") or ""),
            password=str(credentials.get("password") or ""),
            sender=sender,
            sender_name=str(credentials.get("senderName") or ""),
            reply_to=str(credentials.get("replyTo") or ""),
            ca_certificates=read_ca_certificates(credentials.get("tlsOptions")),
        )

    def tls_context(self) -> ssl.SSLContext:
        """Return a context that verifies the server's certificate and host name.

        The trusted CAs are tlsOptions.ca when set, else the system's, which OpenSSL
        reads from SSL_CERT_FILE or SSL_CERT_DIR when the server's environment sets them.
        """
        if self.ca_certificates:
            return ssl.create_default_context(cadata=self.ca_certificates)
        return ssl.create_default_context()


def read_ca_certificates(options: Any) -> str:
    """Read tlsOptions.ca, one PEM string or a list of them as nodemailer takes, and check that it loads.

    Of nodemailer's TLS options only `ca` is used. `rejectUnauthorized: false` is rejected rather
    than ignored, because certificate checks cannot be turned off, and other keys are ignored.
    """
    if options is None:
        return ""
    if not isinstance(options, dict):
        raise SmtpSettingsError(
            "credentials.tlsOptions", 'must be an object such as {"ca": "-----BEGIN CERTIFICATE-----..."}'
        )
    if options.get("rejectUnauthorized") is False:
        raise SmtpSettingsError(
            "credentials.tlsOptions.rejectUnauthorized",
            "cannot be false, because the server's "
            "certificate is always verified; put the CA that signed it in credentials.tlsOptions.ca",
        )
    ca = options.get("ca")
    if ca is None:
        return ""
    items = ca if isinstance(ca, list) else [ca]
    if not items or not all(isinstance(item, str) and item.strip() for item in items):
        raise SmtpSettingsError(
            "credentials.tlsOptions.ca", "must be a PEM certificate or a list of them (the CA file's text)"
        )
    bundle = "\n".join(item.strip() for item in items) + "\n"
    try:
        ssl.create_default_context(cadata=bundle)
    except (ssl.SSLError, ValueError) as exc:
        raise SmtpSettingsError(
            "credentials.tlsOptions.ca",
            f"is not a valid PEM certificate ({exc}): "
            "paste the text of the CA file, from -----BEGIN CERTIFICATE----- to -----END CERTIFICATE-----",
        ) from exc
    return bundle


def _flag(value: Any) -> bool:
    """Read a boolean credential, which integration forms may store as a string."""
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes", "on")
    return bool(value)


def html_to_text(markup: str) -> str:
    """Derive the plain-text alternative of an HTML body: tags dropped, entities decoded, blank runs cut."""
    text = re.sub(r"(?is)<(script|style|head)\b.*?</\1\s*>", "", markup)
    text = re.sub(r"(?i)<br\s*/?>", "\n", text)
    text = re.sub(r"(?i)</(p|div|h[1-6]|li|tr|table|blockquote)\s*>", "\n", text)
    text = html.unescape(re.sub(r"<[^>]+>", "", text))
    lines = [" ".join(line.split()) for line in text.splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip() + "\n"


def build_message(
    *,
    sender: Address,
    to: str,
    subject: str,
    html_body: str,
    message_id: str,
    reply_to: str = "",
    attachments: Sequence[Attachment] = (),
) -> EmailMessage:
    """Build a multipart/alternative message, inside multipart/mixed when there are attachments.

    The subject is plain text, RFC 2047-encoded where needed.
    """
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    if reply_to:
        message["Reply-To"] = reply_to
    message["Subject"] = subject
    message["Date"] = email.utils.formatdate(localtime=False, usegmt=True)
    message["Message-ID"] = message_id
    # Quoted-printable keeps non-ASCII text deliverable by servers without 8BITMIME.
    message.set_content(html_to_text(html_body), cte="quoted-printable")
    message.add_alternative(html_body, subtype="html", cte="quoted-printable")
    for attachment in attachments:
        maintype, subtype = attachment.media_type.split("/", 1)
        message.add_attachment(
            attachment.content, maintype=maintype, subtype=subtype, filename=attachment.name
        )
    return message


@dataclasses.dataclass(frozen=True)
class SendReceipt:
    accepted: list[str]
    # The server's reply to the message content, such as "250 2.0.0 Ok: queued as 1A2B".
    reply: str


def send(settings: SmtpSettings, message: EmailMessage, timeout: float = TIMEOUT_SECONDS) -> SendReceipt:
    """Deliver `message` to its To address, raising SmtpSendError with the stage where it failed."""
    stage = "connect"
    try:
        client = _connect(settings, timeout)
        with client:
            stage = "greeting"
            _secure_and_login(client, settings)
            stage = "envelope"
            recipient = str(message["To"].addresses[0].addr_spec)
            _command(client, "MAIL", *client.mail(settings.sender), stage=stage)
            _command(client, "RCPT", *client.rcpt(recipient), stage=stage)
            stage = "data"
            _command(client, "DATA", *client.docmd("DATA"), stage=stage, expected=354)
            stage = "content"
            payload = _LEADING_DOT.sub(b"..", message.as_bytes(policy=email.policy.SMTP))
            client.send(payload + b".\r\n")
            code, reply = client.getreply()
            _command(client, "message content", code, reply, stage=stage)
            # The message is accepted, so a server that drops the connection at QUIT changes nothing.
            with contextlib.suppress(smtplib.SMTPException, OSError):
                client.quit()
            return SendReceipt(accepted=[recipient], reply=f"{code} {_text(reply)}")
    except SmtpSendError:
        raise
    except smtplib.SMTPResponseException as exc:
        raise _reply_error(f"{stage} failed", exc.smtp_code, exc.smtp_error, stage) from exc
    except ssl.SSLCertVerificationError as exc:
        # A certificate that fails verification stays invalid until someone changes it or the trusted CAs.
        raise SmtpSendError(
            f"TLS certificate verification failed: {exc.verify_message or exc}, so nothing was sent. "
            "Check that the host name matches the certificate, or add the CA that signed it to "
            "credentials.tlsOptions.ca",
            retryable=False,
            stage="tls",
        ) from exc
    except smtplib.SMTPNotSupportedError as exc:
        raise SmtpSendError(f"{stage} failed: {exc}", retryable=False, stage=stage) from exc
    except (smtplib.SMTPException, OSError) as exc:
        if stage == "content":
            raise SmtpSendError(
                f"the connection failed after the message content was sent ({type(exc).__name__}: {exc}), "
                "so the server may have accepted it",
                retryable=None,
                stage=stage,
            ) from exc
        raise SmtpSendError(
            f"{stage} failed: {type(exc).__name__}: {exc}", retryable=True, stage=stage
        ) from exc


def _connect(settings: SmtpSettings, timeout: float) -> smtplib.SMTP:
    if settings.secure:
        return smtplib.SMTP_SSL(settings.host, settings.port, timeout=timeout, context=settings.tls_context())
    return smtplib.SMTP(settings.host, settings.port, timeout=timeout)


def _secure_and_login(client: smtplib.SMTP, settings: SmtpSettings) -> None:
    """Say EHLO, upgrade with STARTTLS when offered or required, and log in when a user is set."""
    client.ehlo()
    if not settings.secure and not settings.ignore_tls:
        if client.has_extn("starttls"):
            client.starttls(context=settings.tls_context())
            client.ehlo()
        elif settings.require_tls:
            raise SmtpSendError(
                f"{settings.host} does not offer STARTTLS, and the integration sets requireTls",
                retryable=False,
                stage="greeting",
            )
    if settings.user and settings.password:
        client.login(settings.user, settings.password)


def _command(
    client: smtplib.SMTP, name: str, code: int, reply: bytes, *, stage: str, expected: int = 250
) -> None:
    """Raise SmtpSendError unless the reply to `name` is `expected` (or 251 where 250 is expected)."""
    if code == expected or (expected == 250 and code == 251):
        return
    with contextlib.suppress(smtplib.SMTPException, OSError):
        client.rset()
    raise _reply_error(f"{name} rejected", code, reply, stage)


def _reply_error(what: str, code: int, reply: bytes | str, stage: str) -> SmtpSendError:
    text = _text(reply)
    # SMTP 4xx replies are transient failures, and other codes here (5xx) are permanent.
    return SmtpSendError(
        f"{what}: {code} {text}", retryable=400 <= code < 500, code=code, reply=text, stage=stage
    )


def _text(reply: bytes | str) -> str:
    text = reply.decode(errors="replace") if isinstance(reply, bytes) else str(reply)
    return " ".join(text.split())[:REPLY_EXCERPT_CHARS]
