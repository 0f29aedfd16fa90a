"""Two `novulite serve` processes on one data directory and one private Redis.

The servers share the job store (SQLite works across processes on one host) and,
through Redis, the queues, the realtime fan-out and the limiter. The second server
starts only once the first is healthy, so the first alone creates and migrates the
database.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import datetime as dt
import json
import os
import subprocess
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis
import websockets
from prometheus_client.parser import text_string_to_metric_families
from websockets.exceptions import ConnectionClosed

from tests.helpers import create_workflow, next_frame, open_session, poll, read_rows
from tests.http_stub import HttpStub
from tests.servers import (
    API_KEY,
    REDIS_PASSWORD,
    RedisProcess,
    ServerProcess,
    server_command,
    sharing_servers,
)

pytestmark = pytest.mark.slow

PREFIX = "pairtest"


@pytest.fixture(scope="module")
def stub() -> Iterator[HttpStub]:
    server = HttpStub().start()
    yield server
    server.stop()


class KeyWatcher:
    """Collects the name of every key written in a Redis, from its keyspace notifications.

    Listing the keys at the end misses those already gone: queue lists exist only while they hold
    entries, and a token bucket expires once it has refilled.

    The watcher keeps its own client: when a redis-py client is collected, it closes its pool,
    in-use connections included, and a pub/sub read running in another thread then fails with
    AttributeError. The thread blocks in `listen()` and stops on a message published to a
    channel that its pattern matches.
    """

    _PATTERN = "__keyevent@0__:*"
    _STOP_CHANNEL = "__keyevent@0__:watcher-stop"

    def __init__(self, process: RedisProcess) -> None:
        self.keys: set[str] = set()
        self.error: BaseException | None = None
        # No socket timeout: the thread waits for notifications as long as the module runs.
        self._client = redis.Redis(
            host="127.0.0.1", port=process.port, password=REDIS_PASSWORD, protocol=2, socket_timeout=None
        )
        self._client.config_set("notify-keyspace-events", "KEA")
        self._pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        self._pubsub.psubscribe(self._PATTERN)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for message in self._pubsub.listen():
                if message["channel"].decode() == self._STOP_CHANNEL:
                    return
                self.keys.add(message["data"].decode())
        except BaseException as error:  # reported by the test that reads the keys
            self.error = error

    def written(self) -> list[str]:
        """Return the keys written so far, and fail if the watcher stopped listening."""
        assert self.error is None, f"the keyspace watcher stopped: {self.error!r}"
        assert self._thread.is_alive(), "the keyspace watcher stopped"
        return sorted(self.keys)

    def stop(self) -> None:
        self._client.publish(self._STOP_CHANNEL, "stop")
        self._thread.join(timeout=10)
        self._pubsub.close()
        self._client.close()


@pytest.fixture(scope="module")
def private_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    """A Redis of this module alone, so the key listing contains only these servers' keys."""
    process = RedisProcess(tmp_path_factory.mktemp("redis")).start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def key_watcher(private_redis: RedisProcess) -> Iterator[KeyWatcher]:
    watcher = KeyWatcher(private_redis)
    yield watcher
    watcher.stop()


@pytest.fixture(scope="module")
def pair(
    tmp_path_factory: pytest.TempPathFactory, private_redis: RedisProcess, key_watcher: KeyWatcher
) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    root = tmp_path_factory.mktemp("pair")
    env = {
        "NOVULITE_REDIS_URL": private_redis.url,
        "NOVULITE_REDIS_PREFIX": PREFIX,
        "NOVULITE_OUTBOUND_ALLOW": "127.0.0.1",
        # Rate limits put token buckets in Redis, so the key listing covers the limiter too.
        "NOVULITE_RATE_LIMITS": "on",
    }
    servers = sharing_servers(root, env)
    try:
        for process in servers:
            process.start()
        yield servers[0], servers[1]
    finally:
        for process in servers:
            process.stop()


def client_of(server: ServerProcess) -> httpx.Client:
    return httpx.Client(base_url=server.base_url, headers={"Authorization": f"ApiKey {API_KEY}"}, timeout=10)


