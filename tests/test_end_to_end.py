"""The whole path against a running server: workflow, inbox session, socket, trigger, read."""

from __future__ import annotations

import asyncio

import httpx
import pytest
import websockets
from novu_py import Novu

from tests.helpers import create_workflow, next_frame, open_session
from tests.servers import API_KEY, ServerProcess

pytestmark = pytest.mark.both_modes


async def _deliver_and_read(server: ServerProcess, api: httpx.Client) -> None:
    create_workflow(api, "welcome")
    session = open_session(server.base_url, "alice")
    assert session["unreadCount"] == {"total": 0, "severity": {"high": 0, "medium": 0, "low": 0, "none": 0}}
    inbox = httpx.Client(
        base_url=server.base_url, headers={"Authorization": f"Bearer {session['token']}"}, timeout=10
    )
    async with websockets.connect(f"{server.ws_url}?token={session['token']}") as socket:
        initial = await next_frame(socket, "unread_count_changed")
        assert initial["unreadCount"] == 0

        novu = Novu(secret_key=API_KEY, server_url=server.base_url)
        result = await asyncio.to_thread(
            novu.trigger,
            trigger_event_request_dto={
                "workflow_id": "welcome",
                "to": {"subscriber_id": "alice", "first_name": "Alice"},
                "payload": {"text": "your order shipped"},
            },
        )
        assert result.result.acknowledged is True
        assert result.result.status == "processed"
        assert result.result.transaction_id

        received = await next_frame(socket, "notification_received")
        assert received["message"]["content"] == "Hello Alice: your order shipped"
        assert received["message"]["subject"] == "Subject your order shipped"
        assert received["message"]["transactionId"] == result.result.transaction_id
        counted = await next_frame(socket, "unread_count_changed")
        assert counted["unreadCount"] == 1
        assert counted["counts"]["severity"]["none"] == 1

        listing = inbox.get("/v1/inbox/notifications", params={"limit": 10})
        assert listing.status_code == 200
        notifications = listing.json()["data"]
        assert [n["body"] for n in notifications] == ["Hello Alice: your order shipped"]
        assert notifications[0]["isRead"] is False
        assert notifications[0]["severity"] == "none"
        assert listing.json()["hasMore"] is False

        read = inbox.patch(f"/v1/inbox/notifications/{notifications[0]['id']}/read")
        assert read.status_code == 200
        assert read.json()["data"]["isRead"] is True
        dropped = await next_frame(socket, "unread_count_changed")
        assert dropped["unreadCount"] == 0

    count = inbox.get(
        "/v1/inbox/notifications/count",
        params={
            "filters": '[{"read":false,"archived":false,"snoozed":false,"severity":"none"},{"read":true}]'
        },
    )
    assert count.status_code == 200
    assert count.json()["data"] == [
        {"count": 0, "filter": {"read": False, "archived": False, "snoozed": False, "severity": "none"}},
        {"count": 1, "filter": {"read": True}},
    ]


def test_trigger_reaches_inbox_socket(server: ServerProcess, api: httpx.Client) -> None:
    asyncio.run(_deliver_and_read(server, api))


def test_sdk_parses_workflow_responses(server: ServerProcess, api: httpx.Client) -> None:
    created = create_workflow(api, "sdk-check")
    novu = Novu(secret_key=API_KEY, server_url=server.base_url)

    fetched = novu.workflows.get(workflow_id="sdk-check")
    assert fetched.result.id == created["_id"]
    assert fetched.result.workflow_id == "sdk-check"
    assert [step.type for step in fetched.result.steps] == ["in_app"]

    listed = novu.workflows.list()
    assert listed.result.total_count == 1
    assert listed.result.workflows[0].workflow_id == "sdk-check"
