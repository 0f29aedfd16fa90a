"""Inbox actions as @novu/js calls them: archive, snooze, cta actions, delete and the bulk calls."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect

from tests.conftest import ServerMode, api_client, start_server
from tests.helpers import context_hash, poll, subscriber_hash
from tests.servers import APP_ID, ServerProcess

pytestmark = pytest.mark.both_modes

NOTIFICATIONS = "/v1/inbox/notifications"


def _workflow(workflow_id: str, tags: list[str]) -> dict[str, Any]:
    controls = {
        "subject": "Subject",
        "body": "{{ payload.kind }} {{ payload.n }}",
        "primaryAction": {"label": "Accept"},
        "secondaryAction": {"label": "Decline"},
        "data": {"kind": "{{ payload.kind }}"},
    }
    return {
        "name": f"Workflow {workflow_id}",
        "workflowId": workflow_id,
        "tags": tags,
        "steps": [{"name": "Inbox", "type": "in_app", "controlValues": controls}],
    }


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, server_mode: ServerMode) -> Iterator[ServerProcess]:
    process = start_server(tmp_path_factory.mktemp("actions"), mode=server_mode)
    with api_client(process) as api:
        for workflow_id, tags in (("billing", ["billing"]), ("news", ["news"])):
            response = api.post("/v2/workflows", json=_workflow(workflow_id, tags))
            assert response.status_code == 201, response.text
    yield process
    process.stop()


@pytest.fixture(scope="module")
def api(server: ServerProcess) -> Iterator[httpx.Client]:
    with api_client(server) as client:
        yield client


def open_inbox(
    server: ServerProcess, subscriber_id: str, context: dict[str, Any] | None = None
) -> httpx.Client:
    """Open an inbox session for `subscriber_id` in `context` and return a client that sends its token."""
    body: dict[str, Any] = {
        "applicationIdentifier": APP_ID,
        "subscriber": {"subscriberId": subscriber_id},
        "subscriberHash": subscriber_hash(subscriber_id),
    }
    if context is not None:
        body["context"] = context
        body["contextHash"] = context_hash(context)
    response = httpx.post(f"{server.base_url}/v1/inbox/session", json=body, timeout=10)
    assert response.status_code == 201, response.text
    token = response.json()["data"]["token"]
    return httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=10)


def listing(inbox: httpx.Client, **params: Any) -> list[dict[str, Any]]:
    response = inbox.get(NOTIFICATIONS, params={"limit": 100, **params})
    assert response.status_code == 200, response.text
    return list(response.json()["data"])


def count(inbox: httpx.Client, filter_: dict[str, Any]) -> int:
    response = inbox.get(f"{NOTIFICATIONS}/count", params={"filters": json.dumps([filter_])})
    assert response.status_code == 200, response.text
    return int(response.json()["data"][0]["count"])


def deliver(
    api: httpx.Client,
    inbox: httpx.Client,
    subscriber_id: str,
    kinds: list[tuple[str, str]],
    context: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Trigger one message per (workflow, kind) pair and return the inbox, oldest first, once all arrived."""
    before = len(listing(inbox))
    for n, (workflow_id, kind) in enumerate(kinds):
        body: dict[str, Any] = {"name": workflow_id, "to": subscriber_id, "payload": {"kind": kind, "n": n}}
        if context is not None:
            body["context"] = context
        response = api.post("/v1/events/trigger", json=body)
        assert response.status_code == 201, response.text
    items = poll(
        lambda: listing(inbox),
        lambda items: len(items) == before + len(kinds),
        f"{len(kinds)} new notifications for {subscriber_id}",
    )
    return list(reversed(items))


def unread(inbox: httpx.Client) -> int:
    return count(inbox, {"read": False, "archived": False, "snoozed": False})


def in_future(**delta: float) -> str:
    return (dt.datetime.now(dt.UTC) + dt.timedelta(**delta)).isoformat()


def test_archive_and_unarchive(server: ServerProcess, api: httpx.Client) -> None:
    with open_inbox(server, "archie") as inbox:
        [message] = deliver(api, inbox, "archie", [("billing", "invoice")])

        response = inbox.patch(f"{NOTIFICATIONS}/{message['id']}/archive")
        assert response.status_code == 200, response.text
        archived = response.json()["data"]
        assert archived["id"] == message["id"]
        assert archived["isArchived"] is True
        assert archived["isRead"] is True
        assert archived["archivedAt"] is not None
        assert unread(inbox) == 0
        assert [item["id"] for item in listing(inbox, archived="true")] == [message["id"]]

        response = inbox.patch(f"{NOTIFICATIONS}/{message['id']}/unarchive")
        assert response.status_code == 200, response.text
        restored = response.json()["data"]
        assert restored["isArchived"] is False
        assert restored["archivedAt"] is None
        assert listing(inbox, archived="true") == []


