"""Email steps over TLS: STARTTLS and implicit TLS to aiosmtpd on loopback, with certificates made per run.

The integration trusts the test CA through credentials.tlsOptions.ca, or the server
process through SSL_CERT_FILE. Certificates from another CA, or for another host
name, make the step fail at once, before AUTH, MAIL or any message content is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import json
import ssl
import threading
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from tests.certificates import Authority, make_authority, server_context
from tests.conftest import api_client, start_server
from tests.pipeline import finished_jobs, server_fixtures, trigger
from tests.servers import ServerProcess, free_port
from tests.test_email import email_workflow, job_row, send_hello, smtp_credentials

module_server, api = server_fixtures()

SMTP_USER = "tls-mailer"
SMTP_PASSWORD = "tls-s3cret-pass"


class TlsMailbox:
    """An aiosmtpd handler and authenticator that records messages, logins and whether TLS was on."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        # (recipients, message, login, over TLS)
        self.messages: list[tuple[list[str], EmailMessage, str | None, bool]] = []
        self.auth_attempts = 0
        self.mail_commands = 0

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        with self.lock:
            self.mail_commands += 1
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        login = session.auth_data.login.decode() if session.authenticated else None
        over_tls = session.ssl is not None or server.transport.get_extra_info("ssl_object") is not None
        with self.lock:
            self.messages.append((list(envelope.rcpt_tos), parsed, login, over_tls))
        return "250 2.0.0 Message accepted"

    def authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        with self.lock:
            self.auth_attempts += 1
        valid = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login == SMTP_USER.encode()
            and auth_data.password == SMTP_PASSWORD.encode()
        )
        return AuthResult(success=valid, handled=False, auth_data=auth_data)

    def received(self, recipient: str) -> list[tuple[EmailMessage, str | None, bool]]:
        with self.lock:
            return [(message, login, tls) for tos, message, login, tls in self.messages if recipient in tos]