def send_trigger(server: ServerProcess, workflow_id: str, to: str, payload: dict[str, Any]) -> httpx.Response:
    body = {"name": workflow_id, "to": to, "payload": payload}
    return httpx.post(
        f"{server.base_url}/v1/events/trigger",
        json=body,
        headers={"Authorization": f"ApiKey {API_KEY}"},
        timeout=10,
    )


def in_app_deliveries(server: ServerProcess) -> float:
    """Return the in-app deliveries this server process has counted, from GET /metrics."""
    response = httpx.get(f"{server.base_url}/metrics", timeout=10)
    assert response.status_code == 200, response.text
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            if sample.name == "novulite_deliveries_total" and sample.labels.get("channel") == "in_app":
                return float(sample.value)
    return 0.0


async def _cross_process_frame(a: ServerProcess, b: ServerProcess) -> dict[str, Any]:
    token = open_session(a.base_url, "carol")["token"]
    async with websockets.connect(f"{a.ws_url}?token={token}") as socket:
        await next_frame(socket, "unseen_count_changed")
        response = await asyncio.to_thread(send_trigger, b, "cross", "carol", {"text": "from b"})
        assert response.status_code == 201, response.text
        received = await next_frame(socket, "notification_received")
        unread = await next_frame(socket, "unread_count_changed")
    return {"received": received, "unread": unread}


def test_socket_gets_other_server_notification(pair: tuple[ServerProcess, ServerProcess]) -> None:
    a, b = pair
    with client_of(a) as api:
        create_workflow(api, "cross")

    frames = asyncio.run(_cross_process_frame(a, b))

    assert frames["received"]["message"]["content"] == "Hello : from b"
    assert frames["unread"]["unreadCount"] == 1


def _burst_workflow(api: httpx.Client, stub: HttpStub) -> None:
    workflow = {
        "name": "burst",
        "workflowId": "burst",
        "steps": [
            {
                "name": "Call",
                "stepId": "call",
                "type": "http_request",
                "controlValues": {"method": "POST", "url": stub.url("/burst"), "body": "{{ payload.n }}"},
            },
            {
                "name": "Inbox",
                "stepId": "inbox",
                "type": "in_app",
                "controlValues": {"body": "n={{ payload.n }}"},
            },
        ],
    }
    response = api.post("/v2/workflows", json=workflow)
    assert response.status_code == 201, response.text


def test_burst_delivered_once(pair: tuple[ServerProcess, ServerProcess], stub: HttpStub) -> None:
    a, b = pair
    with client_of(a) as api:
        _burst_workflow(api, stub)
    count = 120
    before = [in_app_deliveries(server) for server in pair]

    def send(number: int) -> int:
        server = (a, b)[number % 2]
        return send_trigger(server, "burst", f"burst-{number % 7}", {"n": number}).status_code

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(send, range(count)))
    assert statuses == [201] * count

    received = stub.wait_for("/burst", count, timeout=30)
    database = a.data_dir / "novulite.db"
    poll(
        lambda: read_rows(database, "SELECT count(*) FROM message WHERE content LIKE 'n=%'")[0][0],
        lambda rows: rows >= count,
        "every in-app message of the burst",
        timeout=30,
    )
    bodies = collections.Counter(request.body.decode() for request in received)
    assert bodies == collections.Counter(str(number) for number in range(count))
    contents = read_rows(
        database, "SELECT content, count(*) FROM message WHERE content LIKE 'n=%' GROUP BY content"
    )
    assert len(contents) == count
    assert {rows for _, rows in contents} == {1}
    # Each process counts the deliveries it made: both took work from the shared queues, and
    # together they delivered each in-app message once.
    delivered = poll(
        lambda: [in_app_deliveries(server) - earlier for server, earlier in zip(pair, before, strict=True)],
        lambda shares: sum(shares) >= count,
        "both servers' delivery counters",
    )
    assert all(share > 0 for share in delivered), delivered
    assert sum(delivered) == count
    for server in pair:
        assert "mode scale-out (SQLite job store, queues and realtime fan-out in Redis" in server.log()
        assert f"with key prefix '{PREFIX}'" in server.log()


