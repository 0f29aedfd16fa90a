"""Scale-out mode: two `serve` processes and one `worker` on a private PostgreSQL and Redis.

A socket held by one server receives what a trigger sent to the other creates. A burst spread
over both servers is delivered exactly once. A SIGKILL of the worker in the middle of a burst
loses nothing, because its leases expire and the servers' reconcilers run its work once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from tests.helpers import create_workflow, open_session
from tests.postgres import PostgresProcess
from tests.servers import API_KEY, RedisProcess, ServerProcess, WorkerProcess, free_port, server_command

AUTHORIZED = {"Authorization": f"ApiKey {API_KEY}"}
WORKFLOW_ID = "scale-out"
BURST = 150
# Short leases, so the work of a killed worker is taken over within seconds.
LEASE_SECONDS = "3"
DELIVERY_TIMEOUT = 60.0
POLL_SECONDS = 0.1


@dataclasses.dataclass
class Cluster:
    servers: list[ServerProcess]
    worker: WorkerProcess
    postgres: PostgresProcess
    database: str

    def count_messages(self, transaction_ids: list[str]) -> dict[str, int]:
        with self.postgres.connect(self.database) as connection:
            rows = connection.execute(
                "SELECT transaction_id, count(*) FROM message WHERE transaction_id = ANY(%s) "
                "GROUP BY transaction_id",
                [transaction_ids],
            ).fetchall()
        return {transaction_id: count for transaction_id, count in rows}


@pytest.fixture
def postgres(postgres_cluster: PostgresProcess) -> PostgresProcess:
    """The run's private PostgreSQL cluster, shared with the other modules of this pytest worker."""
    return postgres_cluster


@pytest.fixture
def cluster(tmp_path: Path, postgres: PostgresProcess) -> Iterator[Cluster]:
    redis = RedisProcess(tmp_path).start()
    database = f"scale_{tmp_path.name.lower().replace('-', '_')}"[:60]
    env = {
        "NOVULITE_DATABASE_URL": postgres.create_database(database),
        "NOVULITE_REDIS_URL": redis.url,
        "NOVULITE_JOB_LEASE_SECONDS": LEASE_SECONDS,
        "NOVULITE_RECONCILE_INTERVAL": "0.5",
        # Entries the killed worker had taken but not claimed wait this long before a re-queue.
        "NOVULITE_RECONCILE_GRACE": "2",
    }
    servers = [
        ServerProcess(tmp_path / name, free_port(), server_command(), tmp_path / f"{name}.log", env=env)
        for name in ("serve-a", "serve-b")
    ]
    worker_dir = tmp_path / "worker"
    worker_dir.mkdir()
    worker = WorkerProcess(worker_dir, tmp_path / "worker.log", env=env)
    try:
        for server in servers:
            server.data_dir.mkdir()
            server.start()
        worker.start()
        yield Cluster(servers, worker, postgres, database)
    finally:
        worker.stop()
        for server in servers:
            server.stop()
        redis.stop()


def send_burst(servers: list[ServerProcess], count: int, prefix: str) -> list[str]:
    """Send `count` triggers alternately to each server; return the transaction ids all got 201 for."""
    clients = [httpx.Client(base_url=server.base_url, headers=AUTHORIZED, timeout=30) for server in servers]
    transaction_ids = []
    try:
        for index in range(count):
            transaction_id = f"{prefix}-{index:04d}"
            response = clients[index % len(clients)].post(
                "/v1/events/trigger",
                json={"name": WORKFLOW_ID, "to": f"user-{index % 10}", "transactionId": transaction_id},
            )
            assert response.status_code == 201, response.text
            transaction_ids.append(transaction_id)
    finally:
        for client in clients:
            client.close()
    return transaction_ids


def wait_delivered(cluster: Cluster, transaction_ids: list[str]) -> dict[str, int]:
    deadline = time.monotonic() + DELIVERY_TIMEOUT
    while True:
        counts = cluster.count_messages(transaction_ids)
        if len(counts) == len(transaction_ids) or time.monotonic() > deadline:
            return counts
        time.sleep(POLL_SECONDS)


def api(server: ServerProcess) -> httpx.Client:
    return httpx.Client(base_url=server.base_url, headers=AUTHORIZED, timeout=30)


def test_socket_on_other_server(cluster: Cluster) -> None:
    holder, sender = cluster.servers
    with api(sender) as client:
        create_workflow(client, WORKFLOW_ID, body="Hello {{ payload.name }}")
    session = open_session(holder.base_url, "remote-reader")

    async def receive() -> dict[str, Any]:
        async with websockets.connect(f"{holder.ws_url}?token={session['token']}") as socket:
            with api(sender) as client:
                response = client.post(
                    "/v1/events/trigger",
                    json={"name": WORKFLOW_ID, "to": "remote-reader", "payload": {"name": "Ada"}},
                )
                assert response.status_code == 201, response.text
            while True:
                frame = json.loads(await asyncio.wait_for(socket.recv(), timeout=DELIVERY_TIMEOUT))
                if frame["event"] == "notification_received":
                    return dict(frame["data"]["message"])

    message = asyncio.run(receive())

    assert message["content"] == "Hello Ada"


def test_burst_delivered_exactly_once(cluster: Cluster) -> None:
    with api(cluster.servers[0]) as client:
        create_workflow(client, WORKFLOW_ID)

    transaction_ids = send_burst(cluster.servers, BURST, "burst")
    counts = wait_delivered(cluster, transaction_ids)

    assert sorted(counts) == sorted(transaction_ids)
    assert set(counts.values()) == {1}


def test_worker_killed_mid_burst(cluster: Cluster) -> None:
    with api(cluster.servers[0]) as client:
        create_workflow(client, WORKFLOW_ID)
    acknowledged: list[str] = []

    sender = threading.Thread(
        target=lambda: acknowledged.extend(send_burst(cluster.servers, BURST, "killed")), daemon=True
    )
    sender.start()
    # Kill the worker once the first triggers are in, while the rest are still being sent and run.
    deadline = time.monotonic() + DELIVERY_TIMEOUT
    while not cluster.count_messages([f"killed-{index:04d}" for index in range(BURST // 3)]):
        assert time.monotonic() < deadline, "no trigger of the burst was delivered"
        time.sleep(0.02)
    assert cluster.worker.process is not None
    cluster.worker.process.send_signal(signal.SIGKILL)
    cluster.worker.process.wait(timeout=10)
    sender.join(timeout=DELIVERY_TIMEOUT)

    assert len(acknowledged) == BURST
    counts = wait_delivered(cluster, acknowledged)
    assert sorted(counts) == sorted(acknowledged)
    assert set(counts.values()) == {1}
