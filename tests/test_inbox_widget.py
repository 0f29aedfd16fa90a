"""The <novulite-inbox> widget on its demo page in Chromium, against a running server and its socket."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    Locator,
    Page,
    WebSocketRoute,
    expect,
)

from tests.conftest import api_client, start_server
from tests.helpers import context_hash, inbox_messages, open_session, poll, subscriber_hash
from tests.servers import APP_ID, ServerProcess
from tests.test_admin_ui import _loopback_only, needs_chromium

pytestmark = needs_chromium

WORKFLOW_ID = "widget"
DEMO_PATH = "/static/inbox-demo.html"
REPO_ROOT = Path(__file__).resolve().parent.parent
DOCS_SCREENSHOT = REPO_ROOT / "docs" / "screenshots" / "inbox-widget.png"
# Set to 1 to copy the screenshot this module takes over the one in docs/screenshots.
UPDATE_SCREENSHOTS_VARIABLE = "NOVULITE_UPDATE_SCREENSHOTS"
# Long enough for a trigger to pass the job queue on a busy 2-vCPU machine.
DELIVERY_TIMEOUT_MS = 15_000
PAGE_SIZE = 10  # notifications per page in inbox.js


def _workflow() -> dict[str, Any]:
    controls = {
        "subject": "{{ payload.subject }}",
        "body": "{{ payload.text }}",
        "primaryAction": {"label": "Accept"},
        "secondaryAction": {"label": "Decline"},
        "redirect": {"url": "{{ payload.url }}"},
    }
    return {
        "name": "Widget",
        "workflowId": WORKFLOW_ID,
        "steps": [{"name": "Inbox", "type": "in_app", "controlValues": controls}],
    }


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = start_server(tmp_path_factory.mktemp("widget"))
    with api_client(process) as api:
        response = api.post("/v2/workflows", json=_workflow())
        assert response.status_code == 201, response.text
    yield process
    process.stop()


@pytest.fixture(scope="module")
def api(server: ServerProcess) -> Iterator[httpx.Client]:
    with api_client(server) as client:
        yield client


@pytest.fixture
def context(browser: Browser, server: ServerProcess) -> Iterator[BrowserContext]:
    context = browser.new_context(base_url=server.base_url, viewport={"width": 1100, "height": 760})
    aborted = _loopback_only(context)
    yield context
    context.close()
    assert aborted == [], f"the widget requested hosts other than loopback: {aborted}"


@pytest.fixture
def page(context: BrowserContext) -> Page:
    return context.new_page()


def trigger(api: httpx.Client, subscriber_id: str, text: str, subject: str = "Hello", url: str = "") -> str:
    """Trigger the widget workflow for `subscriber_id` and return the transaction id."""
    payload = {"subject": subject, "text": text, "url": url}
    response = api.post(
        "/v1/events/trigger", json={"name": WORKFLOW_ID, "to": subscriber_id, "payload": payload}
    )
    assert response.status_code == 201, response.text
    return str(response.json()["data"]["transactionId"])


def demo_url(subscriber_id: str) -> str:
    query = {
        "applicationIdentifier": APP_ID,
        "subscriberId": subscriber_id,
        "subscriberHash": subscriber_hash(subscriber_id),
    }
    return f"{DEMO_PATH}?{urlencode(query)}"


def open_inbox(page: Page, subscriber_id: str) -> None:
    """Open the demo page for `subscriber_id` and wait until the widget's socket is open."""
    page.goto(demo_url(subscriber_id))
    page.wait_for_function("document.querySelector('novulite-inbox')?.connectionState === 'open'")


def bell(page: Page) -> Locator:
    return page.locator("novulite-inbox .bell")


def badge(page: Page) -> Locator:
    return page.locator("novulite-inbox .badge")


def items(page: Page) -> Locator:
    return page.locator("novulite-inbox li.item")


def item_with(page: Page, text: str) -> Locator:
    return items(page).filter(has_text=text)


def wait_for_messages(server: ServerProcess, subscriber_id: str, count: int) -> list[dict[str, Any]]:
    """Return the subscriber's inbox, newest first, once it contains `count` messages."""
    token = open_session(server.base_url, subscriber_id)["token"]
    return poll(
        lambda: inbox_messages(server.base_url, token),
        lambda messages: len(messages) == count,
        f"{count} messages for {subscriber_id}",
    )


