"""SMS steps through twilio and generic-sms integrations, against loopback HTTP stubs.

These tests also carry the retry rules of every HTTP provider (providers/http.py):
which responses fail at once, which are retried and how far apart, and that a
request sent without a response is never sent twice. The module's server may
reach 127.0.0.1 only because it runs with NOVULITE_OUTBOUND_ALLOW=127.0.0.1.
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import threading
import urllib.parse
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import start_server
from tests.helpers import admin_session, read_rows
from tests.http_stub import HttpStub, Received, Reply
from tests.pipeline import finished_jobs, trigger
from tests.servers import API_KEY, ServerProcess

TOKEN = "twilio-auth-token-5c1e9a"
API_KEY_SECRET = "generic-api-key-77d0b2"
SECRET_KEY = "generic-secret-key-1f3a"
PHONE = "+15551234567"
# The maximum wait before retry n is 2 * 2**(n-1) seconds (engine/runner.py, retry_delay).
RETRY_CAPS = (2.0, 4.0, 8.0)
# What the due-job timer and a busy test machine may add to a drawn wait.
TIMER_SLACK_SECONDS = 1.5

_numbers = itertools.count()


@pytest.fixture(scope="module")
def stub() -> Iterator[HttpStub]:
    server = HttpStub().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def sms_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("sms")
    process = start_server(root, env={"NOVULITE_OUTBOUND_ALLOW": "127.0.0.1"})
    yield process
    process.stop()


@pytest.fixture
def api(sms_server: ServerProcess) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"ApiKey {API_KEY}"}
    with httpx.Client(base_url=sms_server.base_url, headers=headers, timeout=10) as client:
        yield client


def create_integration(api: httpx.Client, provider: str, credentials: dict[str, Any]) -> str:
    """Create an active sms integration and return its identifier."""
    identifier = f"{provider}-{next(_numbers)}"
    response = api.post(
        "/v1/integrations",
        json={
            "providerId": provider,
            "channel": "sms",
            "identifier": identifier,
            "active": True,
            "credentials": credentials,
        },
    )
    assert response.status_code == 201, response.text
    return identifier


def create_sms_workflow(api: httpx.Client, identifier: str, **controls: Any) -> str:
    """Create a workflow of one sms step `sms` through the integration `identifier`; return its id."""
    workflow_id = f"sms-{next(_numbers)}"
    step_controls = {"body": "Code {{ payload.code }}", "integrationIdentifier": identifier, **controls}
    workflow = {
        "name": workflow_id,
        "workflowId": workflow_id,
        "steps": [{"name": "Sms", "stepId": "sms", "type": "sms", "controlValues": step_controls}],
    }
    response = api.post("/v2/workflows", json=workflow)
    assert response.status_code == 201, response.text
    return workflow_id


def twilio_setup(api: httpx.Client, stub: HttpStub, *replies: Reply, **controls: Any) -> tuple[str, str]:
    """Create a twilio integration on the stub with its own account, and a workflow; return (id, path)."""
    account_sid = f"AC{next(_numbers):032x}"
    path = f"/2010-04-01/Accounts/{account_sid}/Messages.json"
    stub.route(path, *replies)
    identifier = create_integration(
        api,
        "twilio",
        {"accountSid": account_sid, "token": TOKEN, "from": "+15550001111", "baseUrl": stub.url("")},
    )
    return create_sms_workflow(api, identifier, **controls), path


def send(api: httpx.Client, workflow_id: str, phone: str | None = PHONE) -> str:
    """Trigger the workflow for a new subscriber with `phone`; return the transactionId."""
    to: dict[str, Any] = {"subscriberId": f"sms-subscriber-{next(_numbers)}"}
    if phone is not None:
        to["phone"] = phone
    return trigger(api, workflow_id, to, payload={"code": "4821"})


def job_row(server: ServerProcess, transaction_id: str) -> dict[str, Any]:
    (row,) = read_rows(
        server.data_dir / "novulite.db",
        "SELECT id, status, attempt, max_attempts, error, output FROM job WHERE transaction_id = ?",
        (transaction_id,),
    )
    job_id, status, attempt, max_attempts, error, output = row
    return {
        "id": job_id,
        "status": status,
        "attempt": attempt,
        "maxAttempts": max_attempts,
        "error": json.loads(error) if error else None,
        "output": json.loads(output) if output else None,
    }


def sms_messages(api: httpx.Client, transaction_id: str) -> list[dict[str, Any]]:
    response = api.get("/v1/messages", params={"transactionId": transaction_id, "channel": "sms"})
    assert response.status_code == 200, response.text
    return list(response.json()["data"])


def notification_of(api: httpx.Client, transaction_id: str) -> dict[str, Any]:
    """Return GET /v1/notifications/{id} of the transaction's one notification."""
    listed = api.get("/v1/notifications", params={"transactionId": transaction_id})
    assert listed.status_code == 200, listed.text
    (entry,) = listed.json()["data"]
    response = api.get(f"/v1/notifications/{entry['_id']}")
    assert response.status_code == 200, response.text
    return dict(response.json()["data"])


