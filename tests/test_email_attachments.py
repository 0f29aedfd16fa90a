"""Email attachments from payload.attachments, delivered through aiosmtpd on loopback and read back intact."""

from __future__ import annotations

import base64
from typing import Any

import httpx
import pytest

from novulite.providers.attachments import MAX_TOTAL_BYTES
from tests.pipeline import finished_jobs, server_fixtures, trigger
from tests.servers import ServerProcess
from tests.test_email import (
    Mailbox,
    add_integration,
    email_workflow,
    html_part,
    job_row,
    mailbox,
    smtp_credentials,
    text_part,
)

module_server, api = server_fixtures()
__all__ = ["mailbox"]

# Every byte value, so a text-mode or charset conversion anywhere would show.
BINARY = bytes(range(256)) * 4 + b"\r\n.\r\n\x00end"
TEXT = "Grüße, Zoë\nline two\n.\n".encode()


def encode(content: bytes) -> str:
    return base64.b64encode(content).decode()


def mail_with_attachments(
    api: httpx.Client, server: ServerProcess, port: int, name: str, attachments: Any
) -> str:
    """Email `name`@example.com with `attachments` as payload.attachments; return the transactionId."""
    identifier = add_integration(server, smtp_credentials(port))
    workflow_id = email_workflow(
        api, {"subject": "Your files", "body": "<p>Files attached</p>", "integrationIdentifier": identifier}
    )
    return trigger(
        api,
        workflow_id,
        {"subscriberId": name, "email": f"{name}@example.com"},
        payload={"attachments": attachments, "note": "x"},
    )


def test_attachments_arrive_intact(
    api: httpx.Client, module_server: ServerProcess, mailbox: tuple[Mailbox, int]
) -> None:
    handler, port = mailbox
    # The second file's base64 is wrapped in 76-character lines, as MIME encoders write it.
    wrapped = "\n".join(encode(TEXT * 20)[i : i + 76] for i in range(0, len(encode(TEXT * 20)), 76))
    attachments = [
        {"file": encode(BINARY), "name": "data.bin", "mime": "application/octet-stream"},
        {"file": wrapped, "name": "grüße résumé.txt", "mime": "text/plain"},
        {"file": encode(b"%PDF-1.4"), "name": "no-type.pdf"},
        {"file": encode(b"sms only"), "name": "sms.txt", "mime": "text/plain", "channels": ["sms"]},
        {
            "file": encode(b"email too"),
            "name": "both.txt",
            "mime": "text/plain",
            "channels": ["sms", "email"],
        },
    ]

    transaction_id = mail_with_attachments(api, module_server, port, "files", attachments)

    jobs = finished_jobs(module_server, transaction_id, 2)
    assert jobs["mail"].status == "completed", jobs["mail"]
    ((message, _),) = handler.received("files@example.com")
    assert message.get_content_type() == "multipart/mixed"
    assert html_part(message).strip() == "<p>Files attached</p>"
    assert text_part(message).strip() == "Files attached"
    received = [
        (part.get_filename(), part.get_content_type(), part.get_payload(decode=True))
        for part in message.iter_attachments()
    ]
    assert received == [
        ("data.bin", "application/octet-stream", BINARY),
        ("grüße résumé.txt", "text/plain", TEXT * 20),
        ("no-type.pdf", "application/octet-stream", b"%PDF-1.4"),
        ("both.txt", "text/plain", b"email too"),
    ]
    job = job_row(module_server, transaction_id, "mail")
    assert job["output"]["attachments"] == [
        {"name": "data.bin", "mime": "application/octet-stream", "size": len(BINARY)},
        {"name": "grüße résumé.txt", "mime": "text/plain", "size": len(TEXT * 20)},
        {"name": "no-type.pdf", "mime": "application/octet-stream", "size": 8},
        {"name": "both.txt", "mime": "text/plain", "size": 9},
    ]