def test_live_notification_and_read(page: Page, api: httpx.Client, tmp_path: Path) -> None:
    open_inbox(page, "live-reader")
    expect(badge(page)).to_have_text("0")
    expect(bell(page)).to_have_attribute("aria-label", "Notifications, 0 unread")

    bell(page).click()
    expect(bell(page)).to_have_attribute("aria-expanded", "true")
    expect(page.locator("novulite-inbox .panel")).to_be_visible()
    expect(page.locator("novulite-inbox .empty")).to_be_visible()

    trigger(api, "live-reader", "Your invoice is ready", subject="Invoice #42")
    item = item_with(page, "Your invoice is ready")
    expect(item).to_be_visible(timeout=DELIVERY_TIMEOUT_MS)
    expect(item).to_have_attribute("data-read", "false")
    expect(item.locator(".sr-only")).to_have_text("Unread: ")
    expect(badge(page)).to_have_text("1")
    expect(bell(page)).to_have_attribute("aria-label", "Notifications, 1 unread")
    expect(page.locator("novulite-inbox .live")).to_have_text("New notification: Invoice #42")

    trigger(api, "live-reader", "Alex commented on your report", subject="New comment")
    expect(item_with(page, "Alex commented")).to_be_visible(timeout=DELIVERY_TIMEOUT_MS)
    expect(badge(page)).to_have_text("2")
    screenshot = tmp_path / "inbox-widget.png"
    page.screenshot(path=str(screenshot))
    if os.environ.get(UPDATE_SCREENSHOTS_VARIABLE) == "1":
        shutil.copyfile(screenshot, DOCS_SCREENSHOT)

    item.locator(".main").click()
    expect(item).to_have_attribute("data-read", "true")
    expect(item.locator(".sr-only")).to_have_text("Read: ")
    expect(badge(page)).to_have_text("1")
    item_with(page, "Alex commented").locator(".main").click()
    expect(badge(page)).to_have_text("0")
    expect(bell(page)).to_have_attribute("aria-label", "Notifications, 0 unread")


def test_mark_all_read_and_archive(page: Page, api: httpx.Client, server: ServerProcess) -> None:
    for text in ("First message", "Second message", "Third message"):
        trigger(api, "tidy", text)
    messages = wait_for_messages(server, "tidy", 3)
    open_inbox(page, "tidy")
    expect(badge(page)).to_have_text("3")
    bell(page).click()
    expect(items(page)).to_have_count(3)
    expect(items(page).first).to_contain_text("Third message")

    page.locator("novulite-inbox .mark-all").click()
    expect(badge(page)).to_have_text("0")
    expect(items(page).and_(page.locator("[data-read=false]"))).to_have_count(0)
    token = open_session(server.base_url, "tidy")["token"]
    assert all(message["isRead"] for message in inbox_messages(server.base_url, token))

    item_with(page, "Second message").get_by_role("button", name="Archive: Hello").click()
    expect(items(page)).to_have_count(2)
    expect(item_with(page, "Second message")).to_have_count(0)
    second = next(message for message in messages if message["body"] == "Second message")
    archived = {message["id"]: message["isArchived"] for message in inbox_messages(server.base_url, token)}
    assert archived[second["id"]] is True
    assert sum(archived.values()) == 1


def test_new_unread_after_mark_all(page: Page, api: httpx.Client) -> None:
    open_inbox(page, "counter")
    bell(page).click()
    trigger(api, "counter", "Before mark all")
    expect(badge(page)).to_have_text("1", timeout=DELIVERY_TIMEOUT_MS)
    page.locator("novulite-inbox .mark-all").click()
    expect(badge(page)).to_have_text("0")
    expect(page.locator("novulite-inbox .mark-all")).to_be_disabled()

    trigger(api, "counter", "After mark all")
    expect(item_with(page, "After mark all")).to_have_attribute(
        "data-read", "false", timeout=DELIVERY_TIMEOUT_MS
    )
    expect(badge(page)).to_have_text("1")
    expect(item_with(page, "Before mark all")).to_have_attribute("data-read", "true")


