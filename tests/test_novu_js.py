"""Novu's browser client @novu/js, unchanged, against a running server in headless Chromium.

The page in tests/browser/novu-js renders one subscriber's inbox through @novu/js 3.19.2, served
from a second loopback origin so that the API calls and the socket cross origins as in a real app.
"""

from __future__ import annotations

import fcntl
import http.server
import json
import os
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    Route,
    WebSocketRoute,
)

from tests.helpers import create_workflow, subscriber_hash
from tests.servers import APP_ID, ServerProcess
from tests.test_admin_ui import LOOPBACK_HOSTS, needs_chromium

FIXTURE_DIR = Path(__file__).parent / "browser" / "novu-js"
BUNDLE = FIXTURE_DIR / "dist" / "novu-js.js"
PAGE_FILES = {
    "/index.html": (FIXTURE_DIR / "index.html", "text/html; charset=utf-8"),
    "/app.js": (FIXTURE_DIR / "app.js", "text/javascript; charset=utf-8"),
    "/inbox.html": (FIXTURE_DIR / "inbox.html", "text/html; charset=utf-8"),
    "/novu-js.js": (BUNDLE, "text/javascript; charset=utf-8"),
}
DOCS_SCREENSHOTS = Path(__file__).parent.parent / "docs" / "screenshots"
UPDATE_SCREENSHOTS_VARIABLE = "NOVULITE_UPDATE_SCREENSHOTS"
SUBSCRIBER_ID = "ada"
FIRST_NAME = "Ada"
WORKFLOW_ID = "novu-js-welcome"
# Milliseconds Playwright waits for the page to show an expected state.
WAIT_MS = 15_000

pytestmark = needs_chromium


def _run(command: list[str]) -> None:
    """Run `command` in the fixture folder and fail the test with its output when it exits non-zero."""
    result = subprocess.run(
        command, cwd=FIXTURE_DIR, capture_output=True, text=True, timeout=600, check=False
    )
    if result.returncode != 0:
        pytest.fail(
            f"`{' '.join(command)}` in {FIXTURE_DIR} failed with exit code {result.returncode}:\n"
            f"{result.stdout}\n{result.stderr}"
        )


@pytest.fixture(scope="module")
def novu_js_bundle() -> Path:
    """Install @novu/js from package-lock.json and bundle it with esbuild, unless both are up to date.

    node_modules and dist stay in tests/browser/novu-js, so only the first run downloads.
    """
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip(
            f"npm is missing, so @novu/js cannot be installed in {FIXTURE_DIR}; install Node.js 20 with npm"
        )
    # The file lock keeps two test processes from running npm ci in the same folder at once.
    with open(FIXTURE_DIR / ".install.lock", "w") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        _install_and_bundle(npm)
    return BUNDLE


def _install_and_bundle(npm: str) -> None:
    lock = FIXTURE_DIR / "package-lock.json"
    installed_lock = FIXTURE_DIR / "node_modules" / ".package-lock.json"
    if not installed_lock.exists() or installed_lock.stat().st_mtime < lock.stat().st_mtime:
        _run([npm, "ci", "--no-audit", "--no-fund"])
    sources = [lock, FIXTURE_DIR / "entry.mjs"]
    if not BUNDLE.exists() or BUNDLE.stat().st_mtime < max(source.stat().st_mtime for source in sources):
        esbuild = FIXTURE_DIR / "node_modules" / ".bin" / "esbuild"
        _run(
            [
                str(esbuild),
                "entry.mjs",
                "--bundle",
                "--format=iife",
                "--global-name=NovuJs",
                "--platform=browser",
                f"--outfile={BUNDLE.relative_to(FIXTURE_DIR)}",
                "--log-level=warning",
            ]
        )


def _is_loopback(url: str) -> bool:
    return urlsplit(url).hostname in LOOPBACK_HOSTS


def _loopback_only(context: BrowserContext) -> list[str]:
    """Abort every HTTP request and WebSocket from `context` to a host other than loopback.

    Returns the list that collects the aborted URLs. WebSockets to loopback are not routed, so they
    reach the server directly.
    """
    aborted: list[str] = []

    def handle_request(route: Route) -> None:
        url = route.request.url
        if urlsplit(url).scheme in {"http", "https"} and not _is_loopback(url):
            aborted.append(url)
            route.abort()
        else:
            route.continue_()

    def handle_socket(socket: WebSocketRoute) -> None:
        aborted.append(socket.url)
        socket.close(code=1008, reason="only loopback is allowed in tests")

    context.route("**/*", handle_request)
    context.route_web_socket(lambda url: not _is_loopback(url), handle_socket)
    return aborted