def test_no_attachments_keeps_alternative(
    api: httpx.Client, module_server: ServerProcess, mailbox: tuple[Mailbox, int]
) -> None:
    handler, port = mailbox
    attachments = [{"file": encode(b"sms only"), "name": "sms.txt", "channels": ["sms"]}]

    transaction_id = mail_with_attachments(api, module_server, port, "no-files", attachments)

    jobs = finished_jobs(module_server, transaction_id, 2)
    assert jobs["mail"].status == "completed", jobs["mail"]
    ((message, _),) = handler.received("no-files@example.com")
    assert message.get_content_type() == "multipart/alternative"
    assert list(message.iter_attachments()) == []


def test_total_size_limit_fails_at_once(
    api: httpx.Client, module_server: ServerProcess, mailbox: tuple[Mailbox, int]
) -> None:
    handler, port = mailbox
    half = MAX_TOTAL_BYTES // 2 + 1
    attachments = [
        {"file": encode(b"a" * half), "name": "first.txt", "mime": "text/plain"},
        {"file": encode(b"b" * half), "name": "second.txt", "mime": "text/plain"},
    ]

    transaction_id = mail_with_attachments(api, module_server, port, "too-big", attachments)

    jobs = finished_jobs(module_server, transaction_id, 2)
    assert jobs["mail"].status == "failed", jobs["mail"]
    job = job_row(module_server, transaction_id, "mail")
    assert job["attempt"] == 1
    assert job["error"]["retryable"] is False
    assert job["error"]["message"].startswith(
        f"payload.attachments: the attachments add up to more than {MAX_TOTAL_BYTES} bytes"
    )
    assert "at payload.attachments[1]" in job["error"]["message"]
    assert handler.received("too-big@example.com") == []


@pytest.mark.parametrize(
    ("attachments", "expected"),
    [
        ({"file": "aGk="}, "payload.attachments must be a list"),
        (["aGk="], "payload.attachments[0] must be an object"),
        ([{"file": "aGk=", "mime": "text/plain"}], "payload.attachments[0].name is missing"),
        ([{"file": "aGk=", "name": "  "}], "payload.attachments[0].name is missing"),
        ([{"file": "aGk=", "name": "a\r\nb.txt"}], "payload.attachments[0].name must not contain control"),
        (
            [{"file": "aGk=", "name": "ok.txt"}, {"file": "not base64!", "name": "bad.txt"}],
            "payload.attachments[1].file is not valid base64",
        ),
        ([{"file": "aGk", "name": "short.txt"}], "payload.attachments[0].file is not valid base64"),
        ([{"name": "empty.txt"}], "payload.attachments[0].file is missing"),
        (
            [{"file": "aGk=", "name": "a.txt", "mime": "text"}],
            "payload.attachments[0].mime must be a media type",
        ),
        (
            [{"file": "aGk=", "name": "a.eml", "mime": "multipart/mixed"}],
            "payload.attachments[0].mime 'multipart/mixed' is not allowed",
        ),
        ([{"file": "aGk=", "name": "a.txt", "channels": "email"}], "payload.attachments[0].channels must be"),
    ],
    ids=[
        "not-list",
        "not-object",
        "no-name",
        "blank-name",
        "name-line-break",
        "bad-base64",
        "bad-padding",
        "no-file",
        "bad-mime",
        "multipart-mime",
        "bad-channels",
    ],
)
def test_invalid_attachment_fails_at_once(
    api: httpx.Client,
    module_server: ServerProcess,
    mailbox: tuple[Mailbox, int],
    request: pytest.FixtureRequest,
    attachments: Any,
    expected: str,
) -> None:
    handler, port = mailbox
    name = f"bad-attachment-{request.node.callspec.id}"

    transaction_id = mail_with_attachments(api, module_server, port, name, attachments)

    jobs = finished_jobs(module_server, transaction_id, 2)
    assert jobs["mail"].status == "failed", jobs["mail"]
    job = job_row(module_server, transaction_id, "mail")
    assert job["attempt"] == 1
    assert job["error"]["retryable"] is False
    assert job["error"]["message"].startswith(expected), job["error"]["message"]
    assert handler.received(f"{name}@example.com") == []