def test_load_more_pages(page: Page, api: httpx.Client, server: ServerProcess) -> None:
    for n in range(PAGE_SIZE + 2):
        trigger(api, "collector", f"Message number {n}")
    wait_for_messages(server, "collector", PAGE_SIZE + 2)
    open_inbox(page, "collector")
    bell(page).click()
    more = page.get_by_role("button", name="Load more")

    expect(items(page)).to_have_count(PAGE_SIZE)
    expect(items(page).first).to_contain_text(f"Message number {PAGE_SIZE + 1}")
    expect(more).to_be_visible()
    more.click()
    expect(items(page)).to_have_count(PAGE_SIZE + 2)
    expect(items(page).last).to_contain_text("Message number 0")
    expect(more).to_be_hidden()
    expect(badge(page)).to_have_text(str(PAGE_SIZE + 2))


def test_keyboard_operation(page: Page, api: httpx.Client, server: ServerProcess) -> None:
    trigger(api, "typist", "Reachable by keyboard")
    wait_for_messages(server, "typist", 1)
    open_inbox(page, "typist")

    page.keyboard.press("Tab")
    expect(bell(page)).to_be_focused()
    expect(bell(page)).to_have_attribute("aria-expanded", "false")
    panel_id = bell(page).get_attribute("aria-controls")
    panel = page.locator("novulite-inbox .panel")
    expect(panel).to_have_attribute("id", str(panel_id))

    page.keyboard.press("Enter")
    expect(bell(page)).to_have_attribute("aria-expanded", "true")
    expect(page.get_by_role("dialog", name="Notifications")).to_be_visible()
    page.keyboard.press("Tab")
    expect(page.locator("novulite-inbox .mark-all")).to_be_focused()
    page.keyboard.press("Tab")
    item = item_with(page, "Reachable by keyboard")
    expect(item.locator(".main")).to_be_focused()

    page.keyboard.press("Enter")
    expect(item).to_have_attribute("data-read", "true")
    expect(badge(page)).to_have_text("0")
    expect(item.locator(".main")).to_be_focused()
    page.keyboard.press("Tab")
    expect(item.get_by_role("button", name="Accept")).to_be_focused()

    page.keyboard.press("Escape")
    expect(panel).to_be_hidden()
    expect(bell(page)).to_have_attribute("aria-expanded", "false")
    expect(bell(page)).to_be_focused()


def test_payload_markup_shown_as_text(page: Page, api: httpx.Client) -> None:
    markup = "<img src=x onerror=\"document.title='injected'\">"
    open_inbox(page, "mallory")
    bell(page).click()
    trigger(api, "mallory", markup, subject="<b>bold</b>")

    item = item_with(page, "onerror")
    expect(item.locator(".body")).to_have_text(markup, timeout=DELIVERY_TIMEOUT_MS)
    expect(item.locator(".subject")).to_have_text("<b>bold</b>")
    expect(page.locator("novulite-inbox img")).to_have_count(0)
    expect(page.locator("novulite-inbox b")).to_have_count(0)
    expect(page.locator("novulite-inbox .live")).to_have_text("New notification: <b>bold</b>")
    assert page.title() == "novulite inbox widget demo"


def test_actions_and_redirect_links(page: Page, api: httpx.Client, server: ServerProcess) -> None:
    safe_url = f"{server.base_url}/admin/"
    trigger(api, "clicker", "Safe link", url=safe_url)
    trigger(api, "clicker", "Script link", url="javascript:document.title='injected'")
    wait_for_messages(server, "clicker", 2)
    open_inbox(page, "clicker")
    bell(page).click()

    expect(item_with(page, "Safe link").get_by_role("link", name="Open")).to_have_attribute("href", safe_url)
    expect(item_with(page, "Script link").get_by_role("link")).to_have_count(0)

    accept = item_with(page, "Safe link").get_by_role("button", name="Accept")
    accept.click()
    expect(accept).to_have_attribute("aria-pressed", "true")
    token = open_session(server.base_url, "clicker")["token"]
    [done] = [message for message in inbox_messages(server.base_url, token) if message["body"] == "Safe link"]
    assert done["primaryAction"]["isCompleted"] is True
    assert done["secondaryAction"]["isCompleted"] is False


