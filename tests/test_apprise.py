"""The apprise provider: chat, sms and push through Apprise URLs that point at a loopback stub.

Integrations are made through POST /v1/integrations. The module's server allows
127.0.0.1 as an outbound destination, so Apprise's generic json:// and form://
plugins, and ntfy:// for a service that Apprise spaces its requests to, reach the
stub. The guard tests start a second server without that allowance.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import start_server
from tests.http_stub import HttpStub, Reply
from tests.pipeline import finished_jobs, query, trigger
from tests.servers import API_KEY, ServerProcess, free_port

_numbers = itertools.count(1)
SECRET_TOKEN = "s3cr3t-token-value"


@pytest.fixture(scope="module")
def stub() -> Iterator[HttpStub]:
    server = HttpStub().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def allowed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = start_server(tmp_path_factory.mktemp("apprise"), ["--outbound-allow", "127.0.0.1"])
    yield process
    process.stop()


@pytest.fixture
def api(allowed_server: ServerProcess) -> Iterator[httpx.Client]:
    with client_for(allowed_server) as client:
        yield client


def client_for(server: ServerProcess) -> httpx.Client:
    return httpx.Client(base_url=server.base_url, headers={"Authorization": f"ApiKey {API_KEY}"}, timeout=10)


def create_integration(api: httpx.Client, channel: str, webhook_url: str) -> str:
    """Create an active apprise integration of `channel` with `webhook_url`; return its identifier."""
    identifier = f"apprise-{next(_numbers)}"
    response = api.post(
        "/v1/integrations",
        json={
            "providerId": "apprise",
            "channel": channel,
            "identifier": identifier,
            "active": True,
            "credentials": {"webhookUrl": webhook_url},
        },
    )
    assert response.status_code == 201, response.text
    return identifier


def create_workflow(api: httpx.Client, channel: str, controls: dict[str, Any], **extra: Any) -> str:
    """Create a workflow of one `channel` step `send`; return its id."""
    workflow_id = f"apprise-flow-{next(_numbers)}"
    step = {"name": "Send", "stepId": "send", "type": channel, "controlValues": {**controls, **extra}}
    response = api.post(
        "/v2/workflows", json={"name": workflow_id, "workflowId": workflow_id, "steps": [step]}
    )
    assert response.status_code == 201, response.text
    return workflow_id


def send(api: httpx.Client, channel: str, webhook_url: str, controls: dict[str, Any], **fields: Any) -> str:
    """Send one `channel` step through a new integration with `webhook_url`; return the transactionId."""
    identifier = create_integration(api, channel, webhook_url)
    workflow_id = create_workflow(api, channel, controls, integrationIdentifier=identifier)
    return trigger(api, workflow_id, f"sub-{next(_numbers)}", **fields)


def json_url(stub: HttpStub, path: str) -> str:
    return f"json://127.0.0.1:{stub.port}{path}"


def job_of(server: ServerProcess, transaction_id: str) -> dict[str, Any]:
    row = query(
        server, "SELECT status, attempt, error, output FROM job WHERE transaction_id = ?", (transaction_id,)
    )
    assert len(row) == 1
    job = dict(row[0])
    job["error"] = json.loads(job["error"]) if job["error"] else None
    job["output"] = json.loads(job["output"]) if job["output"] else None
    return job


def poll_job(
    server: ServerProcess, transaction_id: str, condition: Any, what: str, timeout: float = 15.0
) -> dict[str, Any]:
    """Wait until the transaction's job exists and meets `condition`; return it."""
    deadline = time.monotonic() + timeout
    while True:
        rows = query(server, "SELECT 1 FROM job WHERE transaction_id = ?", (transaction_id,))
        if rows:
            job = job_of(server, transaction_id)
            if condition(job):
                return job
        assert time.monotonic() < deadline, f"the job of {transaction_id} never {what}"
        time.sleep(0.05)


def message_of(server: ServerProcess, transaction_id: str) -> dict[str, Any]:
    rows = query(
        server,
        "SELECT channel, subject, content, status, provider_id FROM message WHERE transaction_id = ?",
        (transaction_id,),
    )
    assert len(rows) == 1
    return dict(rows[0])


