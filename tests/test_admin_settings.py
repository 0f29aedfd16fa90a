"""Admin pages for API keys, server settings and admin users, and integrations, against a running server."""

from __future__ import annotations

import json
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
from tests.helpers import admin_session, read_rows
from tests.http_stub import HttpStub, Reply
from tests.servers import ADMIN_PASSWORD, API_KEY, APP_ID, ServerProcess, free_port
from tests.test_admin_ui import (
    DESKTOP_VIEWPORT,
    PHONE_VIEWPORT,
    make_failed_and_completed_jobs,
    needs_chromium,
    open_context,
    sign_in,
    submit_login,
)
from tests.test_email import SMTP_PASSWORD, SMTP_USER, Mailbox, mailbox  # noqa: F401 (mailbox is a fixture)

REPO_ROOT = Path(__file__).resolve().parent.parent
DOCS_SCREENSHOTS = REPO_ROOT / "docs" / "screenshots"
# Set to 1 to copy the screenshots this module takes over those in docs/screenshots.
UPDATE_SCREENSHOTS_VARIABLE = "NOVULITE_UPDATE_SCREENSHOTS"
PAGES = ["/admin/api-keys", "/admin/settings", "/admin/integrations"]
NEW_PASSWORD = "a-new-admin-password-42"


@pytest.fixture(scope="module")
def module_server(
    tmp_path_factory: pytest.TempPathFactory, server_mode: ServerMode
) -> Iterator[ServerProcess]:
    """One server for the tests that leave the secret key and the admin password as they are.

    It may reach 127.0.0.1 only because it runs with NOVULITE_OUTBOUND_ALLOW=127.0.0.1, for
    the HTTP stub that the chat test messages are posted to.
    """
    process = start_server(
        tmp_path_factory.mktemp("admin-settings"),
        env={"NOVULITE_OUTBOUND_ALLOW": "127.0.0.1"},
        mode=server_mode,
    )
    yield process
    process.stop()


@pytest.fixture(scope="module")
def admin(module_server: ServerProcess) -> Iterator[httpx.Client]:
    with admin_session(module_server.base_url) as client:
        yield client


def csrf_token(client: httpx.Client, path: str) -> str:
    page = client.get(path)
    assert page.status_code == 200, page.text
    match = re.search(r'name="_csrf_token" value="([^"]+)"', page.text)
    assert match, f"{path} has no CSRF token"
    return match.group(1)


def post_form(client: httpx.Client, page: str, action: str, fields: dict[str, str]) -> httpx.Response:
    """Post `fields` to `action` with the CSRF token from `page`, without following the redirect."""
    return client.post(action, data={"_csrf_token": csrf_token(client, page), **fields})


def secret_key_status(server: ServerProcess, key: str) -> int:
    response = httpx.get(
        f"{server.base_url}/v2/subscribers", headers={"Authorization": f"ApiKey {key}"}, timeout=10
    )
    return response.status_code


def flash_text(client: httpx.Client, path: str) -> str:
    page = client.get(path)
    match = re.search(r'<p class="flash flash-\w+" role="\w+">([^<]*)</p>', page.text)
    assert match, f"{path} shows no flash message"
    return match.group(1)


# Sign-in and CSRF


def test_pages_redirect_without_session(module_server: ServerProcess) -> None:
    for path in PAGES:
        response = httpx.get(f"{module_server.base_url}{path}", follow_redirects=False, timeout=10)
        assert response.status_code == 303, f"{path}: {response.status_code}"
        assert response.headers["location"] == f"/admin/login?next={path}"


def test_posts_redirect_without_session(module_server: ServerProcess) -> None:
    with httpx.Client(base_url=module_server.base_url, timeout=10) as client:
        form = client.get("/admin/login")
        match = re.search(r'name="_csrf_token" value="([^"]+)"', form.text)
        assert match
        actions = [
            "/admin/api-keys/rotate",
            "/admin/settings/password",
            "/admin/settings/users",
            "/admin/integrations/some-id",
            "/admin/integrations/some-id/test",
        ]
        for action in actions:
            response = client.post(action, data={"_csrf_token": match.group(1), "confirm": "yes"})
            assert response.status_code == 303, f"{action}: {response.status_code}"
            assert response.headers["location"].startswith("/admin/login?next=")
    assert secret_key_status(module_server, API_KEY) == 200