@dataclass
class SocketTap:
    """One socket of the page, routed through Playwright so a test can drop frames and close it."""

    route: WebSocketRoute
    dropping: bool = False
    delivered: list[dict[str, Any]] = field(default_factory=list)
    dropped: list[dict[str, Any]] = field(default_factory=list)

    def forward(self, message: str | bytes) -> None:
        frame = json.loads(message)
        if self.dropping:
            self.dropped.append(frame)
            return
        self.delivered.append(frame)
        self.route.send(message)

    def received_ids(self) -> list[str]:
        frames = [frame for frame in self.delivered if frame["event"] == "notification_received"]
        return [frame["data"]["message"]["_id"] for frame in frames]


def test_reconnect_resumes_once(page: Page, api: httpx.Client, server: ServerProcess) -> None:
    taps: list[SocketTap] = []

    def tap(route: WebSocketRoute) -> None:
        socket = SocketTap(route)
        route.connect_to_server().on_message(socket.forward)
        taps.append(socket)

    page.route_web_socket(lambda url: urlsplit(url).path == "/ws", tap)
    open_inbox(page, "resumer")
    bell(page).click()
    trigger(api, "resumer", "Before the drop")
    expect(item_with(page, "Before the drop")).to_be_visible(timeout=DELIVERY_TIMEOUT_MS)
    [before] = wait_for_messages(server, "resumer", 1)

    # Frames sent from now on are lost, as on a broken network, until the socket closes.
    taps[0].dropping = True
    trigger(api, "resumer", "During the drop")
    during = wait_for_messages(server, "resumer", 2)[0]
    taps[0].route.close(code=4000, reason="network lost")

    expect(item_with(page, "During the drop")).to_have_count(1, timeout=DELIVERY_TIMEOUT_MS)
    expect(badge(page)).to_have_text("2")
    assert len(taps) == 2
    assert parse_qs(urlsplit(taps[1].route.url).query)["since"] == [before["id"]]
    assert during["id"] not in taps[0].received_ids()
    assert taps[1].received_ids() == [during["id"]]
    expect(items(page)).to_have_count(2)

    trigger(api, "resumer", "After the drop")
    expect(item_with(page, "After the drop")).to_have_count(1, timeout=DELIVERY_TIMEOUT_MS)
    expect(items(page)).to_have_count(3)
    expect(badge(page)).to_have_text("3")


# Records the widget's connection and error events from the first moment, and shortens the
# reconnect delays so a test observes several retries in well under a second.
RECORD_EVENTS = """
window.widgetEvents = [];
for (const type of ["novulite-connection", "novulite-error"]) {
  document.addEventListener(type, (event) => window.widgetEvents.push({ type, ...event.detail }));
}
customElements.whenDefined("novulite-inbox").then((inbox) => {
  inbox.reconnectBaseMs = 40;
  inbox.reconnectMaxMs = 160;
});
"""
RETRIES = 6


def is_socket_url(url: str) -> bool:
    return urlsplit(url).path == "/ws"


def test_reconnect_backoff_grows_and_caps(page: Page) -> None:
    page.add_init_script(RECORD_EVENTS)
    refusing = True

    def route(socket: WebSocketRoute) -> None:
        if refusing:
            socket.close(code=1011, reason="refused by the test")
        else:
            socket.connect_to_server()

    page.route_web_socket(is_socket_url, route)
    page.goto(demo_url("patient"))
    page.wait_for_function(
        f"widgetEvents.filter((event) => event.state === 'reconnecting').length >= {RETRIES}"
    )
    refusing = False
    page.wait_for_function("document.querySelector('novulite-inbox').connectionState === 'open'")

    events = page.evaluate("widgetEvents")
    delays = [event["delayMs"] for event in events if event.get("state") == "reconnecting"][:RETRIES]
    for attempt, delay in enumerate(delays):
        full = min(160, 40 * 2**attempt)
        assert full / 2 <= delay <= full, f"retry {attempt} waited {delay} ms, outside [{full / 2}, {full}]"
    capped = delays[2:]
    assert len(set(capped)) == len(capped), f"retries at the cap have no jitter: {capped}"
    expect(badge(page)).to_have_text("0")