@contextlib.contextmanager
def smtp_server(
    mode: str, context: ssl.SSLContext | None, require_starttls: bool = True
) -> Iterator[tuple[TlsMailbox, int]]:
    """Run aiosmtpd on loopback.

    Mode "starttls" offers STARTTLS, "implicit" speaks TLS from the first byte, and "plain" offers neither.
    """
    handler = TlsMailbox()
    port = free_port()
    options: dict[str, Any] = {}
    if mode == "starttls":
        options = {
            "tls_context": context,
            "require_starttls": require_starttls,
            "auth_require_tls": require_starttls,
        }
    elif mode == "implicit":
        options = {"ssl_context": context, "auth_require_tls": False}
    else:
        options = {"auth_require_tls": False}
    controller = Controller(
        handler,
        hostname="127.0.0.1",
        port=port,
        authenticator=handler.authenticate,
        loop=asyncio.new_event_loop(),
        **options,
    )
    controller.start()
    try:
        yield handler, port
    finally:
        controller.stop()


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The trusted test CA, a certificate it signed for 127.0.0.1, and certificates that must fail."""
    directory = tmp_path_factory.mktemp("certificates")
    trusted = make_authority("novulite-test-ca")
    rogue = make_authority("rogue-ca")
    ca_file = directory / "ca.pem"
    ca_file.write_text(trusted.pem)
    return {
        "ca": trusted,
        "ca_file": ca_file,
        "good": server_context(trusted, directory),
        "rogue": server_context(rogue, directory),
        "other_host": server_context(trusted, directory, hosts=("mail.example.com",)),
    }


def tls_credentials(port: int, authority: Authority | None, **extra: Any) -> dict[str, Any]:
    credentials = smtp_credentials(port, user=SMTP_USER, password=SMTP_PASSWORD, **extra)
    if authority is not None:
        credentials["tlsOptions"] = {"ca": authority.pem}
    return credentials


@pytest.mark.parametrize("mode", ["starttls", "implicit"])
def test_tls_with_auth_delivers(
    api: httpx.Client, module_server: ServerProcess, certificates: dict[str, Any], mode: str
) -> None:
    name = f"tls-{mode}"
    with smtp_server(mode, certificates["good"]) as (handler, port):
        credentials = tls_credentials(port, certificates["ca"], secure=mode == "implicit")
        transaction_id = send_hello(api, module_server, credentials, name)
        jobs = finished_jobs(module_server, transaction_id, 2)

    assert jobs["mail"].status == "completed", jobs["mail"]
    ((message, login, over_tls),) = handler.received(f"{name}@example.com")
    assert login == SMTP_USER
    assert over_tls
    assert str(message["Subject"]) == "Hi"


def test_starttls_ca_as_list_delivers(
    api: httpx.Client, module_server: ServerProcess, certificates: dict[str, Any]
) -> None:
    unrelated = make_authority("unrelated-ca")
    with smtp_server("starttls", certificates["good"]) as (handler, port):
        credentials = smtp_credentials(
            port,
            user=SMTP_USER,
            password=SMTP_PASSWORD,
            tlsOptions={"ca": [unrelated.pem, certificates["ca"].pem]},
        )
        transaction_id = send_hello(api, module_server, credentials, "tls-list")
        jobs = finished_jobs(module_server, transaction_id, 2)

    assert jobs["mail"].status == "completed", jobs["mail"]
    ((_, login, over_tls),) = handler.received("tls-list@example.com")
    assert login == SMTP_USER
    assert over_tls


@pytest.mark.parametrize(
    ("mode", "certificate", "trust", "reason"),
    [
        ("starttls", "rogue", "ca", "unable to get local issuer certificate"),
        ("implicit", "rogue", "ca", "unable to get local issuer certificate"),
        ("starttls", "good", None, "unable to get local issuer certificate"),
        ("implicit", "other_host", "ca", "IP address mismatch"),
    ],
    ids=["starttls-other-ca", "implicit-other-ca", "starttls-system-cas", "implicit-host-mismatch"],
)
def test_unverified_certificate_fails_before_sending(
    api: httpx.Client,
    module_server: ServerProcess,
    certificates: dict[str, Any],
    mode: str,
    certificate: str,
    trust: str | None,
    reason: str,
) -> None:
    name = f"bad-{mode}-{certificate}-{trust}"
    # The server does not require STARTTLS, so a client that fell back to plain text would deliver.
    with smtp_server(mode, certificates[certificate], require_starttls=False) as (handler, port):
        authority = certificates[trust] if trust else None
        credentials = tls_credentials(port, authority, secure=mode == "implicit")
        transaction_id = send_hello(api, module_server, credentials, name)
        jobs = finished_jobs(module_server, transaction_id, 2)

    assert jobs["mail"].status == "failed", jobs["mail"]
    job = job_row(module_server, transaction_id, "mail")
    assert job["attempt"] == 1
    assert job["error"]["retryable"] is False
    assert job["error"]["stage"] == "tls"
    assert job["error"]["exceptionType"] == "SSLCertVerificationError"
    assert "TLS certificate verification failed" in job["error"]["message"]
    assert reason in job["error"]["message"]
    assert "credentials.tlsOptions.ca" in job["error"]["message"]
    assert SMTP_PASSWORD not in json.dumps(job["error"])
    assert SMTP_PASSWORD not in module_server.log()
    assert handler.auth_attempts == 0
    assert handler.mail_commands == 0
    assert handler.received(f"{name}@example.com") == []


def test_require_tls_without_starttls_fails(
    api: httpx.Client, module_server: ServerProcess, certificates: dict[str, Any]
) -> None:
    with smtp_server("plain", None) as (handler, port):
        credentials = tls_credentials(port, certificates["ca"], requireTls=True)
        transaction_id = send_hello(api, module_server, credentials, "no-starttls")
        jobs = finished_jobs(module_server, transaction_id, 2)

    assert jobs["mail"].status == "failed", jobs["mail"]
    job = job_row(module_server, transaction_id, "mail")
    assert job["attempt"] == 1
    assert "does not offer STARTTLS" in job["error"]["message"]
    assert "requireTls" in job["error"]["message"]
    assert SMTP_PASSWORD not in json.dumps(job["error"])
    assert SMTP_PASSWORD not in module_server.log()
    assert handler.auth_attempts == 0
    assert handler.mail_commands == 0
    assert handler.received("no-starttls@example.com") == []


def test_ssl_cert_file_is_trusted(tmp_path: Path, certificates: dict[str, Any]) -> None:
    process = start_server(tmp_path, env={"SSL_CERT_FILE": str(certificates["ca_file"])})
    try:
        with smtp_server("implicit", certificates["good"]) as (handler, port), api_client(process) as client:
            transaction_id = send_hello(
                client, process, tls_credentials(port, None, secure=True), "cert-file"
            )
            jobs = finished_jobs(process, transaction_id, 2)
    finally:
        process.stop()

    assert jobs["mail"].status == "completed", jobs["mail"]
    ((_, login, over_tls),) = handler.received("cert-file@example.com")
    assert login == SMTP_USER
    assert over_tls


@pytest.mark.parametrize(
    ("tls_options", "field", "problem"),
    [
        ({"ca": "not a certificate"}, "credentials.tlsOptions.ca", "is not a valid PEM certificate"),
        ({"ca": ["", 3]}, "credentials.tlsOptions.ca", "must be a PEM certificate or a list of them"),
        ({"rejectUnauthorized": False}, "credentials.tlsOptions.rejectUnauthorized", "cannot be false"),
    ],
)
def test_invalid_tls_options_rejected(
    api: httpx.Client, tls_options: dict[str, Any], field: str, problem: str
) -> None:
    response = api.post(
        "/v1/integrations",
        json={
            "providerId": "smtp",
            "channel": "email",
            "credentials": {"host": "127.0.0.1", "from": "shop@example.com", "tlsOptions": tls_options},
        },
    )

    assert response.status_code == 400, response.text
    errors = {error["field"]: error["message"] for error in response.json()["errors"]}
    assert problem in errors[field]


def test_ca_saved_through_api_delivers(
    api: httpx.Client, module_server: ServerProcess, certificates: dict[str, Any]
) -> None:
    with smtp_server("starttls", certificates["good"]) as (handler, port):
        response = api.post(
            "/v1/integrations",
            json={
                "providerId": "nodemailer",
                "channel": "email",
                "name": "TLS relay",
                "identifier": "tls-relay",
                "active": True,
                "credentials": {
                    "host": "127.0.0.1",
                    "port": str(port),
                    "from": "shop@example.com",
                    "user": SMTP_USER,
                    "password": SMTP_PASSWORD,
                    "requireTls": True,
                    "tlsOptions": {"ca": certificates["ca"].pem},
                },
            },
        )
        assert response.status_code == 201, response.text
        assert response.json()["data"]["credentials"]["tlsOptions"] == {"ca": certificates["ca"].pem}
        workflow_id = email_workflow(
            api, {"subject": "Hi", "body": "<p>Hi</p>", "integrationIdentifier": "tls-relay"}
        )
        transaction_id = trigger(
            api, workflow_id, {"subscriberId": "api-tls", "email": "api-tls@example.com"}
        )
        jobs = finished_jobs(module_server, transaction_id, 2)

    assert jobs["mail"].status == "completed", jobs["mail"]
    ((_, login, over_tls),) = handler.received("api-tls@example.com")
    assert login == SMTP_USER
    assert over_tls
