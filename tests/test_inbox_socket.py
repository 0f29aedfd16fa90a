"""The inbox socket: counts on connect, context scope, keep-alive pings and resume with `since`."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from tests.conftest import api_client, start_server
from tests.helpers import context_hash, create_workflow, poll, subscriber_hash
from tests.servers import APP_ID, ServerProcess

PING_SECONDS = 1.0


@pytest.fixture(scope="module")
def ping_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server for the module, pinging its sockets every second, with the workflow `note`."""
    process = start_server(
        tmp_path_factory.mktemp("socket"),
        ["--ws-ping-interval", str(PING_SECONDS)],
    )
    with api_client(process) as api:
        create_workflow(api, "note", body="note {{ payload.n }}")
    yield process
    process.stop()


@pytest.fixture
def api(ping_server: ServerProcess) -> Iterator[httpx.Client]:
    with api_client(ping_server) as client:
        yield client


def _session(server: ServerProcess, subscriber_id: str, context: dict[str, Any] | None = None) -> str:
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
    return str(response.json()["data"]["token"])


def _trigger(
    api: httpx.Client, subscriber_id: str, n: int | str, context: dict[str, Any] | None = None
) -> None:
    body: dict[str, Any] = {"name": "note", "to": subscriber_id, "payload": {"n": n}}
    if context is not None:
        body["context"] = context
    response = api.post("/v1/events/trigger", json=body)
    assert response.status_code == 201, response.text


def _listed_ids(server: ServerProcess, token: str, count: int) -> list[str]:
    """Wait until the inbox lists `count` notifications and return their ids, oldest first."""

    def fetch() -> list[str]:
        response = httpx.get(
            f"{server.base_url}/v1/inbox/notifications",
            params={"limit": 100},
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
        assert response.status_code == 200, response.text
        return [item["id"] for item in response.json()["data"]]

    ids = poll(fetch, lambda listed: len(listed) >= count, f"{count} notifications in the inbox")
    assert len(ids) == count
    return sorted(ids)


def _open_sockets(server: ServerProcess) -> int:
    health = httpx.get(f"{server.base_url}/v1/health-check", timeout=5).json()
    return int(health["info"]["sockets"]["open"])


async def _frames_until(
    connection: websockets.ClientConnection, done: Any, timeout: float = 15.0
) -> list[dict[str, Any]]:
    """Read frames until `done(frames)` is true and return them all."""
    frames: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout):
        while not done(frames):
            frames.append(json.loads(await connection.recv()))
    return frames


def _received_ids(frames: list[dict[str, Any]]) -> list[str]:
    return [f["data"]["message"]["_id"] for f in frames if f["event"] == "notification_received"]


def _received_contents(frames: list[dict[str, Any]]) -> list[str]:
    return [f["data"]["message"]["content"] for f in frames if f["event"] == "notification_received"]


def _unread(frames: list[dict[str, Any]]) -> list[int]:
    return [f["data"]["unreadCount"] for f in frames if f["event"] == "unread_count_changed"]


# --- counts on connect ---


async def _first_frames(url: str) -> list[dict[str, Any]]:
    async with websockets.connect(url) as connection:
        return await _frames_until(connection, lambda frames: len(frames) == 2)


def test_connect_sends_current_counts(ping_server: ServerProcess, api: httpx.Client) -> None:
    token = _session(ping_server, "counted")
    for n in range(3):
        _trigger(api, "counted", n)
    _listed_ids(ping_server, token, 3)

    unread, unseen = asyncio.run(_first_frames(f"{ping_server.ws_url}?token={token}"))

    assert unread["event"] == "unread_count_changed"
    assert unread["data"]["unreadCount"] == 3
    assert unread["data"]["counts"] == {"total": 3, "severity": {"high": 0, "medium": 0, "low": 0, "none": 3}}
    assert unread["data"]["hasMore"] is False
    assert unseen == {"event": "unseen_count_changed", "data": {"unseenCount": 3, "hasMore": False}}


# --- context scope ---

BOTH = {"tenant": "acme", "project": {"id": "p1"}}
BOTH_REORDERED = {"project": "p1", "tenant": {"id": "acme"}}
TENANT = {"tenant": "acme"}


def _both_notes_counted(frames: list[dict[str, Any]]) -> bool:
    """Return whether both notes arrived and the count reached 2.

    A batch's count frame can already include a message whose own frame comes in the next
    batch, so a count of 2 alone does not mean that the second note arrived.
    """
    received = sum(1 for frame in frames if frame["event"] == "notification_received")
    return received >= 2 and _unread(frames)[-1:] == [2]


