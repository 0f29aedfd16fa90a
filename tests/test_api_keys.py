"""The secret API key: read it, rotate it, and what stops working with the old one."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import websockets
from websockets.exceptions import ConnectionClosed

from tests.helpers import open_session, subscriber_hash
from tests.servers import API_KEY, APP_ID, ServerProcess


def _session(server: ServerProcess, subscriber_id: str, hash_value: str) -> httpx.Response:
    return httpx.post(
        f"{server.base_url}/v1/inbox/session",
        json={
            "applicationIdentifier": APP_ID,
            "subscriber": {"subscriberId": subscriber_id},
            "subscriberHash": hash_value,
        },
        timeout=10,
    )


async def _handshake(url: str) -> dict[str, Any]:
    """Open the inbox socket and return its first frame, noting whether the server then closed it."""
    async with websockets.connect(url) as socket:
        frame: dict[str, Any] = json.loads(await asyncio.wait_for(socket.recv(), 10))
        try:
            await asyncio.wait_for(socket.recv(), 2)
        except ConnectionClosed as closed:
            frame["closed_with"] = closed.rcvd.code if closed.rcvd else None
        except TimeoutError:
            frame["closed_with"] = None
    return frame


def test_list_shows_current_key(server: ServerProcess, api: httpx.Client) -> None:
    response = api.get("/v1/environments/api-keys")
    assert response.status_code == 200
    assert response.json() == {"data": [{"key": API_KEY, "_userId": None}]}


def test_keys_need_secret_key(server: ServerProcess) -> None:
    calls = (("GET", "/v1/environments/api-keys"), ("POST", "/v1/environments/api-keys/regenerate"))
    for method, path in calls:
        response = httpx.request(method, f"{server.base_url}{path}", timeout=10)
        assert response.status_code == 401
        response = httpx.request(
            method, f"{server.base_url}{path}", headers={"Authorization": "ApiKey wrong"}, timeout=10
        )
        assert response.status_code == 401
        assert response.json()["statusCode"] == 401


async def _revoked_socket(
    server: ServerProcess, api: httpx.Client, token: str
) -> tuple[list[str], int | None]:
    """Open a socket, rotate the key while it is open, and return its events and close code."""
    events: list[str] = []
    async with websockets.connect(f"{server.ws_url}?token={token}") as socket:
        events.append(json.loads(await asyncio.wait_for(socket.recv(), 10))["event"])
        response = await asyncio.to_thread(api.post, "/v1/environments/api-keys/regenerate")
        assert response.status_code == 201
        try:
            while True:
                frame = json.loads(await asyncio.wait_for(socket.recv(), 10))
                events.append(frame["event"])
                if frame["event"] == "error":
                    assert frame["data"]["statusCode"] == 401
        except ConnectionClosed as closed:
            return events, closed.rcvd.code if closed.rcvd else None
    return events, None


def test_rotation_closes_open_sockets(server: ServerProcess, api: httpx.Client) -> None:
    session = open_session(server.base_url, "alice")
    events, code = asyncio.run(_revoked_socket(server, api, session["token"]))
    assert events[0] == "unread_count_changed"
    assert events[-1] == "error"
    assert code == 1008


def test_rotation_retires_old_credentials(server: ServerProcess, api: httpx.Client) -> None:
    old_session = open_session(server.base_url, "alice")
    old_hash = subscriber_hash("alice")

    response = api.post("/v1/environments/api-keys/regenerate")
    assert response.status_code == 201
    new_key = response.json()["data"][0]["key"]
    assert isinstance(new_key, str)
    assert len(new_key) >= 32
    assert new_key != API_KEY

    # The old secret key is rejected at once, and the new one works.
    assert api.get("/v2/subscribers").status_code == 401
    new_headers = {"Authorization": f"ApiKey {new_key}"}
    assert httpx.get(f"{server.base_url}/v2/subscribers", headers=new_headers, timeout=10).status_code == 200
    listed = httpx.get(f"{server.base_url}/v1/environments/api-keys", headers=new_headers, timeout=10)
    assert listed.json()["data"][0]["key"] == new_key

    # A subscriber hash made with the old key opens no session, and one made with the new key does.
    rejected = _session(server, "alice", old_hash)
    assert rejected.status_code == 401
    assert "subscriberHash" in rejected.json()["message"]
    assert _session(server, "alice", subscriber_hash("alice", new_key)).status_code == 201

    # The API and the socket handshake reject a session token issued under the old key.
    bearer = {"Authorization": f"Bearer {old_session['token']}"}
    response = httpx.get(f"{server.base_url}/v1/inbox/notifications", headers=bearer, timeout=10)
    assert response.status_code == 401
    frame = asyncio.run(_handshake(f"{server.ws_url}?token={old_session['token']}"))
    assert frame["event"] == "error"
    assert frame["data"]["statusCode"] == 401
    assert frame["closed_with"] == 1008

    # The application identifier stays the same, so embedded inboxes only need the new hashes.
    fresh = _session(server, "alice", subscriber_hash("alice", new_key)).json()["data"]
    frame = asyncio.run(_handshake(f"{server.ws_url}?token={fresh['token']}"))
    assert frame["event"] == "unread_count_changed"