def gaps(requests: list[Received]) -> list[float]:
    return [later.received_at - earlier.received_at for earlier, later in itertools.pairwise(requests)]


def assert_no_more_requests(stub: HttpStub, path: str, count: int, seconds: float) -> None:
    """Wait `seconds` for a request beyond `count` to `path`, and fail if one arrives."""
    with pytest.raises(AssertionError, match=f"received {count} of {count + 1} requests"):
        stub.wait_for(path, count + 1, timeout=seconds)


def test_twilio_delivers(api: httpx.Client, sms_server: ServerProcess, stub: HttpStub) -> None:
    workflow_id, path = twilio_setup(
        api, stub, Reply(201, {"sid": "SM0001", "status": "queued", "date_created": "Sat, 05 Dec 2026"})
    )

    transaction_id = send(api, workflow_id, phone="+1 (555) 123-4567")

    jobs = finished_jobs(sms_server, transaction_id, 1)
    assert jobs["sms"].status == "completed"
    assert jobs["sms"].last_detail == "SMS sent through twilio"
    (request,) = stub.received(path)
    assert request.method == "POST"
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    form = urllib.parse.parse_qs(request.body.decode())
    assert form == {"To": [PHONE], "From": ["+15550001111"], "Body": ["Code 4821"]}
    scheme, encoded = request.headers["authorization"].split(" ")
    assert scheme == "Basic"
    account_sid = path.split("/")[3]
    assert base64.b64decode(encoded).decode() == f"{account_sid}:{TOKEN}"
    job = job_row(sms_server, transaction_id)
    assert request.headers["idempotency-key"] == job["id"]
    assert job["output"]["messageId"] == "SM0001"
    assert job["output"]["provider"] == "twilio"

    (message,) = sms_messages(api, transaction_id)
    assert message["providerId"] == "twilio"
    assert message["status"] == "sent"
    assert message["content"] == "Code 4821"