def test_snooze_and_unsnooze(server: ServerProcess, api: httpx.Client) -> None:
    with open_inbox(server, "sonny") as inbox:
        [message] = deliver(api, inbox, "sonny", [("billing", "invoice")])
        until = in_future(hours=2)

        response = inbox.patch(f"{NOTIFICATIONS}/{message['id']}/snooze", json={"snoozeUntil": until})
        assert response.status_code == 200, response.text
        snoozed = response.json()["data"]
        assert snoozed["isSnoozed"] is True
        assert snoozed["snoozedUntil"] is not None
        assert unread(inbox) == 0
        assert count(inbox, {"snoozed": True}) == 1
        assert [item["id"] for item in listing(inbox, snoozed="true")] == [message["id"]]
        assert listing(inbox, snoozed="false") == []

        response = inbox.patch(f"{NOTIFICATIONS}/{message['id']}/unsnooze")
        assert response.status_code == 200, response.text
        assert response.json()["data"]["isSnoozed"] is False
        assert response.json()["data"]["snoozedUntil"] is None
        assert unread(inbox) == 1
        assert listing(inbox, snoozed="true") == []


def test_ended_snooze_is_not_snoozed(server: ServerProcess, api: httpx.Client) -> None:
    """A snooze whose time has passed counts as not snoozed in the list and in the counts alike."""
    with open_inbox(server, "waker") as inbox:
        [message] = deliver(api, inbox, "waker", [("billing", "invoice")])
        response = inbox.patch(
            f"{NOTIFICATIONS}/{message['id']}/snooze", json={"snoozeUntil": in_future(seconds=2)}
        )
        assert response.status_code == 200, response.text
        assert count(inbox, {"snoozed": True}) == 1

        poll(lambda: count(inbox, {"snoozed": True}), lambda value: value == 0, "the snooze to end")

        assert count(inbox, {"snoozed": False}) == 1
        assert unread(inbox) == 1
        assert listing(inbox, snoozed="true") == []
        [item] = listing(inbox, snoozed="false")
        assert item["id"] == message["id"]
        assert item["isSnoozed"] is False
        assert item["snoozedUntil"] is None


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({}, "is required"),
        ({"snoozeUntil": 5}, "must be an ISO 8601 string"),
        ({"snoozeUntil": "tomorrow"}, "is not an ISO 8601 time"),
        ({"snoozeUntil": "2099-01-01T09:00:00"}, "has no time zone"),
        ({"snoozeUntil": "2001-01-01T09:00:00Z"}, "must be in the future"),
        ({"snoozeUntil": "2999-01-01T09:00:00Z"}, "hours from now"),
    ],
)
def test_bad_snooze_is_400(
    server: ServerProcess, api: httpx.Client, body: dict[str, Any], problem: str
) -> None:
    with open_inbox(server, "badsnooze") as inbox:
        items = listing(inbox) or deliver(api, inbox, "badsnooze", [("billing", "invoice")])

        response = inbox.patch(f"{NOTIFICATIONS}/{items[0]['id']}/snooze", json=body)

        assert response.status_code == 400, response.text
        [error] = response.json()["errors"]
        assert error["field"] == "snoozeUntil"
        assert problem in error["message"]
        assert count(inbox, {"snoozed": True}) == 0


def test_complete_and_revert_actions(server: ServerProcess, api: httpx.Client) -> None:
    with open_inbox(server, "clicker") as inbox:
        [message] = deliver(api, inbox, "clicker", [("billing", "invoice")])
        assert message["primaryAction"] == {"label": "Accept", "isCompleted": False}
        url = f"{NOTIFICATIONS}/{message['id']}"

        response = inbox.patch(f"{url}/complete", json={"actionType": "primary"})
        assert response.status_code == 200, response.text
        done = response.json()["data"]
        assert done["primaryAction"]["isCompleted"] is True
        assert done["secondaryAction"]["isCompleted"] is False
        assert listing(inbox)[0]["primaryAction"]["isCompleted"] is True

        response = inbox.patch(f"{url}/complete", json={"actionType": "secondary"})
        assert response.status_code == 200, response.text
        assert response.json()["data"]["primaryAction"]["isCompleted"] is False
        assert response.json()["data"]["secondaryAction"]["isCompleted"] is True

        response = inbox.patch(f"{url}/revert", json={"actionType": "secondary"})
        assert response.status_code == 200, response.text
        assert response.json()["data"]["secondaryAction"]["isCompleted"] is False
        assert response.json()["data"]["primaryAction"]["isCompleted"] is False