class _PageHandler(http.server.BaseHTTPRequestHandler):
    """Serve the files of PAGE_FILES and nothing else."""

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path not in PAGE_FILES:
            self.send_error(404, f"{path} is not part of the test page")
            return
        file, content_type = PAGE_FILES[path]
        body = file.read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def page_origin(novu_js_bundle: Path) -> Iterator[str]:
    """Serve the test page on its own loopback port, another origin than the server's API."""
    static_server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _PageHandler)
    thread = threading.Thread(target=static_server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{static_server.server_address[1]}"
    static_server.shutdown()
    static_server.server_close()
    thread.join()


@pytest.fixture
def open_page(browser: Browser, server: ServerProcess, page_origin: str) -> Iterator[Callable[[str], Page]]:
    """Return a function that opens a test page with @novu/js pointed at `server` for SUBSCRIBER_ID.

    On teardown the fixture checks that no page logged an error, had a failed request or
    requested a host other than loopback.
    """
    context = browser.new_context(viewport={"width": 640, "height": 680})
    aborted = _loopback_only(context)
    options = {
        "applicationIdentifier": APP_ID,
        "subscriberId": SUBSCRIBER_ID,
        "subscriberHash": subscriber_hash(SUBSCRIBER_ID),
        "apiUrl": server.base_url,
        "socketUrl": server.ws_url,
        "socketOptions": {"socketType": "cloud"},
    }
    context.add_init_script(f"window.NOVU_OPTIONS = {json.dumps(options)};")
    errors: list[str] = []

    def record_console_error(message: ConsoleMessage) -> None:
        if message.type == "error":
            errors.append(message.text)

    def open_path(path: str) -> Page:
        page = context.new_page()
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.on("console", record_console_error)
        page.on(
            "requestfailed",
            lambda request: errors.append(f"{request.method} {request.url}: {request.failure}"),
        )
        page.goto(f"{page_origin}{path}")
        return page

    yield open_path
    context.close()
    assert errors == [], f"the page logged errors or had failed requests: {errors}"
    assert aborted == [], f"@novu/js requested hosts other than loopback: {aborted}"


def _events(page: Page, name: str) -> list[dict[str, Any]]:
    return page.evaluate("(name) => window.inbox.events.filter((event) => event.name === name)", name)


def _wait_for_event(page: Page, name: str, count: int = 1) -> list[dict[str, Any]]:
    """Wait until the page has recorded `count` events named `name` and return all of them."""
    page.wait_for_function(
        "([name, count]) => window.inbox"
        " && window.inbox.events.filter((event) => event.name === name).length >= count",
        arg=[name, count],
        timeout=WAIT_MS,
    )
    return _events(page, name)


def _create_inbox_workflow(api: httpx.Client) -> str:
    """Create the subscriber with a first name and the workflow WORKFLOW_ID, and return the workflow's id."""
    response = api.post("/v2/subscribers", json={"subscriberId": SUBSCRIBER_ID, "firstName": FIRST_NAME})
    assert response.status_code == 201, response.text
    return str(create_workflow(api, WORKFLOW_ID)["_id"])


def _trigger(api: httpx.Client, text: str) -> None:
    response = api.post(
        "/v1/events/trigger", json={"name": WORKFLOW_ID, "to": SUBSCRIBER_ID, "payload": {"text": text}}
    )
    assert response.status_code == 201, response.text


def _save_screenshot(page: Page, tmp_path: Path, name: str) -> None:
    """Save the page to the test's temporary folder, and to docs/screenshots when asked to refresh it."""
    page.screenshot(path=str(tmp_path / name), full_page=True)
    if os.environ.get(UPDATE_SCREENSHOTS_VARIABLE) == "1":
        page.screenshot(path=str(DOCS_SCREENSHOTS / name), full_page=True)


def test_client_list_count_read_archive(
    open_page: Callable[[str], Page], api: httpx.Client, tmp_path: Path
) -> None:
    _create_inbox_workflow(api)
    page = open_page("/index.html")

    sessions = _wait_for_event(page, "session")
    assert sessions[0]["ok"], sessions[0]["error"]
    assert sessions[0]["data"]["token"]

    empty = page.evaluate("() => window.inbox.refresh()")
    assert empty["active"] == []
    assert empty["archived"] == []
    assert empty["count"] == 0
    assert page.text_content("#unread") == "0"

    # Listening to a socket event makes the client open its socket. The server sends the current
    # counts first, so one unread_count_changed frame shows that the socket is open.
    first_counts = _wait_for_event(page, "unread_count_changed")
    assert first_counts[0]["counts"]["total"] == 0

    _trigger(api, "first")

    received = _wait_for_event(page, "notification_received")
    notification = received[0]["notification"]
    assert notification["body"] == "Hello Ada: first"
    assert notification["subject"] == "Subject first"
    assert notification["isRead"] is False
    assert notification["isArchived"] is False
    assert notification["subscriberId"] == SUBSCRIBER_ID
    assert notification["workflowIdentifier"] == WORKFLOW_ID
    counts = _wait_for_event(page, "unread_count_changed", 2)
    assert counts[-1]["counts"]["total"] == 1
    page.wait_for_selector("#unread[data-count='1']", timeout=WAIT_MS)

    listed = page.evaluate("() => window.inbox.refresh()")
    assert [item["id"] for item in listed["active"]] == [notification["id"]]
    assert listed["count"] == 1
    assert listed["archived"] == []
    page.wait_for_selector(f"#list li[data-id='{notification['id']}'].unread", timeout=WAIT_MS)
    _save_screenshot(page, tmp_path, "novu-js.png")

    read = page.evaluate("(id) => window.inbox.read(id)", notification["id"])
    assert read["error"] is None, read["error"]
    assert read["data"]["isRead"] is True
    counts = _wait_for_event(page, "unread_count_changed", 3)
    assert counts[-1]["counts"]["total"] == 0
    after_read = page.evaluate("() => window.inbox.refresh()")
    assert after_read["count"] == 0
    assert after_read["active"][0]["isRead"] is True
    assert page.text_content("#unread") == "0"

    archived = page.evaluate("(id) => window.inbox.archive(id)", notification["id"])
    assert archived["error"] is None, archived["error"]
    assert archived["data"]["isArchived"] is True
    after_archive = page.evaluate("() => window.inbox.refresh()")
    assert after_archive["active"] == []
    assert [item["id"] for item in after_archive["archived"]] == [notification["id"]]
    assert after_archive["archived"][0]["isArchived"] is True
    page.wait_for_selector(f"#archived li[data-id='{notification['id']}']", timeout=WAIT_MS)


def test_inbox_ui_bell_and_popover(
    open_page: Callable[[str], Page], api: httpx.Client, tmp_path: Path
) -> None:
    workflow_pk = _create_inbox_workflow(api)
    page = open_page("/inbox.html")

    # The first count frame shows that the socket is open, so the trigger below arrives live.
    first_counts = _wait_for_event(page, "unread_count_changed")
    assert first_counts[0]["counts"]["total"] == 0
    page.wait_for_selector(".nv-bellContainer", timeout=WAIT_MS)
    assert page.locator(".nv-bellDot").count() == 0

    _trigger(api, "first")

    page.wait_for_selector(".nv-bellDot", timeout=WAIT_MS)
    page.click(".nv-inbox__popoverTrigger")
    item = page.locator(".nv-notification", has_text="Subject first")
    item.wait_for(timeout=WAIT_MS)
    assert "Hello Ada: first" in item.inner_text()
    _save_screenshot(page, tmp_path, "novu-js-inbox.png")

    # A click on a notification marks it read, so the bell loses its dot.
    item.click()
    page.wait_for_selector(".nv-bellDot", state="detached", timeout=WAIT_MS)
    counts = _wait_for_event(page, "unread_count_changed", 3)
    assert counts[-1]["counts"]["total"] == 0

    # The preferences view lists the workflow, and its in-app switch saves through the inbox API.
    page.click(".nv-preferences__button")
    page.get_by_text(f"Workflow {WORKFLOW_ID}").click()
    switch = page.locator(f"#channel-{workflow_pk}-in_app")
    assert switch.is_checked()
    with page.expect_response(lambda response: response.request.method == "PATCH") as patch:
        page.click(f"label:has(#channel-{workflow_pk}-in_app)")
    assert patch.value.status == 200, patch.value.text()
    assert patch.value.url.endswith(f"/v1/inbox/preferences/{workflow_pk}")
    page.wait_for_function(f"() => !document.getElementById('channel-{workflow_pk}-in_app').checked")
    preferences = api.get(f"/v2/subscribers/{SUBSCRIBER_ID}/preferences")
    assert preferences.status_code == 200, preferences.text
    entry = next(
        item
        for item in preferences.json()["data"]["workflows"]
        if item["workflow"]["identifier"] == WORKFLOW_ID
    )
    assert entry["channels"] == {"in_app": False}
