"""Inbox sessions and the realtime socket: HMAC rules, expired tokens and live counts."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import time
from typing import Any

import httpx
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from novulite.security import TokenSigner, canonical_json
from tests.conftest import start_server
from tests.helpers import context_hash, create_workflow, open_session, subscriber_hash
from tests.servers import API_KEY, APP_ID, ServerProcess, server_command

SEVERITIES = {"high", "medium", "low", "none"}


def _session(base_url: str, subscriber_id: str, hash_value: str | None) -> httpx.Response:
    body: dict[str, Any] = {"applicationIdentifier": APP_ID, "subscriber": {"subscriberId": subscriber_id}}
    if hash_value is not None:
        body["subscriberHash"] = hash_value
    return httpx.post(f"{base_url}/v1/inbox/session", json=body, timeout=10)


@pytest.mark.parametrize(
    ("case", "subscriber_id", "hash_of", "transform", "status"),
    [
        ("valid hash", "alice", "alice", str, 201),
        ("another subscriber's hash", "bob", "alice", str, 401),
        ("missing hash", "alice", None, str, 401),
        ("upper-case hex", "alice", "alice", str.upper, 201),
        ("trailing white space", "alice", "alice", lambda value: value + "  ", 201),
        (
            "hash keyed with another secret",
            "alice",
            "alice",
            lambda value: subscriber_hash("alice", "other"),
            401,
        ),
        ("number instead of a string", "alice", "alice", lambda value: 123, 401),
        ("list instead of a string", "alice", "alice", lambda value: [value], 401),
        ("non-ASCII characters", "alice", "alice", lambda value: "é🎉", 401),
    ],
)
def test_session_hash_rules(
    shared_server: ServerProcess,
    case: str,
    subscriber_id: str,
    hash_of: str | None,
    transform: Any,
    status: int,
) -> None:
    hash_value = None if hash_of is None else transform(subscriber_hash(hash_of))
    response = _session(shared_server.base_url, subscriber_id, hash_value)
    assert response.status_code == status, case
    if status == 401:
        assert response.json()["statusCode"] == 401
        assert "subscriberHash" in response.json()["message"]


TENANT = {"tenant": "acme", "team": {"id": "red", "data": {"floor": 3}}}


@pytest.mark.parametrize(
    ("case", "context", "hash_value", "status"),
    [
        ("signed context", TENANT, context_hash(TENANT), 201),
        ("keys in another order", dict(reversed(TENANT.items())), context_hash(TENANT), 201),
        ("upper-case hex", TENANT, context_hash(TENANT).upper(), 201),
        ("missing hash", TENANT, None, 401),
        ("hash of another context", {"tenant": "globex"}, context_hash(TENANT), 401),
        ("hash keyed with another secret", TENANT, context_hash(TENANT, "other"), 401),
        ("a number that is not an integer", {"tenant": {"id": "acme", "data": {"x": 1.5}}}, "00", 400),
        ("empty context needs no hash", {}, None, 201),
    ],
)
def test_session_context_hash_rules(
    shared_server: ServerProcess, case: str, context: dict[str, Any], hash_value: str | None, status: int
) -> None:
    body: dict[str, Any] = {
        "applicationIdentifier": APP_ID,
        "subscriber": {"subscriberId": "alice"},
        "subscriberHash": subscriber_hash("alice"),
        "context": context,
    }
    if hash_value is not None:
        body["contextHash"] = hash_value
    response = httpx.post(f"{shared_server.base_url}/v1/inbox/session", json=body, timeout=10)
    assert response.status_code == status, case
    if status == 401:
        assert "contextHash" in response.json()["message"]
    if status == 400:
        assert response.json()["errors"][0]["field"] == "context"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"b": 1, "a": [True, None, "x"], "c": 2.0}, '{"a":[true,null,"x"],"b":1,"c":2}'),
        # Only backslash and double quote are escaped, so a new line and non-ASCII stay as they are.
        ({"k": 'say "hi"\\n\nà'}, '{"k":"say \\"hi\\"\\\\n\nà"}'),
        # Keys sort by UTF-16 code unit, so U+1F600 (surrogates D83D DE00) comes before U+FF01.
        ({"\uff01": 1, "\U0001f600": 2}, '{"\U0001f600":2,"\uff01":1}'),
    ],
)
def test_canonical_json_form(value: Any, expected: str) -> None:
    assert canonical_json(value) == expected


def _signing_key(server: ServerProcess) -> bytes:
    database = server.data_dir / "novulite.db"
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as connection:
        value = connection.execute("select value from server_setting where key = 'signing_key'").fetchone()[0]
    return bytes.fromhex(value)


def _claims_of(token: str) -> dict[str, Any]:
    import base64

    payload = token.partition(".")[0]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))  # type: ignore[no-any-return]


async def _socket_refused(url: str) -> tuple[dict[str, Any], int]:
    async with websockets.connect(url) as socket:
        frame = json.loads(await asyncio.wait_for(socket.recv(), 10))
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(socket.recv(), 10)
    assert closed.value.rcvd is not None
    return frame, closed.value.rcvd.code


def test_expired_token_rejected(shared_server: ServerProcess) -> None:
    session = open_session(shared_server.base_url, "alice")
    claims = _claims_of(session["token"])
    claims.pop("exp")
    signer = TokenSigner(_signing_key(shared_server), "inbox-session")
    expired = signer.sign(claims, ttl_seconds=60, now=time.time() - 120)
    still_valid = signer.sign(claims, ttl_seconds=60)

    headers = {"Authorization": f"Bearer {expired}"}
    response = httpx.get(f"{shared_server.base_url}/v1/inbox/notifications", headers=headers, timeout=10)
    assert response.status_code == 401
    assert response.json()["statusCode"] == 401
    frame, code = asyncio.run(_socket_refused(f"{shared_server.ws_url}?token={expired}"))
    assert frame["event"] == "error"
    assert frame["data"]["statusCode"] == 401
    assert code == 1008

    headers = {"Authorization": f"Bearer {still_valid}"}
    assert (
        httpx.get(f"{shared_server.base_url}/v1/inbox/notifications", headers=headers, timeout=10).status_code
        == 200
    )


async def _frames_until_closed(url: str) -> tuple[list[str], int | None]:
    """Read a socket's frames until the server closes it; return the events and the close code."""
    events: list[str] = []
    async with websockets.connect(url) as socket:
        try:
            while True:
                frame = json.loads(await asyncio.wait_for(socket.recv(), 20))
                events.append(frame["event"])
        except ConnectionClosed as closed:
            return events, closed.rcvd.code if closed.rcvd else None


