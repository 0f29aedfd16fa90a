"""Inbox list paging: offset and after cursors over a subscriber's notifications."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import ServerMode, api_client, start_server
from tests.helpers import create_workflow, open_session, poll
from tests.servers import ServerProcess

pytestmark = pytest.mark.both_modes

MESSAGES = 5


@pytest.fixture(scope="module")
def inbox(tmp_path_factory: pytest.TempPathFactory, server_mode: ServerMode) -> Iterator[httpx.Client]:
    """An inbox client for subscriber `pager`, who has MESSAGES notifications."""
    process: ServerProcess = start_server(tmp_path_factory.mktemp("paging"), mode=server_mode)
    with api_client(process) as api:
        create_workflow(api, "paged", body="message {{ payload.n }}")
        for n in range(MESSAGES):
            trigger = {"name": "paged", "to": "pager", "payload": {"n": n}}
            response = api.post("/v1/events/trigger", json=trigger)
            assert response.status_code == 201
    session = open_session(process.base_url, "pager")
    with httpx.Client(
        base_url=process.base_url, headers={"Authorization": f"Bearer {session['token']}"}, timeout=10
    ) as client:
        poll(
            lambda: client.get("/v1/inbox/notifications", params={"limit": 100}).json()["data"],
            lambda data: len(data) == MESSAGES,
            f"{MESSAGES} notifications in the inbox",
        )
        yield client
    process.stop()


def page(inbox: httpx.Client, **params: object) -> dict[str, object]:
    response = inbox.get("/v1/inbox/notifications", params={"limit": 2, **params})
    assert response.status_code == 200, response.text
    return dict(response.json())


def bodies(listing: dict[str, object]) -> list[str]:
    data = listing["data"]
    assert isinstance(data, list)
    return [item["body"] for item in data]


def test_offset_pages_are_disjoint(inbox: httpx.Client) -> None:
    pages = [page(inbox, offset=offset) for offset in (0, 2, 4)]

    assert [bodies(listing) for listing in pages] == [
        ["message 4", "message 3"],
        ["message 2", "message 1"],
        ["message 0"],
    ]
    assert [listing["hasMore"] for listing in pages] == [True, True, False]


def test_after_cursor_walks_pages(inbox: httpx.Client) -> None:
    seen: list[str] = []
    listing = page(inbox)
    while True:
        seen.extend(bodies(listing))
        if not listing["hasMore"]:
            break
        data = listing["data"]
        assert isinstance(data, list)
        listing = page(inbox, after=data[-1]["id"])

    assert seen == [f"message {n}" for n in reversed(range(MESSAGES))]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"offset": -1}, "offset"),
        ({"offset": "many"}, "offset"),
        ({"after": "zzz"}, "after"),
    ],
)
def test_bad_paging_is_400(inbox: httpx.Client, params: dict[str, object], field: str) -> None:
    response = inbox.get("/v1/inbox/notifications", params=params)

    assert response.status_code == 400
    assert [error["field"] for error in response.json()["errors"]] == [field]