def test_posts_without_csrf_rejected(module_server: ServerProcess, admin: httpx.Client) -> None:
    forms = {
        "/admin/api-keys/rotate": {"confirm": "yes"},
        "/admin/settings/password": {
            "current_password": ADMIN_PASSWORD,
            "new_password": NEW_PASSWORD,
            "new_password_again": NEW_PASSWORD,
        },
        "/admin/settings/users": {"username": "mallory", "password": NEW_PASSWORD},
    }
    for action, fields in forms.items():
        response = admin.post(action, data=fields)
        assert response.status_code == 403, f"{action}: {response.status_code}"
    assert secret_key_status(module_server, API_KEY) == 200
    assert "mallory" not in admin.get("/admin/settings").text


# API keys


def test_api_keys_page_masks_key(admin: httpx.Client) -> None:
    page = admin.get("/admin/api-keys")

    assert page.status_code == 200
    assert APP_ID in page.text
    assert f'data-testid="masked-key">{API_KEY[:8]}•' in page.text
    # The whole key appears once, inside the closed <details> that reveals it.
    assert page.text.count(API_KEY) == 1
    assert re.search(
        r"<details[^>]*>\s*<summary>Show the secret key</summary>\s*<code[^>]*>" + API_KEY, page.text
    )
    assert 'name="confirm"' in page.text


def test_rotate_needs_confirmation(module_server: ServerProcess, admin: httpx.Client) -> None:
    environment_id = re.search(r'name="environment_id" value="([^"]+)"', admin.get("/admin/api-keys").text)
    assert environment_id

    unconfirmed = post_form(
        admin, "/admin/api-keys", "/admin/api-keys/rotate", {"environment_id": environment_id.group(1)}
    )
    unknown = post_form(
        admin, "/admin/api-keys", "/admin/api-keys/rotate", {"environment_id": "no-such-id", "confirm": "yes"}
    )

    assert unconfirmed.status_code == 400
    assert "Confirm:" in unconfirmed.text
    assert unknown.status_code == 400
    assert "Environment not found" in unknown.text
    assert secret_key_status(module_server, API_KEY) == 200


def test_rotate_replaces_key(server: ServerProcess) -> None:
    with admin_session(server.base_url) as client:
        page = client.get("/admin/api-keys").text
        environment_id = re.search(r'name="environment_id" value="([^"]+)"', page)
        assert environment_id
        response = post_form(
            client,
            "/admin/api-keys",
            "/admin/api-keys/rotate",
            {"environment_id": environment_id.group(1), "confirm": "yes"},
        )
        assert response.status_code == 303
        assert response.headers["location"] == "/admin/api-keys"
        message = flash_text(client, "/admin/api-keys")
        shown_again = client.get("/admin/api-keys").text

    new_key = re.search(r"The new key is ([0-9a-f]+)\.", message)
    assert new_key, message
    assert new_key.group(1) != API_KEY
    assert "The new key is" not in shown_again
    assert secret_key_status(server, API_KEY) == 401
    assert secret_key_status(server, new_key.group(1)) == 200


# Settings and admin users


def test_settings_page_lists_server(module_server: ServerProcess, admin: httpx.Client) -> None:
    page = admin.get("/admin/settings")

    assert page.status_code == 200
    assert f"127.0.0.1:{module_server.port}" in page.text
    assert str(module_server.data_dir) in page.text
    assert "25 seconds" in page.text
    assert "360 hours" in page.text
    assert "public addresses only, plus 127.0.0.1" in page.text
    assert 'admin <span class="hint">(you)</span>' in page.text
    if module_server.database_url is None:
        assert f"SQLite file {module_server.data_dir / 'novulite.db'}" in page.text
    else:
        assert module_server.database_url in page.text
    assert "30 days" in page.text
    assert "<code>text</code>" in page.text


def test_redis_password_masked(tmp_path: Path, redis_server: object) -> None:
    from tests.servers import REDIS_PASSWORD, RedisProcess

    assert isinstance(redis_server, RedisProcess)
    server = start_server(tmp_path, env={"NOVULITE_REDIS_URL": redis_server.url})
    try:
        with admin_session(server.base_url) as client:
            page = client.get("/admin/settings").text
    finally:
        server.stop()

    assert REDIS_PASSWORD in redis_server.url
    assert REDIS_PASSWORD not in page
    assert ":****@127.0.0.1" in page