def test_socket_closes_when_token_expires(shared_server: ServerProcess) -> None:
    session = open_session(shared_server.base_url, "alice")
    claims = _claims_of(session["token"])
    claims.pop("exp")
    short_lived = TokenSigner(_signing_key(shared_server), "inbox-session").sign(claims, ttl_seconds=2)

    events, code = asyncio.run(_frames_until_closed(f"{shared_server.ws_url}?token={short_lived}"))

    assert events[0] == "unread_count_changed"
    assert events[-1] == "error"
    assert code == 1008


def test_forged_token_rejected(shared_server: ServerProcess) -> None:
    session = open_session(shared_server.base_url, "alice")
    claims = _claims_of(session["token"])
    claims.pop("exp")
    claims["sid"] = "mallory"
    forged = TokenSigner(b"not the server's key", "inbox-session").sign(claims, ttl_seconds=60)
    response = httpx.get(
        f"{shared_server.base_url}/v1/inbox/notifications",
        headers={"Authorization": f"Bearer {forged}"},
        timeout=10,
    )
    assert response.status_code == 401


def _check_frame(frame: dict[str, Any]) -> None:
    """Validate one socket frame against the schema of its event."""
    assert set(frame) == {"event", "data"}
    data = frame["data"]
    if frame["event"] == "unread_count_changed":
        assert type(data["unreadCount"]) is int
        assert type(data["hasMore"]) is bool
        assert type(data["counts"]["total"]) is int
        assert set(data["counts"]["severity"]) == SEVERITIES
        assert all(type(value) is int for value in data["counts"]["severity"].values())
        assert data["counts"]["total"] == data["unreadCount"]
    elif frame["event"] == "unseen_count_changed":
        assert type(data["unseenCount"]) is int
        assert type(data["hasMore"]) is bool
    elif frame["event"] == "notification_received":
        message = data["message"]
        assert isinstance(message["_id"], str)
        assert isinstance(message["content"], str)
        assert isinstance(message["cta"], dict)
        assert message["severity"] in SEVERITIES
    else:
        raise AssertionError(f"unexpected event {frame['event']!r}")


class _Recorder:
    """Read frames in the background, check each against its schema and keep the unread counts."""

    def __init__(self, socket: websockets.ClientConnection) -> None:
        self.socket = socket
        self.unread: list[int] = []
        self.received: list[str] = []
        self.frames: list[dict[str, Any]] = []
        self.failure: BaseException | None = None
        self._changed = asyncio.Condition()
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            await self._read_frames()
        except BaseException as exc:
            self.failure = exc
            async with self._changed:
                self._changed.notify_all()
            raise

    async def _read_frames(self) -> None:
        async for text in self.socket:
            frame = json.loads(text)
            self.frames.append(frame)
            _check_frame(frame)
            async with self._changed:
                if frame["event"] == "unread_count_changed":
                    self.unread.append(frame["data"]["unreadCount"])
                elif frame["event"] == "notification_received":
                    self.received.append(frame["data"]["message"]["content"])
                self._changed.notify_all()

    async def wait_for(self, predicate: Any, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: self.failure is not None or predicate(self))
        if self.failure is not None:
            raise AssertionError(f"reading frames failed after {self.frames[-3:]}") from self.failure

    async def close(self) -> None:
        self._task.cancel()