def test_chat_body_reaches_json_url(api: httpx.Client, allowed_server: ServerProcess, stub: HttpStub) -> None:
    transaction_id = send(
        api,
        "chat",
        json_url(stub, "/chat-json"),
        {"body": "Order {{ payload.order }} shipped"},
        payload={"order": 7},
    )
    jobs = finished_jobs(allowed_server, transaction_id, 1)
    received = stub.wait_for("/chat-json", 1)
    assert jobs["send"].status == "completed"
    assert received[0].json()["message"] == "Order 7 shipped"
    assert received[0].json()["title"] == ""
    message = message_of(allowed_server, transaction_id)
    assert message["status"] == "sent"
    assert message["provider_id"] == "apprise"
    assert message["content"] == "Order 7 shipped"
    assert job_of(allowed_server, transaction_id)["output"]["services"] == ["json"]


def test_push_subject_is_title(api: httpx.Client, allowed_server: ServerProcess, stub: HttpStub) -> None:
    url = json_url(stub, "/push-json")
    transaction_id = send(
        api, "push", url, {"subject": "Hi {{ subscriber.subscriberId }}", "body": "a < b & c"}
    )
    finished_jobs(allowed_server, transaction_id, 1)
    body = stub.wait_for("/push-json", 1)[0].json()
    assert body["title"].startswith("Hi sub-")
    # Templates render as plain text: nothing is HTML-escaped.
    assert body["message"] == "a < b & c"
    assert message_of(allowed_server, transaction_id)["subject"] == body["title"]


def test_several_urls_each_receive(api: httpx.Client, allowed_server: ServerProcess, stub: HttpStub) -> None:
    port = stub.port
    urls = f"json://127.0.0.1:{port}/many-json, form://127.0.0.1:{port}/many-form"
    transaction_id = send(api, "sms", urls, {"body": "Code 1234"})
    jobs = finished_jobs(allowed_server, transaction_id, 1)
    assert jobs["send"].status == "completed"
    assert stub.wait_for("/many-json", 1)[0].json()["message"] == "Code 1234"
    form = stub.wait_for("/many-form", 1)[0]
    assert form.headers["content-type"] == "application/x-www-form-urlencoded"
    assert b"message=Code+1234" in form.body


def test_subscriber_url_overrides_integration(
    api: httpx.Client, allowed_server: ServerProcess, stub: HttpStub
) -> None:
    identifier = create_integration(api, "chat", f"json://127.0.0.1:{stub.port}/integration-url")
    workflow_id = create_workflow(api, "chat", {"body": "Hello"}, integrationIdentifier=identifier)
    subscriber_id = f"sub-{next(_numbers)}"
    assert api.post("/v2/subscribers", json={"subscriberId": subscriber_id}).status_code == 201
    response = api.put(
        f"/v1/subscribers/{subscriber_id}/credentials",
        json={
            "providerId": "chat-webhook",
            "integrationIdentifier": identifier,
            "credentials": {"webhookUrl": f"json://127.0.0.1:{stub.port}/subscriber-url"},
        },
    )
    assert response.status_code == 200, response.text
    transaction_id = trigger(api, workflow_id, subscriber_id)
    finished_jobs(allowed_server, transaction_id, 1)
    assert stub.wait_for("/subscriber-url", 1)[0].json()["message"] == "Hello"
    assert stub.received("/integration-url") == []


def test_client_error_fails_with_cause(
    api: httpx.Client, allowed_server: ServerProcess, stub: HttpStub
) -> None:
    stub.route("/gone", Reply(status=404, body={"error": "no such hook"}))
    transaction_id = send(api, "chat", f"json://127.0.0.1:{stub.port}/gone", {"body": "x"})
    jobs = finished_jobs(allowed_server, transaction_id, 1)
    assert jobs["send"].status == "failed"
    error = job_of(allowed_server, transaction_id)["error"]
    assert error["provider"] == "apprise"
    assert error["service"] == "json"
    assert error["status"] == 404
    assert error["retryable"] is False
    assert "error=404" in error["reason"]
    assert "no such hook" in error["responseExcerpt"]
    assert "HTTP 404" in error["message"]
    assert len(stub.received("/gone")) == 1
    assert message_of(allowed_server, transaction_id)["status"] == "error"


def test_server_error_is_retried(api: httpx.Client, allowed_server: ServerProcess, stub: HttpStub) -> None:
    stub.route("/flaky", Reply(status=503, body={"error": "busy"}), Reply(body={"ok": True}))
    transaction_id = send(api, "chat", f"json://127.0.0.1:{stub.port}/flaky", {"body": "retry me"})
    jobs = finished_jobs(allowed_server, transaction_id, 1, timeout=30)
    assert jobs["send"].status == "completed"
    assert "Attempt 1 failed; retrying" in jobs["send"].details
    assert [request.json()["message"] for request in stub.received("/flaky")] == ["retry me", "retry me"]
    assert job_of(allowed_server, transaction_id)["attempt"] == 2


