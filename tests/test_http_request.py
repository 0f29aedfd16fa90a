"""The http_request step against loopback stubs: responses, retries, failures, redirects and bad controls.

The module's server may reach 127.0.0.1 only because it runs with
NOVULITE_OUTBOUND_ALLOW=127.0.0.1; test_outbound.py checks what it refuses without.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from novu_py import Novu

from tests.conftest import start_server
from tests.helpers import create_workflow, read_rows
from tests.http_stub import HttpStub, Reply
from tests.pipeline import finished_jobs, messages_of, trigger
from tests.servers import API_KEY, ServerProcess

_workflow_numbers = itertools.count()


@pytest.fixture(scope="module")
def stub() -> Iterator[HttpStub]:
    server = HttpStub().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def allowed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("http-request")
    process = start_server(root, env={"NOVULITE_OUTBOUND_ALLOW": "127.0.0.1"})
    yield process
    process.stop()


@pytest.fixture
def api(allowed_server: ServerProcess) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"ApiKey {API_KEY}"}
    with httpx.Client(base_url=allowed_server.base_url, headers=headers, timeout=10) as client:
        yield client


def call_then_inbox(api: httpx.Client, controls: dict[str, Any], inbox_body: str = "done") -> str:
    """Create a workflow of an http_request step `call` and an in-app step `inbox`; return its id."""
    workflow_id = f"http-{next(_workflow_numbers)}"
    workflow = {
        "name": workflow_id,
        "workflowId": workflow_id,
        "steps": [
            {"name": "Call", "stepId": "call", "type": "http_request", "controlValues": controls},
            {"name": "Inbox", "stepId": "inbox", "type": "in_app", "controlValues": {"body": inbox_body}},
        ],
    }
    response = api.post("/v2/workflows", json=workflow)
    assert response.status_code == 201, response.text
    return workflow_id


def job_row(server: ServerProcess, transaction_id: str, step_id: str) -> dict[str, Any]:
    rows = read_rows(
        server.data_dir / "novulite.db",
        "SELECT id, status, attempt, error, output FROM job WHERE transaction_id = ? AND step_id = ?",
        (transaction_id, step_id),
    )
    job_id, status, attempt, error, output = rows[0]
    return {
        "id": job_id,
        "status": status,
        "attempt": attempt,
        "error": json.loads(error) if error else None,
        "output": json.loads(output) if output else None,
    }


# novu-py marks some fields of the notification list request as deprecated, and warns on every call.
@pytest.mark.filterwarnings("ignore:.*DEPRECATED.*:DeprecationWarning")
def test_response_feeds_later_step(api: httpx.Client, allowed_server: ServerProcess, stub: HttpStub) -> None:
    stub.route("/profile", Reply(body={"plan": "gold", "seats": [3]}, headers={"X-Request-Id": "r-1"}))
    controls = {
        "method": "POST",
        "url": stub.url("/profile"),
        "headers": [{"key": "X-Token", "value": "t-{{ payload.token }}"}],
        "body": {"user": "{{ subscriber.subscriberId }}", "count": 3, "tags": ["{{ payload.token }}"]},
    }
    workflow_id = call_then_inbox(
        api,
        controls,
        "Plan {{ steps.call.body.plan }} ({{ steps.call.status }}, {{ steps.call.body.seats[0] }})",
    )

    transaction_id = trigger(api, workflow_id, "alice", payload={"token": "abc"})

    jobs = finished_jobs(allowed_server, transaction_id, 2)
    assert jobs["call"].status == "completed"
    assert jobs["inbox"].status == "completed"
    assert [message["content"] for message in messages_of(allowed_server, transaction_id)] == [
        "Plan gold (200, 3)"
    ]
    (request,) = stub.received("/profile")
    assert request.method == "POST"
    assert request.json() == {"user": "alice", "count": 3, "tags": ["abc"]}
    assert request.headers["x-token"] == "t-abc"
    assert request.headers["content-type"] == "application/json"
    call = job_row(allowed_server, transaction_id, "call")
    assert request.headers["idempotency-key"] == call["id"]
    assert call["output"]["headers"]["x-request-id"] == "r-1"
    assert jobs["call"].last_detail == f"Request completed: POST {stub.url('/profile')} returned HTTP 200"

    novu = Novu(secret_key=API_KEY, server_url=allowed_server.base_url)
    (entry,) = novu.notifications.list(request={"transaction_id": transaction_id}).result.data
    fetched = novu.notifications.retrieve(notification_id=entry.id or "").result
    assert fetched.jobs is not None
    assert [job.type for job in fetched.jobs] == ["http_request", "in_app"]


def test_server_error_retried(api: httpx.Client, allowed_server: ServerProcess, stub: HttpStub) -> None:
    stub.route("/flaky", Reply(503, {"error": "busy"}), Reply(200, {"ok": True}))
    workflow_id = call_then_inbox(api, {"method": "PUT", "url": stub.url("/flaky"), "body": "x"})

    transaction_id = trigger(api, workflow_id, "alice")

    jobs = finished_jobs(allowed_server, transaction_id, 2)
    assert jobs["call"].status == "completed"
    assert jobs["inbox"].status == "completed"
    assert "Attempt 1 failed; retrying" in jobs["call"].details
    requests = stub.received("/flaky")
    assert len(requests) == 2
    call = job_row(allowed_server, transaction_id, "call")
    assert call["attempt"] == 2
    assert [request.headers["idempotency-key"] for request in requests] == [call["id"], call["id"]]
    assert requests[1].body == b"x"


def test_client_error_fails_at_once(api: httpx.Client, allowed_server: ServerProcess, stub: HttpStub) -> None:
    stub.route("/missing", Reply(404, b"no such user: alice", {"Content-Type": "text/plain"}))
    workflow_id = call_then_inbox(api, {"method": "DELETE", "url": stub.url("/missing")})

    transaction_id = trigger(api, workflow_id, "alice")

    jobs = finished_jobs(allowed_server, transaction_id, 2)
    assert jobs["call"].status == "failed"
    assert jobs["inbox"].status == "canceled"
    assert len(stub.received("/missing")) == 1
    error = job_row(allowed_server, transaction_id, "call")["error"]
    assert error["status"] == 404
    assert error["responseExcerpt"] == "no such user: alice"
    assert error["type"] == "PermanentStepError"
    assert error["attempt"] == 1
    assert error["retryable"] is False
    assert error["message"] == f"DELETE {stub.url('/missing')} returned HTTP 404"


def test_slow_call_does_not_delay_inbox(
    api: httpx.Client, allowed_server: ServerProcess, stub: HttpStub
) -> None:
    release = threading.Event()
    stub.route("/held", Reply(200, {"ok": True}, hold=release))
    slow_workflow = call_then_inbox(api, {"method": "POST", "url": stub.url("/held")})
    inbox_workflow = f"inbox-{next(_workflow_numbers)}"
    create_workflow(api, inbox_workflow)

    try:
        slow_transaction = trigger(api, slow_workflow, "alice")
        stub.wait_for("/held", 1)
        inbox_transaction = trigger(api, inbox_workflow, "alice", payload={"text": "fast"})
        inbox_jobs = finished_jobs(allowed_server, inbox_transaction, 1)
        assert job_row(allowed_server, slow_transaction, "call")["status"] == "running"
    finally:
        release.set()
    assert next(iter(inbox_jobs.values())).status == "completed"
    assert finished_jobs(allowed_server, slow_transaction, 2)["call"].status == "completed"


def test_continue_on_failure(api: httpx.Client, allowed_server: ServerProcess, stub: HttpStub) -> None:
    stub.route("/refuses", Reply(400, {"error": "bad"}))
    workflow_id = call_then_inbox(
        api, {"method": "POST", "url": stub.url("/refuses"), "continueOnFailure": True}, "still here"
    )

    transaction_id = trigger(api, workflow_id, "alice")

    jobs = finished_jobs(allowed_server, transaction_id, 2)
    assert jobs["call"].status == "failed"
    assert jobs["inbox"].status == "completed"
    assert [message["content"] for message in messages_of(allowed_server, transaction_id)] == ["still here"]


def test_sent_post_timeout_not_retried(
    api: httpx.Client, allowed_server: ServerProcess, stub: HttpStub
) -> None:
    stub.route("/stalls", Reply(200, {"ok": True}, delay=3))
    workflow_id = call_then_inbox(api, {"method": "POST", "url": stub.url("/stalls"), "timeout": 1})

    transaction_id = trigger(api, workflow_id, "alice")

    jobs = finished_jobs(allowed_server, transaction_id, 2)
    assert jobs["call"].status == "failed"
    assert len(stub.received("/stalls")) == 1
    error = job_row(allowed_server, transaction_id, "call")["error"]
    assert error["type"] == "OutcomeUnknownError"
    assert error["outcome"] == "unknown"
    assert error["exceptionType"] == "ReadTimeout"
    assert "not retried automatically" in error["message"]


def test_redirect_followed(api: httpx.Client, allowed_server: ServerProcess, stub: HttpStub) -> None:
    stub.route("/old", Reply(302, b"", {"Location": "/new"}))
    stub.route("/new", Reply(200, {"moved": True}))
    workflow_id = call_then_inbox(
        api,
        {"method": "POST", "url": stub.url("/old"), "body": {"a": 1}},
        "moved={{ steps.call.body.moved }}",
    )

    transaction_id = trigger(api, workflow_id, "alice")

    jobs = finished_jobs(allowed_server, transaction_id, 2)
    assert jobs["call"].status == "completed"
    assert [message["content"] for message in messages_of(allowed_server, transaction_id)] == ["moved=true"]
    (moved,) = stub.received("/new")
    # A 302 response to a POST is followed with a GET, as browsers do.
    assert moved.method == "GET"
    assert moved.body == b""


def test_redirect_to_metadata_refused(
    api: httpx.Client, allowed_server: ServerProcess, stub: HttpStub
) -> None:
    stub.route("/bounce", Reply(307, b"", {"Location": "http://169.254.169.254/latest/meta-data/"}))
    workflow_id = call_then_inbox(api, {"method": "GET", "url": stub.url("/bounce")})

    transaction_id = trigger(api, workflow_id, "alice")

    jobs = finished_jobs(allowed_server, transaction_id, 2)
    assert jobs["call"].status == "failed"
    assert len(stub.received("/bounce")) == 1
    error = job_row(allowed_server, transaction_id, "call")["error"]
    assert error["attempt"] == 1
    assert error["address"] == "169.254.169.254"
    assert "cloud metadata service" in error["message"]
    assert "NOVULITE_OUTBOUND_ALLOW" in error["message"]


def with_controls(**changes: Any) -> dict[str, Any]:
    controls: dict[str, Any] = {"method": "POST", "url": "https://hooks.example.com/x"}
    controls.update(changes)
    return {
        "name": "Bad request",
        "workflowId": "bad-http",
        "steps": [{"name": "Call", "type": "http_request", "controlValues": controls}],
    }


BAD_CONTROLS = [
    pytest.param(with_controls(method=None), "method", id="method-missing"),
    pytest.param(with_controls(method="FETCH"), "method", id="method-unknown"),
    pytest.param(with_controls(url=None), "url", id="url-missing"),
    pytest.param(with_controls(url="ftp://files.example.com/x"), "url", id="url-scheme"),
    pytest.param(with_controls(url="{{ payload.url "), "url", id="url-template"),
    pytest.param(with_controls(headers={"X-A": "b"}), "headers", id="headers-object"),
    pytest.param(with_controls(headers=[{"value": "b"}]), "headers[0].key", id="header-key-missing"),
    pytest.param(
        with_controls(headers=[{"key": "Bad Header:", "value": "b"}]),
        "headers[0].key",
        id="header-key-invalid",
    ),
    pytest.param(with_controls(headers=[{"key": "X-A"}]), "headers[0].value", id="header-value-missing"),
    pytest.param(
        with_controls(headers=[{"key": "X-A", "value": "a\r\nX-B: c"}]),
        "headers[0].value",
        id="header-value-crlf",
    ),
    pytest.param(
        with_controls(headers=[{"key": "Host", "value": "b"}]), "headers[0].key", id="header-reserved"
    ),
    pytest.param(
        with_controls(headers=[{"key": "X-A", "value": "{% if %}"}]), "headers[0].value", id="header-value"
    ),
    pytest.param(with_controls(body=3), "body", id="body-number"),
    pytest.param(with_controls(body={"a": {"b": "{{ x | }}"}}), "body.a.b", id="body-template"),
    pytest.param(with_controls(method="GET", body={"a": 1}), "body", id="body-with-get"),
    pytest.param(with_controls(timeout=0), "timeout", id="timeout-zero"),
    pytest.param(with_controls(timeout=1000), "timeout", id="timeout-too-long"),
    pytest.param(with_controls(timeout="5"), "timeout", id="timeout-string"),
    pytest.param(with_controls(continueOnFailure="yes"), "continueOnFailure", id="continue-on-failure"),
    pytest.param(
        with_controls(enforceSchemaValidation=True), "enforceSchemaValidation", id="schema-validation"
    ),
]


@pytest.mark.parametrize(("workflow", "field"), BAD_CONTROLS)
def test_bad_controls_rejected(api: httpx.Client, workflow: dict[str, Any], field: str) -> None:
    response = api.post("/v2/workflows", json=workflow)
    assert response.status_code == 400, response.text
    errors = {entry["field"]: entry["message"] for entry in response.json()["errors"]}
    assert f"steps[0].controlValues.{field}" in errors, errors
    assert api.get("/v2/workflows/bad-http").status_code == 404


def test_full_controls_saved(api: httpx.Client) -> None:
    workflow = with_controls(
        method="PATCH",
        url="https://{{ payload.host }}/x",
        headers=[{"key": "Authorization", "value": "Bearer {{ payload.token }}"}],
        body="{{ payload.text }}",
        timeout=2.5,
        continueOnFailure=False,
        enforceSchemaValidation=False,
        responseBodySchema={"type": "object"},
    )
    workflow["workflowId"] = "full-http"
    response = api.post("/v2/workflows", json=workflow)
    assert response.status_code == 201, response.text
    saved = response.json()["data"]["steps"][0]
    assert saved["type"] == "http_request"
    assert saved["controls"]["values"]["timeout"] == 2.5


def test_retry_after_is_a_floor(api: httpx.Client, allowed_server: ServerProcess, stub: HttpStub) -> None:
    stub.route("/limited", Reply(429, {"error": "slow down"}, headers={"Retry-After": "2"}), Reply(200, {}))
    workflow_id = call_then_inbox(api, {"method": "PUT", "url": stub.url("/limited"), "body": "x"})

    transaction_id = trigger(api, workflow_id, "alice")

    jobs = finished_jobs(allowed_server, transaction_id, 2)
    assert jobs["call"].status == "completed"
    first, second = stub.wait_for("/limited", 2)
    # Full jitter alone would draw the first wait from 0 to 2 s; Retry-After makes 2 s the least.
    assert second.received_at - first.received_at >= 2.0
