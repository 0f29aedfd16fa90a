"""The admin Activity pages and the failed-jobs filters against a running server.

Failing steps call a loopback HTTP stub, reached because the server runs with
NOVULITE_OUTBOUND_ALLOW=127.0.0.1. With `maxAttempts` 1, a failed call fails the job at once.
"""

from __future__ import annotations

import datetime as dt
import html
import itertools
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import Browser, Page

from tests.conftest import ServerMode, start_server
from tests.helpers import admin_session, create_workflow, read_rows
from tests.http_stub import HttpStub, Reply
from tests.pipeline import finished_jobs, trigger
from tests.servers import API_KEY, ServerProcess, free_port
from tests.test_admin_ui import (
    DESKTOP_VIEWPORT,
    PHONE_VIEWPORT,
    needs_chromium,
    open_context,
    sign_in,
)

pytestmark = pytest.mark.both_modes

REPO_ROOT = Path(__file__).resolve().parent.parent
DOCS_SCREENSHOTS = REPO_ROOT / "docs" / "screenshots"
# Set to 1 to copy the screenshots this module takes over those in docs/screenshots.
UPDATE_SCREENSHOTS_VARIABLE = "NOVULITE_UPDATE_SCREENSHOTS"

_numbers = itertools.count()


def unique(prefix: str) -> str:
    return f"{prefix}-{next(_numbers)}"


@pytest.fixture(scope="module")
def stub(server_mode: ServerMode) -> Iterator[HttpStub]:
    """An HTTP stub for each server mode's server, because a route keeps the replies it has not sent."""
    server = HttpStub().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, server_mode: ServerMode) -> Iterator[ServerProcess]:
    process = start_server(
        tmp_path_factory.mktemp("admin-activity"),
        env={"NOVULITE_OUTBOUND_ALLOW": "127.0.0.1"},
        mode=server_mode,
    )
    yield process
    process.stop()


@pytest.fixture
def api(server: ServerProcess) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"ApiKey {API_KEY}"}
    with httpx.Client(base_url=server.base_url, headers=headers, timeout=10) as client:
        yield client


@pytest.fixture
def admin(server: ServerProcess) -> Iterator[httpx.Client]:
    with admin_session(server.base_url) as client:
        yield client


def calling_workflow(api: httpx.Client, url: str, **controls: Any) -> str:
    """Create a workflow of one http_request step `call` that PUTs to `url` once, and return its id."""
    workflow_id = unique("calling")
    step_controls = {"method": "PUT", "url": url, "body": "x", "maxAttempts": 1, **controls}
    workflow = {
        "name": workflow_id,
        "workflowId": workflow_id,
        "steps": [{"name": "Call", "stepId": "call", "type": "http_request", "controlValues": step_controls}],
    }
    response = api.post("/v2/workflows", json=workflow)
    assert response.status_code == 201, response.text
    return workflow_id


def chat_workflow(api: httpx.Client, webhook_url: str) -> str:
    """Create a chat-webhook integration and a workflow of one chat step `notify` through it."""
    integration = unique("hook")
    response = api.post(
        "/v1/integrations",
        json={
            "providerId": "chat-webhook",
            "channel": "chat",
            "identifier": integration,
            "active": True,
            "credentials": {"webhookUrl": webhook_url},
        },
    )
    assert response.status_code == 201, response.text
    workflow_id = unique("deploy-alert")
    step = {
        "name": "Notify",
        "stepId": "notify",
        "type": "chat",
        "controlValues": {
            "body": "Deploy {{ payload.version }} finished",
            "integrationIdentifier": integration,
            "maxAttempts": 1,
        },
    }
    response = api.post(
        "/v2/workflows", json={"name": workflow_id, "workflowId": workflow_id, "steps": [step]}
    )
    assert response.status_code == 201, response.text
    return workflow_id


def listed_transactions(page: str) -> list[str]:
    """Return the transaction ids of the Activity page's rows, top to bottom."""
    found = re.findall(r'<td data-label="Transaction id"><code class="wrap">([^<]*)</code>', page)
    return [html.unescape(value) for value in found]


def notification_id_of(server: ServerProcess, transaction_id: str) -> str:
    rows = read_rows(
        server.database,
        "SELECT id FROM notification WHERE transaction_id = ?",
        (transaction_id,),
    )
    return str(rows[0][0])