def _snooze_first(server: ServerProcess, subscriber_id: str) -> None:
    """Snooze the subscriber's first notification for an hour, which schedules a delayed queue entry."""
    token = open_session(server.base_url, subscriber_id)["token"]
    with httpx.Client(
        base_url=server.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=10
    ) as inbox:
        listed = poll(lambda: inbox.get("/v1/inbox/notifications").json()["data"], bool, "a notification")
        until = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
        response = inbox.patch(
            f"/v1/inbox/notifications/{listed[0]['id']}/snooze", json={"snoozeUntil": until}
        )
        assert response.status_code == 200, response.text


def test_keys_carry_prefix(
    pair: tuple[ServerProcess, ServerProcess], private_redis: RedisProcess, key_watcher: KeyWatcher
) -> None:
    a, _ = pair
    # A throttle step writes a limiter window, and a snooze writes a queue's schedule.
    workflow = {
        "name": "throttled",
        "workflowId": "throttled",
        "steps": [
            {"name": "Throttle", "type": "throttle", "controlValues": {"amount": 1, "unit": "minutes"}},
            {"name": "Inbox", "type": "in_app", "controlValues": {"body": "throttled"}},
        ],
    }
    with client_of(a) as api:
        assert api.post("/v2/workflows", json=workflow).status_code == 201
    assert send_trigger(a, "throttled", "dora", {}).status_code == 201
    client = private_redis.client()
    poll(lambda: client.keys(f"{PREFIX}:limiter:window:*"), bool, "the throttle step's limiter window")
    _snooze_first(a, "dora")
    schedule_key = f"{PREFIX}:{{{PREFIX}:ws_socket_queue}}:schedule"
    poll(lambda: client.zcard(schedule_key), bool, "the snooze's delayed counts entry")

    written = key_watcher.written()
    listed = [key.decode() for key in client.keys("*")]
    channels = [channel.decode() for channel in client.pubsub_channels("*")]

    assert [key for key in written + listed if not key.startswith(f"{PREFIX}:")] == []
    assert f"{PREFIX}:{{{PREFIX}:trigger-handler}}:queue" in written
    assert f"{PREFIX}:{{{PREFIX}:standard}}:queue" in written
    assert any(key.startswith(f"{PREFIX}:limiter:bucket:") for key in written), written
    assert any(key.startswith(f"{PREFIX}:limiter:window:") for key in listed), listed
    assert channels == [f"{PREFIX}:realtime"]
    # One subscription per server process.
    assert client.pubsub_numsub(f"{PREFIX}:realtime") == [(f"{PREFIX}:realtime".encode(), 2)]


def test_bad_prefix_stops_start(tmp_path: Any) -> None:
    result = subprocess.run(
        [*server_command(), "--data-dir", str(tmp_path / "data"), "--redis-prefix", "team{a}"],
        capture_output=True,
        text=True,
        timeout=60,
        env=os.environ,
    )
    assert result.returncode == 2
    assert "the Redis key prefix 'team{a}' is invalid" in result.stderr
    assert "Traceback" not in result.stderr


async def _rotated_elsewhere(a: ServerProcess, b: ServerProcess) -> tuple[list[str], int | None]:
    """Open a socket on `a`, rotate the key through `b`, and return the socket's events and close code."""
    token = open_session(a.base_url, "erin")["token"]
    events: list[str] = []
    async with websockets.connect(f"{a.ws_url}?token={token}") as socket:
        await next_frame(socket, "unseen_count_changed")
        with client_of(b) as api:
            response = await asyncio.to_thread(api.post, "/v1/environments/api-keys/regenerate")
        assert response.status_code == 201, response.text
        try:
            while True:
                frame = json.loads(await asyncio.wait_for(socket.recv(), 10))
                events.append(frame["event"])
        except ConnectionClosed as closed:
            return events, closed.rcvd.code if closed.rcvd else None
    return events, None


# Runs last in this module: it replaces the secret key that the tests above use.
def test_rotation_closes_sockets_everywhere(pair: tuple[ServerProcess, ServerProcess]) -> None:
    a, b = pair
    events, code = asyncio.run(_rotated_elsewhere(a, b))

    assert events == ["error"]
    assert code == 1008
    # Server a dropped its cached environment, so the old key no longer works there either.
    with client_of(a) as api:
        assert api.get("/v2/subscribers").status_code == 401
