"""Redis stops for 10 s during a burst of triggers over two servers, then comes back empty.

The private Redis keeps nothing on disk, so the entries queued when it stopped are
gone when it restarts. Triggers acknowledged during the outage wait in each
server's memory until Redis returns, and the reconciler re-queues the lost entries
from the job store. Every acknowledged trigger must reach the HTTP stub exactly once.
"""

from __future__ import annotations

import collections
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import websockets.sync.client
from websockets.exceptions import ConnectionClosed

from tests.helpers import create_workflow, open_session, read_rows
from tests.http_stub import HttpStub
from tests.servers import API_KEY, RedisProcess, ServerProcess, sharing_servers

pytestmark = pytest.mark.slow

OUTAGE_SECONDS = 10.0
# Triggers sent per second, alternating between the servers.
TRIGGER_RATE = 25


@pytest.fixture
def stub() -> Iterator[HttpStub]:
    server = HttpStub().start()
    yield server
    server.stop()


def start_pair(root: Path, redis_process: RedisProcess) -> list[ServerProcess]:
    env = {
        "NOVULITE_REDIS_URL": redis_process.url,
        "NOVULITE_REDIS_PREFIX": "outage",
        "NOVULITE_OUTBOUND_ALLOW": "127.0.0.1",
        # Re-queue lost entries within seconds instead of the default 30 s grace.
        "NOVULITE_RECONCILE_INTERVAL": "0.5",
        "NOVULITE_RECONCILE_GRACE": "2",
    }
    servers = sharing_servers(root, env)
    for process in servers:
        process.start()
    return servers


class Sender:
    """Sends triggers at TRIGGER_RATE from a thread, alternating servers, and records each status."""

    def __init__(self, servers: list[ServerProcess]) -> None:
        self._servers = servers
        self.statuses: dict[int, int] = {}
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join()

    def _run(self) -> None:
        clients = [
            httpx.Client(base_url=server.base_url, headers={"Authorization": f"ApiKey {API_KEY}"}, timeout=10)
            for server in self._servers
        ]
        number = 0
        while not self._stopped.wait(1 / TRIGGER_RATE):
            body = {"name": "outage", "to": f"sub-{number % 5}", "payload": {"n": number}}
            try:
                status = clients[number % 2].post("/v1/events/trigger", json=body).status_code
            except httpx.HTTPError:
                status = 0
            self.statuses[number] = status
            number += 1
        for client in clients:
            client.close()


def _workflow(server: ServerProcess, stub: HttpStub) -> None:
    workflow = {
        "name": "outage",
        "workflowId": "outage",
        "steps": [
            {
                "name": "Call",
                "stepId": "call",
                "type": "http_request",
                "controlValues": {"method": "POST", "url": stub.url("/outage"), "body": "{{ payload.n }}"},
            },
        ],
    }
    with httpx.Client(base_url=server.base_url, headers={"Authorization": f"ApiKey {API_KEY}"}) as api:
        assert api.post("/v2/workflows", json=workflow).status_code == 201
        create_workflow(api, "after")


def _close_code(socket: websockets.sync.client.ClientConnection, timeout: float) -> int | None:
    try:
        while True:
            socket.recv(timeout=timeout)
    except ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd else None


def test_outage_loses_no_trigger(tmp_path: Path, stub: HttpStub) -> None:
    redis_process = RedisProcess(tmp_path).start()
    servers: list[ServerProcess] = []
    try:
        servers = start_pair(tmp_path, redis_process)
        a, b = servers
        _workflow(a, stub)
        token = open_session(a.base_url, "watcher")["token"]
        sender = Sender(servers)
        with websockets.sync.client.connect(f"{a.ws_url}?token={token}") as socket:
            sender.start()
            time.sleep(1.0)
            redis_process.stop()
            time.sleep(OUTAGE_SECONDS)
            redis_process.start()
            # The socket missed whatever was published during the outage, so the server closes it.
            close_code = _close_code(socket, timeout=15)
        time.sleep(1.0)
        sender.stop()

        statuses = collections.Counter(sender.statuses.values())
        accepted = sorted(number for number, status in sender.statuses.items() if status == 201)
        assert set(statuses) <= {201, 503}, statuses
        assert len(accepted) > OUTAGE_SECONDS * TRIGGER_RATE / 2, statuses

        received = stub.wait_for("/outage", len(accepted), timeout=40)
        # Time for a repeated delivery to show, if any entry ran twice.
        time.sleep(3.0)
        bodies = collections.Counter(request.body.decode() for request in stub.received("/outage"))
        assert len(received) >= len(accepted)
        assert {int(body) for body in bodies} == set(accepted)
        assert set(bodies.values()) == {1}
        assert close_code == 1013

        # Realtime fan-out works again: a reconnected socket on a gets a trigger sent to b.
        with websockets.sync.client.connect(f"{a.ws_url}?token={token}") as again:
            with httpx.Client(base_url=b.base_url, headers={"Authorization": f"ApiKey {API_KEY}"}) as api:
                response = api.post("/v1/events/trigger", json={"name": "after", "to": "watcher"})
                assert response.status_code == 201, response.text
            events = []
            while "notification_received" not in events:
                events.append(json.loads(again.recv(timeout=10))["event"])

        unfinished = read_rows(
            a.data_dir / "novulite.db", "SELECT count(*) FROM job WHERE status NOT IN ('completed')"
        )
        assert unfinished == [(0,)]
        for server in servers:
            log = server.log()
            assert "Redis is unreachable for the queues" in log
            assert "Redis is reachable again for the queues" in log
            assert "realtime subscription to Redis restored" in log
            assert "Traceback" not in log
    finally:
        for server in servers:
            server.stop()
        redis_process.stop()