def job_id_of(server: ServerProcess, transaction_id: str) -> str:
    rows = read_rows(server.database, "SELECT id FROM job WHERE transaction_id = ?", (transaction_id,))
    return str(rows[0][0])


def csrf_token(page: str) -> str:
    match = re.search(r'name="_csrf_token" value="([^"]+)"', page)
    assert match, "the page has no CSRF token"
    return match.group(1)


def failed_job_ids(page: str) -> set[str]:
    return set(re.findall(r'<tr id="job-(\w+)">', page))


def test_pages_redirect_without_session(server: ServerProcess) -> None:
    for path in ["/admin/activity", "/admin/activity/000000000000000000000000"]:
        response = httpx.get(f"{server.base_url}{path}", follow_redirects=False, timeout=10)
        assert response.status_code == 303, f"{path}: {response.status_code}"
        assert response.headers["location"] == f"/admin/login?next={path}"


def test_list_filters(api: httpx.Client, server: ServerProcess, stub: HttpStub, admin: httpx.Client) -> None:
    shipped, reset = unique("order-shipped"), unique("password-reset")
    create_workflow(api, shipped)
    create_workflow(api, reset)
    first = trigger(api, shipped, {"subscriberId": "ann"}, payload={"text": "one"})
    finished_jobs(server, first, 1)
    second = trigger(api, shipped, {"subscriberId": "ann"}, payload={"text": "two"})
    other = trigger(api, reset, {"subscriberId": "ben"}, payload={"text": "three"})
    stub.route("/list-down", Reply(500, {"error": "down"}))
    failing = calling_workflow(api, stub.url("/list-down"))
    failed = trigger(api, failing, {"subscriberId": "ann"})
    for transaction_id in (second, other, failed):
        finished_jobs(server, transaction_id, 1)

    everything = admin.get("/admin/activity")
    assert everything.status_code == 200
    listed = listed_transactions(everything.text)
    assert {first, second, other, failed} <= set(listed)
    assert listed.index(second) < listed.index(first), "newest first"
    assert 'aria-current="page">Activity' in everything.text

    def transactions(**params: str) -> list[str]:
        response = admin.get("/admin/activity", params=params)
        assert response.status_code == 200, response.text
        return listed_transactions(response.text)

    assert transactions(workflow=shipped) == [second, first]
    assert set(transactions(subscriberIds="ben")) >= {other}
    assert first not in transactions(subscriberIds="ben")
    assert transactions(transactionId=other) == [other]
    assert transactions(workflow=shipped, subscriberIds="ben") == []
    failed_only = transactions(status="failed")
    assert failed in failed_only
    assert first not in failed_only
    assert transactions(status="completed", workflow=failing) == []

    # The stored creation time, to the microsecond: `after` keeps it, `before` leaves it out.
    (created,) = read_rows(
        server.database,
        "SELECT created_at FROM notification WHERE transaction_id = ?",
        (second,),
    )[0]
    at = dt.datetime.fromisoformat(created).isoformat()
    assert transactions(workflow=shipped, after=at) == [second]
    assert transactions(workflow=shipped, before=at) == [first]
    assert transactions(workflow=shipped, after="2999-01-01T00:00") == []

    empty = admin.get("/admin/activity", params={"transactionId": "no-such-transaction"})
    assert empty.status_code == 200
    assert "No notification matches these filters." in empty.text
    assert 'value="no-such-transaction"' in empty.text

    bad_time = admin.get("/admin/activity", params={"after": "yesterday"})
    assert bad_time.status_code == 400
    assert "From: must be an ISO 8601 date or date-time" in bad_time.text
    bad_status = admin.get("/admin/activity", params={"status": "lost"})
    assert bad_status.status_code == 400
    assert "Status: must be one of pending, queued" in bad_status.text