def test_client_error_fails_at_once(api: httpx.Client, sms_server: ServerProcess, stub: HttpStub) -> None:
    workflow_id, path = twilio_setup(api, stub, Reply(400, {"error": "invalid sender id"}))

    transaction_id = send(api, workflow_id)

    jobs = finished_jobs(sms_server, transaction_id, 1)
    assert jobs["sms"].status == "failed"
    assert len(stub.received(path)) == 1
    error = job_row(sms_server, transaction_id)["error"]
    assert error["retryable"] is False
    assert error["nextRetryAt"] is None

    notification = notification_of(api, transaction_id)
    (job,) = notification["jobs"]
    assert job["status"] == "failed"
    recorded = json.loads(job["executionDetails"][-1]["raw"])
    assert recorded["provider"] == "twilio"
    assert recorded["status"] == 400
    assert "invalid sender id" in recorded["responseExcerpt"]
    assert "invalid sender id" in recorded["message"]
    assert recorded["attempt"] == 1
    assert recorded["retryable"] is False
    assert recorded["nextRetryAt"] is None
    assert TOKEN not in json.dumps(notification)

    (message,) = sms_messages(api, transaction_id)
    assert message["providerId"] == "twilio"
    assert message["status"] == "error"
    assert message["errorId"] == "PermanentStepError"
    assert "invalid sender id" in message["errorText"]
    assert message["deliveredAt"] == []

    job_id = job_row(sms_server, transaction_id)["id"]
    fetched = api.get(f"/v1/jobs/{job_id}").json()["data"]
    assert fetched["providerId"] == "twilio"
    assert fetched["error"]["status"] == 400
    assert "invalid sender id" in fetched["error"]["responseExcerpt"]
    with admin_session(sms_server.base_url) as admin:
        page = admin.get("/admin/failed-jobs").text
    row = re.search(rf'<tr id="job-{job_id}">(.*?)</tr>', page, re.S)
    assert row, "the failed job is not on the failed-jobs page"
    assert "<dt>Provider</dt><dd>twilio</dd>" in row.group(1)
    assert "<dt>HTTP status</dt><dd>400</dd>" in row.group(1)
    assert "invalid sender id" in row.group(1)
    assert "<dt>Next retry</dt><dd>no more retries</dd>" in row.group(1)
    assert "No retry: the provider rejected the request with HTTP 400" in row.group(1)


def test_server_error_retried(api: httpx.Client, sms_server: ServerProcess, stub: HttpStub) -> None:
    workflow_id, path = twilio_setup(api, stub, Reply(503, {"error": "busy"}), Reply(201, {"sid": "SM0002"}))

    transaction_id = send(api, workflow_id)

    jobs = finished_jobs(sms_server, transaction_id, 1, timeout=20)
    assert jobs["sms"].status == "completed"
    first, second = stub.received(path)
    assert first.headers["idempotency-key"] == second.headers["idempotency-key"]
    assert "Attempt 1 failed; retrying" in jobs["sms"].details
    job = job_row(sms_server, transaction_id)
    assert job["attempt"] == 2
    assert job["output"]["messageId"] == "SM0002"
    (message,) = sms_messages(api, transaction_id)
    assert message["status"] == "sent"


def test_retry_after_respected(api: httpx.Client, sms_server: ServerProcess, stub: HttpStub) -> None:
    workflow_id, path = twilio_setup(
        api,
        stub,
        Reply(429, {"error": "slow down"}, headers={"Retry-After": "2"}),
        Reply(201, {"sid": "SM0003"}),
    )

    transaction_id = send(api, workflow_id)

    jobs = finished_jobs(sms_server, transaction_id, 1, timeout=20)
    assert jobs["sms"].status == "completed"
    requests = stub.received(path)
    assert len(requests) == 2
    # 1.9 rather than 2: the server schedules the retry by its own clock, not the stub's monotonic one.
    (gap,) = gaps(requests)
    assert gap >= 1.9


def test_backoff_within_caps(api: httpx.Client, sms_server: ServerProcess, stub: HttpStub) -> None:
    workflow_id, path = twilio_setup(api, stub, Reply(503, {"error": "down"}), maxAttempts=4)

    transaction_id = send(api, workflow_id)

    requests = stub.wait_for(path, 4, timeout=sum(RETRY_CAPS) + 4 * TIMER_SLACK_SECONDS)
    jobs = finished_jobs(sms_server, transaction_id, 1)
    assert jobs["sms"].status == "failed"
    assert jobs["sms"].last_detail == "Step failed after 4 attempts"
    for gap, cap in zip(gaps(requests), RETRY_CAPS, strict=True):
        assert gap <= cap + TIMER_SLACK_SECONDS
    assert len({request.headers["idempotency-key"] for request in requests}) == 1
    job = job_row(sms_server, transaction_id)
    assert requests[0].headers["idempotency-key"] == job["id"]
    assert job["error"]["attempt"] == 4
    assert job["error"]["maxAttempts"] == 4
    assert job["error"]["status"] == 503
    assert job["error"]["nextRetryAt"] is None
    assert len(stub.received(path)) == 4