def test_refused_connection_is_transient(api: httpx.Client, allowed_server: ServerProcess) -> None:
    port = free_port()
    transaction_id = send(api, "chat", f"json://127.0.0.1:{port}/closed", {"body": "x"})
    workflow_job = poll_job(allowed_server, transaction_id, lambda job: job["error"], "recorded an error")
    assert workflow_job["error"]["retryable"] is True
    assert workflow_job["error"]["exceptionType"] == "ConnectionError"
    assert workflow_job["error"]["provider"] == "apprise"


def test_busy_service_waits_without_blocking(
    api: httpx.Client, allowed_server: ServerProcess, stub: HttpStub
) -> None:
    # Apprise's ntfy plugin spaces requests to one server 5.5 s apart; the stub plays that server.
    identifier = create_integration(api, "push", f"ntfy://127.0.0.1:{stub.port}/alerts")
    workflow_id = create_workflow(
        api, "push", {"subject": "Alert", "body": "{{ payload.n }}"}, integrationIdentifier=identifier
    )
    first = trigger(api, workflow_id, "ntfy-a", payload={"n": "first"})
    finished_jobs(allowed_server, first, 1)
    second = trigger(api, workflow_id, "ntfy-b", payload={"n": "second"})

    waiting = poll_job(allowed_server, second, lambda job: job["status"] != "queued", "left the queue")
    assert waiting["status"] == "delayed", waiting
    assert "appriseSlotAt" in waiting["output"]

    # Another job on the same server is delivered while the ntfy job waits for its slot.
    other = send(api, "chat", f"json://127.0.0.1:{stub.port}/meanwhile", {"body": "not held up"})
    assert finished_jobs(allowed_server, other, 1)["send"].status == "completed"
    assert stub.received("/meanwhile")[0].json()["message"] == "not held up"
    assert job_of(allowed_server, second)["status"] == "delayed"
    assert [request.json()["message"] for request in stub.received("/")] == ["first"]

    jobs = finished_jobs(allowed_server, second, 1, timeout=20)
    assert jobs["send"].status == "completed"
    assert any(detail.startswith("Waiting until") for detail in jobs["send"].details)
    assert [request.json()["message"] for request in stub.received("/")] == ["first", "second"]
    assert job_of(allowed_server, second)["attempt"] == 1


def test_redirect_to_metadata_is_refused(
    api: httpx.Client, allowed_server: ServerProcess, stub: HttpStub
) -> None:
    # requests follows the redirect itself; the guard checks it before any connection opens.
    stub.route(
        "/to-metadata", Reply(status=302, headers={"Location": "http://169.254.169.254/latest/meta-data"})
    )
    transaction_id = send(api, "chat", f"json://127.0.0.1:{stub.port}/to-metadata", {"body": "x"})
    assert finished_jobs(allowed_server, transaction_id, 1)["send"].status == "failed"
    error = job_of(allowed_server, transaction_id)["error"]
    assert error["exceptionType"] == "OutboundRefused"
    assert error["address"] == "169.254.169.254"
    assert error["retryable"] is False


