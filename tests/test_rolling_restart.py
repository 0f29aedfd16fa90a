"""Rolling restart: two serve processes on one data directory and one Redis, restarted one at a time.

Triggers go to both processes the whole time. Every trigger acknowledged with 201
must be delivered exactly once, whichever process stored it and whichever ran it.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers import poll, read_rows
from tests.http_stub import HttpStub, Reply
from tests.servers import API_KEY, RedisProcess, ServerProcess, sharing_servers

WORKFLOW_ID = "rolling"
# Seconds between triggers of the sending thread, about 25 triggers per second.
SEND_INTERVAL = 0.04
# Triggers each process must acknowledge after its restart before the next one restarts.
ACKS_AFTER_RESTART = 20
# Seconds the stub takes to reply, so that external calls are running when SIGTERM arrives.
CALL_SECONDS = 0.2
DELIVERY_TIMEOUT = 60.0


@pytest.fixture
def stub() -> Iterator[HttpStub]:
    server = HttpStub().start()
    yield server
    server.stop()


class Sender:
    """A thread that sends triggers to the servers in turn and records which were acknowledged."""

    def __init__(self, servers: list[ServerProcess]) -> None:
        self._servers = servers
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.sent: list[str] = []
        self.acknowledged: list[str] = []
        self.acknowledged_by: dict[int, int] = {index: 0 for index in range(len(servers))}
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Sender:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def count_acknowledged(self, index: int) -> int:
        with self._lock:
            return self.acknowledged_by[index]

    def _run(self) -> None:
        headers = {"Authorization": f"ApiKey {API_KEY}"}
        with httpx.Client(headers=headers, timeout=10) as client:
            for number in itertools.count():
                if self._stop.wait(SEND_INTERVAL):
                    return
                index = number % len(self._servers)
                transaction_id = f"rolling-{number}"
                with self._lock:
                    self.sent.append(transaction_id)
                try:
                    response = client.post(
                        f"{self._servers[index].base_url}/v1/events/trigger",
                        json={"name": WORKFLOW_ID, "to": "carol", "transactionId": transaction_id},
                    )
                except httpx.TransportError:
                    continue
                if response.status_code == 201:
                    with self._lock:
                        self.acknowledged.append(transaction_id)
                        self.acknowledged_by[index] += 1


def message_counts(database: Path) -> dict[str, int]:
    rows = read_rows(database, "SELECT transaction_id, count(*) FROM message GROUP BY transaction_id")
    return {transaction_id: count for transaction_id, count in rows}


def test_rolling_restart_delivers_once(tmp_path: Path, stub: HttpStub, redis_server: RedisProcess) -> None:
    stub.route("/hook", Reply(body={"ok": True}, delay=CALL_SECONDS))
    env = {"NOVULITE_REDIS_URL": redis_server.url, "NOVULITE_OUTBOUND_ALLOW": "127.0.0.1"}
    servers = sharing_servers(tmp_path, env)
    sender = Sender(servers)
    try:
        servers[0].start()
        workflow = {
            "name": "Rolling",
            "workflowId": WORKFLOW_ID,
            "steps": [
                {
                    "name": "Call",
                    "stepId": "call",
                    "type": "http_request",
                    "controlValues": {"method": "POST", "url": stub.url("/hook"), "body": {}},
                },
                {"name": "Inbox", "stepId": "inbox", "type": "in_app", "controlValues": {"body": "hi"}},
            ],
        }
        response = httpx.post(
            f"{servers[0].base_url}/v2/workflows",
            json=workflow,
            headers={"Authorization": f"ApiKey {API_KEY}"},
            timeout=10,
        )
        assert response.status_code == 201, response.text
        servers[1].start()
        sender.start()

        for index, server in enumerate(servers):
            before = sender.count_acknowledged(index)
            poll(
                lambda: sender.count_acknowledged(index),  # noqa: B023
                lambda count: count >= before + ACKS_AFTER_RESTART,  # noqa: B023
                f"triggers acknowledged by server {index} before its restart",
                timeout=30,
            )
            server.terminate(timeout=60)
            assert server.process is not None
            assert server.process.returncode == 0, server.log()
            restarted_at = sender.count_acknowledged(index)
            server.start()
            poll(
                lambda: sender.count_acknowledged(index),  # noqa: B023
                lambda count: count >= restarted_at + ACKS_AFTER_RESTART,  # noqa: B023
                f"triggers acknowledged by server {index} after its restart",
                timeout=30,
            )
        sender.stop()

        database = servers[0].data_dir / "novulite.db"
        acknowledged = set(sender.acknowledged)
        poll(
            lambda: message_counts(database),
            lambda counts: acknowledged <= set(counts),
            f"{len(acknowledged)} acknowledged triggers to be delivered",
            timeout=DELIVERY_TIMEOUT,
        )
        counts = message_counts(database)
        for transaction_id in sorted(acknowledged):
            assert counts[transaction_id] == 1, transaction_id
        for transaction_id in sender.sent:
            assert counts.get(transaction_id, 0) <= 1, transaction_id
        # Each stopping process let its running calls finish, and no starting process released the
        # leases of the other, live one, so no job ran a second attempt.
        attempts = read_rows(database, "SELECT max(attempt) FROM job")
        assert attempts == [(1,)]
        for server in servers:
            log = server.log()
            assert "Traceback" not in log
            assert "released the leases" not in log
            # Redis mode: a starting process leaves the leases of the other, live one alone.
            assert "released the leases of jobs interrupted by the last stop" not in log
    finally:
        sender.stop()
        for server in servers:
            server.stop()
