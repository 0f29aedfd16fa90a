"""The admin workflow editor on a running server: forms, validation, preview, test trigger, browser."""

from __future__ import annotations

import html
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from tests.helpers import admin_session, poll, read_rows
from tests.servers import ServerProcess
from tests.test_admin_ui import (
    DESKTOP_VIEWPORT,
    PHONE_VIEWPORT,
    needs_chromium,
    open_context,
    sign_in,
    wait_for_job,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
DOCS_SCREENSHOT = REPO_ROOT / "docs" / "screenshots" / "workflow-editor.png"
# Set to 1 to copy the screenshot this module takes over the one in docs/screenshots.
UPDATE_SCREENSHOTS_VARIABLE = "NOVULITE_UPDATE_SCREENSHOTS"
CSRF_PATTERN = re.compile(r'name="_csrf_token" value="([^"]+)"')


@pytest.fixture(scope="module")
def admin(shared_server: ServerProcess) -> Iterator[httpx.Client]:
    """A client signed in to the admin UI of the module's shared server."""
    with admin_session(shared_server.base_url) as client:
        yield client


def csrf_token(client: httpx.Client, path: str) -> str:
    page = client.get(path)
    assert page.status_code == 200, page.text
    match = CSRF_PATTERN.search(page.text)
    assert match, f"{path} has no CSRF token"
    return match.group(1)


def in_app_form(workflow_id: str, **fields: str) -> dict[str, str]:
    """Return the new-workflow form fields of a workflow with one in-app step, with `fields` set over them."""
    return {
        "name": f"Form {workflow_id}",
        "workflowId": workflow_id,
        "description": "Made in the editor",
        "tags": "billing, account ,",
        "active": "on",
        "channel-in_app": "on",
        "channel-email": "on",
        "step_count": "1",
        "step-0-type": "in_app",
        "step-0-name": "Inbox",
        "step-0-stepId": "",
        "step-0-subject": "Invoice {{ payload.number }}",
        "step-0-body": "Hello {{ subscriber.firstName }}, invoice {{ payload.number }} is ready.",
        "step-0-avatar": "",
        "step-0-primaryAction.label": "Open",
        "step-0-primaryAction.redirect.url": "/invoices/{{ payload.number }}",
        "step-0-redirect.url": "",
        "step-0-controls": '{"data": {"number": "{{ payload.number }}"}}',
        "step-0-skip": '{"==": [{"var": "payload.muted"}, true]}',
        "action": "save",
        **fields,
    }


def post_form(
    client: httpx.Client, path: str, fields: dict[str, str], form_path: str | None = None
) -> httpx.Response:
    token = csrf_token(client, form_path or path)
    return client.post(path, data={"_csrf_token": token, **fields})


def create_through_form(client: httpx.Client, workflow_id: str, **fields: str) -> str:
    """Create a workflow through the new-workflow form and return its database id."""
    response = post_form(client, "/admin/workflows/new", in_app_form(workflow_id, **fields))
    assert response.status_code == 303, response.text
    path = urlsplit(response.headers["location"]).path
    assert path.startswith("/admin/workflows/")
    return path.rsplit("/", 1)[1]


def stored_workflow(api: httpx.Client, workflow_id: str) -> dict[str, Any]:
    response = api.get(f"/v2/workflows/{workflow_id}")
    assert response.status_code == 200, response.text
    return response.json()["data"]  # type: ignore[no-any-return]


def page_text(response: httpx.Response) -> str:
    return html.unescape(response.text)


def test_pages_redirect_without_session(shared_server: ServerProcess, shared_api: httpx.Client) -> None:
    workflow_pk = stored_workflow(shared_api, "welcome")["_id"]
    for path in ["/admin/workflows/new", f"/admin/workflows/{workflow_pk}"]:
        response = httpx.get(f"{shared_server.base_url}{path}", follow_redirects=False, timeout=10)
        assert response.status_code == 303, f"{path}: {response.status_code}"
        assert response.headers["location"] == f"/admin/login?next={path}"


def test_posts_without_csrf_rejected(admin: httpx.Client, shared_api: httpx.Client) -> None:
    workflow_pk = stored_workflow(shared_api, "welcome")["_id"]
    for path in [
        "/admin/workflows/new",
        f"/admin/workflows/{workflow_pk}",
        f"/admin/workflows/{workflow_pk}/preview",
        f"/admin/workflows/{workflow_pk}/trigger",
        "/admin/workflows/live-preview",
    ]:
        response = admin.post(path, data=in_app_form("no-token"))
        assert response.status_code == 403, f"{path}: {response.status_code}"
    assert shared_api.get("/v2/workflows/no-token").status_code == 404


def test_list_links_to_editor(admin: httpx.Client, shared_api: httpx.Client) -> None:
    workflow_pk = stored_workflow(shared_api, "welcome")["_id"]
    page = admin.get("/admin/workflows")
    assert page.status_code == 200
    assert 'href="/admin/workflows/new"' in page.text
    assert f'href="/admin/workflows/{workflow_pk}"' in page.text


def test_create_stores_fields(admin: httpx.Client, shared_api: httpx.Client) -> None:
    workflow_pk = create_through_form(admin, "invoice-ready")

    page = admin.get(f"/admin/workflows/{workflow_pk}")
    assert "Workflow saved" in page.text
    workflow = stored_workflow(shared_api, "invoice-ready")
    assert workflow["_id"] == workflow_pk
    assert workflow["name"] == "Form invoice-ready"
    assert workflow["description"] == "Made in the editor"
    assert workflow["tags"] == ["billing", "account"]
    assert workflow["active"] is True
    assert workflow["critical"] is False
    channels = workflow["preferences"]["default"]["channels"]
    assert {channel: value["enabled"] for channel, value in channels.items()} == {
        "in_app": True,
        "email": True,
        "sms": False,
        "chat": False,
        "push": False,
    }
    (step,) = workflow["steps"]
    assert step["type"] == "in_app"
    assert step["stepId"] == "inbox"
    assert step["controlValues"] == {
        "subject": "Invoice {{ payload.number }}",
        "body": "Hello {{ subscriber.firstName }}, invoice {{ payload.number }} is ready.",
        "primaryAction": {"label": "Open", "redirect": {"url": "/invoices/{{ payload.number }}"}},
        "data": {"number": "{{ payload.number }}"},
        "skip": {"==": [{"var": "payload.muted"}, True]},
    }


def test_edit_form_round_trips(admin: httpx.Client, shared_api: httpx.Client) -> None:
    """Saving the edit page unchanged keeps every field and step as stored."""
    workflow_pk = create_through_form(admin, "round-trip")
    before = stored_workflow(shared_api, "round-trip")
    page = admin.get(f"/admin/workflows/{workflow_pk}")
    fields = dict(re.findall(r'<input id="[^"]*" name="([^"]+)" value="([^"]*)"', page.text))
    fields.update(re.findall(r'<textarea id="[^"]*" name="(step-[^"]+)"[^>]*>([^<]*)</textarea>', page.text))
    fields = {name: html.unescape(value) for name, value in fields.items()}
    fields.update({"step_count": "1", "step-0-type": "in_app", "active": "on", "action": "save"})
    fields.update({"channel-in_app": "on", "channel-email": "on", "description": before["description"]})

    response = post_form(admin, f"/admin/workflows/{workflow_pk}", fields)

    assert response.status_code == 303, page_text(response)
    after = stored_workflow(shared_api, "round-trip")
    assert after["steps"][0]["controlValues"] == before["steps"][0]["controlValues"]
    assert after["steps"][0]["_id"] == before["steps"][0]["_id"]
    assert after["tags"] == before["tags"]
    assert after["preferences"] == before["preferences"]


def test_edit_adds_reorders_and_renames(admin: httpx.Client, shared_api: httpx.Client) -> None:
    workflow_pk = create_through_form(admin, "edited")
    inbox_step_pk = stored_workflow(shared_api, "edited")["steps"][0]["_id"]
    fields = in_app_form("edited", name="Edited workflow", critical="on", tags="ops")
    del fields["workflowId"]
    fields.update(
        {
            "step_count": "2",
            "step-0-type": "email",
            "step-0-name": "Email",
            "step-0-subject": "Invoice {{ payload.number }}",
            "step-0-body": "<p>Invoice {{ payload.number }}</p>",
            "step-0-controls": "",
            "step-0-skip": "",
            "step-1-type": "in_app",
            "step-1-name": "Inbox",
            "step-1-stepId": "inbox",
            "step-1-body": "Invoice {{ payload.number }}",
        }
    )

    response = post_form(admin, f"/admin/workflows/{workflow_pk}", fields)

    assert response.status_code == 303, page_text(response)
    workflow = stored_workflow(shared_api, "edited")
    assert workflow["name"] == "Edited workflow"
    assert workflow["critical"] is True
    assert workflow["tags"] == ["ops"]
    assert [(step["stepId"], step["type"]) for step in workflow["steps"]] == [
        ("email", "email"),
        ("inbox", "in_app"),
    ]
    # The kept step keeps its row, so jobs that point at it still find it.
    assert workflow["steps"][1]["_id"] == inbox_step_pk
    assert workflow["steps"][1]["controlValues"] == {"body": "Invoice {{ payload.number }}"}


def test_step_buttons_change_form_only(admin: httpx.Client, shared_api: httpx.Client) -> None:
    fields = in_app_form("buttons-only", action="add", new_step_type="delay")
    added = post_form(admin, "/admin/workflows/new", fields)
    assert added.status_code == 200, added.text
    assert 'name="step-1-type" value="delay"' in added.text
    assert 'id="step-1-amount"' in added.text
    assert 'name="step_count" value="2"' in added.text

    moved = post_form(
        admin,
        "/admin/workflows/new",
        {**fields, "action": "down-0", "step_count": "2", "step-1-type": "delay", "step-1-name": "Delay"},
    )
    assert moved.status_code == 200, moved.text
    assert 'name="step-0-type" value="delay"' in moved.text
    assert 'name="step-1-type" value="in_app"' in moved.text

    removed = post_form(admin, "/admin/workflows/new", {**fields, "action": "remove-0"})
    assert removed.status_code == 200, removed.text
    assert 'name="step_count" value="0"' in removed.text
    assert shared_api.get("/v2/workflows/buttons-only").status_code == 404


@pytest.mark.parametrize(
    ("changes", "field", "problem"),
    [
        ({"name": " "}, "name", "is required"),
        ({"workflowId": "has spaces"}, "workflowId", "is required: 1 to 200 letters"),
        ({"workflowId": "welcome"}, "workflowId", "is already used"),
        ({"step-0-body": ""}, "steps[0].controlValues.body", "is required for an in_app step"),
        (
            {"step-0-body": "{{ payload.number "},
            "steps[0].controlValues.body",
            "is not a valid Liquid template",
        ),
        ({"step-0-controls": "{not json"}, "steps[0].controlValues", "is not valid JSON"),
        ({"step-0-controls": "[1]"}, "steps[0].controlValues", "must be a JSON object"),
        ({"step-0-skip": '{"nope": []}'}, "steps[0].controlValues.skip", ""),
        ({"step-0-type": "carrier_pigeon"}, "steps[0].type", "is not a step type"),
        ({"step-0-stepId": "a b"}, "steps[0].stepId", "must use letters"),
    ],
)
def test_bad_input_names_field(
    admin: httpx.Client, shared_api: httpx.Client, changes: dict[str, str], field: str, problem: str
) -> None:
    response = post_form(admin, "/admin/workflows/new", in_app_form("bad-input", **changes))

    assert response.status_code == 400, response.text
    text = page_text(response)
    assert "The workflow was not saved" in text
    assert f"{field} {problem}" in text
    if "name" not in changes:
        # The form is shown again with what was typed.
        assert 'value="Form bad-input"' in response.text
    assert shared_api.get("/v2/workflows/bad-input").status_code == 404


def test_edit_bad_input_keeps_stored(admin: httpx.Client, shared_api: httpx.Client) -> None:
    workflow_pk = create_through_form(admin, "kept-on-error")
    fields = in_app_form("kept-on-error", name="Changed", **{"step-0-body": ""})

    response = post_form(admin, f"/admin/workflows/{workflow_pk}", fields)

    assert response.status_code == 400
    assert "steps[0].controlValues.body is required" in page_text(response)
    assert stored_workflow(shared_api, "kept-on-error")["name"] == "Form kept-on-error"


def test_unknown_workflow_not_found(admin: httpx.Client) -> None:
    assert admin.get("/admin/workflows/no-such-workflow").status_code == 404


def preview(
    admin: httpx.Client, workflow_pk: str, step: str, payload: str, subscriber: str = "{}"
) -> httpx.Response:
    path = f"/admin/workflows/{workflow_pk}"
    return post_form(
        admin, f"{path}/preview", {"step": step, "payload": payload, "subscriber": subscriber}, form_path=path
    )


def test_preview_renders_escaped(admin: httpx.Client) -> None:
    workflow_pk = create_through_form(admin, "preview-me")

    response = preview(admin, workflow_pk, "inbox", '{"number": "<b>42</b>"}', '{"firstName": "Ada"}')

    assert response.status_code == 200, response.text
    assert "Hello Ada, invoice &lt;b&gt;42&lt;/b&gt; is ready." in response.text
    assert "<b>42</b>" not in response.text
    assert "/invoices/&lt;b&gt;42&lt;/b&gt;" in response.text


def test_preview_shows_template_error(admin: httpx.Client) -> None:
    workflow_pk = create_through_form(
        admin, "preview-error", **{"step-0-body": "Line one\nTotal {{ payload.count | divided_by: 0 }}"}
    )

    response = preview(admin, workflow_pk, "inbox", '{"count": 3}')

    assert response.status_code == 200, response.text
    text = page_text(response)
    assert "Preview failed" in text
    assert "body: divided_by: can't divide by 0" in text


def test_preview_bad_json_rejected(admin: httpx.Client) -> None:
    workflow_pk = create_through_form(admin, "preview-json")

    response = preview(admin, workflow_pk, "inbox", "{oops")

    assert response.status_code == 400
    assert "payload is not valid JSON" in page_text(response)


def live_preview(admin: httpx.Client, **fields: str) -> httpx.Response:
    token = csrf_token(admin, "/admin/workflows/new")
    return admin.post("/admin/workflows/live-preview", data={"_csrf_token": token, **fields})


def test_live_preview_renders_unsaved(admin: httpx.Client) -> None:
    response = live_preview(
        admin,
        type="in_app",
        subject="Order {{ payload.order }}",
        body="Hi {{ subscriber.firstName }} from {{ workflow.name }}",
        **{"primaryAction.label": "Track {{ payload.order }}"},
        payload='{"order": "<b>Z-9</b>"}',
        subscriber='{"firstName": "Ada"}',
        name="Shipping",
    )
    assert response.status_code == 200
    assert response.json() == {
        "rendered": [
            ["subject", "Order <b>Z-9</b>"],
            ["body", "Hi Ada from Shipping"],
            ["primaryAction.label", "Track <b>Z-9</b>"],
        ],
        "error": None,
    }


def test_live_preview_escapes_email_values(admin: httpx.Client) -> None:
    response = live_preview(
        admin, type="email", body="<p>{{ payload.order }}</p>", payload='{"order": "<b>"}'
    )
    assert response.json()["rendered"] == [["body", "<p>&lt;b&gt;</p>"]]


@pytest.mark.parametrize(
    ("fields", "status", "error"),
    [
        (
            {"type": "in_app", "body": "{{ payload.n | divided_by: 0 }}", "payload": '{"n": 1}'},
            200,
            "divided_by",
        ),
        ({"type": "in_app", "body": "x", "payload": "{not json"}, 400, "payload"),
        ({"type": "delay"}, 400, "no content to preview"),
    ],
)
def test_live_preview_reports_problems(
    admin: httpx.Client, fields: dict[str, str], status: int, error: str
) -> None:
    response = live_preview(admin, **fields)
    assert response.status_code == status
    assert error in response.json()["error"]


def trigger(admin: httpx.Client, workflow_pk: str, subscriber_id: str, payload: str) -> httpx.Response:
    path = f"/admin/workflows/{workflow_pk}"
    return post_form(
        admin, f"{path}/trigger", {"subscriberId": subscriber_id, "payload": payload}, form_path=path
    )


def test_trigger_sends_notification(admin: httpx.Client, shared_api: httpx.Client) -> None:
    workflow_pk = create_through_form(admin, "trigger-me")

    response = trigger(admin, workflow_pk, "erin", '{"number": 7}')

    assert response.status_code == 303, response.text
    location = urlsplit(response.headers["location"])
    assert location.path == f"/admin/workflows/{workflow_pk}"
    (transaction_id,) = parse_qs(location.query)["transactionId"]
    page = admin.get(response.headers["location"])
    assert f"Test trigger sent with transaction id {transaction_id}" in page.text
    assert f'href="/admin/activity?transactionId={transaction_id}"' in page.text
    notifications = poll(
        lambda: shared_api.get("/v1/notifications", params={"transactionId": transaction_id}).json()["data"],
        lambda data: len(data) == 1,
        f"the notification of transaction {transaction_id}",
    )
    assert notifications[0]["transactionId"] == transaction_id


def test_removed_step_keeps_its_jobs(
    admin: httpx.Client, shared_api: httpx.Client, shared_server: ServerProcess
) -> None:
    workflow_pk = create_through_form(admin, "remove-after-run")
    response = trigger(admin, workflow_pk, "frank", '{"number": 1}')
    assert response.status_code == 303, response.text
    (transaction_id,) = parse_qs(urlsplit(response.headers["location"]).query)["transactionId"]
    wait_for_job(shared_server, transaction_id, "completed")
    fields = in_app_form("remove-after-run", **{"step-0-stepId": "replacement"})

    response = post_form(admin, f"/admin/workflows/{workflow_pk}", fields)

    assert response.status_code == 303, page_text(response)
    assert [step["stepId"] for step in stored_workflow(shared_api, "remove-after-run")["steps"]] == [
        "replacement"
    ]
    rows = read_rows(
        shared_server.database,
        "SELECT step_pk, status FROM job WHERE transaction_id = ?",
        (transaction_id,),
    )
    assert rows == [(None, "completed")]


@pytest.mark.parametrize(
    ("subscriber_id", "payload", "message"),
    [
        ("", "{}", "subscriberId is required"),
        ("erin", "[1, 2]", "payload must be a JSON object"),
        ("erin", "{oops", "payload is not valid JSON"),
    ],
)
def test_trigger_bad_input_names_field(
    admin: httpx.Client, subscriber_id: str, payload: str, message: str
) -> None:
    workflow_pk = create_through_form(admin, f"trigger-bad-{len(message)}")

    response = trigger(admin, workflow_pk, subscriber_id, payload)

    assert response.status_code == 400
    assert message in page_text(response)


def test_trigger_inactive_reports_status(admin: httpx.Client) -> None:
    fields = in_app_form("inactive-trigger")
    del fields["active"]
    response = post_form(admin, "/admin/workflows/new", fields)
    assert response.status_code == 303
    workflow_pk = urlsplit(response.headers["location"]).path.rsplit("/", 1)[1]

    response = trigger(admin, workflow_pk, "erin", "{}")

    assert response.status_code == 303
    assert "transactionId" not in response.headers["location"]
    assert "The test trigger was not sent: trigger_not_active" in admin.get(response.headers["location"]).text


@needs_chromium
def test_editor_in_browser(
    browser: Browser, shared_server: ServerProcess, shared_api: httpx.Client, tmp_path: Path
) -> None:
    with open_context(browser, shared_server, DESKTOP_VIEWPORT) as context:
        page = context.new_page()
        assert sign_in(page, "/admin/workflows") == 200
        workflow_pk = run_editor_flow(page, shared_api, tmp_path)
    with open_context(browser, shared_server, DESKTOP_VIEWPORT) as context:
        page = context.new_page()
        assert sign_in(page, f"/admin/workflows/{workflow_pk}") == 200
        # Typing renders the unsaved content below the step, without a submit.
        page.fill("#live-payload", '{"order": "Z-9"}')
        body = page.locator("textarea[name='step-1-body']")
        body.fill("Live {{ payload.order }} for {{ subscriber.firstName }}")
        expect(page.locator("#step-1-live")).to_contain_text("Live Z-9 for Ada")
        body.fill("{{ payload.order | divided_by: 0 }}")
        expect(page.locator("#step-1-live")).to_contain_text("divided_by")
    with open_context(browser, shared_server, PHONE_VIEWPORT) as phone:
        page = phone.new_page()
        assert sign_in(page, f"/admin/workflows/{workflow_pk}") == 200
        widths = page.evaluate(
            "() => ({scroll: document.scrollingElement.scrollWidth, inner: window.innerWidth})"
        )
        assert widths["scroll"] <= widths["inner"], f"the editor scrolls sideways at 390 px: {widths}"


def click_and_wait(page: Page, selector: str) -> None:
    with page.expect_navigation():
        page.click(selector)


def run_editor_flow(page: Page, api: httpx.Client, tmp_path: Path) -> str:
    """Create, reorder, save, preview and trigger a workflow in the editor; return its database id."""
    click_and_wait(page, "text=New workflow")
    assert urlsplit(page.url).path == "/admin/workflows/new"
    page.fill("#name", "Order shipped")
    page.fill("#workflowId", "order-shipped-ui")
    page.fill("#tags", "orders, shipping")

    # Add an in-app step, then an email step, then put the email first.
    page.select_option("#new_step_type", "in_app")
    click_and_wait(page, "button:has-text('Add step')")
    page.fill("#step-0-subject", "Order {{ payload.order }}")
    page.fill("#step-0-body", "Hi {{ subscriber.firstName }}, order {{ payload.order }} shipped.")
    page.select_option("#new_step_type", "email")
    click_and_wait(page, "button:has-text('Add step')")
    page.fill("#step-1-subject", "Your order {{ payload.order }}")
    page.fill("#step-1-body", "<p>Order {{ payload.order }} is on its way.</p>")
    assert page.input_value("#step-0-body").startswith("Hi ")
    click_and_wait(page, "button[aria-label='Move step 2 up']")
    assert page.input_value("input[name='step-0-type']") == "email"
    assert page.input_value("#step-1-body").startswith("Hi ")
    click_and_wait(page, "button:has-text('Save workflow')")

    assert page.locator(".flash").inner_text() == "Workflow saved"
    workflow_pk = urlsplit(page.url).path.rsplit("/", 1)[1]

    # Preview the in-app step, now second, with a sample payload.
    form = page.locator("form#preview-in-app")
    form.locator("textarea[name=payload]").fill('{"order": "A-17"}')
    form.locator("textarea[name=subscriber]").fill('{"firstName": "Grace"}')
    with page.expect_navigation():
        form.locator("button:has-text('Preview')").click()
    result = page.locator("form#preview-in-app .preview-result")
    assert "Hi Grace, order A-17 shipped." in result.inner_text()
    assert "Order A-17" in result.inner_text()

    screenshot = tmp_path / "workflow-editor.png"
    page.screenshot(path=str(screenshot), full_page=True)
    assert screenshot.read_bytes().startswith(b"\x89PNG")
    if os.environ.get(UPDATE_SCREENSHOTS_VARIABLE) == "1":
        DOCS_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(screenshot, DOCS_SCREENSHOT)

    page.fill("#trigger-subscriberId", "grace")
    page.fill("#trigger-payload", '{"order": "A-17"}')
    click_and_wait(page, "button:has-text('Send test trigger')")
    flash = page.locator(".flash").inner_text()
    match = re.fullmatch(r"Test trigger sent with transaction id (\S+)", flash)
    assert match, flash
    transaction_id = match.group(1)
    link = page.locator(f"a[href='/admin/activity?transactionId={transaction_id}']")
    assert link.count() == 1

    workflow = stored_workflow(api, "order-shipped-ui")
    assert workflow["_id"] == workflow_pk
    assert workflow["tags"] == ["orders", "shipping"]
    assert [(step["stepId"], step["type"]) for step in workflow["steps"]] == [
        ("email", "email"),
        ("in-app", "in_app"),
    ]
    assert (
        workflow["steps"][1]["controlValues"]["body"]
        == "Hi {{ subscriber.firstName }}, order {{ payload.order }} shipped."
    )
    notifications = poll(
        lambda: api.get("/v1/notifications", params={"transactionId": transaction_id}).json()["data"],
        lambda data: len(data) == 1,
        f"the notification of transaction {transaction_id}",
    )
    assert notifications[0]["transactionId"] == transaction_id

    # The flash links to Activity, filtered to the transaction: its one notification is listed.
    click_and_wait(page, f"a[href='/admin/activity?transactionId={transaction_id}']")
    rows = page.locator("tbody tr")
    assert rows.count() == 1
    assert transaction_id in rows.first.inner_text()
    return workflow_pk