PASSWORD_CASES = [
    (
        {"current_password": "wrong", "new_password": NEW_PASSWORD, "new_password_again": NEW_PASSWORD},
        "password-current_password-error",
        "Current password is wrong.",
    ),
    (
        {"current_password": ADMIN_PASSWORD, "new_password": "short", "new_password_again": "short"},
        "password-new_password-error",
        "New password is too short",
    ),
    (
        {
            "current_password": ADMIN_PASSWORD,
            "new_password": NEW_PASSWORD,
            "new_password_again": NEW_PASSWORD + "x",
        },
        "password-new_password_again-error",
        "does not match",
    ),
]


@pytest.mark.parametrize(("fields", "error_id", "message"), PASSWORD_CASES)
def test_password_change_rejects_input(
    module_server: ServerProcess, admin: httpx.Client, fields: dict[str, str], error_id: str, message: str
) -> None:
    response = post_form(admin, "/admin/settings", "/admin/settings/password", fields)

    assert response.status_code == 400
    assert f'id="{error_id}"' in response.text
    assert message in response.text
    with admin_session(module_server.base_url) as again:
        assert again.get("/admin/settings").status_code == 200


def test_password_change_signs_in(server: ServerProcess) -> None:
    fields = {
        "current_password": ADMIN_PASSWORD,
        "new_password": NEW_PASSWORD,
        "new_password_again": NEW_PASSWORD,
    }
    with admin_session(server.base_url) as other, admin_session(server.base_url) as client:
        response = post_form(client, "/admin/settings", "/admin/settings/password", fields)
        assert response.status_code == 303
        assert flash_text(client, "/admin/settings") == "Your password was changed."
        # The browser that changed it stays signed in, and every other session of the admin ends.
        assert client.get("/admin/settings").status_code == 200
        ended = other.get("/admin/settings")
        assert ended.status_code == 303
        assert ended.headers["location"].startswith("/admin/login")

    with httpx.Client(base_url=server.base_url, timeout=10) as client:
        token = csrf_token(client, "/admin/login")
        old = client.post(
            "/admin/login", data={"_csrf_token": token, "username": "admin", "password": ADMIN_PASSWORD}
        )
        new = client.post(
            "/admin/login", data={"_csrf_token": token, "username": "admin", "password": NEW_PASSWORD}
        )
    assert old.status_code == 401
    assert new.status_code == 303


USER_CASES = [
    ({"username": "", "password": NEW_PASSWORD}, "user-username-error", "Username is invalid"),
    ({"username": "two words", "password": NEW_PASSWORD}, "user-username-error", "Username is invalid"),
    ({"username": "admin", "password": NEW_PASSWORD}, "user-username-error", "Username admin is taken"),
    ({"username": "bob", "password": "short"}, "user-password-error", "Password is too short"),
]


@pytest.mark.parametrize(("fields", "error_id", "message"), USER_CASES)
def test_add_user_rejects_input(
    admin: httpx.Client, fields: dict[str, str], error_id: str, message: str
) -> None:
    response = post_form(admin, "/admin/settings", "/admin/settings/users", fields)

    assert response.status_code == 400
    assert f'id="{error_id}"' in response.text
    assert message in response.text


def test_added_user_signs_in(module_server: ServerProcess, admin: httpx.Client) -> None:
    response = post_form(
        admin, "/admin/settings", "/admin/settings/users", {"username": "carol", "password": NEW_PASSWORD}
    )

    assert response.status_code == 303
    assert flash_text(admin, "/admin/settings") == "Admin user carol was added."
    assert "carol" in admin.get("/admin/settings").text
    with httpx.Client(base_url=module_server.base_url, timeout=10) as client:
        token = csrf_token(client, "/admin/login")
        signed_in = client.post(
            "/admin/login", data={"_csrf_token": token, "username": "carol", "password": NEW_PASSWORD}
        )
        assert signed_in.status_code == 303
        assert 'carol <span class="hint">(you)</span>' in client.get("/admin/settings").text


# Integrations


def create_integration(
    server: ServerProcess, provider_id: str, channel: str, credentials: dict[str, Any]
) -> dict[str, Any]:
    """Create an active integration through the API and return its body."""
    body = {
        "providerId": provider_id,
        "channel": channel,
        "name": f"{provider_id} test",
        "active": True,
        "credentials": credentials,
    }
    response = httpx.post(
        f"{server.base_url}/v1/integrations",
        json=body,
        headers={"Authorization": f"ApiKey {API_KEY}"},
        timeout=10,
    )
    assert response.status_code == 201, response.text
    return response.json()["data"]  # type: ignore[no-any-return]