@pytest.fixture(scope="module")
def guarded_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server started without --outbound-allow, so loopback and private addresses are refused."""
    process = start_server(tmp_path_factory.mktemp("apprise-guarded"))
    yield process
    process.stop()


def test_loopback_refused_without_allow(guarded_server: ServerProcess, tmp_path: Path) -> None:
    untouched = HttpStub().start()
    try:
        with client_for(guarded_server) as client:
            transaction_id = send(client, "chat", f"json://127.0.0.1:{untouched.port}/hook", {"body": "x"})
            assert finished_jobs(guarded_server, transaction_id, 1)["send"].status == "failed"
        error = job_of(guarded_server, transaction_id)["error"]
        assert error["exceptionType"] == "OutboundRefused"
        assert error["address"] == "127.0.0.1"
        assert "NOVULITE_OUTBOUND_ALLOW" in error["message"]
        assert untouched.connections == 0
    finally:
        untouched.stop()


@pytest.mark.parametrize(
    ("url", "address"),
    [
        ("json://169.254.169.254/latest", "169.254.169.254"),
        ("form://10.20.30.40:8080/hook", "10.20.30.40"),
        ("json://[fd00:ec2::254]/latest", "fd00:ec2::254"),
        ("ntfy://192.168.1.9/topic", "192.168.1.9"),
    ],
)
def test_private_addresses_refused(guarded_server: ServerProcess, url: str, address: str) -> None:
    with client_for(guarded_server) as client:
        transaction_id = send(client, "sms", url, {"body": "x"})
    assert finished_jobs(guarded_server, transaction_id, 1)["send"].status == "failed"
    error = job_of(guarded_server, transaction_id)["error"]
    assert error["exceptionType"] == "OutboundRefused"
    assert error["address"] == address
    assert error["provider"] == "apprise"


def test_unknown_scheme_rejected_on_save(api: httpx.Client) -> None:
    response = api.post(
        "/v1/integrations",
        json={
            "providerId": "apprise",
            "channel": "chat",
            "active": True,
            "credentials": {"webhookUrl": f"json://127.0.0.1/ok bogus://{SECRET_TOKEN}@host/x"},
        },
    )
    assert response.status_code == 400
    assert SECRET_TOKEN not in response.text
    errors = response.json()["errors"]
    assert errors[0]["field"] == "credentials.webhookUrl"
    assert "URL 2 of 2" in errors[0]["message"]
    assert "'bogus'" in errors[0]["message"]


@pytest.mark.parametrize(
    ("credentials", "expected"),
    [
        ({}, "is required"),
        ({"webhookUrl": "   "}, "is required"),
        ({"webhookUrl": f"discord://{SECRET_TOKEN}"}, "is not a valid discord URL"),
        ({"webhookUrl": SECRET_TOKEN}, "has no scheme"),
    ],
)
def test_bad_credentials_rejected(api: httpx.Client, credentials: dict[str, Any], expected: str) -> None:
    response = api.post(
        "/v1/integrations",
        json={"providerId": "apprise", "channel": "sms", "active": True, "credentials": credentials},
    )
    assert response.status_code == 400
    assert SECRET_TOKEN not in response.text
    errors = response.json()["errors"]
    assert errors[0]["field"] == "credentials.webhookUrl"
    assert expected in errors[0]["message"]


def test_saved_url_is_masked(api: httpx.Client) -> None:
    url = f"json://user:{SECRET_TOKEN}@127.0.0.1/hook"
    response = api.post(
        "/v1/integrations",
        json={"providerId": "apprise", "channel": "push", "active": True, "credentials": {"webhookUrl": url}},
    )
    assert response.status_code == 201, response.text
    assert SECRET_TOKEN not in response.text


def test_email_channel_rejected(api: httpx.Client) -> None:
    response = api.post(
        "/v1/integrations",
        json={
            "providerId": "apprise",
            "channel": "email",
            "credentials": {"webhookUrl": "json://127.0.0.1/x"},
        },
    )
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "channel"


def test_masked_url_sent_back_is_kept(
    api: httpx.Client, allowed_server: ServerProcess, stub: HttpStub
) -> None:
    created = api.post(
        "/v1/integrations",
        json={
            "providerId": "apprise",
            "channel": "chat",
            "active": True,
            "credentials": {"webhookUrl": json_url(stub, "/kept")},
        },
    )
    assert created.status_code == 201, created.text
    integration = created.json()["data"]
    masked = integration["credentials"]["webhookUrl"]
    assert masked != json_url(stub, "/kept")

    updated = api.put(
        f"/v1/integrations/{integration['_id']}",
        json={"name": "Renamed", "credentials": {"webhookUrl": masked}},
    )
    assert updated.status_code == 200, updated.text
    workflow_id = create_workflow(
        api, "chat", {"body": "still here"}, integrationIdentifier=integration["identifier"]
    )
    transaction_id = trigger(api, workflow_id, f"sub-{next(_numbers)}")
    assert finished_jobs(allowed_server, transaction_id, 1)["send"].status == "completed"
    assert stub.wait_for("/kept", 1)[0].json()["message"] == "still here"


def test_missing_reply_is_outcome_unknown(
    api: httpx.Client, allowed_server: ServerProcess, stub: HttpStub
) -> None:
    # The stub reads the request and never replies, so the read timeout ends the call.
    release = threading.Event()
    stub.route("/silent", Reply(hold=release))
    try:
        transaction_id = send(api, "chat", json_url(stub, "/silent"), {"body": "x"})
        jobs = finished_jobs(allowed_server, transaction_id, 1, timeout=40)
    finally:
        release.set()
    assert jobs["send"].status == "failed"
    error = job_of(allowed_server, transaction_id)["error"]
    assert error["outcome"] == "unknown"
    assert error["exceptionType"] == "ReadTimeout"
    assert error["retryable"] is False
    assert len(stub.received("/silent")) == 1