def test_list_pages(api: httpx.Client, server: ServerProcess, admin: httpx.Client) -> None:
    workflow_id = unique("digest-paging")
    create_workflow(api, workflow_id)
    # One trigger to 51 subscribers makes 51 notifications, one more than a page.
    recipients = [{"subscriberId": f"paged-{index}"} for index in range(51)]
    transaction_id = trigger(api, workflow_id, recipients, payload={"text": "paged"})
    finished_jobs(server, transaction_id, 51)

    first = admin.get("/admin/activity", params={"workflow": workflow_id}).text
    second = admin.get("/admin/activity", params={"workflow": workflow_id, "page": "2"}).text

    assert len(listed_transactions(first)) == 50
    assert f'href="?workflow={workflow_id}&amp;page=2" rel="next"' in first
    assert len(listed_transactions(second)) == 1
    assert 'rel="next"' not in second
    assert f'href="?workflow={workflow_id}&amp;page=1" rel="prev"' in second


def test_detail_shows_jobs_and_message(api: httpx.Client, server: ServerProcess, admin: httpx.Client) -> None:
    workflow_id = unique("welcome")
    create_workflow(api, workflow_id, body="Hello <i>{{ payload.text }}</i>")
    transaction_id = trigger(api, workflow_id, {"subscriberId": "cleo"}, payload={"text": "friend & co"})
    finished_jobs(server, transaction_id, 1)

    page = admin.get(f"/admin/activity/{notification_id_of(server, transaction_id)}")

    assert page.status_code == 200
    text = page.text
    assert f'<code class="identifier">{workflow_id}</code>' in text
    assert ">cleo" in text
    assert transaction_id in text
    assert "friend &amp; co" in text
    assert 'class="status status-completed">completed</span>' in text
    assert "1 of 3" in text
    # The rendered in-app message, escaped.
    assert "Subject friend &amp; co" in text
    assert "Hello &lt;i&gt;friend &amp; co&lt;/i&gt;" in text
    details = re.findall(r'<ol class="details">(.*?)</ol>', text, re.S)
    assert len(details) == 1
    assert "Success" in details[0]
    assert "See this job in Failed jobs" not in text


def test_detail_failed_job_root_cause(api: httpx.Client, server: ServerProcess, admin: httpx.Client) -> None:
    # Nothing listens on this loopback port, so the call is refused.
    workflow_id = calling_workflow(api, f"http://127.0.0.1:{free_port()}/closed")
    transaction_id = trigger(api, workflow_id, {"subscriberId": "dora"})
    assert finished_jobs(server, transaction_id, 1)["call"].status == "failed"
    job_id = job_id_of(server, transaction_id)

    text = admin.get(f"/admin/activity/{notification_id_of(server, transaction_id)}").text

    assert 'class="status status-failed">failed</span>' in text
    assert "<dt>Root cause</dt><dd>ConnectError</dd>" in text
    assert "Connection refused" in text
    assert re.search(r'status-detail-failed">Failed</span>\s*Step failed', text)
    assert f'href="/admin/failed-jobs?workflow={workflow_id}#job-{job_id}"' in text
    failed_page = admin.get(f"/admin/failed-jobs?workflow={workflow_id}").text
    assert failed_job_ids(failed_page) == {job_id}


def test_unknown_notification_is_404(admin: httpx.Client) -> None:
    response = admin.get("/admin/activity/000000000000000000000000")

    assert response.status_code == 404
    assert response.headers["content-type"].startswith("text/html")
    assert "Notification not found" in response.text
    assert 'href="/admin/activity"' in response.text


def test_failed_jobs_filters(
    api: httpx.Client, server: ServerProcess, stub: HttpStub, admin: httpx.Client
) -> None:
    stub.route("/filter-busy", Reply(503, {"error": "quota exhausted for tenant"}))
    stub.route("/filter-reject", Reply(400, {"error": "bad signature"}))
    busy = calling_workflow(api, stub.url("/filter-busy"))
    reject = calling_workflow(api, stub.url("/filter-reject"))
    chat = chat_workflow(api, stub.url("/filter-busy"))
    jobs = {}
    for workflow_id in (busy, reject, chat):
        transaction_id = trigger(api, workflow_id, {"subscriberId": "eve"}, payload={"version": "1.0"})
        finished_jobs(server, transaction_id, 1)
        jobs[workflow_id] = job_id_of(server, transaction_id)

    def listed(**params: str) -> set[str]:
        response = admin.get("/admin/failed-jobs", params=params)
        assert response.status_code == 200, response.text
        return failed_job_ids(response.text) & set(jobs.values())

    assert listed() == set(jobs.values())
    assert listed(workflow=busy) == {jobs[busy]}
    assert listed(provider="chat-webhook") == {jobs[chat]}
    assert listed(error="QUOTA EXHAUSTED") == {jobs[busy], jobs[chat]}
    assert listed(error="bad signature", workflow=reject) == {jobs[reject]}
    assert listed(after="2999-01-01T00:00") == set()
    assert listed(before="2999-01-01T00:00:00Z") == set(jobs.values())

    filtered = admin.get("/admin/failed-jobs", params={"workflow": busy}).text
    assert '<span class="count">1</span>' in filtered
    assert f'<input type="hidden" name="workflow" value="{busy}">' in filtered
    none = admin.get("/admin/failed-jobs", params={"workflow": "no-such-workflow"}).text
    assert "No failed job matches these filters." in none
    bad = admin.get("/admin/failed-jobs", params={"before": "31/12/2025"})
    assert bad.status_code == 400
    assert "To: must be an ISO 8601 date or date-time" in bad.text