def stored_credentials(server: ServerProcess, integration_id: str) -> dict[str, Any]:
    rows = read_rows(server.database, "SELECT credentials FROM integration WHERE id = ?", (integration_id,))
    return json.loads(rows[0][0])  # type: ignore[no-any-return]


def smtp_integration(server: ServerProcess, port: int) -> dict[str, Any]:
    credentials = {
        "host": "127.0.0.1",
        "port": str(port),
        "from": "shop@example.com",
        "senderName": "Shop",
        "user": SMTP_USER,
        "password": SMTP_PASSWORD,
        "ignoreTls": True,
    }
    return create_integration(server, "smtp", "email", credentials)


def test_integrations_listed_masked(module_server: ServerProcess, admin: httpx.Client) -> None:
    secret = "chat-signing-secret-4711"
    webhook = "https://hooks.example.com/services/T000/B000/abcdefabcdef"
    integration = create_integration(
        module_server, "slack", "chat", {"webhookUrl": webhook, "secretKey": secret}
    )

    listing = admin.get("/admin/integrations")
    edit = admin.get(f"/admin/integrations/{integration['_id']}")

    assert listing.status_code == 200
    assert f'href="/admin/integrations/{integration["_id"]}"' in listing.text
    assert integration["identifier"] in listing.text
    assert edit.status_code == 200
    for page in (listing, edit):
        assert secret not in page.text
        assert webhook not in page.text
    assert f"stored: {'*' * (len(secret) - 4)}4711" in edit.text


def test_integration_missing_is_404(admin: httpx.Client) -> None:
    assert admin.get("/admin/integrations/no-such-integration").status_code == 404


def test_integration_save_keeps_blank_secret(
    module_server: ServerProcess,
    admin: httpx.Client,
    mailbox: tuple[Mailbox, int],  # noqa: F811
) -> None:
    _, port = mailbox
    integration = smtp_integration(module_server, port)
    path = f"/admin/integrations/{integration['_id']}"
    fields = {
        "name": "Shop mail",
        "active": "yes",
        "cred.host": "127.0.0.1",
        "cred.port": str(port),
        "cred.from": "orders@example.com",
        "cred.senderName": "Orders",
        "cred.user": "",
        "cred.password": "",
        "cred.ignoreTls": "true",
        "new_key": "replyTo",
        "new_value": "help@example.com",
    }

    response = post_form(admin, path, path, fields)

    assert response.status_code == 303, response.text
    assert flash_text(admin, path) == "Integration Shop mail was saved."
    stored = stored_credentials(module_server, integration["_id"])
    assert stored["password"] == SMTP_PASSWORD
    assert stored["user"] == SMTP_USER
    assert stored["from"] == "orders@example.com"
    assert stored["replyTo"] == "help@example.com"
    assert stored["ignoreTls"] is True
    listing = admin.get("/admin/integrations").text
    assert "Shop mail" in listing
    assert SMTP_PASSWORD not in admin.get(path).text


INTEGRATION_CASES = [
    ({"name": ""}, 'id="name-error"', "must be a non-empty string"),
    ({"cred.from": "not-an-address"}, 'id="cred-from-error"', "must be an email address"),
    ({"cred.host": ""}, 'id="cred-host-error"', "is required"),
    ({"new_key": "bad key", "new_value": "x"}, 'id="new_key-error"', "must start with a letter"),
]


@pytest.mark.parametrize(("change", "error_id", "message"), INTEGRATION_CASES)
def test_integration_save_rejects_input(
    module_server: ServerProcess, admin: httpx.Client, change: dict[str, str], error_id: str, message: str
) -> None:
    integration = smtp_integration(module_server, 2525)
    path = f"/admin/integrations/{integration['_id']}"
    fields = {
        "name": "Mail",
        "active": "yes",
        "cred.host": "127.0.0.1",
        "cred.from": "shop@example.com",
        **change,
    }

    response = post_form(admin, path, path, fields)

    assert response.status_code == 400
    assert error_id in response.text
    assert message in response.text
    assert stored_credentials(module_server, integration["_id"])["from"] == "shop@example.com"
    # The form shows back what was typed, except secrets.
    if "cred.from" in change:
        assert f'value="{change["cred.from"]}"' in response.text
    assert SMTP_PASSWORD not in response.text


