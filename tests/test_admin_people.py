"""The admin subscriber and topic pages against a running server: HTTP handlers and a Chromium flow."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import Browser, Page

from tests.conftest import ServerMode, api_client, start_server
from tests.helpers import admin_session, create_workflow, inbox_messages, open_session, poll
from tests.servers import ServerProcess
from tests.test_admin_ui import (
    DESKTOP_VIEWPORT,
    PHONE_VIEWPORT,
    needs_chromium,
    open_context,
    sign_in,
    trigger,
)

pytestmark = pytest.mark.both_modes

REPO_ROOT = Path(__file__).resolve().parent.parent
DOCS_SCREENSHOT = REPO_ROOT / "docs" / "screenshots" / "subscriber.png"
# Set to 1 to copy the screenshot this module takes over the one in docs/screenshots.
UPDATE_SCREENSHOTS_VARIABLE = "NOVULITE_UPDATE_SCREENSHOTS"
WEBHOOK_SECRET = "https://hooks.slack.test/services/T000/B000/very-secret-token-value"
DEVICE_TOKEN = "device-token-that-must-stay-hidden-4821"


@pytest.fixture(scope="module")
def people_server(
    tmp_path_factory: pytest.TempPathFactory, server_mode: ServerMode
) -> Iterator[ServerProcess]:
    process = start_server(tmp_path_factory.mktemp("people"), mode=server_mode)
    yield process
    process.stop()


@pytest.fixture(scope="module")
def people_api(people_server: ServerProcess) -> Iterator[httpx.Client]:
    with api_client(people_server) as client:
        yield client


@pytest.fixture(scope="module")
def admin(people_server: ServerProcess) -> Iterator[httpx.Client]:
    with admin_session(people_server.base_url) as client:
        yield client


def create_subscriber(api: httpx.Client, subscriber_id: str, **profile: object) -> None:
    response = api.post("/v2/subscribers", json={"subscriberId": subscriber_id, **profile})
    assert response.status_code == 201, response.text


def csrf_token(page_html: str) -> str:
    match = re.search(r'name="_csrf_token" value="([^"]+)"', page_html)
    assert match, "the page has no CSRF token"
    return match.group(1)


def post_form(client: httpx.Client, form_page: str, path: str, fields: dict[str, str]) -> httpx.Response:
    """Open `form_page` for a fresh CSRF token and post `fields` to `path` without following redirects."""
    token = csrf_token(client.get(form_page).text)
    return client.post(path, data={"_csrf_token": token, **fields}, follow_redirects=False)


def test_search_by_id_email_name(people_api: httpx.Client, admin: httpx.Client) -> None:
    create_subscriber(
        people_api, "search-ada", firstName="Ada", lastName="Lovelace", email="ada@test.example"
    )
    create_subscriber(people_api, "search-alan", firstName="Alan", lastName="Turing", email="al@test.example")

    for query in ["search-ada", "ada@test.example", "Ada Lovelace", "Lovelace"]:
        response = admin.get("/admin/subscribers", params={"q": query})
        assert response.status_code == 200, query
        assert 'href="/admin/subscribers/search-ada"' in response.text, query
        assert "search-alan" not in response.text, query

    listing = admin.get("/admin/subscribers")
    assert "search-ada" in listing.text
    assert "search-alan" in listing.text

    missing = admin.get("/admin/subscribers", params={"q": "nobody@example.test"})
    assert missing.status_code == 200
    assert "No subscriber matches" in missing.text


def test_search_paged_by_cursor(people_api: httpx.Client, admin: httpx.Client) -> None:
    for index in range(26):
        create_subscriber(people_api, f"paged-{index:02d}", lastName="Paged")

    first = admin.get("/admin/subscribers", params={"q": "Paged"})
    assert first.status_code == 200
    assert first.text.count('href="/admin/subscribers/paged-') == 25
    match = re.search(r'href="(\?q=Paged&amp;after=[^"]+)" rel="next"', first.text)
    assert match, "the first page has no Next link"

    second = admin.get("/admin/subscribers" + match.group(1).replace("&amp;", "&"))
    assert second.status_code == 200
    assert second.text.count('href="/admin/subscribers/paged-') == 1
    assert 'rel="prev"' in second.text
    assert 'rel="next"' not in second.text


def test_search_bad_cursor_400(admin: httpx.Client) -> None:
    response = admin.get("/admin/subscribers", params={"after": "not-a-cursor"})

    assert response.status_code == 400
    assert "after is not a cursor from this server" in response.text


def test_profile_masks_secrets(people_api: httpx.Client, admin: httpx.Client) -> None:
    create_subscriber(
        people_api,
        "profile-grace",
        firstName="Grace",
        lastName="Hopper",
        email="grace@example.test",
        phone="+15550100",
        locale="en-US",
        timezone="America/New_York",
        data={"plan": "pro"},
    )
    slack = people_api.put(
        "/v1/subscribers/profile-grace/credentials",
        json={"providerId": "slack", "credentials": {"webhookUrl": WEBHOOK_SECRET}},
    )
    assert slack.status_code == 200, slack.text
    fcm = people_api.put(
        "/v1/subscribers/profile-grace/credentials",
        json={"providerId": "fcm", "credentials": {"deviceTokens": [DEVICE_TOKEN]}},
    )
    assert fcm.status_code == 200, fcm.text

    response = admin.get("/admin/subscribers/profile-grace")

    assert response.status_code == 200
    for expected in [
        "Grace",
        "Hopper",
        "grace@example.test",
        "+15550100",
        "en-US",
        "America/New_York",
        "pro",
    ]:
        assert expected in response.text, expected
    assert "slack" in response.text
    assert "webhookUrl" in response.text
    assert "deviceTokens" in response.text
    assert WEBHOOK_SECRET not in response.text
    assert "very-secret-token" not in response.text
    assert DEVICE_TOKEN not in response.text
    assert "•••• alue (67 characters)" in response.text


def test_profile_inbox_topics_preferences(
    people_server: ServerProcess, people_api: httpx.Client, admin: httpx.Client
) -> None:
    create_workflow(people_api, "profile-news")
    create_subscriber(people_api, "profile-linus", firstName="Linus")
    topic = people_api.post(
        "/v2/topics/profile-readers/subscriptions", json={"subscriberIds": ["profile-linus"]}
    )
    assert topic.status_code == 201, topic.text
    trigger(people_api, "profile-news", "profile-linus", {"text": "first issue"})
    token = open_session(people_server.base_url, "profile-linus")["token"]
    poll(lambda: inbox_messages(people_server.base_url, token), bool, "the in-app message")

    page = admin.get("/admin/subscribers/profile-linus")

    assert page.status_code == 200
    assert "Subject first issue" in page.text
    assert "unread" in page.text
    assert "unseen" in page.text
    assert 'href="/admin/topics/profile-readers"' in page.text
    assert 'name="workflow" value="profile-news"' in page.text
    assert 'name="channel_in_app" checked' in page.text

    saved = post_form(
        admin, "/admin/subscribers/profile-linus", "/admin/subscribers/profile-linus/preferences",
        {"workflow": "profile-news"},
    )  # fmt: skip
    assert saved.status_code == 303
    assert saved.headers["location"] == "/admin/subscribers/profile-linus"
    after = admin.get("/admin/subscribers/profile-linus")
    assert "Saved preferences for profile-news." in after.text
    preferences = people_api.get("/v2/subscribers/profile-linus/preferences").json()["data"]
    news = next(item for item in preferences["workflows"] if item["workflow"]["identifier"] == "profile-news")
    assert news["channels"] == {"in_app": False}


def test_unknown_subscriber_404(admin: httpx.Client) -> None:
    response = admin.get("/admin/subscribers/no-such-subscriber")

    assert response.status_code == 404
    assert "Subscriber not found" in response.text
    assert "no-such-subscriber" in response.text


def test_delete_subscriber(people_api: httpx.Client, admin: httpx.Client) -> None:
    create_subscriber(people_api, "delete-me", email="delete-me@example.test")
    profile = "/admin/subscribers/delete-me"

    wrong = post_form(admin, profile, f"{profile}/delete", {"confirm": "delete-you"})
    assert wrong.status_code == 400
    assert "confirm must be the subscriber id" in wrong.text
    assert people_api.get("/v2/subscribers/delete-me").status_code == 200

    deleted = post_form(admin, profile, f"{profile}/delete", {"confirm": "delete-me"})
    assert deleted.status_code == 303
    assert deleted.headers["location"] == "/admin/subscribers"
    assert "Deleted subscriber delete-me." in admin.get("/admin/subscribers").text
    assert people_api.get("/v2/subscribers/delete-me").status_code == 404
    assert admin.get(profile).status_code == 404


def test_topic_members_add_remove(people_api: httpx.Client, admin: httpx.Client) -> None:
    create_subscriber(people_api, "member-one")
    create_subscriber(people_api, "member-two")
    fields = {"key": "http-members", "name": "HTTP members"}
    created = post_form(admin, "/admin/topics", "/admin/topics", fields)
    assert created.status_code == 303
    assert created.headers["location"] == "/admin/topics/http-members"
    topic_page = admin.get("/admin/topics/http-members")
    assert "Created topic http-members." in topic_page.text

    added = post_form(
        admin, "/admin/topics/http-members", "/admin/topics/http-members/members",
        {"subscriber_ids": "member-one, member-two, member-ghost"},
    )  # fmt: skip
    assert added.status_code == 303
    after_add = admin.get("/admin/topics/http-members")
    assert "Added 2 subscribers to http-members." in after_add.text
    assert "subscriber &#39;member-ghost&#39; was not found" in after_add.text
    members = people_api.get("/v2/topics/http-members/subscriptions").json()["data"]
    assert sorted(item["subscriber"]["subscriberId"] for item in members) == ["member-one", "member-two"]

    removed = post_form(
        admin, "/admin/topics/http-members", "/admin/topics/http-members/members/remove",
        {"subscriber_id": "member-one"},
    )  # fmt: skip
    assert removed.status_code == 303
    assert "Removed member-one from http-members." in admin.get("/admin/topics/http-members").text
    members = people_api.get("/v2/topics/http-members/subscriptions").json()["data"]
    assert [item["subscriber"]["subscriberId"] for item in members] == ["member-two"]

    not_member = post_form(
        admin, "/admin/topics/http-members", "/admin/topics/http-members/members/remove",
        {"subscriber_id": "member-one"},
    )  # fmt: skip
    assert not_member.status_code == 303
    error_page = admin.get("/admin/topics/http-members")
    assert 'class="flash flash-error"' in error_page.text
    assert (
        "no subscription of topic &#39;http-members&#39; matches subscriber &#39;member-one&#39;"
        in error_page.text
    )

    listing = admin.get("/admin/topics")
    row = re.search(r"http-members</a></td>.*?data-label=\"Members\">(\d+)<", listing.text, re.S)
    assert row, "the topic list has no row for http-members"
    assert row.group(1) == "1"


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"key": "", "name": "No key"}, "key is required"),
        ({"key": "has spaces", "name": ""}, "key must be 1 to 100"),
        ({"key": "long-name", "name": "n" * 101}, "name must be a string of at most 100"),
    ],
)
def test_create_topic_bad_input_400(admin: httpx.Client, fields: dict[str, str], named: str) -> None:
    response = post_form(admin, "/admin/topics", "/admin/topics", fields)

    assert response.status_code == 400
    assert named in response.text
    assert 'aria-invalid="true"' in response.text


def test_add_members_bad_input_400(people_api: httpx.Client, admin: httpx.Client) -> None:
    created = people_api.post("/v2/topics", json={"key": "bad-input"})
    assert created.status_code == 201, created.text

    response = post_form(
        admin, "/admin/topics/bad-input", "/admin/topics/bad-input/members", {"subscriber_ids": " , "}
    )

    assert response.status_code == 400
    assert "subscriber_ids is required" in response.text


def test_unknown_topic_404(admin: httpx.Client) -> None:
    response = admin.get("/admin/topics/no-such-topic")
    assert response.status_code == 404
    assert "Topic not found" in response.text

    token = csrf_token(admin.get("/admin/topics").text)
    added = admin.post(
        "/admin/topics/no-such-topic/members", data={"_csrf_token": token, "subscriber_ids": "member-one"}
    )
    assert added.status_code == 404


@pytest.mark.parametrize(
    "path",
    [
        "/admin/topics",
        "/admin/topics/any/members",
        "/admin/topics/any/members/remove",
        "/admin/subscribers/any/delete",
        "/admin/subscribers/any/preferences",
    ],
)
def test_post_without_csrf_403(admin: httpx.Client, path: str) -> None:
    response = admin.post(path, data={"key": "csrf-topic", "confirm": "any"}, follow_redirects=False)

    assert response.status_code == 403


@pytest.mark.parametrize(
    "path", ["/admin/subscribers", "/admin/subscribers/someone", "/admin/topics", "/admin/topics/some-topic"]
)
def test_pages_redirect_without_session(people_server: ServerProcess, path: str) -> None:
    response = httpx.get(f"{people_server.base_url}{path}", follow_redirects=False, timeout=10)

    assert response.status_code == 303
    assert response.headers["location"] == f"/admin/login?next={path}"


@needs_chromium
def test_subscriber_and_topic_flow(
    people_server: ServerProcess, people_api: httpx.Client, browser: Browser, tmp_path: Path
) -> None:
    prepare_flow_subscribers(people_server, people_api)
    with open_context(browser, people_server, DESKTOP_VIEWPORT) as context:
        page = context.new_page()
        assert sign_in(page, "/admin/subscribers") == 200
        assert urlsplit(page.url).path == "/admin/subscribers"

        page.get_by_label("Subscriber id, email or name").fill("marie@example.test")
        with page.expect_navigation():
            page.get_by_role("button", name="Search").click()
        results = page.locator("tbody tr")
        assert results.count() == 1
        with page.expect_navigation():
            results.get_by_role("link", name="flow-marie").click()
        assert urlsplit(page.url).path == "/admin/subscribers/flow-marie"
        assert page.get_by_role("heading", level=1).inner_text() == "Subscriber flow-marie"
        assert "Radium Institute" in page.locator(".facts").first.inner_text()
        assert "Subject radium results" in page.locator("#main").inner_text()
        assert WEBHOOK_SECRET not in page.content()

        check_topic_flow(page)

        # The profile now links the topic the flow added the subscriber to.
        with page.expect_navigation():
            page.get_by_role("link", name="flow-marie").click()
        assert urlsplit(page.url).path == "/admin/subscribers/flow-marie"
        assert page.get_by_role("link", name="flow-physicists").get_attribute("href") == (
            "/admin/topics/flow-physicists"
        )
        save_screenshot(page, tmp_path)

    with open_context(browser, people_server, PHONE_VIEWPORT) as phone:
        page = phone.new_page()
        assert sign_in(page, "/admin/subscribers/flow-marie") == 200
        for path in ["/admin/subscribers", "/admin/subscribers/flow-marie", "/admin/topics/flow-physicists"]:
            page.goto(path)
            widths = page.evaluate(
                "() => ({scroll: document.scrollingElement.scrollWidth, inner: window.innerWidth})"
            )
            assert widths["scroll"] <= widths["inner"], f"{path} scrolls sideways at 390 px: {widths}"


def prepare_flow_subscribers(server: ServerProcess, api: httpx.Client) -> None:
    """Create two subscribers through the API, one with chat credentials and an in-app message."""
    create_subscriber(
        api, "flow-marie", firstName="Marie", lastName="Curie", email="marie@example.test",
        locale="fr-FR", timezone="Europe/Paris", data={"lab": "Radium Institute"},
    )  # fmt: skip
    create_subscriber(api, "flow-pierre", firstName="Pierre", lastName="Curie")
    slack = api.put(
        "/v1/subscribers/flow-marie/credentials",
        json={"providerId": "slack", "credentials": {"webhookUrl": WEBHOOK_SECRET}},
    )
    assert slack.status_code == 200, slack.text
    create_workflow(api, "flow-lab-news")
    trigger(api, "flow-lab-news", "flow-marie", {"text": "radium results"})
    token = open_session(server.base_url, "flow-marie")["token"]
    poll(lambda: inbox_messages(server.base_url, token), bool, "the in-app message of flow-marie")


def check_topic_flow(page: Page) -> None:
    with page.expect_navigation():
        page.get_by_role("navigation", name="Main").get_by_role("link", name="Topics").click()
    assert urlsplit(page.url).path == "/admin/topics"
    page.get_by_label("Key").fill("flow-physicists")
    page.get_by_label("Name (optional)").fill("Physicists")
    with page.expect_navigation():
        page.get_by_role("button", name="Create topic").click()
    assert urlsplit(page.url).path == "/admin/topics/flow-physicists"
    assert page.get_by_role("status").inner_text() == "Created topic flow-physicists."

    page.get_by_label("Subscriber ids, separated by commas").fill("flow-marie, flow-pierre")
    with page.expect_navigation():
        page.get_by_role("button", name="Add", exact=True).click()
    assert page.get_by_role("status").inner_text() == "Added 2 subscribers to flow-physicists."
    members = page.locator("tbody td[data-label='Subscriber id']")
    assert sorted(members.all_inner_texts()) == ["flow-marie", "flow-pierre"]

    with page.expect_navigation():
        page.get_by_role("button", name="Remove flow-pierre from flow-physicists").click()
    assert page.get_by_role("status").inner_text() == "Removed flow-pierre from flow-physicists."
    assert members.all_inner_texts() == ["flow-marie"]
    assert page.get_attribute("nav a[href='/admin/topics']", "aria-current") == "page"


def save_screenshot(page: Page, folder: Path) -> None:
    screenshot = folder / "subscriber.png"
    page.screenshot(path=str(screenshot), full_page=True)
    assert screenshot.read_bytes().startswith(b"\x89PNG")
    if os.environ.get(UPDATE_SCREENSHOTS_VARIABLE) == "1":
        shutil.copyfile(screenshot, DOCS_SCREENSHOT)


def test_special_character_id_links(people_api: httpx.Client, admin: httpx.Client) -> None:
    subscriber_id = "ana maria+1@test.example"
    create_subscriber(people_api, subscriber_id)

    listing = admin.get("/admin/subscribers", params={"q": subscriber_id})
    match = re.search(r'href="(/admin/subscribers/ana[^"]+)"', listing.text)
    assert match, "the search result has no link to the subscriber"
    profile = admin.get(match.group(1))
    assert profile.status_code == 200
    assert 'Subscriber <code class="identifier">ana maria+1@test.example</code>' in profile.text

    created = people_api.post("/v2/topics/odd-ids/subscriptions", json={"subscriberIds": [subscriber_id]})
    assert created.status_code == 201, created.text
    removed = post_form(
        admin,
        "/admin/topics/odd-ids",
        "/admin/topics/odd-ids/members/remove",
        {"subscriber_id": subscriber_id},
    )
    assert removed.status_code == 303
    assert "Removed ana maria+1@test.example from odd-ids." in admin.get("/admin/topics/odd-ids").text


def test_preferences_global_and_unknown(people_api: httpx.Client, admin: httpx.Client) -> None:
    create_workflow(people_api, "prefs-digest")
    create_subscriber(people_api, "prefs-joan")
    profile = "/admin/subscribers/prefs-joan"

    unknown = post_form(admin, profile, f"{profile}/preferences", {"workflow": "no-such-workflow"})
    assert unknown.status_code == 303
    error_page = admin.get(profile)
    assert "Workflow &#39;no-such-workflow&#39; was not found or is inactive" in error_page.text

    saved = post_form(admin, profile, f"{profile}/preferences", {})
    assert saved.status_code == 303
    assert "Saved global preferences." in admin.get(profile).text
    preferences = people_api.get("/v2/subscribers/prefs-joan/preferences").json()["data"]
    assert preferences["global"]["channels"]["in_app"] is False
