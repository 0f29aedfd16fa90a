"""The admin UI against a running server: sign-in redirects, CSRF, pages in Chromium, screenshots."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Route, ViewportSize

from tests.conftest import CHROMIUM
from tests.helpers import create_workflow
from tests.servers import ADMIN_PASSWORD, ServerProcess
from tests.stores import Row, read_rows

LOOPBACK_HOSTS = {"127.0.0.1", "::1", "[::1]"}
# Screenshots go to a temporary folder unless NOVULITE_SCREENSHOT_DIR names one, such as
# docs/screenshots when refreshing the documentation, so a test run leaves the checkout clean.
SCREENSHOT_DIR_VARIABLE = "NOVULITE_SCREENSHOT_DIR"
PHONE_VIEWPORT: ViewportSize = {"width": 390, "height": 844}
DESKTOP_VIEWPORT: ViewportSize = {"width": 1280, "height": 800}
JOB_DEADLINE_SECONDS = 15.0
ADMIN_PAGES = ["/admin/", "/admin/workflows", "/admin/failed-jobs"]

# python-liquid 2.3.6 parses the divided_by filter but raises FilterArgumentError at render
# time when the divisor is 0, so the job fails without retries. The <b> shows whether the
# failed-jobs page escapes the error message, which quotes the template line.
FAILING_BODY = "<b>Total</b>: {{ payload.count | divided_by: 0 }}"

needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason=f"Debian's Chromium is missing at {CHROMIUM}; install it with `apt-get install chromium`",
)


def _loopback_only(context: BrowserContext) -> list[str]:
    """Abort every request from `context` to a host other than loopback and return the aborted URLs."""
    aborted: list[str] = []

    def handle(route: Route) -> None:
        url = route.request.url
        if (
            urlsplit(url).scheme in {"http", "https", "ws", "wss"}
            and urlsplit(url).hostname not in LOOPBACK_HOSTS
        ):
            aborted.append(url)
            route.abort()
        else:
            route.continue_()

    context.route("**/*", handle)
    return aborted


@contextlib.contextmanager
def open_context(browser: Browser, server: ServerProcess, viewport: ViewportSize) -> Iterator[BrowserContext]:
    """Open a browser context on `server` and check on exit that it sent nothing beyond loopback."""
    context = browser.new_context(base_url=server.base_url, viewport=viewport)
    aborted = _loopback_only(context)
    try:
        yield context
    finally:
        context.close()
    assert aborted == [], f"the admin UI requested hosts other than loopback: {aborted}"


@pytest.fixture
def context(browser: Browser, server: ServerProcess) -> Iterator[BrowserContext]:
    with open_context(browser, server, DESKTOP_VIEWPORT) as opened:
        yield opened


@pytest.fixture
def page(context: BrowserContext) -> Page:
    return context.new_page()


def submit_login(page: Page, password: str) -> int:
    """Submit the sign-in form as `admin` and return the resulting HTTP status."""
    page.fill("input[name=username]", "admin")
    page.fill("input[name=password]", password)
    with page.expect_navigation() as navigation:
        page.click("button[type=submit]")
    response = navigation.value
    assert response is not None
    return response.status


def sign_in(page: Page, path: str = "/admin/") -> int:
    """Open `path`, sign in through the form it redirects to and return the resulting HTTP status."""
    page.goto(path)
    assert urlsplit(page.url).path == "/admin/login"
    return submit_login(page, ADMIN_PASSWORD)


def has_session_cookie(page: Page) -> bool:
    return any(cookie["name"] == "novulite_admin" for cookie in page.context.cookies())


def trigger(api: httpx.Client, workflow_id: str, subscriber_id: str, payload: dict[str, Any]) -> str:
    response = api.post(
        "/v1/events/trigger",
        json={"name": workflow_id, "to": {"subscriberId": subscriber_id}, "payload": payload},
    )
    assert response.status_code == 201, response.text
    assert response.json()["data"]["status"] == "processed", response.text
    return str(response.json()["data"]["transactionId"])


def wait_for_job(server: ServerProcess, transaction_id: str, status: str) -> Row:
    """Poll the job store read-only until the job of `transaction_id` has `status`, and return its row."""
    deadline = time.monotonic() + JOB_DEADLINE_SECONDS
    row: Row | None = None
    while time.monotonic() < deadline:
        rows = read_rows(
            server.database,
            "SELECT status, attempt, max_attempts, error FROM job WHERE transaction_id = ?",
            (transaction_id,),
        )
        row = rows[0] if rows else None
        if row is not None and row["status"] == status:
            return row
        time.sleep(0.05)
    found = dict(row) if row is not None else None
    raise AssertionError(
        f"timed out after {JOB_DEADLINE_SECONDS} s waiting for the job of transaction {transaction_id} "
        f"to be {status!r}; last row: {found}"
    )


def make_failed_and_completed_jobs(server: ServerProcess, api: httpx.Client) -> Row:
    """Create one workflow whose job completes and one whose job fails, trigger both, wait for
    both outcomes and return the failed job's row."""
    create_workflow(api, "order-shipped")
    create_workflow(api, "broken-total", body=FAILING_BODY)
    completed = trigger(api, "order-shipped", "alice", {"text": "your order shipped"})
    failed = trigger(api, "broken-total", "carol", {"count": 3})
    wait_for_job(server, completed, "completed")
    return wait_for_job(server, failed, "failed")