def test_integration_posts_without_csrf_rejected(module_server: ServerProcess, admin: httpx.Client) -> None:
    integration = smtp_integration(module_server, 2525)
    path = f"/admin/integrations/{integration['_id']}"

    saved = admin.post(path, data={"name": "Changed", "active": "yes", "cred.host": "127.0.0.1"})
    tested = admin.post(f"{path}/test", data={"recipient": "ann@example.com"})

    assert saved.status_code == 403
    assert tested.status_code == 403
    assert "Changed" not in admin.get("/admin/integrations").text


def test_test_email_reaches_mailbox(
    module_server: ServerProcess,
    admin: httpx.Client,
    mailbox: tuple[Mailbox, int],  # noqa: F811
) -> None:
    handler, port = mailbox
    integration = smtp_integration(module_server, port)
    path = f"/admin/integrations/{integration['_id']}"

    # The mailbox serves the module in both server modes, so each server mails its own recipient.
    recipient = f"tester-{module_server.port}@example.com"
    response = post_form(admin, path, f"{path}/test", {"recipient": recipient})

    assert response.status_code == 200, response.text
    assert "The SMTP server accepted the message: 250" in response.text
    received = handler.received(recipient)
    assert len(received) == 1
    message, login = received[0]
    assert message["Subject"] == "Test message from novulite"
    assert login == SMTP_USER


def test_test_email_shows_provider_error(module_server: ServerProcess, admin: httpx.Client) -> None:
    closed_port = free_port()
    integration = smtp_integration(module_server, closed_port)
    path = f"/admin/integrations/{integration['_id']}"

    response = post_form(admin, path, f"{path}/test", {"recipient": "tester@example.com"})
    invalid = post_form(admin, path, f"{path}/test", {"recipient": "not an address"})

    assert response.status_code == 200
    assert "Failed." in response.text
    assert "connect failed" in response.text
    assert invalid.status_code == 400
    assert 'id="recipient-error"' in invalid.text


def test_test_chat_reaches_stub(module_server: ServerProcess, admin: httpx.Client) -> None:
    stub = HttpStub().start()
    try:
        stub.route("/hook", Reply(200, {"ok": True}))
        stub.route("/failing", Reply(500, {"error": "broken"}))
        integration = create_integration(
            module_server, "chat-webhook", "chat", {"secretKey": "chat-secret-1234"}
        )
        path = f"/admin/integrations/{integration['_id']}"

        sent = post_form(admin, path, f"{path}/test", {"recipient": stub.url("/hook")})
        failed = post_form(admin, path, f"{path}/test", {"recipient": stub.url("/failing")})
        received = stub.wait_for("/hook", 1)
    finally:
        stub.stop()

    assert sent.status_code == 200
    assert "Message sent to the subscriber" in sent.text
    assert received[0].json()["content"].startswith("This test message was sent by the admin admin")
    assert "x-novu-signature" in received[0].headers
    assert failed.status_code == 200
    assert "Failed." in failed.text
    assert "500" in failed.text


# Browser flows


def _save_screenshot(page: Page, path: str, name: str, folder: Path) -> None:
    page.goto(path)
    target = folder / f"{name}.png"
    page.screenshot(path=str(target), full_page=True)
    assert target.read_bytes().startswith(b"\x89PNG")
    if os.environ.get(UPDATE_SCREENSHOTS_VARIABLE) == "1":
        DOCS_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(target, DOCS_SCREENSHOTS / f"{name}.png")


