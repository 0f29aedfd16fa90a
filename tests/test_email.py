"""Email steps delivered over SMTP to an aiosmtpd server on loopback.

No API creates integrations in these tests: `add_integration` inserts the row into
the server's SQLite file, and the server reads integrations for each job. Each
test names its own integration through the step's `integrationIdentifier`, so the
tests can share one server.

TLS (implicit and STARTTLS) is covered in test_email_tls.py.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email
import email.policy
import html
import itertools
import json
import sqlite3
import threading
from collections.abc import Iterator
from email.header import decode_header, make_header
from email.message import EmailMessage
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from novu_py import Novu

from novulite.db.fast import db_datetime
from tests.pipeline import finished_jobs, query, server_fixtures, trigger
from tests.servers import API_KEY, ServerProcess, free_port

module_server, api = server_fixtures()
_numbers = itertools.count()

SMTP_USER = "mailer"
SMTP_PASSWORD = "s3cret-pass"


class Mailbox:
    """An aiosmtpd handler that keeps accepted messages and can reply to DATA with scripted errors."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.messages: list[tuple[list[str], EmailMessage, str | None]] = []
        # Recipient -> replies to give to DATA, in turn, before accepting a message.
        self.replies: dict[str, list[str]] = {}
        self.data_commands: dict[str, int] = {}
        # Recipients whose connection is dropped after the message content arrives.
        self.drop_after_content: set[str] = set()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        recipient = envelope.rcpt_tos[0]
        with self.lock:
            self.data_commands[recipient] = self.data_commands.get(recipient, 0) + 1
            scripted = self.replies.get(recipient)
            if scripted:
                return scripted.pop(0)
            parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
            assert isinstance(parsed, EmailMessage)
            login = session.auth_data.login.decode() if session.authenticated else None
            self.messages.append((list(envelope.rcpt_tos), parsed, login))
            if recipient in self.drop_after_content:
                server.transport.abort()
        return "250 2.0.0 Message accepted"

    def received(self, recipient: str) -> list[tuple[EmailMessage, str | None]]:
        with self.lock:
            return [(message, login) for tos, message, login in self.messages if recipient in tos]