def test_max_attempts_one(api: httpx.Client, sms_server: ServerProcess, stub: HttpStub) -> None:
    workflow_id, path = twilio_setup(api, stub, Reply(503, {"error": "down"}), maxAttempts=1)

    transaction_id = send(api, workflow_id)

    jobs = finished_jobs(sms_server, transaction_id, 1)
    assert jobs["sms"].status == "failed"
    job = job_row(sms_server, transaction_id)
    assert job["maxAttempts"] == 1
    assert job["error"]["retryable"] is True
    assert job["error"]["nextRetryAt"] is None
    assert_no_more_requests(stub, path, 1, RETRY_CAPS[0] + TIMER_SLACK_SECONDS)


def test_slow_success_not_repeated(api: httpx.Client, sms_server: ServerProcess, stub: HttpStub) -> None:
    workflow_id, path = twilio_setup(api, stub, Reply(201, {"sid": "SM-late"}, delay=3.0), timeout=1)

    transaction_id = send(api, workflow_id)

    jobs = finished_jobs(sms_server, transaction_id, 1)
    assert jobs["sms"].status == "failed"
    error = job_row(sms_server, transaction_id)["error"]
    assert error["type"] == "OutcomeUnknownError"
    assert error["outcome"] == "unknown"
    assert error["retryable"] is False
    assert error["nextRetryAt"] is None
    # A retry would have come within the first cap; none may.
    assert_no_more_requests(stub, path, 1, RETRY_CAPS[0] + TIMER_SLACK_SECONDS)
    (message,) = sms_messages(api, transaction_id)
    assert message["status"] == "error"


def test_stalled_provider_names_exception(
    api: httpx.Client, sms_server: ServerProcess, stub: HttpStub
) -> None:
    release = threading.Event()
    workflow_id, path = twilio_setup(api, stub, Reply(hold=release), timeout=1)
    try:
        transaction_id = send(api, workflow_id)

        jobs = finished_jobs(sms_server, transaction_id, 1)
    finally:
        release.set()
    assert jobs["sms"].status == "failed"
    assert len(stub.received(path)) == 1
    error = job_row(sms_server, transaction_id)["error"]
    assert error["exceptionType"] in ("TimeoutError", "ReadTimeout")
    assert error["message"].strip()
    with admin_session(sms_server.base_url) as admin:
        page = admin.get("/admin/failed-jobs").text
    row = re.search(rf'<tr id="job-{job_row(sms_server, transaction_id)["id"]}">(.*?)</tr>', page, re.S)
    assert row, "the failed job is not on the failed-jobs page"
    assert f"<dt>Exception</dt><dd>{error['exceptionType']}</dd>" in row.group(1)
    assert "{}" not in row.group(1)
    assert "twilio" in error["message"]
    assert jobs["sms"].error
    assert TOKEN not in json.dumps(error)


def test_generic_sms_delivers(api: httpx.Client, sms_server: ServerProcess, stub: HttpStub) -> None:
    path = f"/generic/{next(_numbers)}/send"
    stub.route(path, Reply(200, {"result": {"messageId": 991, "sentAt": "2026-12-05T04:00:00Z"}}))
    identifier = create_integration(
        api,
        "generic-sms",
        {
            "baseUrl": stub.url(path),
            "apiKeyRequestHeader": "X-Api-Key",
            "apiKey": API_KEY_SECRET,
            "secretKeyRequestHeader": "X-Secret-Key",
            "secretKey": SECRET_KEY,
            "from": "Shop",
            "idPath": "result.messageId",
            "datePath": "result.sentAt",
        },
    )
    workflow_id = create_sms_workflow(api, identifier)

    transaction_id = send(api, workflow_id)

    jobs = finished_jobs(sms_server, transaction_id, 1)
    assert jobs["sms"].status == "completed"
    (request,) = stub.received(path)
    assert request.json() == {"to": PHONE, "content": "Code 4821", "from": "Shop", "sender": "Shop"}
    assert request.headers["x-api-key"] == API_KEY_SECRET
    assert request.headers["x-secret-key"] == SECRET_KEY
    assert request.headers["content-type"] == "application/json"
    job = job_row(sms_server, transaction_id)
    assert request.headers["idempotency-key"] == job["id"]
    assert job["output"]["messageId"] == "991"
    (message,) = sms_messages(api, transaction_id)
    assert message["providerId"] == "generic-sms"
    assert message["status"] == "sent"