def check_dashboard_counts(page: Page) -> None:
    page.goto("/admin/")
    tiles = {
        label: page.locator(".tile", has_text=label).locator(".number").inner_text()
        for label in ("workflows", "notifications", "open inbox sockets")
    }
    assert tiles["workflows"] == "2"
    assert tiles["notifications"] == "2"
    assert tiles["open inbox sockets"] == "0"
    jobs_table = page.locator("table", has=page.locator("th", has_text="Status"))
    statuses = jobs_table.locator("tbody td:nth-child(1)").all_inner_texts()
    counts = jobs_table.locator("tbody td:nth-child(2)").all_inner_texts()
    assert dict(zip(statuses, counts, strict=True)) == {"completed": "1", "failed": "1"}


def check_phone_width(browser: Browser, server: ServerProcess) -> None:
    with open_context(browser, server, PHONE_VIEWPORT) as phone:
        page = phone.new_page()
        assert sign_in(page) == 200
        for path in ADMIN_PAGES:
            page.goto(path)
            assert urlsplit(page.url).path == path
            widths = page.evaluate(
                "() => ({scroll: document.scrollingElement.scrollWidth, inner: window.innerWidth})"
            )
            assert widths["scroll"] <= widths["inner"], f"{path} scrolls sideways at 390 px: {widths}"


def save_screenshots(page: Page, folder: Path) -> None:
    """Write full-page PNGs of the three admin pages to `folder`, replacing earlier ones."""
    folder.mkdir(parents=True, exist_ok=True)
    for path, name in zip(ADMIN_PAGES, ["dashboard", "workflows", "failed-jobs"], strict=True):
        page.goto(path)
        assert urlsplit(page.url).path == path
        target = folder / f"{name}.png"
        target.unlink(missing_ok=True)
        page.screenshot(path=str(target), full_page=True)
        assert target.read_bytes().startswith(b"\x89PNG")


def test_pages_redirect_without_session(server: ServerProcess) -> None:
    for path in ["/admin/workflows", "/admin/failed-jobs", "/admin/"]:
        response = httpx.get(f"{server.base_url}{path}", follow_redirects=False, timeout=10)
        assert response.status_code == 303, f"{path}: {response.status_code}"
        assert response.headers["location"] == f"/admin/login?next={path}"

    root = httpx.get(f"{server.base_url}/", follow_redirects=False, timeout=10)
    assert root.is_redirect
    assert root.headers["location"] == "/admin/"