@pytest.mark.parametrize(
    ("action", "body"),
    [
        ("complete", {}),
        ("complete", {"actionType": "tertiary"}),
        ("revert", {"actionType": 1}),
    ],
)
def test_bad_action_type_is_400(
    server: ServerProcess, api: httpx.Client, action: str, body: dict[str, Any]
) -> None:
    with open_inbox(server, "badaction") as inbox:
        items = listing(inbox) or deliver(api, inbox, "badaction", [("billing", "invoice")])

        response = inbox.patch(f"{NOTIFICATIONS}/{items[0]['id']}/{action}", json=body)

        assert response.status_code == 400, response.text
        assert [error["field"] for error in response.json()["errors"]] == ["actionType"]


def test_delete_one(server: ServerProcess, api: httpx.Client) -> None:
    with open_inbox(server, "dora") as inbox:
        first, second = deliver(api, inbox, "dora", [("billing", "a"), ("billing", "b")])

        response = inbox.delete(f"{NOTIFICATIONS}/{first['id']}/delete")
        assert response.status_code == 204
        assert response.content == b""
        assert [item["id"] for item in listing(inbox)] == [second["id"]]
        assert unread(inbox) == 1

        again = inbox.delete(f"{NOTIFICATIONS}/{first['id']}/delete")
        assert again.status_code == 404


def test_another_subscribers_message_is_404(server: ServerProcess, api: httpx.Client) -> None:
    with open_inbox(server, "owner") as owner, open_inbox(server, "intruder") as intruder:
        [message] = deliver(api, owner, "owner", [("billing", "invoice")])
        url = f"{NOTIFICATIONS}/{message['id']}"
        calls = [
            ("PATCH", f"{url}/archive", None),
            ("PATCH", f"{url}/unarchive", None),
            ("PATCH", f"{url}/snooze", {"snoozeUntil": in_future(hours=1)}),
            ("PATCH", f"{url}/unsnooze", None),
            ("PATCH", f"{url}/complete", {"actionType": "primary"}),
            ("PATCH", f"{url}/revert", {"actionType": "primary"}),
            ("DELETE", f"{url}/delete", None),
        ]
        for method, path, body in calls:
            response = intruder.request(method, path, json=body)
            assert response.status_code == 404, f"{method} {path}: {response.text}"
            assert response.json()["statusCode"] == 404

        # The bulk calls ignore ids outside the caller's inbox.
        for path in ("seen", "delete"):
            response = intruder.post(f"{NOTIFICATIONS}/{path}", json={"notificationIds": [message["id"]]})
            assert response.status_code == 204
        [unchanged] = listing(owner)
        assert unchanged["isArchived"] is False
        assert unchanged["isSeen"] is False
        assert unchanged["primaryAction"]["isCompleted"] is False


def test_mark_seen_by_ids(server: ServerProcess, api: httpx.Client) -> None:
    with open_inbox(server, "seer") as inbox:
        first, second, third = deliver(
            api, inbox, "seer", [("billing", "a"), ("billing", "b"), ("news", "c")]
        )

        response = inbox.post(f"{NOTIFICATIONS}/seen", json={"notificationIds": [first["id"], third["id"]]})

        assert response.status_code == 204
        seen = {item["id"]: item["isSeen"] for item in listing(inbox)}
        assert seen == {first["id"]: True, second["id"]: False, third["id"]: True}
        assert count(inbox, {"seen": False}) == 1
        # Seen is not read.
        assert unread(inbox) == 3