def test_generic_sms_token_auth(api: httpx.Client, sms_server: ServerProcess, stub: HttpStub) -> None:
    base = f"/generic/{next(_numbers)}"
    stub.route(f"{base}/auth", Reply(200, {"data": {"X-Access-Token": "session-token-1"}}))
    stub.route(f"{base}/send", Reply(200, {"id": "g-1"}))
    identifier = create_integration(
        api,
        "generic-sms",
        {
            "baseUrl": stub.url(f"{base}/send"),
            "apiKeyRequestHeader": "X-Api-Key",
            "apiKey": API_KEY_SECRET,
            "from": "+15550002222",
            "authenticateByToken": True,
            "domain": stub.url(f"{base}/auth"),
            "authenticationTokenKey": "X-Access-Token",
        },
    )
    workflow_id = create_sms_workflow(api, identifier)

    transaction_id = send(api, workflow_id)

    jobs = finished_jobs(sms_server, transaction_id, 1)
    assert jobs["sms"].status == "completed"
    (auth,) = stub.received(f"{base}/auth")
    assert auth.headers["x-api-key"] == API_KEY_SECRET
    (request,) = stub.received(f"{base}/send")
    assert request.headers["x-access-token"] == "session-token-1"
    assert job_row(sms_server, transaction_id)["output"]["messageId"] == "g-1"


def test_missing_phone_skipped(api: httpx.Client, sms_server: ServerProcess, stub: HttpStub) -> None:
    workflow_id, path = twilio_setup(api, stub, Reply(201, {"sid": "SM-never"}))

    transaction_id = send(api, workflow_id, phone=None)

    jobs = finished_jobs(sms_server, transaction_id, 1)
    assert jobs["sms"].status == "skipped"
    assert jobs["sms"].last_detail == "the subscriber has no phone number"
    (raw,) = read_rows(
        sms_server.data_dir / "novulite.db",
        "SELECT d.raw FROM execution_detail d JOIN job j ON j.id = d.job_id "
        "WHERE j.transaction_id = ? AND d.detail = ?",
        (transaction_id, "the subscriber has no phone number"),
    )
    assert json.loads(raw[0]) == {"reason": "recipient", "channel": "sms"}
    assert stub.received(path) == []


def test_invalid_phone_fails(api: httpx.Client, sms_server: ServerProcess, stub: HttpStub) -> None:
    workflow_id, path = twilio_setup(api, stub, Reply(201, {"sid": "SM-never"}))

    transaction_id = send(api, workflow_id, phone="call me maybe")

    jobs = finished_jobs(sms_server, transaction_id, 1)
    assert jobs["sms"].status == "failed"
    assert jobs["sms"].error is not None
    assert "subscriber.phone" in jobs["sms"].error
    error = job_row(sms_server, transaction_id)["error"]
    assert error["retryable"] is False
    assert stub.received(path) == []


def test_secrets_kept_out_of_log(sms_server: ServerProcess) -> None:
    # Runs after the tests above have failed sends with these credentials.
    log = sms_server.log_path.read_text()
    assert "twilio" in log
    for secret in (TOKEN, API_KEY_SECRET, SECRET_KEY):
        assert secret not in log