def test_retry_all_matching(
    api: httpx.Client, server: ServerProcess, stub: HttpStub, admin: httpx.Client
) -> None:
    # Two calls fail with 503, and the retries get 200.
    stub.route(
        "/matching", Reply(503, {"error": "down"}), Reply(503, {"error": "down"}), Reply(200, {"ok": True})
    )
    stub.route("/matching-reject", Reply(400, {"error": "invalid"}))
    stub.route("/elsewhere", Reply(503, {"error": "down"}))
    target = calling_workflow(api, stub.url("/matching"))
    rejected = calling_workflow(api, stub.url("/matching-reject"))
    other = calling_workflow(api, stub.url("/elsewhere"))
    retried = [trigger(api, target, {"subscriberId": f"fay-{index}"}) for index in range(2)]
    for transaction_id in retried:
        assert finished_jobs(server, transaction_id, 1)["call"].status == "failed"
    permanent = trigger(api, rejected, {"subscriberId": "gus"})
    untouched = trigger(api, other, {"subscriberId": "gus"})
    for transaction_id in (permanent, untouched):
        assert finished_jobs(server, transaction_id, 1)["call"].status == "failed"

    page = admin.get("/admin/failed-jobs", params={"workflow": target}).text
    form = {"_csrf_token": csrf_token(page), "workflow": target, "provider": "", "error": "down"}
    response = admin.post("/admin/failed-jobs/retry-matching", data=form)

    assert response.status_code == 303
    assert response.headers["location"] == f"/admin/failed-jobs?workflow={target}&error=down"
    landed = admin.get(response.headers["location"]).text
    assert "Queued 2 jobs matching the filters again." in landed
    for transaction_id in retried:
        assert finished_jobs(server, transaction_id, 1)["call"].status == "completed"
    assert finished_jobs(server, untouched, 1)["call"].status == "failed"
    assert len(stub.received("/elsewhere")) == 1

    # The 400 one matches the workflow, but a retry cannot help it.
    form = {"_csrf_token": csrf_token(landed), "workflow": rejected}
    again = admin.post("/admin/failed-jobs/retry-matching", data=form)
    assert (
        "No job was queued again: no failed job that matches the filters"
        in admin.get(again.headers["location"]).text
    )
    assert finished_jobs(server, permanent, 1)["call"].status == "failed"
    assert len(stub.received("/matching-reject")) == 1

    bad = admin.post(
        "/admin/failed-jobs/retry-matching", data={"_csrf_token": csrf_token(landed), "after": "soon"}
    )
    assert bad.status_code == 400
    assert "From: must be an ISO 8601 date or date-time" in bad.text


def test_retry_all_matching_needs_csrf(admin: httpx.Client) -> None:
    response = admin.post("/admin/failed-jobs/retry-matching", data={"workflow": "anything"})

    assert response.status_code == 403


def save_screenshot(page: Page, folder: Path, name: str) -> None:
    """Save a full-page PNG under `folder`; copy it to docs/screenshots if NOVULITE_UPDATE_SCREENSHOTS=1."""
    target = folder / f"{name}.png"
    page.screenshot(path=str(target), full_page=True)
    assert target.read_bytes().startswith(b"\x89PNG")
    if os.environ.get(UPDATE_SCREENSHOTS_VARIABLE) == "1":
        shutil.copyfile(target, DOCS_SCREENSHOTS / f"{name}.png")


