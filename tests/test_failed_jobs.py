"""Failed jobs: their recorded cause, GET /v1/jobs/{id}, and retry and discard from the admin UI.

The steps are http_request calls to a loopback stub, reached because the server runs
with NOVULITE_OUTBOUND_ALLOW=127.0.0.1.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import start_server
from tests.helpers import admin_session, poll, read_rows
from tests.http_stub import HttpStub, Reply
from tests.pipeline import finished_jobs, trigger
from tests.servers import API_KEY, ServerProcess

_numbers = itertools.count()


@pytest.fixture(scope="module")
def stub() -> Iterator[HttpStub]:
    server = HttpStub().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("failed-jobs")
    process = start_server(root, env={"NOVULITE_OUTBOUND_ALLOW": "127.0.0.1"})
    yield process
    process.stop()


@pytest.fixture
def api(server: ServerProcess) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"ApiKey {API_KEY}"}
    with httpx.Client(base_url=server.base_url, headers=headers, timeout=10) as client:
        yield client


def failing_call(api: httpx.Client, stub: HttpStub, path: str, **controls: Any) -> str:
    """Create a workflow of one http_request step `call` that PUTs to `path`; return its id."""
    workflow_id = f"failing-{next(_numbers)}"
    step_controls = {"method": "PUT", "url": stub.url(path), "body": "x", **controls}
    workflow = {
        "name": workflow_id,
        "workflowId": workflow_id,
        "steps": [{"name": "Call", "stepId": "call", "type": "http_request", "controlValues": step_controls}],
    }
    response = api.post("/v2/workflows", json=workflow)
    assert response.status_code == 201, response.text
    return workflow_id


def job_id_of(server: ServerProcess, transaction_id: str) -> str:
    rows = read_rows(
        server.data_dir / "novulite.db",
        "SELECT id FROM job WHERE transaction_id = ? AND step_id = 'call'",
        (transaction_id,),
    )
    return str(rows[0][0])


def csrf_token(page: str) -> str:
    match = re.search(r'name="_csrf_token" value="([^"]+)"', page)
    assert match, "the page has no CSRF token"
    return match.group(1)


def job_row_html(page: str, job_id: str) -> str:
    match = re.search(rf'<tr id="job-{job_id}">(.*?)</tr>', page, re.S)
    assert match, f"job {job_id} is not on the failed-jobs page"
    return match.group(1)


def test_exhausted_job_shows_cause(api: httpx.Client, server: ServerProcess, stub: HttpStub) -> None:
    stub.route("/busy", Reply(503, {"error": "busy <now>"}))
    workflow_id = failing_call(api, stub, "/busy", maxAttempts=2)

    transaction_id = trigger(api, workflow_id, "alice")

    jobs = finished_jobs(server, transaction_id, 1)
    assert jobs["call"].status == "failed"
    assert jobs["call"].last_detail == "Step failed after 2 attempts"
    job_id = job_id_of(server, transaction_id)
    response = api.get(f"/v1/jobs/{job_id}")
    assert response.status_code == 200, response.text
    job = response.json()["data"]
    assert job["status"] == "failed"
    assert job["attempt"] == 2
    assert job["maxAttempts"] == 2
    assert job["transactionId"] == transaction_id
    error = job["error"]
    assert error["status"] == 503
    assert error["responseExcerpt"] == '{"error": "busy <now>"}'
    assert error["retryable"] is True
    assert error["nextRetryAt"] is None
    assert error["attempt"] == 2

    with admin_session(server.base_url) as admin:
        page = admin.get("/admin/failed-jobs").text
    row = job_row_html(page, job_id)
    assert "<dt>HTTP status</dt><dd>503</dd>" in row
    assert "busy &lt;now&gt;" in row
    assert "no more retries" in row
    assert "2 of 2" in row
    assert 'name="only"' in row
    assert ">Retry</button>" in row


def test_unknown_job_is_404(api: httpx.Client) -> None:
    response = api.get("/v1/jobs/000000000000000000000000")

    assert response.status_code == 404
    assert "was not found" in response.json()["message"]


def test_retry_requeues_once(api: httpx.Client, server: ServerProcess, stub: HttpStub) -> None:
    stub.route("/later", Reply(503, {"error": "down"}))
    workflow_id = failing_call(api, stub, "/later", maxAttempts=1)
    transaction_id = trigger(api, workflow_id, "bob")
    assert finished_jobs(server, transaction_id, 1)["call"].status == "failed"
    job_id = job_id_of(server, transaction_id)
    stub.route("/later", Reply(503, {"error": "down"}), Reply(200, {"ok": True}))

    with admin_session(server.base_url) as admin:
        token = csrf_token(admin.get("/admin/failed-jobs").text)
        form = {"_csrf_token": token, "only": job_id}
        first = admin.post("/admin/failed-jobs/retry", data=form)
        second = admin.post("/admin/failed-jobs/retry", data=form)

    assert first.status_code == 303
    assert first.headers["location"] == "/admin/failed-jobs?retried=1&refused=0"
    assert second.headers["location"] == "/admin/failed-jobs?retried=0&refused=0"
    jobs = finished_jobs(server, transaction_id, 1)
    assert jobs["call"].status == "completed"
    assert jobs["call"].details.count("Retried by admin from the admin UI") == 1
    assert len(stub.wait_for("/later", 2)) == 2
    job = api.get(f"/v1/jobs/{job_id}").json()["data"]
    assert job["attempt"] == 1
    assert job["error"] is None


def test_permanent_failure_offers_no_retry(api: httpx.Client, server: ServerProcess, stub: HttpStub) -> None:
    stub.route("/reject", Reply(400, {"error": "invalid sender id"}))
    workflow_id = failing_call(api, stub, "/reject")
    transaction_id = trigger(api, workflow_id, "carol")
    assert finished_jobs(server, transaction_id, 1)["call"].status == "failed"
    job_id = job_id_of(server, transaction_id)

    with admin_session(server.base_url) as admin:
        page = admin.get("/admin/failed-jobs").text
        row = job_row_html(page, job_id)
        refused = admin.post(
            "/admin/failed-jobs/retry", data={"_csrf_token": csrf_token(page), "only": job_id}
        )
        after_retry = admin.get(refused.headers["location"]).text

    assert ">Retry</button>" not in row
    assert "No retry: the provider rejected the request with HTTP 400" in row
    assert "invalid sender id" in row
    assert refused.headers["location"] == "/admin/failed-jobs?retried=0&refused=1"
    assert "1 job cannot be fixed by a retry and stayed failed." in after_retry
    assert len(stub.received("/reject")) == 1


def test_discard_removes_from_list(api: httpx.Client, server: ServerProcess, stub: HttpStub) -> None:
    stub.route("/gone", Reply(404, {"error": "no such hook"}))
    workflow_id = failing_call(api, stub, "/gone")
    transactions = [trigger(api, workflow_id, f"dave-{index}") for index in range(2)]
    for transaction_id in transactions:
        assert finished_jobs(server, transaction_id, 1)["call"].status == "failed"
    job_ids = [job_id_of(server, transaction_id) for transaction_id in transactions]

    with admin_session(server.base_url) as admin:
        token = csrf_token(admin.get("/admin/failed-jobs").text)
        response = admin.post("/admin/failed-jobs/discard", data={"_csrf_token": token, "job_id": job_ids})
        page = admin.get(response.headers["location"]).text

    assert response.headers["location"] == "/admin/failed-jobs?discarded=2"
    assert "Discarded 2 jobs." in page
    for job_id in job_ids:
        assert f'id="job-{job_id}"' not in page
        job = api.get(f"/v1/jobs/{job_id}").json()["data"]
        assert job["status"] == "canceled"
        assert job["error"]["status"] == 404
        assert job["executionDetails"][-1]["detail"] == "Discarded by admin from the admin UI"


def test_actions_need_csrf(server: ServerProcess) -> None:
    with admin_session(server.base_url) as admin:
        retry = admin.post("/admin/failed-jobs/retry", data={"only": "x"})
        discard = admin.post("/admin/failed-jobs/discard", data={"only": "x"})

    assert retry.status_code == 403
    assert discard.status_code == 403


def test_actions_need_sign_in(server: ServerProcess) -> None:
    with httpx.Client(base_url=server.base_url, timeout=10) as anonymous:
        page = anonymous.get("/admin/failed-jobs")

    assert page.status_code == 303
    assert page.headers["location"].startswith("/admin/login")


def test_retry_resumes_stopped_chain(api: httpx.Client, server: ServerProcess, stub: HttpStub) -> None:
    stub.route("/first", Reply(503, {"error": "down"}), Reply(200, {"ok": True}))
    workflow_id = f"chain-{next(_numbers)}"
    workflow = {
        "name": workflow_id,
        "workflowId": workflow_id,
        "steps": [
            {
                "name": "Call",
                "stepId": "call",
                "type": "http_request",
                "controlValues": {"method": "PUT", "url": stub.url("/first"), "body": "x", "maxAttempts": 1},
            },
            {"name": "Inbox", "stepId": "inbox", "type": "in_app", "controlValues": {"body": "after"}},
        ],
    }
    assert api.post("/v2/workflows", json=workflow).status_code == 201
    transaction_id = trigger(api, workflow_id, "erin")
    jobs = finished_jobs(server, transaction_id, 2)
    assert jobs["call"].status == "failed"
    assert jobs["inbox"].status == "canceled"
    job_id = job_id_of(server, transaction_id)

    with admin_session(server.base_url) as admin:
        token = csrf_token(admin.get("/admin/failed-jobs").text)
        admin.post("/admin/failed-jobs/retry", data={"_csrf_token": token, "only": job_id})

    jobs = finished_jobs(server, transaction_id, 2)
    assert jobs["call"].status == "completed"
    assert jobs["inbox"].status == "completed"


def _retry_in_admin(server: ServerProcess, job_id: str) -> None:
    with admin_session(server.base_url) as admin:
        token = csrf_token(admin.get("/admin/failed-jobs").text)
        response = admin.post("/admin/failed-jobs/retry", data={"_csrf_token": token, "only": job_id})
    assert response.status_code == 303


def test_retried_delivery_replaces_its_message(
    api: httpx.Client, server: ServerProcess, stub: HttpStub
) -> None:
    """A failed delivery keeps one message row, and a retry that fails or succeeds leaves one row."""
    identifier = f"chat-retry-{next(_numbers)}"
    body = {
        "providerId": "chat-webhook",
        "channel": "chat",
        "identifier": identifier,
        "active": True,
        "credentials": {"webhookUrl": stub.url("/chat-retry")},
    }
    assert api.post("/v1/integrations", json=body).status_code == 201
    workflow_id = f"chat-retry-{next(_numbers)}"
    controls = {"body": "hello", "integrationIdentifier": identifier, "maxAttempts": 1}
    workflow = {
        "name": workflow_id,
        "workflowId": workflow_id,
        "steps": [{"name": "Chat", "stepId": "call", "type": "chat", "controlValues": controls}],
    }
    assert api.post("/v2/workflows", json=workflow).status_code == 201
    stub.route("/chat-retry", Reply(500, {"error": "relay down"}))
    transaction_id = trigger(api, workflow_id, "dora")
    assert finished_jobs(server, transaction_id, 1)["call"].status == "failed"
    job_id = job_id_of(server, transaction_id)

    def messages() -> list[tuple[str, str]]:
        database = server.data_dir / "novulite.db"
        return read_rows(database, "SELECT id, status FROM message WHERE job_id = ?", (job_id,))

    [(message_id, status)] = messages()
    assert status == "error"

    # The retry fails again: the job ends failed with the provider's cause, and the message stays one row.
    _retry_in_admin(server, job_id)
    stub.wait_for("/chat-retry", 2)
    job = poll(
        lambda: api.get(f"/v1/jobs/{job_id}").json()["data"],
        lambda data: data["status"] == "failed" and data["error"] is not None,
        "the retried job to fail again",
    )
    assert job["error"]["status"] == 500
    assert messages() == [(message_id, "error")]

    # The next retry succeeds, and the job's one message now has the status sent.
    stub.route("/chat-retry", Reply(200, {"ok": True}))
    _retry_in_admin(server, job_id)
    assert finished_jobs(server, transaction_id, 1)["call"].status == "completed"
    assert messages() == [(message_id, "sent")]
    assert "UNIQUE constraint failed" not in server.log_path.read_text()


def test_actions_keep_list_filters(api: httpx.Client, server: ServerProcess, stub: HttpStub) -> None:
    stub.route("/filtered", Reply(400, {"error": "bad"}))
    workflow_id = failing_call(api, stub, "/filtered", maxAttempts=1)
    transaction_id = trigger(api, workflow_id, "erin")
    assert finished_jobs(server, transaction_id, 1)["call"].status == "failed"
    job_id = job_id_of(server, transaction_id)

    with admin_session(server.base_url) as admin:
        listing = admin.get("/admin/failed-jobs", params={"workflow": workflow_id}).text
        assert 'name="workflow" value="' + workflow_id + '"' in listing
        form = {"_csrf_token": csrf_token(listing), "only": job_id, "workflow": workflow_id}
        retried = admin.post("/admin/failed-jobs/retry", data=form)
        discarded = admin.post("/admin/failed-jobs/discard", data=form)

    assert retried.headers["location"] == f"/admin/failed-jobs?retried=0&refused=1&workflow={workflow_id}"
    assert discarded.headers["location"] == f"/admin/failed-jobs?discarded=1&workflow={workflow_id}"