async def _live_counts(server: ServerProcess, api: httpx.Client) -> None:
    create_workflow(api, "counts", body="message {{ payload.n }}")
    session = open_session(server.base_url, "carol")
    inbox = httpx.AsyncClient(
        base_url=server.base_url, headers={"Authorization": f"Bearer {session['token']}"}, timeout=10
    )
    async with websockets.connect(f"{server.ws_url}?token={session['token']}") as socket:
        recorder = _Recorder(socket)
        await recorder.wait_for(lambda r: r.unread == [0])
        for n in range(3):
            response = api.post(
                "/v1/events/trigger", json={"name": "counts", "to": "carol", "payload": {"n": n}}
            )
            assert response.status_code == 201
        await recorder.wait_for(lambda r: len(r.received) == 3 and r.unread[-1] == 3)
        assert sorted(recorder.received) == ["message 0", "message 1", "message 2"]
        assert recorder.unread == sorted(recorder.unread), "an unread count went backwards"

        listing = (await inbox.get("/v1/inbox/notifications")).json()["data"]
        first = listing[0]["id"]
        marks = ["read", "read", "unread", "read", "read"]
        expected = [2, 2, 3, 2, 2]
        base = len(recorder.unread)
        for mark, unread in zip(marks, expected, strict=True):
            response = await inbox.patch(f"/v1/inbox/notifications/{first}/{mark}")
            assert response.status_code == 200
            count = await inbox.get(
                "/v1/inbox/notifications/count", params={"filters": '[{"read":false,"archived":false}]'}
            )
            assert count.json()["data"][0]["count"] == unread
            await recorder.wait_for(lambda r, unread=unread: r.unread[-1] == unread)
        # One more message flushes any frame still on its way, then the sequence is complete.
        api.post("/v1/events/trigger", json={"name": "counts", "to": "carol", "payload": {"n": 3}})
        await recorder.wait_for(lambda r: len(r.received) == 4 and r.unread[-1] == 3)
        pushed = recorder.unread[base:]
        assert min(pushed) == 2, "a repeated mark lowered the count twice"
        # A count frame is a snapshot, so a late job may repeat a value, but the values alternate.
        changes = [value for index, value in enumerate(pushed) if index == 0 or pushed[index - 1] != value]
        assert changes in ([2, 3, 2, 3], [3, 2, 3, 2, 3]), pushed

        # After mark all read, a zero count is pushed and the HTTP count agrees with the last frame.
        assert (await inbox.post("/v1/inbox/notifications/read", json={})).status_code == 204
        await recorder.wait_for(lambda r: r.unread[-1] == 0, timeout=5)
        count = await inbox.get(
            "/v1/inbox/notifications/count", params={"filters": '[{"read":false,"archived":false}]'}
        )
        assert count.json()["data"][0]["count"] == recorder.unread[-1] == 0
        await recorder.close()
    await inbox.aclose()
    log = server.log_path.read_text()
    assert "token=[redacted]" in log
    assert session["token"] not in log


def test_counts_follow_marks_live(server: ServerProcess, api: httpx.Client) -> None:
    asyncio.run(_live_counts(server, api))


def test_session_counts_include_severity(shared_server: ServerProcess) -> None:
    # No test of this module sends anything to dave, so the shared server stores no message for him.
    response = _session(shared_server.base_url, "dave", subscriber_hash("dave"))
    data = response.json()["data"]
    assert data["unreadCount"]["total"] == 0
    assert set(data["unreadCount"]["severity"]) == SEVERITIES
    assert data["totalUnreadCount"] == 0
    assert isinstance(data["token"], str)
    assert API_KEY not in data["token"]


def test_session_lifetime_option(tmp_path: Any) -> None:
    server = start_server(tmp_path, ["--inbox-session-hours", "0.5"])
    try:
        before = time.time()
        session = open_session(server.base_url, "alice")
        after = time.time()
    finally:
        server.stop()

    expires = _claims_of(session["token"])["exp"]
    assert int(before) + 1800 <= expires <= int(after) + 1800


def test_session_lifetime_rejects_zero(tmp_path: Any) -> None:
    command = [*server_command(), "--data-dir", str(tmp_path / "data"), "--inbox-session-hours", "0"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)

    assert result.returncode == 2
    assert "--inbox-session-hours" in result.stderr
