"""SIGKILL right after acknowledged triggers: after a restart each one is delivered exactly once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests.helpers import create_workflow, inbox_messages, open_session, read_rows, send_and_kill
from tests.servers import API_KEY, ServerProcess

AUTHORIZED = {"Authorization": f"ApiKey {API_KEY}"}
WORKFLOW_ID = "crash-safe"
SUBSCRIBER_ID = "alice"
KILL_ROUNDS = 4
BURST_ROUNDS = 2
BURST_SIZE = 20
# The burst is killed once this many of its triggers were acknowledged, so others are still in flight.
KILL_AFTER_ACKS = 5
POLL_SECONDS = 0.05
# Seconds a restarted server gets to deliver and settle the work it found in the job store.
DELIVERY_TIMEOUT = 15.0


def message_count(database: Path, transaction_id: str) -> int:
    rows = read_rows(database, "SELECT count(*) FROM message WHERE transaction_id = ?", (transaction_id,))
    return int(rows[0][0])


def wait_until(condition: Callable[[], bool], timeout: float, description: str) -> None:
    """Poll `condition` until it holds, and fail naming `description` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {description}"
        time.sleep(POLL_SECONDS)


def queues_empty(server: ServerProcess) -> bool:
    health = httpx.get(f"{server.base_url}/v1/health-check", timeout=5).json()
    pending = health["info"]["queues"]["pending"]
    return all(count == 0 for count in pending.values())


def settled(server: ServerProcess, transaction_ids: list[str]) -> bool:
    """Return True once every stored trigger of these transactions was processed and its jobs completed."""
    database = server.data_dir / "novulite.db"
    marks = ",".join("?" * len(transaction_ids))
    triggers = read_rows(
        database,
        f"SELECT status FROM trigger_event WHERE transaction_id IN ({marks})",
        tuple(transaction_ids),
    )
    jobs = read_rows(
        database, f"SELECT status FROM job WHERE transaction_id IN ({marks})", tuple(transaction_ids)
    )
    expansions = read_rows(
        database,
        f"SELECT expansion FROM notification WHERE transaction_id IN ({marks})",
        tuple(transaction_ids),
    )
    return (
        all(status == "processed" for (status,) in triggers)
        and all(status == "completed" for (status,) in jobs)
        and all(expansion != "pending" for (expansion,) in expansions)
        and queues_empty(server)
    )


def inbox_transactions(server: ServerProcess, token: str) -> list[str]:
    return [notification["transactionId"] for notification in inbox_messages(server.base_url, token)]


def trigger_body(transaction_id: str) -> dict[str, Any]:
    return {
        "name": WORKFLOW_ID,
        "to": SUBSCRIBER_ID,
        "payload": {"text": transaction_id},
        "transactionId": transaction_id,
    }


def test_kill_after_ack_delivers_once(server: ServerProcess, api: httpx.Client) -> None:
    create_workflow(api, WORKFLOW_ID)
    database = server.data_dir / "novulite.db"
    delivered: list[str] = []

    for round_number in range(KILL_ROUNDS):
        transaction_id = f"kill-round-{round_number}"
        response = httpx.post(
            f"{server.base_url}/v1/events/trigger",
            json=trigger_body(transaction_id),
            headers=AUTHORIZED,
            timeout=10,
        )
        server.kill()
        assert response.status_code == 201, response.text
        assert response.json()["data"]["status"] == "processed"

        server.start()
        token = open_session(server.base_url, SUBSCRIBER_ID)["token"]
        wait_until(
            lambda: transaction_id in inbox_transactions(server, token),  # noqa: B023
            DELIVERY_TIMEOUT,
            f"{transaction_id} in the inbox",
        )
        wait_until(
            lambda: settled(server, [transaction_id]),  # noqa: B023
            DELIVERY_TIMEOUT,
            f"{transaction_id} to settle",
        )
        delivered.append(transaction_id)

        listed = inbox_transactions(server, token)
        assert listed.count(transaction_id) == 1
        assert sorted(listed) == sorted(delivered)
        assert message_count(database, transaction_id) == 1
        statuses = read_rows(database, "SELECT status FROM job WHERE transaction_id = ?", (transaction_id,))
        assert statuses == [("completed",)]


def test_kill_during_burst_delivers_once(server: ServerProcess, api: httpx.Client) -> None:
    create_workflow(api, WORKFLOW_ID)
    database = server.data_dir / "novulite.db"

    for round_number in range(BURST_ROUNDS):
        transaction_ids = [f"burst-{round_number}-{index}" for index in range(BURST_SIZE)]
        bodies = [trigger_body(transaction_id) for transaction_id in transaction_ids]
        acknowledged = asyncio.run(send_and_kill(server, bodies, KILL_AFTER_ACKS))
        assert len(acknowledged) >= KILL_AFTER_ACKS

        server.start()
        token = open_session(server.base_url, SUBSCRIBER_ID)["token"]
        wait_until(
            lambda: acknowledged <= set(inbox_transactions(server, token)),  # noqa: B023
            DELIVERY_TIMEOUT,
            f"{len(acknowledged)} acknowledged triggers in the inbox",
        )
        wait_until(
            lambda: settled(server, transaction_ids),  # noqa: B023
            DELIVERY_TIMEOUT,
            "the burst to settle",
        )

        listed = inbox_transactions(server, token)
        for transaction_id in sorted(acknowledged):
            assert listed.count(transaction_id) == 1, transaction_id
            assert message_count(database, transaction_id) == 1, transaction_id
        for transaction_id in transaction_ids:
            assert listed.count(transaction_id) <= 1, transaction_id
            assert message_count(database, transaction_id) <= 1, transaction_id