def test_post_without_csrf_rejected(server: ServerProcess) -> None:
    response = httpx.post(
        f"{server.base_url}/admin/login",
        data={"username": "admin", "password": ADMIN_PASSWORD},
        follow_redirects=False,
        timeout=10,
    )

    assert response.status_code == 403
    assert "novulite_admin" not in response.cookies
    assert response.headers["content-type"].startswith("application/json"), response.text
    assert response.json()["statusCode"] == 403


@needs_chromium
def test_sign_in_and_out(server: ServerProcess, api: httpx.Client, page: Page) -> None:
    create_workflow(api, "welcome-email")
    create_workflow(api, "password-reset")
    page.goto("/admin/workflows")
    assert urlsplit(page.url).path == "/admin/login"

    # After a wrong password the form still carries the requested page for the next try.
    assert submit_login(page, "not-the-password") == 401
    assert urlsplit(page.url).path == "/admin/login"
    assert page.locator("[role=alert]").inner_text() == "Wrong username or password."
    assert page.input_value("input[name=next]") == "/admin/workflows"
    assert not has_session_cookie(page)

    assert submit_login(page, ADMIN_PASSWORD) == 200
    assert urlsplit(page.url).path == "/admin/workflows"
    assert has_session_cookie(page)
    rows = page.locator("tbody tr")
    assert rows.count() == 2
    names = rows.locator("td:nth-child(1)").all_inner_texts()
    identifiers = rows.locator("td:nth-child(2)").all_inner_texts()
    assert sorted(names) == ["Workflow password-reset", "Workflow welcome-email"]
    assert sorted(identifiers) == ["password-reset", "welcome-email"]
    assert page.locator("h1 .count").inner_text() == "2"
    assert page.get_attribute("nav a[href='/admin/workflows']", "aria-current") == "page"

    with page.expect_navigation():
        page.click("button:has-text('Sign out')")
    assert urlsplit(page.url).path == "/admin/login"
    assert not has_session_cookie(page)
    page.goto("/admin/")
    assert urlsplit(page.url).path == "/admin/login"


@needs_chromium
def test_failed_job_listed_with_error(server: ServerProcess, api: httpx.Client, page: Page) -> None:
    job = make_failed_and_completed_jobs(server, api)
    assert job["attempt"] == 1
    assert job["max_attempts"] == 3

    assert sign_in(page, path="/admin/failed-jobs") == 200

    assert page.locator("h1 .count").inner_text() == "1"
    rows = page.locator("tbody tr")
    assert rows.count() == 1
    row = rows.first

    def cell(label: str) -> Any:
        return row.locator(f'td[data-label="{label}"]')

    assert cell("Workflow").inner_text() == "broken-total"
    assert cell("Subscriber").inner_text() == "carol"
    assert "(in_app)" in cell("Step").inner_text()
    assert cell("Attempts").inner_text() == "1 of 3"
    error = cell("Error")
    assert "TemplateError" in error.locator("dd").all_inner_texts()
    assert "divided_by: can't divide by 0" in error.inner_text()
    assert "<b>Total</b>" in error.inner_text()
    assert error.locator("b").count() == 0
    assert "no more retries" in error.inner_text()
    actions = cell("Actions")
    assert "No retry:" in actions.inner_text()
    assert actions.get_by_role("button", name="Retry").count() == 0


@needs_chromium
def test_pages_after_trigger(
    server: ServerProcess, api: httpx.Client, browser: Browser, page: Page, tmp_path: Path
) -> None:
    make_failed_and_completed_jobs(server, api)
    assert sign_in(page) == 200

    check_dashboard_counts(page)
    check_phone_width(browser, server)
    save_screenshots(page, Path(os.environ.get(SCREENSHOT_DIR_VARIABLE) or tmp_path / "screenshots"))