async def _context_scope(server: ServerProcess, api: httpx.Client) -> dict[str, list[dict[str, Any]]]:
    tokens = {
        "none": _session(server, "scoped"),
        "both": _session(server, "scoped", BOTH_REORDERED),
        "tenant": _session(server, "scoped", TENANT),
    }
    contexts = {"none": None, "both": BOTH, "tenant": TENANT}
    connections = {name: await websockets.connect(f"{server.ws_url}?token={t}") for name, t in tokens.items()}
    try:
        opening = {name: await _frames_until(c, lambda f: len(f) == 2) for name, c in connections.items()}
        # Each context gets one message, then a second one that marks the end of its frames.
        for n in (1, 2):
            for context in contexts.values():
                _trigger(api, "scoped", n, context)
        frames = {}
        for name, connection in connections.items():
            frames[name] = opening[name] + await _frames_until(connection, _both_notes_counted)
        return frames
    finally:
        for connection in connections.values():
            await connection.close()


def test_socket_gets_only_its_context(ping_server: ServerProcess, api: httpx.Client) -> None:
    frames = asyncio.run(_context_scope(ping_server, api))

    for name in ("none", "both", "tenant"):
        received = [f["data"]["message"] for f in frames[name] if f["event"] == "notification_received"]
        assert [m["content"] for m in received] == ["note 1", "note 2"], name
        expected_keys = {"none": [], "both": ["project:p1", "tenant:acme"], "tenant": ["tenant:acme"]}[name]
        assert all(m["contextKeys"] == expected_keys for m in received), name
        unread = _unread(frames[name])
        # Messages that land together share one count frame, so a 1 may be skipped. A message of
        # another context counted here would raise a value above 2.
        assert unread[0] == 0, name
        assert unread[-1] == 2, f"{name} ended with {unread}"
        assert unread == sorted(unread), f"{name} counts went backwards: {unread}"
        assert max(unread) == 2, f"{name} counted messages of another context: {unread}"


# --- keep-alive pings and vanished peers ---