def authenticate(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
    valid = (
        isinstance(auth_data, LoginPassword)
        and auth_data.login == SMTP_USER.encode()
        and auth_data.password == SMTP_PASSWORD.encode()
    )
    # handled=False makes aiosmtpd send the 535 reply itself when the login is invalid.
    return AuthResult(success=valid, handled=False, auth_data=auth_data)


@pytest.fixture(scope="module")
def mailbox() -> Iterator[tuple[Mailbox, int]]:
    handler = Mailbox()
    port = free_port()
    controller = Controller(
        handler,
        hostname="127.0.0.1",
        port=port,
        authenticator=authenticate,
        auth_require_tls=False,
        loop=asyncio.new_event_loop(),
    )
    controller.start()
    yield handler, port
    controller.stop()


def add_integration(
    server: ServerProcess, credentials: dict[str, Any], provider_id: str = "smtp", active: bool = True
) -> str:
    """Insert an email integration into the server's database; return its identifier."""
    identifier = f"mail-{next(_numbers)}"
    now = db_datetime(dt.datetime.now(dt.UTC))
    connection = sqlite3.connect(server.data_dir / "novulite.db", timeout=10)
    try:
        with connection:
            # The server creates one environment, which the tests' API key belongs to.
            (environment_id,) = connection.execute("SELECT id FROM environment").fetchone()
            connection.execute(
                "INSERT INTO integration (id, environment_id, provider_id, channel, name, identifier, "
                'credentials, active, "primary", created_at, updated_at) '
                "VALUES (?, ?, ?, 'email', ?, ?, ?, ?, 0, ?, ?)",
                [
                    f"int-{identifier}",
                    environment_id,
                    provider_id,
                    identifier,
                    identifier,
                    json.dumps(credentials),
                    int(active),
                    now,
                    now,
                ],
            )
    finally:
        connection.close()
    return identifier


def smtp_credentials(port: int, **extra: Any) -> dict[str, Any]:
    return {
        "host": "127.0.0.1",
        "port": port,
        "from": "shop@example.com",
        "senderName": "Shop",
        **extra,
    }


def email_workflow(api: httpx.Client, controls: dict[str, Any]) -> str:
    """Create a workflow of one email step `mail` followed by an in-app step `inbox`; return its id."""
    workflow_id = f"mail-flow-{next(_numbers)}"
    workflow = {
        "name": workflow_id,
        "workflowId": workflow_id,
        "steps": [
            {"name": "Mail", "stepId": "mail", "type": "email", "controlValues": controls},
            {"name": "Inbox", "stepId": "inbox", "type": "in_app", "controlValues": {"body": "done"}},
        ],
    }
    response = api.post("/v2/workflows", json=workflow)
    assert response.status_code == 201, response.text
    return workflow_id


def send_hello(api: httpx.Client, server: ServerProcess, credentials: dict[str, Any], name: str) -> str:
    """Email `name`@example.com through a new integration with `credentials`; return the transactionId."""
    identifier = add_integration(server, credentials)
    workflow_id = email_workflow(
        api, {"subject": "Hi", "body": "<p>Hi</p>", "integrationIdentifier": identifier}
    )
    return trigger(api, workflow_id, {"subscriberId": name, "email": f"{name}@example.com"})


def job_row(server: ServerProcess, transaction_id: str, step_id: str) -> dict[str, Any]:
    (row,) = query(
        server,
        "SELECT id, status, attempt, error, output FROM job WHERE transaction_id = ? AND step_id = ?",
        (transaction_id, step_id),
    )
    return {
        "id": row["id"],
        "status": row["status"],
        "attempt": row["attempt"],
        "error": json.loads(row["error"]) if row["error"] else None,
        "output": json.loads(row["output"]) if row["output"] else None,
    }


def email_messages(server: ServerProcess, transaction_id: str) -> list[dict[str, Any]]:
    rows = query(
        server,
        "SELECT channel, subject, content, status FROM message "
        "WHERE transaction_id = ? AND channel = 'email'",
        (transaction_id,),
    )
    return [dict(row) for row in rows]


def html_part(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("html",))
    assert part is not None
    return str(part.get_content()).replace("\r\n", "\n")


def text_part(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain",))
    assert part is not None
    return str(part.get_content()).replace("\r\n", "\n")


def welcome_workflow(api: httpx.Client, server: ServerProcess, port: int) -> str:
    """Create a workflow whose email subject and body insert the payload's firstName."""
    identifier = add_integration(server, smtp_credentials(port))
    return email_workflow(
        api,
        {
            "subject": "Welcome, {{payload.firstName}}! Order {{payload.order.id}} 🎉",
            "body": "<p>Hi {{payload.firstName}}</p>",
            "integrationIdentifier": identifier,
        },
    )


def test_subject_is_plain_text_and_body_is_escaped(
    api: httpx.Client, module_server: ServerProcess, mailbox: tuple[Mailbox, int]
) -> None:
    handler, port = mailbox
    workflow_id = welcome_workflow(api, module_server, port)
    first_name = "Zoë O'Neil & Co <3"

    transaction_id = trigger(
        api,
        workflow_id,
        {"subscriberId": "zoe", "email": "zoe@example.com"},
        payload={"firstName": first_name, "order": {"id": "A-17"}},
    )

    jobs = finished_jobs(module_server, transaction_id, 2)
    assert jobs["mail"].status == "completed", jobs["mail"]
    ((message, _),) = handler.received("zoe@example.com")
    raw_subject = str(message["Subject"])
    raw_header = next(value for name, value in message.raw_items() if name == "Subject")
    assert str(make_header(decode_header(raw_header))) == f"Welcome, {first_name}! Order A-17 🎉"
    assert raw_subject == f"Welcome, {first_name}! Order A-17 🎉"
    assert "=?utf-8?" in raw_header.lower()
    for entity in ("&amp;", "&#x27;", "&#39;", "&lt;"):
        assert entity not in raw_header
        assert entity not in raw_subject
    body = html_part(message)
    assert "O&#39;Neil &amp; Co &lt;3" in body
    assert html.unescape(body).strip() == f"<p>Hi {first_name}</p>"
    assert text_part(message).strip() == f"Hi {first_name}"
    stored = email_messages(module_server, transaction_id)
    assert stored == [
        {
            "channel": "email",
            "subject": f"Welcome, {first_name}! Order A-17 🎉",
            "content": "<p>Hi Zoë O&#39;Neil &amp; Co &lt;3</p>",
            "status": "sent",
        }
    ]


def test_missing_variable_renders_empty(
    api: httpx.Client, module_server: ServerProcess, mailbox: tuple[Mailbox, int]
) -> None:
    handler, port = mailbox
    workflow_id = welcome_workflow(api, module_server, port)

    transaction_id = trigger(
        api,
        workflow_id,
        {"subscriberId": "nameless", "email": "nameless@example.com"},
        payload={"order": {"id": "A-17"}},
    )

    jobs = finished_jobs(module_server, transaction_id, 2)
    assert jobs["mail"].status == "completed", jobs["mail"]
    ((message, _),) = handler.received("nameless@example.com")
    assert str(message["Subject"]) == "Welcome, ! Order A-17 🎉"
    assert html_part(message).strip() == "<p>Hi </p>"
    assert "{{" not in str(message["Subject"])


def test_headers_parts_and_output(
    api: httpx.Client, module_server: ServerProcess, mailbox: tuple[Mailbox, int]
) -> None:
    handler, port = mailbox
    identifier = add_integration(module_server, smtp_credentials(port, replyTo="help@example.com"))
    workflow_id = email_workflow(
        api,
        {
            "subject": "Your receipt",
            "body": "<h1>Receipt</h1><p>Total: {{ payload.total }}</p><p>Thanks<br>Shop</p>",
            "integrationIdentifier": identifier,
        },
    )

    transaction_id = trigger(
        api, workflow_id, {"subscriberId": "ann", "email": "ann@example.com"}, payload={"total": "12 EUR"}
    )

    jobs = finished_jobs(module_server, transaction_id, 2)
    assert jobs["mail"].status == "completed", jobs["mail"]
    assert jobs["inbox"].status == "completed"
    ((message, login),) = handler.received("ann@example.com")
    job = job_row(module_server, transaction_id, "mail")
    assert message["From"] == "Shop <shop@example.com>"
    assert message["To"] == "ann@example.com"
    assert message["Reply-To"] == "help@example.com"
    assert message["Message-ID"] == f"<{job['id']}@novulite>"
    assert message.get_content_type() == "multipart/alternative"
    assert "<p>Total: 12 EUR</p>" in html_part(message)
    assert text_part(message) == "Receipt\nTotal: 12 EUR\nThanks\nShop\n"
    assert login is None
    assert job["output"]["provider"] == "smtp"
    assert job["output"]["messageId"] == f"<{job['id']}@novulite>"
    assert job["output"]["accepted"] == ["ann@example.com"]


def test_from_control_overrides_sender(
    api: httpx.Client, module_server: ServerProcess, mailbox: tuple[Mailbox, int]
) -> None:
    handler, port = mailbox
    identifier = add_integration(module_server, smtp_credentials(port))
    workflow_id = email_workflow(
        api,
        {
            "subject": "Hello",
            "body": "<p>Hello</p>",
            "from": {"email": "news@example.com", "name": "News Desk"},
            "replyTo": "editor@example.com",
            "integrationIdentifier": identifier,
        },
    )

    transaction_id = trigger(api, workflow_id, {"subscriberId": "bob", "email": "bob@example.com"})

    jobs = finished_jobs(module_server, transaction_id, 2)
    assert jobs["mail"].status == "completed", jobs["mail"]
    ((message, _),) = handler.received("bob@example.com")
    assert message["From"] == "News Desk <news@example.com>"
    assert message["Reply-To"] == "editor@example.com"


def test_login_with_user_and_password(
    api: httpx.Client, module_server: ServerProcess, mailbox: tuple[Mailbox, int]
) -> None:
    handler, port = mailbox
    credentials = smtp_credentials(port, user=SMTP_USER, password=SMTP_PASSWORD)

    transaction_id = send_hello(api, module_server, credentials, "cid")

    jobs = finished_jobs(module_server, transaction_id, 2)
    assert jobs["mail"].status == "completed", jobs["mail"]
    ((_, login),) = handler.received("cid@example.com")
    assert login == SMTP_USER


def test_wrong_password_fails_at_once(
    api: httpx.Client, module_server: ServerProcess, mailbox: tuple[Mailbox, int]
) -> None:
    handler, port = mailbox
    transaction_id = send_hello(
        api, module_server, smtp_credentials(port, user=SMTP_USER, password="wrong"), "dan"
    )

    jobs = finished_jobs(module_server, transaction_id, 2)
    assert jobs["mail"].status == "failed"
    job = job_row(module_server, transaction_id, "mail")
    assert job["attempt"] == 1
    assert job["error"]["code"] == 535
    assert job["error"]["provider"] == "smtp"
    assert SMTP_PASSWORD not in json.dumps(job["error"])
    assert handler.received("dan@example.com") == []


def test_temporary_reply_is_retried_then_delivered(
    api: httpx.Client, module_server: ServerProcess, mailbox: tuple[Mailbox, int]
) -> None:
    handler, port = mailbox
    handler.replies["eve@example.com"] = ["451 4.3.0 Try again later"]
    transaction_id = send_hello(api, module_server, smtp_credentials(port), "eve")

    jobs = finished_jobs(module_server, transaction_id, 2)
    assert jobs["mail"].status == "completed", jobs["mail"]
    assert handler.data_commands["eve@example.com"] == 2
    assert len(handler.received("eve@example.com")) == 1
    job = job_row(module_server, transaction_id, "mail")
    assert job["attempt"] == 2
    assert "Attempt 1 failed; retrying" in jobs["mail"].details
    assert len(email_messages(module_server, transaction_id)) == 1


def test_permanent_reply_fails_at_once(
    api: httpx.Client, module_server: ServerProcess, mailbox: tuple[Mailbox, int]
) -> None:
    handler, port = mailbox
    handler.replies["fay@example.com"] = ["550 5.7.1 Message rejected as spam"]
    transaction_id = send_hello(api, module_server, smtp_credentials(port), "fay")

    jobs = finished_jobs(module_server, transaction_id, 2)
    assert jobs["mail"].status == "failed"
    # A failed channel step does not stop the chain.
    assert jobs["inbox"].status == "completed"
    job = job_row(module_server, transaction_id, "mail")
    assert job["attempt"] == 1
    error = job["error"]
    assert error["provider"] == "smtp"
    assert error["code"] == 550
    assert "Message rejected as spam" in error["replyExcerpt"]
    assert "550" in error["message"]
    assert error["retryable"] is False
    assert error["type"] == "PermanentStepError"
    assert error["exceptionType"]
    assert handler.data_commands["fay@example.com"] == 1
    # The failed message is kept with status error, so GET /v1/messages shows the failure too.
    assert email_messages(module_server, transaction_id) == [
        {"channel": "email", "subject": "Hi", "content": "<p>Hi</p>", "status": "error"}
    ]


def test_refused_connection_is_retried(api: httpx.Client, module_server: ServerProcess) -> None:
    transaction_id = send_hello(api, module_server, smtp_credentials(free_port()), "gil")

    jobs = finished_jobs(module_server, transaction_id, 2, timeout=30)
    assert jobs["mail"].status == "failed"
    job = job_row(module_server, transaction_id, "mail")
    assert job["attempt"] == 3
    assert job["error"]["retryable"] is True
    assert job["error"]["exceptionType"] == "ConnectionRefusedError"
    assert job["error"]["stage"] == "connect"


def test_lost_reply_after_content_is_outcome_unknown(
    api: httpx.Client, module_server: ServerProcess, mailbox: tuple[Mailbox, int]
) -> None:
    handler, port = mailbox
    handler.drop_after_content.add("hal@example.com")
    transaction_id = send_hello(api, module_server, smtp_credentials(port), "hal")

    jobs = finished_jobs(module_server, transaction_id, 2)
    assert jobs["mail"].status == "failed"
    job = job_row(module_server, transaction_id, "mail")
    assert job["attempt"] == 1
    assert job["error"]["outcome"] == "unknown"
    assert job["error"]["stage"] == "content"
    assert job["error"]["type"] == "OutcomeUnknownError"
    assert len(handler.received("hal@example.com")) == 1


def test_subscriber_without_email_is_skipped(
    api: httpx.Client, module_server: ServerProcess, mailbox: tuple[Mailbox, int]
) -> None:
    _, port = mailbox
    identifier = add_integration(module_server, smtp_credentials(port))
    workflow_id = email_workflow(
        api, {"subject": "Hi", "body": "<p>Hi</p>", "integrationIdentifier": identifier}
    )

    transaction_id = trigger(api, workflow_id, "no-address")

    jobs = finished_jobs(module_server, transaction_id, 2)
    assert jobs["mail"].status == "skipped"
    assert jobs["mail"].last_detail == "the subscriber has no email address"
    assert jobs["inbox"].status == "completed"


@pytest.mark.parametrize(
    ("address", "problem"),
    [
        pytest.param("not an address", "local part with no domain", id="no-domain"),
        pytest.param("name@", "is not a valid email address", id="truncated"),
    ],
)
def test_invalid_subscriber_email_fails_at_once(
    api: httpx.Client, module_server: ServerProcess, mailbox: tuple[Mailbox, int], address: str, problem: str
) -> None:
    _, port = mailbox
    identifier = add_integration(module_server, smtp_credentials(port))
    workflow_id = email_workflow(
        api, {"subject": "Hi", "body": "<p>Hi</p>", "integrationIdentifier": identifier}
    )

    transaction_id = trigger(
        api, workflow_id, {"subscriberId": f"bad-{port}-{len(address)}", "email": address}
    )

    jobs = finished_jobs(module_server, transaction_id, 2)
    assert jobs["mail"].status == "failed"
    job = job_row(module_server, transaction_id, "mail")
    assert job["attempt"] == 1
    assert job["error"]["message"].startswith(f"subscriber.email: {address!r}")
    assert problem in job["error"]["message"]


def test_missing_host_fails_at_once(api: httpx.Client, module_server: ServerProcess) -> None:
    transaction_id = send_hello(api, module_server, {"from": "shop@example.com"}, "kim")

    jobs = finished_jobs(module_server, transaction_id, 2)
    assert jobs["mail"].status == "failed"
    job = job_row(module_server, transaction_id, "mail")
    assert job["attempt"] == 1
    assert "credentials.host is missing" in job["error"]["message"]
    assert job["error"]["provider"] == "smtp"


def test_other_provider_is_skipped(api: httpx.Client, module_server: ServerProcess) -> None:
    identifier = add_integration(module_server, {"apiKey": "key"}, provider_id="sendgrid")
    workflow_id = email_workflow(
        api, {"subject": "Hi", "body": "<p>Hi</p>", "integrationIdentifier": identifier}
    )

    transaction_id = trigger(api, workflow_id, {"subscriberId": "lea", "email": "lea@example.com"})

    jobs = finished_jobs(module_server, transaction_id, 2)
    assert jobs["mail"].status == "skipped"
    assert jobs["mail"].last_detail == (
        "the email provider 'sendgrid' is not supported; use an smtp integration"
    )


def test_inactive_integration_is_skipped(
    api: httpx.Client, module_server: ServerProcess, mailbox: tuple[Mailbox, int]
) -> None:
    handler, port = mailbox
    identifier = add_integration(module_server, smtp_credentials(port), active=False)
    workflow_id = email_workflow(
        api, {"subject": "Hi", "body": "<p>Hi</p>", "integrationIdentifier": identifier}
    )

    transaction_id = trigger(api, workflow_id, {"subscriberId": "max", "email": "max@example.com"})

    jobs = finished_jobs(module_server, transaction_id, 2)
    assert jobs["mail"].status == "skipped"
    assert jobs["mail"].last_detail == f"no active email integration has the identifier {identifier!r}"
    assert handler.received("max@example.com") == []


def test_unknown_integration_identifier_is_skipped(api: httpx.Client, module_server: ServerProcess) -> None:
    workflow_id = email_workflow(
        api, {"subject": "Hi", "body": "<p>Hi</p>", "integrationIdentifier": "no-such-integration"}
    )

    transaction_id = trigger(api, workflow_id, {"subscriberId": "ivy", "email": "ivy@example.com"})

    jobs = finished_jobs(module_server, transaction_id, 2)
    assert jobs["mail"].status == "skipped"
    assert jobs["mail"].last_detail == "no active email integration has the identifier 'no-such-integration'"


def test_no_integration_is_skipped(tmp_path: Any) -> None:
    from tests.conftest import api_client, start_server

    process = start_server(tmp_path)
    try:
        with api_client(process) as client:
            workflow_id = email_workflow(client, {"subject": "Hi", "body": "<p>Hi</p>"})
            transaction_id = trigger(client, workflow_id, {"subscriberId": "jo", "email": "jo@example.com"})
            jobs = finished_jobs(process, transaction_id, 2)
    finally:
        process.stop()
    assert jobs["mail"].status == "skipped"
    assert jobs["mail"].last_detail == "no email provider is configured"
    assert jobs["inbox"].status == "completed"


@pytest.mark.parametrize("provider_id", ["smtp", "nodemailer"])
def test_integration_made_through_api_delivers(
    api: httpx.Client, module_server: ServerProcess, mailbox: tuple[Mailbox, int], provider_id: str
) -> None:
    handler, port = mailbox
    identifier = f"relay-{provider_id}"
    recipient = f"ines-{provider_id}@example.com"
    response = api.post(
        "/v1/integrations",
        json={
            "providerId": provider_id,
            "channel": "email",
            "name": "Mail relay",
            "identifier": identifier,
            "active": True,
            "credentials": {
                "host": "127.0.0.1",
                "port": str(port),
                "from": "shop@example.com",
                "user": SMTP_USER,
                "password": SMTP_PASSWORD,
            },
        },
    )
    assert response.status_code == 201, response.text
    assert SMTP_PASSWORD not in response.text
    workflow_id = email_workflow(
        api,
        {
            "subject": "Hi {{ payload.name }}",
            "body": "<p>Hello</p>",
            "integrationIdentifier": identifier,
        },
    )

    transaction_id = trigger(
        api,
        workflow_id,
        {"subscriberId": f"ines-{provider_id}", "email": recipient},
        payload={"name": "Ines"},
    )

    jobs = finished_jobs(module_server, transaction_id, 2)
    assert jobs["mail"].status == "completed", jobs["mail"]
    ((message, login),) = handler.received(recipient)
    assert str(message["Subject"]) == "Hi Ines"
    assert login == SMTP_USER


def test_messages_list_provider_id(
    api: httpx.Client, module_server: ServerProcess, mailbox: tuple[Mailbox, int]
) -> None:
    _, port = mailbox
    transactions = {}
    for provider_id in ("smtp", "nodemailer"):
        identifier = add_integration(module_server, smtp_credentials(port), provider_id=provider_id)
        workflow_id = email_workflow(
            api, {"subject": "Hi", "body": "<p>Hi</p>", "integrationIdentifier": identifier}
        )
        name = f"listed-{provider_id}"
        transaction_id = trigger(api, workflow_id, {"subscriberId": name, "email": f"{name}@example.com"})
        jobs = finished_jobs(module_server, transaction_id, 2)
        assert jobs["mail"].status == "completed", jobs["mail"]
        transactions[provider_id] = transaction_id

    novu = Novu(secret_key=API_KEY, server_url=module_server.base_url)
    for provider_id, transaction_id in transactions.items():
        response = api.get("/v1/messages", params={"transactionId": transaction_id})
        assert response.status_code == 200, response.text
        listed = {item["channel"]: item["providerId"] for item in response.json()["data"]}
        assert listed == {"email": provider_id, "in_app": "novu"}
        parsed = novu.messages.retrieve(request={"transaction_id": [transaction_id]}).result.data
        assert {message.channel: message.provider_id for message in parsed} == {
            "email": provider_id,
            "in_app": "novu",
        }