@needs_chromium
def test_browser_rotate_and_password(server: ServerProcess, browser: Browser, tmp_path: Path) -> None:
    with open_context(browser, server, DESKTOP_VIEWPORT) as context:
        page = context.new_page()
        assert sign_in(page, "/admin/api-keys") == 200
        assert urlsplit(page.url).path == "/admin/api-keys"
        assert page.get_attribute("nav a[href='/admin/api-keys']", "aria-current") == "page"
        assert not page.locator("[data-testid=secret-key]").is_visible()
        page.click("summary:has-text('Show the secret key')")
        assert page.locator("[data-testid=secret-key]").inner_text() == API_KEY

        page.check("input[name=confirm]")
        with page.expect_navigation():
            page.click("button:has-text('Rotate secret key')")
        flash = page.locator("[role=status]").inner_text()
        new_key = re.search(r"The new key is ([0-9a-f]+)\.", flash)
        assert new_key, flash
        assert secret_key_status(server, API_KEY) == 401
        assert secret_key_status(server, new_key.group(1)) == 200
        page.click("summary:has-text('Show the secret key')")
        assert page.locator("[data-testid=secret-key]").inner_text() == new_key.group(1)
        _save_screenshot(page, "/admin/api-keys", "api-keys", tmp_path)

        page.goto("/admin/settings")
        page.fill("#password-current_password", ADMIN_PASSWORD)
        page.fill("#password-new_password", NEW_PASSWORD)
        page.fill("#password-new_password_again", NEW_PASSWORD)
        with page.expect_navigation():
            page.click("button:has-text('Change password')")
        assert page.locator("[role=status]").inner_text() == "Your password was changed."
        with page.expect_navigation():
            page.click("button:has-text('Sign out')")
        assert urlsplit(page.url).path == "/admin/login"

        assert submit_login(page, ADMIN_PASSWORD) == 401
        assert submit_login(page, NEW_PASSWORD) == 200
        assert urlsplit(page.url).path == "/admin/"


@needs_chromium
def test_pages_fit_phone(module_server: ServerProcess, browser: Browser) -> None:
    integration = smtp_integration(module_server, 2525)
    with open_context(browser, module_server, PHONE_VIEWPORT) as phone:
        page = phone.new_page()
        assert sign_in(page) == 200
        for path in [*PAGES, f"/admin/integrations/{integration['_id']}"]:
            page.goto(path)
            assert urlsplit(page.url).path == path
            widths = page.evaluate(
                "() => ({scroll: document.scrollingElement.scrollWidth, inner: window.innerWidth})"
            )
            assert widths["scroll"] <= widths["inner"], f"{path} scrolls sideways at 390 px: {widths}"


def test_dashboard_chart_counts_hours(server: ServerProcess, api: httpx.Client) -> None:
    make_failed_and_completed_jobs(server, api)

    with admin_session(server.base_url) as client:
        page = client.get("/admin/").text

    rows = re.findall(r'<tr><th scope="row">([^<]+)</th><td>(\d+)</td><td>(\d+)</td></tr>', page)
    assert len(rows) == 24
    # Both jobs ran a moment ago: in this hour's row, or the previous one's when an hour began meanwhile.
    assert sum(int(row[1]) for row in rows[-2:]) == 2
    assert sum(int(row[2]) for row in rows[-2:]) == 1
    assert sum(int(row[1]) for row in rows) == 2
    assert sum(int(row[2]) for row in rows) == 1
    assert page.count('class="bar-notifications"') == 24
    assert page.count('class="bar-failures"') == 24
    failures = page[page.index("<h2>Newest failures</h2>") :]
    assert "<code>broken-total</code>" in failures
    assert "<code>carol</code>" in failures
    assert "divided_by" in failures


@needs_chromium
def test_dashboard_chart_screenshot(
    server: ServerProcess,
    api: httpx.Client,
    browser: Browser,
    tmp_path: Path,
) -> None:
    make_failed_and_completed_jobs(server, api)
    with open_context(browser, server, DESKTOP_VIEWPORT) as context:
        page = context.new_page()
        assert sign_in(page) == 200
        assert page.locator("svg.hourly-chart").is_visible()
        assert page.get_attribute("svg.hourly-chart", "aria-hidden") == "true"
        caption = page.locator("[data-testid=hourly-table] caption").inner_text()
        assert caption.startswith("Notifications and failed jobs per hour")
        _save_screenshot(page, "/admin/", "dashboard", tmp_path)


def test_test_message_guard_refuses_loopback(server: ServerProcess) -> None:
    """Without NOVULITE_OUTBOUND_ALLOW the guard rejects a loopback webhook before connecting."""
    stub = HttpStub().start()
    try:
        integration = create_integration(server, "chat-webhook", "chat", {})
        path = f"/admin/integrations/{integration['_id']}"
        with admin_session(server.base_url) as client:
            response = post_form(client, path, f"{path}/test", {"recipient": stub.url("/hook")})
        connections = stub.connections
    finally:
        stub.stop()

    assert response.status_code == 200
    assert "Failed." in response.text
    assert "OutboundRefused" in response.text
    assert connections == 0