def test_rejected_since_reloads_list(page: Page, api: httpx.Client, server: ServerProcess) -> None:
    page.add_init_script(RECORD_EVENTS)
    open_inbox(page, "deleter")
    bell(page).click()
    trigger(api, "deleter", "Soon deleted")
    expect(item_with(page, "Soon deleted")).to_be_visible(timeout=DELIVERY_TIMEOUT_MS)
    [message] = wait_for_messages(server, "deleter", 1)
    token = open_session(server.base_url, "deleter")["token"]
    response = httpx.delete(
        f"{server.base_url}/v1/inbox/notifications/{message['id']}/delete",
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 204, response.text

    # The socket resumes after the deleted message, which the server rejects with 404.
    # The widget then connects without `since` and reloads the list.
    page.evaluate("document.querySelector('novulite-inbox').reconnect()")
    expect(item_with(page, "Soon deleted")).to_have_count(0)
    errors = [event for event in page.evaluate("widgetEvents") if event["type"] == "novulite-error"]
    assert [error["status"] for error in errors] == [404]
    page.wait_for_function("document.querySelector('novulite-inbox').connectionState === 'open'")

    trigger(api, "deleter", "After the rejection")
    expect(item_with(page, "After the rejection")).to_be_visible(timeout=DELIVERY_TIMEOUT_MS)
    expect(badge(page)).to_have_text("1")


def test_wrong_hash_shows_error_once(page: Page) -> None:
    page.add_init_script(RECORD_EVENTS)
    query = urlencode(
        {"applicationIdentifier": APP_ID, "subscriberId": "guesser", "subscriberHash": "0" * 64}
    )
    page.goto(f"{DEMO_PATH}?{query}")
    status = page.locator("novulite-inbox .status")
    bell(page).click()
    expect(status).to_contain_text("could not open a session (HTTP 401)")
    events = page.evaluate("widgetEvents")
    assert [event["status"] for event in events if event["type"] == "novulite-error"] == [401]
    assert [event for event in events if event.get("state") == "reconnecting"] == []


def test_context_needs_its_hash(page: Page, api: httpx.Client, server: ServerProcess) -> None:
    tenant = {"tenant": "acme"}
    query = {
        "applicationIdentifier": APP_ID,
        "subscriberId": "tenant-user",
        "subscriberHash": subscriber_hash("tenant-user"),
        "context": json.dumps(tenant),
    }
    page.goto(f"{DEMO_PATH}?{urlencode(query)}")
    bell(page).click()
    expect(page.locator("novulite-inbox .status")).to_contain_text("could not open a session (HTTP 401)")

    page.goto(f"{DEMO_PATH}?{urlencode({**query, 'contextHash': context_hash(tenant)})}")
    page.wait_for_function("document.querySelector('novulite-inbox')?.connectionState === 'open'")
    bell(page).click()
    outside = {
        "name": WORKFLOW_ID,
        "to": "tenant-user",
        "payload": {"subject": "Hi", "text": "outside any context"},
    }
    assert api.post("/v1/events/trigger", json=outside).status_code == 201
    wait_for_messages(server, "tenant-user", 1)
    inside = {
        "name": WORKFLOW_ID,
        "to": "tenant-user",
        "payload": {"subject": "Hi", "text": "in acme"},
        "context": tenant,
    }
    assert api.post("/v1/events/trigger", json=inside).status_code == 201

    expect(item_with(page, "in acme")).to_have_count(1)
    expect(badge(page)).to_have_text("1")
    # The message outside the context was created first, and never shows.
    expect(item_with(page, "outside any context")).to_have_count(0)


def test_css_custom_properties_theme(page: Page) -> None:
    open_inbox(page, "stylist")
    page.evaluate("document.body.style.setProperty('--novulite-color-badge', 'rgb(0, 128, 0)')")
    page.evaluate(
        "document.querySelector('novulite-inbox').style.setProperty('--novulite-panel-width', '420px')"
    )
    bell(page).click()

    expect(badge(page)).to_have_css("background-color", "rgb(0, 128, 0)")
    box = page.locator("novulite-inbox .panel").bounding_box()
    assert box is not None
    assert box["width"] == 420
    # The demo page styles its own buttons with `padding: 6px 14px`, and the shadow root keeps that out.
    expect(page.get_by_role("button", name="Show inbox")).to_have_css("padding", "6px 14px")
    expect(page.locator("novulite-inbox .mark-all")).to_have_css("padding", "4px 10px")