def no_sideways_scroll(page: Page) -> None:
    widths = page.evaluate(
        "() => ({scroll: document.scrollingElement.scrollWidth, inner: window.innerWidth})"
    )
    assert widths["scroll"] <= widths["inner"], f"{page.url} scrolls sideways: {widths}"


@needs_chromium
def test_find_failed_notification_and_retry(
    api: httpx.Client, server: ServerProcess, stub: HttpStub, browser: Browser, tmp_path: Path
) -> None:
    stub.route("/deploys", Reply(500, {"error": "chat relay unavailable"}), Reply(200, {"ok": True}))
    workflow_id = chat_workflow(api, stub.url("/deploys"))
    transaction_id = trigger(api, workflow_id, {"subscriberId": "hana"}, payload={"version": "2.4.1"})
    assert finished_jobs(server, transaction_id, 1)["notify"].status == "failed"

    with open_context(browser, server, DESKTOP_VIEWPORT) as context:
        page = context.new_page()
        assert sign_in(page, "/admin/activity") == 200
        page.get_by_label("Transaction id").fill(transaction_id)
        with page.expect_navigation():
            page.get_by_role("button", name="Filter").click()
        rows = page.locator("tbody tr")
        assert rows.count() == 1
        assert rows.first.locator('td[data-label="Workflow"]').inner_text() == workflow_id
        with page.expect_navigation():
            rows.first.locator('td[data-label="When"] a').click()

        step = page.locator(".timeline-step")
        assert step.count() == 1
        assert step.locator("h3 .status").inner_text() == "failed"
        facts = step.locator(".error-facts")
        assert "chat-webhook" in facts.inner_text()
        assert "500" in facts.locator("dd").all_inner_texts()
        assert "chat relay unavailable" in step.locator(".provider-response").inner_text()
        assert step.locator(".message-content").inner_text() == "Deploy 2.4.1 finished"
        detail_url = page.url
        save_screenshot(page, tmp_path, "activity-detail")

        with page.expect_navigation():
            page.get_by_role("navigation", name="Main").get_by_role("link", name="Failed jobs").click()
        page.get_by_label("Workflow").fill(workflow_id)
        with page.expect_navigation():
            page.get_by_role("button", name="Filter").click()
        assert page.locator("tbody tr").count() == 1
        assert page.locator("h1 .count").inner_text() == "1"
        with page.expect_navigation():
            page.get_by_role("button", name="Retry all matching").click()
        assert page.locator("[role=status]").first.inner_text() == "Queued 1 job matching the filters again."
        assert urlsplit(page.url).query == f"workflow={workflow_id}"

        assert finished_jobs(server, transaction_id, 1)["notify"].status == "completed"
        page.goto(detail_url)
        assert page.locator(".timeline-step h3 .status").inner_text() == "completed"
        assert "Retried by admin from the admin UI" in page.locator(".details").inner_text()
        assert len(stub.received("/deploys")) == 2

        # Another failure is discarded from its row: it leaves the filtered list, and its job ends canceled.
        stub.route("/deploys", Reply(500, {"error": "chat relay unavailable"}))
        second = trigger(api, workflow_id, {"subscriberId": "hana"}, payload={"version": "2.4.2"})
        assert finished_jobs(server, second, 1)["notify"].status == "failed"
        page.goto(f"/admin/failed-jobs?workflow={workflow_id}")
        assert page.locator("tbody tr").count() == 1
        with page.expect_navigation():
            page.locator("tbody tr").first.get_by_role("button", name="Discard").click()
        assert "Discarded 1 job." in page.locator("main").inner_text()
        assert urlsplit(page.url).query == f"discarded=1&workflow={workflow_id}"
        assert page.locator("tbody tr").count() == 0
        assert finished_jobs(server, second, 1)["notify"].status == "canceled"

    with open_context(browser, server, PHONE_VIEWPORT) as phone:
        page = phone.new_page()
        assert sign_in(page, "/admin/activity") == 200
        no_sideways_scroll(page)
        page.goto(detail_url)
        no_sideways_scroll(page)
        page.goto("/admin/failed-jobs")
        no_sideways_scroll(page)