CREDENTIAL_ERRORS = [
    pytest.param(
        "twilio",
        {"accountSid": "AC1", "token": "t", "from": "+15550001111", "baseUrl": "ftp://example.com"},
        "credentials.baseUrl",
        id="twilio-base-url-scheme",
    ),
    pytest.param(
        "twilio", {"token": "t", "from": "+1555"}, "credentials.accountSid", id="twilio-sid-missing"
    ),
    pytest.param(
        "twilio", {"accountSid": "AC1", "from": "+1555"}, "credentials.token", id="twilio-token-missing"
    ),
    pytest.param(
        "twilio",
        {"accountSid": "AC/../x", "token": "t", "from": "+1"},
        "credentials.accountSid",
        id="twilio-sid",
    ),
    pytest.param(
        "generic-sms",
        {"apiKeyRequestHeader": "X-Api-Key", "apiKey": "k", "from": "Shop"},
        "credentials.baseUrl",
        id="generic-base-url-missing",
    ),
    pytest.param(
        "generic-sms",
        {"baseUrl": "not a url", "apiKeyRequestHeader": "X-Api-Key", "apiKey": "k", "from": "Shop"},
        "credentials.baseUrl",
        id="generic-base-url-invalid",
    ),
    pytest.param(
        "generic-sms",
        {
            "baseUrl": "https://sms.example.com",
            "apiKeyRequestHeader": "X Api Key",
            "apiKey": "k",
            "from": "S",
        },
        "credentials.apiKeyRequestHeader",
        id="generic-header-name",
    ),
    pytest.param(
        "generic-sms",
        {
            "baseUrl": "https://sms.example.com",
            "apiKeyRequestHeader": "X-Api-Key",
            "apiKey": "k\r\nX: y",
            "from": "S",
        },
        "credentials.apiKey",
        id="generic-api-key-line-break",
    ),
    pytest.param(
        "generic-sms",
        {
            "baseUrl": "https://sms.example.com",
            "apiKeyRequestHeader": "X-Api-Key",
            "apiKey": "k",
            "from": "S",
            "authenticateByToken": True,
        },
        "credentials.domain",
        id="generic-token-auth-url",
    ),
]


@pytest.mark.parametrize(("provider", "credentials", "field"), CREDENTIAL_ERRORS)
def test_bad_credentials_rejected(
    api: httpx.Client, provider: str, credentials: dict[str, Any], field: str
) -> None:
    response = api.post(
        "/v1/integrations",
        json={"providerId": provider, "channel": "sms", "active": True, "credentials": credentials},
    )
    assert response.status_code == 400, response.text
    assert field in [entry["field"] for entry in response.json()["errors"]]
    for entry in response.json()["errors"]:
        assert entry.get("value") not in ("t", "k\r\nX: y")


def test_inactive_integration_may_be_incomplete(api: httpx.Client) -> None:
    response = api.post(
        "/v1/integrations",
        json={"providerId": "generic-sms", "channel": "sms", "active": False, "credentials": {"from": "S"}},
    )
    assert response.status_code == 201, response.text


@pytest.mark.parametrize(
    ("controls", "field"),
    [
        pytest.param({"maxAttempts": 0}, "maxAttempts", id="max-attempts-zero"),
        pytest.param({"maxAttempts": 11}, "maxAttempts", id="max-attempts-eleven"),
        pytest.param({"maxAttempts": "3"}, "maxAttempts", id="max-attempts-string"),
        pytest.param({"maxAttempts": 2.5}, "maxAttempts", id="max-attempts-fraction"),
        pytest.param({"timeout": 0}, "timeout", id="timeout-zero"),
        pytest.param({"timeout": "1"}, "timeout", id="timeout-string"),
    ],
)
def test_bad_step_controls_rejected(api: httpx.Client, controls: dict[str, Any], field: str) -> None:
    workflow = {
        "name": "rejected sms",
        "workflowId": "rejected-sms",
        "steps": [
            {"name": "Sms", "stepId": "sms", "type": "sms", "controlValues": {"body": "x", **controls}}
        ],
    }
    response = api.post("/v2/workflows", json=workflow)
    assert response.status_code == 400, response.text
    errors = {entry["field"]: entry["message"] for entry in response.json()["errors"]}
    assert f"steps[0].controlValues.{field}" in errors
    assert api.get("/v2/workflows/rejected-sms").status_code == 404