def test_read_all_with_tags_and_data(server: ServerProcess, api: httpx.Client) -> None:
    with open_inbox(server, "reader") as inbox:
        kinds = [("billing", "invoice"), ("billing", "refund"), ("news", "invoice"), ("news", "digest")]
        invoice, refund, news_invoice, digest = deliver(api, inbox, "reader", kinds)

        response = inbox.post(
            f"{NOTIFICATIONS}/read", json={"tags": ["billing"], "data": '{"kind":"invoice"}'}
        )
        assert response.status_code == 204
        read = {item["id"]: item["isRead"] for item in listing(inbox)}
        assert read == {
            invoice["id"]: True,
            refund["id"]: False,
            news_invoice["id"]: False,
            digest["id"]: False,
        }

        response = inbox.post(f"{NOTIFICATIONS}/read", json={"tags": ["news"]})
        assert response.status_code == 204
        assert unread(inbox) == 1

        response = inbox.post(f"{NOTIFICATIONS}/read", headers={"Content-Type": "application/json"})
        assert response.status_code == 204
        assert unread(inbox) == 0
        assert count(inbox, {"seen": False}) == 0


def test_archive_all_and_archive_read(server: ServerProcess, api: httpx.Client) -> None:
    with open_inbox(server, "keeper") as inbox:
        kinds = [("billing", "a"), ("billing", "b"), ("news", "c"), ("news", "d")]
        first, second, third, fourth = deliver(api, inbox, "keeper", kinds)
        assert inbox.patch(f"{NOTIFICATIONS}/{third['id']}/read").status_code == 200
        snooze = inbox.patch(
            f"{NOTIFICATIONS}/{fourth['id']}/snooze", json={"snoozeUntil": in_future(hours=1)}
        )
        assert snooze.status_code == 200

        response = inbox.post(f"{NOTIFICATIONS}/read-archive", json={})
        assert response.status_code == 204
        assert [item["id"] for item in listing(inbox, archived="true")] == [third["id"]]

        response = inbox.post(f"{NOTIFICATIONS}/archive", json={"tags": ["billing"]})
        assert response.status_code == 204
        archived = {item["id"] for item in listing(inbox, archived="true")}
        assert archived == {first["id"], second["id"], third["id"]}
        assert all(item["isRead"] for item in listing(inbox, archived="true"))
        # A snoozed notification is out of sight, so archive-all leaves it alone.
        response = inbox.post(f"{NOTIFICATIONS}/archive", json={})
        assert response.status_code == 204
        [snoozed] = listing(inbox, archived="false")
        assert snoozed["id"] == fourth["id"]
        assert snoozed["isSnoozed"] is True


def test_delete_many(server: ServerProcess, api: httpx.Client) -> None:
    with open_inbox(server, "purger") as inbox:
        kinds = [("billing", "a"), ("billing", "b"), ("news", "c"), ("news", "d")]
        first, second, third, fourth = deliver(api, inbox, "purger", kinds)

        response = inbox.post(f"{NOTIFICATIONS}/delete", json={"notificationIds": [first["id"], third["id"]]})
        assert response.status_code == 204
        assert {item["id"] for item in listing(inbox)} == {second["id"], fourth["id"]}

        response = inbox.post(f"{NOTIFICATIONS}/delete", json={"tags": ["news"]})
        assert response.status_code == 204
        assert [item["id"] for item in listing(inbox)] == [second["id"]]
        assert unread(inbox) == 1