def _handshake(server: ServerProcess, token: str) -> tuple[socket.socket, bytes]:
    """Open a WebSocket on a raw TCP socket; return it and the bytes read past the handshake."""
    raw = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    raw.sendall(
        (
            f"GET /ws?token={token} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = raw.recv(4096)
        assert chunk, "the server closed the connection during the handshake"
        received += chunk
    assert received.startswith(b"HTTP/1.1 101"), received
    return raw, received.partition(b"\r\n\r\n")[2]


def _read_until_ping(raw: socket.socket, buffer: bytes) -> None:
    """Read server frames (unmasked, short) until a ping frame (opcode 9) arrives."""
    while True:
        while len(buffer) >= 2:
            opcode = buffer[0] & 0x0F
            length = buffer[1] & 0x7F
            header = 2
            if length == 126:
                if len(buffer) < 4:
                    break
                length, header = int.from_bytes(buffer[2:4], "big"), 4
            if len(buffer) < header + length:
                break
            buffer = buffer[header + length :]
            if opcode == 0x9:
                return
        chunk = raw.recv(65536)
        assert chunk, "the server closed the connection before it sent a ping"
        buffer += chunk


async def _alive_after(server: ServerProcess, token: str, dead: threading.Event) -> list[str]:
    async with websockets.connect(f"{server.ws_url}?token={token}") as connection:
        await _frames_until(connection, lambda frames: len(frames) == 2)
        await asyncio.to_thread(dead.wait, 30)
        await asyncio.to_thread(_trigger_with_client, server, "pinged", 1)
        frames = await _frames_until(connection, lambda f: len(_received_contents(f)) == 1)
        return _received_contents(frames)


def _trigger_with_client(server: ServerProcess, subscriber_id: str, n: int) -> None:
    with api_client(server) as client:
        _trigger(client, subscriber_id, n)


def test_vanished_peer_is_dropped(ping_server: ServerProcess) -> None:
    token = _session(ping_server, "pinged")
    before = poll(lambda: _open_sockets(ping_server), lambda n: n == 0, "no open sockets")
    assert before == 0
    dead = threading.Event()
    result: dict[str, Any] = {}

    def run_alive() -> None:
        try:
            result["received"] = asyncio.run(_alive_after(ping_server, token, dead))
        except BaseException as exc:
            result["error"] = exc

    alive = threading.Thread(target=run_alive)
    alive.start()
    poll(lambda: _open_sockets(ping_server), lambda n: n == 1, "the healthy socket to open")

    raw, pending = _handshake(ping_server, token)
    try:
        poll(lambda: _open_sockets(ping_server), lambda n: n == 2, "the silent socket to open")
        # The server pings with WebSocket control frames; this peer reads one and never replies.
        _read_until_ping(raw, pending)
        started = time.monotonic()
        # A loose bound that catches a socket kept forever; the drop should take about one interval.
        poll(lambda: _open_sockets(ping_server), lambda n: n == 1, "the silent socket to drop", timeout=15)
        elapsed = time.monotonic() - started
    finally:
        dead.set()
        alive.join(30)
        raw.close()
    assert "error" not in result, result.get("error")
    assert result["received"] == ["note 1"], "the healthy socket, which answers pings, stopped receiving"
    assert elapsed < 15


# --- resume with since ---


class _TriggerStream(threading.Thread):
    """Trigger messages one after another until stopped, so some race every step of a connect."""

    def __init__(self, server: ServerProcess, subscriber_id: str, start: int) -> None:
        super().__init__()
        self.server = server
        self.subscriber_id = subscriber_id
        self.next = start
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with api_client(self.server) as client:
                # At least five messages, and always a whole group of five.
                while True:
                    _trigger(client, self.subscriber_id, self.next)
                    self.next += 1
                    if self.stop.is_set() and self.next % 5 == 0:
                        return
        except BaseException as exc:
            self.error = exc


RACE_ROUNDS = 4


def test_resume_replays_then_live(ping_server: ServerProcess, api: httpx.Client) -> None:
    token = _session(ping_server, "resumer")
    for n in range(5):
        _trigger(api, "resumer", n)
    since = _listed_ids(ping_server, token, 5)[0]
    total = 5
    for round_ in range(RACE_ROUNDS):
        stream = _TriggerStream(ping_server, "resumer", total)
        stream.start()
        try:
            frames, all_ids = asyncio.run(_resume_round(ping_server, token, since, stream))
        finally:
            stream.stop.set()
            stream.join(30)
        assert stream.error is None, stream.error
        total = stream.next
        received = _received_ids(frames)
        expected = [i for i in all_ids if i > since]
        assert received == expected, f"round {round_}: received {received}, expected {expected}"
        since = received[-1]


async def _resume_round(
    server: ServerProcess, token: str, since: str, stream: _TriggerStream
) -> tuple[list[dict[str, Any]], list[str]]:
    async with websockets.connect(f"{server.ws_url}?token={token}&since={since}") as connection:
        # Messages are created before, during and after the connect; stop once the socket is live.
        opening = await _frames_until(
            connection, lambda f: bool(f) and f[-1]["event"] == "unseen_count_changed"
        )
        stream.stop.set()
        await asyncio.to_thread(stream.join, 30)
        all_ids = await asyncio.to_thread(_listed_ids, server, token, stream.next)
        after = {i for i in all_ids if i > since}
        # Read until the last message arrived and a count frame followed it, so a repeated
        # frame still in flight would be seen.
        rest = await _frames_until(
            connection,
            lambda f: (
                after <= set(_received_ids(opening + f))
                and (opening + f)[-1]["event"] == "unseen_count_changed"
            ),
        )
        return opening + rest, all_ids


async def _rejected(url: str) -> tuple[dict[str, Any], int]:
    async with websockets.connect(url) as connection:
        frame = json.loads(await asyncio.wait_for(connection.recv(), 10))
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(connection.recv(), 10)
    assert closed.value.rcvd is not None
    return frame, closed.value.rcvd.code


@pytest.mark.parametrize(
    ("since", "status"),
    [
        ("not-an-id", 400),
        ("0123456789abcdef01234567", 404),
    ],
)
def test_resume_bad_since_rejected(ping_server: ServerProcess, since: str, status: int) -> None:
    token = _session(ping_server, "stranger")
    frame, code = asyncio.run(_rejected(f"{ping_server.ws_url}?token={token}&since={since}"))
    assert frame["event"] == "error"
    assert frame["data"]["statusCode"] == status
    assert "since" in json.dumps(frame["data"])
    assert code == 1008


def test_resume_foreign_since_rejected(ping_server: ServerProcess, api: httpx.Client) -> None:
    owner = _session(ping_server, "owner")
    _trigger(api, "owner", 1)
    foreign = _listed_ids(ping_server, owner, 1)[0]
    other_context = _session(ping_server, "owner", TENANT)
    frame, code = asyncio.run(_rejected(f"{ping_server.ws_url}?token={other_context}&since={foreign}"))
    assert frame["data"]["statusCode"] == 404
    assert code == 1008


def test_resume_bounded_to_newest(ping_server: ServerProcess, api: httpx.Client) -> None:
    token = _session(ping_server, "backlog")
    _trigger(api, "backlog", 0)
    since = _listed_ids(ping_server, token, 1)[0]
    events = [{"name": "note", "to": "backlog", "payload": {"n": n}} for n in range(1, 106)]
    for start in range(0, len(events), 100):
        response = api.post("/v1/events/trigger/bulk", json={"events": events[start : start + 100]})
        assert response.status_code == 201, response.text
    _wait_for_count(ping_server, token, 106)

    async def first_frames() -> list[dict[str, Any]]:
        async with websockets.connect(f"{ping_server.ws_url}?token={token}&since={since}") as connection:
            return await _frames_until(
                connection, lambda f: any(x["event"] == "unseen_count_changed" for x in f)
            )

    frames = asyncio.run(first_frames())
    assert frames[0] == {"event": "replay_truncated", "data": {"since": since, "skipped": 5, "replayed": 100}}
    contents = _received_contents(frames)
    assert contents == [f"note {n}" for n in range(6, 106)]


def _wait_for_count(server: ServerProcess, token: str, count: int) -> None:
    def fetch() -> int:
        response = httpx.get(
            f"{server.base_url}/v1/inbox/notifications/count",
            params={"filters": "[{}]"},
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
        return int(response.json()["data"][0]["count"])

    poll(fetch, lambda n: n >= count, f"{count} notifications", timeout=60)


# --- compression and encoding ---


async def _extensions_and_frames(url: str) -> tuple[str | None, list[dict[str, Any]]]:
    """Connect offering permessage-deflate as browsers do; return the extensions accepted and two frames."""
    async with websockets.connect(url, compression="deflate") as connection:
        assert connection.response is not None
        extensions = connection.response.headers.get("Sec-WebSocket-Extensions")
        return extensions, await _frames_until(connection, lambda frames: len(frames) == 2)


def test_compression_declined_by_default(ping_server: ServerProcess) -> None:
    token = _session(ping_server, "plain-frames")

    extensions, frames = asyncio.run(_extensions_and_frames(f"{ping_server.ws_url}?token={token}"))

    assert extensions is None
    assert [frame["event"] for frame in frames] == ["unread_count_changed", "unseen_count_changed"]


def test_compression_flag_accepts_deflate(tmp_path: Any) -> None:
    server = start_server(tmp_path, ["--ws-compression"])
    try:
        token = _session(server, "deflated-frames")

        extensions, frames = asyncio.run(_extensions_and_frames(f"{server.ws_url}?token={token}"))
    finally:
        server.stop()

    assert extensions is not None
    assert extensions.startswith("permessage-deflate")
    assert [frame["event"] for frame in frames] == ["unread_count_changed", "unseen_count_changed"]


async def _one_message(
    server: ServerProcess, api: httpx.Client, subscriber_id: str, n: int | str
) -> dict[str, Any]:
    token = _session(server, subscriber_id)
    async with websockets.connect(f"{server.ws_url}?token={token}") as connection:
        await _frames_until(connection, lambda frames: len(frames) == 2)
        _trigger(api, subscriber_id, n)
        frames = await _frames_until(
            connection, lambda f: any(x["event"] == "unseen_count_changed" for x in f)
        )
    received = [frame for frame in frames if frame["event"] == "notification_received"]
    assert len(received) == 1
    return dict(received[0]["data"]["message"])


def test_frame_keeps_non_ascii_text(ping_server: ServerProcess, api: httpx.Client) -> None:
    message = asyncio.run(_one_message(ping_server, api, "unicode-frames", "Grüße ✓ \u2028 𝄞"))

    assert message["content"] == "note Grüße ✓ \u2028 𝄞"


def test_plain_http_on_socket_path_is_426(ping_server: ServerProcess) -> None:
    response = httpx.get(f"{ping_server.base_url}/ws", timeout=10)
    assert response.status_code == 426
    assert response.headers["upgrade"] == "websocket"
    assert "WebSocket" in response.json()["message"]