def test_mark_all_stays_in_its_context(server: ServerProcess, api: httpx.Client) -> None:
    """Each bulk call touches only the session's exact context, as the list shows it."""
    acme = {"tenant": "acme"}
    with (
        open_inbox(server, "tenant-user", acme) as scoped,
        open_inbox(server, "tenant-user") as plain,
        open_inbox(server, "tenant-user", {"tenant": "acme", "team": "red"}) as wider,
    ):
        [in_acme] = deliver(api, scoped, "tenant-user", [("billing", "a")], context=acme)
        [no_context] = deliver(api, plain, "tenant-user", [("billing", "b")])
        [in_wider] = deliver(
            api, wider, "tenant-user", [("billing", "c")], context={"tenant": "acme", "team": "red"}
        )
        assert [item["id"] for item in listing(scoped)] == [in_acme["id"]]

        for path in ("seen", "read", "archive", "read-archive"):
            response = scoped.post(f"{NOTIFICATIONS}/{path}", json={})
            assert response.status_code == 204, path
        response = scoped.post(
            f"{NOTIFICATIONS}/delete", json={"notificationIds": [no_context["id"], in_wider["id"]]}
        )
        assert response.status_code == 204

        [acme_item] = listing(scoped)
        assert acme_item["isArchived"] is True
        for inbox, expected in ((plain, no_context), (wider, in_wider)):
            [item] = listing(inbox)
            assert item["id"] == expected["id"]
            assert item["isRead"] is False
            assert item["isSeen"] is False
            assert item["isArchived"] is False
            assert unread(inbox) == 1


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("seen", {"notificationIds": "abc"}, "notificationIds"),
        ("seen", {"notificationIds": ["not an id"]}, "notificationIds[0]"),
        ("delete", {"notificationIds": ["x"] * 1001}, "notificationIds"),
        ("read", {"tags": "billing"}, "tags"),
        ("read", {"tag": ["billing"]}, "tag"),
        ("delete", {"tagz": ["billing"]}, "tagz"),
        ("archive", {"tags": ["billing", 3]}, "tags[1]"),
        ("read-archive", {"data": "{not json"}, "data"),
        ("read", {"data": "[1]"}, "data"),
        ("read", {"data": {"kind": {"a": {"b": 1}}}}, "data.kind.a"),
        ("read", {"tags": {"and": [{"or": []}]}}, "tags.and[0].or"),
        ("read", {"data": {"kind": {"or": [{"x": 1}]}}}, "data.kind"),
        ("read", {"data": {"bad key": "x"}}, "data.bad key"),
    ],
)
def test_bad_bulk_body_is_400(server: ServerProcess, path: str, body: dict[str, Any], field: str) -> None:
    with open_inbox(server, "badbulk") as inbox:
        response = inbox.post(f"{NOTIFICATIONS}/{path}", json=body)

        assert response.status_code == 400, response.text
        assert [error["field"] for error in response.json()["errors"]] == [field]


def test_actions_send_counts_to_socket(server: ServerProcess, api: httpx.Client) -> None:
    """Archive, snooze, delete and unsnooze each push new unread counts to the subscriber's socket."""
    with open_inbox(server, "listener") as inbox:
        first, second, third = deliver(
            api, inbox, "listener", [("billing", "a"), ("billing", "b"), ("news", "c")]
        )
        token = inbox.headers["Authorization"].removeprefix("Bearer ")
        with connect(f"{server.ws_url}?token={token}") as socket:
            assert next_unread(socket) == 3
            steps = [
                (lambda: inbox.patch(f"{NOTIFICATIONS}/{first['id']}/archive"), 2),
                (
                    lambda: inbox.patch(
                        f"{NOTIFICATIONS}/{second['id']}/snooze", json={"snoozeUntil": in_future(hours=1)}
                    ),
                    1,
                ),
                (lambda: inbox.delete(f"{NOTIFICATIONS}/{third['id']}/delete"), 0),
                (lambda: inbox.patch(f"{NOTIFICATIONS}/{second['id']}/unsnooze"), 1),
            ]
            for call, expected in steps:
                assert call().status_code in (200, 204)
                assert next_unread(socket) == expected


def next_unread(socket: Any, timeout: float = 10.0) -> int:
    """Return the unread count of the next unread_count_changed frame."""
    deadline = time.monotonic() + timeout
    while True:
        frame = json.loads(socket.recv(timeout=max(deadline - time.monotonic(), 0.01)))
        if frame["event"] == "unread_count_changed":
            return int(frame["data"]["unreadCount"])


def test_snooze_end_sends_counts(server: ServerProcess, api: httpx.Client) -> None:
    """When a snooze ends the socket gets the restored unread count with no request from the client."""
    with open_inbox(server, "sleeper") as inbox:
        [message] = deliver(api, inbox, "sleeper", [("billing", "a")])
        token = inbox.headers["Authorization"].removeprefix("Bearer ")
        with connect(f"{server.ws_url}?token={token}") as socket:
            assert next_unread(socket) == 1
            response = inbox.patch(
                f"{NOTIFICATIONS}/{message['id']}/snooze", json={"snoozeUntil": in_future(seconds=2)}
            )
            assert response.status_code == 200, response.text
            assert next_unread(socket) == 0

            assert next_unread(socket) == 1


def test_session_offers_snooze(server: ServerProcess) -> None:
    response = httpx.post(
        f"{server.base_url}/v1/inbox/session",
        json={
            "applicationIdentifier": APP_ID,
            "subscriber": {"subscriberId": "offer"},
            "subscriberHash": subscriber_hash("offer"),
        },
        timeout=10,
    )

    assert response.status_code == 201
    assert response.json()["data"]["maxSnoozeDurationHours"] == 90 * 24
