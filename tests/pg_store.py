"""Helpers for the PostgreSQL job store tests: servers on a database, queries and trigger bursts."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psycopg

from tests.conftest import start_server
from tests.servers import API_KEY, ServerProcess

AUTHORIZED = {"Authorization": f"ApiKey {API_KEY}"}
SETTLE_SECONDS = 20.0
# Loopback only: the SMTP server and the HTTP stub that the steps call run in this test process.
OUTBOUND_ENV = {"NOVULITE_OUTBOUND_ALLOW": "127.0.0.1"}
FINAL_STATUSES = ("completed", "failed", "skipped", "canceled", "merged")


def start_on(root: Path, database_url: str, env: dict[str, str] | None = None) -> ServerProcess:
    root.mkdir(parents=True, exist_ok=True)
    return start_server(root, ["--database-url", database_url], {**OUTBOUND_ENV, **(env or {})})


def check_log(process: ServerProcess) -> None:
    """Fail on a traceback in the server's log: background threads log their errors instead of raising."""
    log = process.log()
    assert "Traceback" not in log, log


def rows(database_url: str, sql: str, *parameters: Any) -> list[tuple[Any, ...]]:
    """Run one query on the test's database, with psycopg's %s placeholders."""
    with psycopg.connect(database_url, autocommit=True) as connection:
        return connection.execute(sql, parameters).fetchall()


def wait_until(condition: Callable[[], bool], description: str, timeout: float = SETTLE_SECONDS) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {description}"
        time.sleep(0.05)


def job_statuses(database_url: str, transaction_id: str) -> dict[str, str]:
    found = rows(database_url, "SELECT step_id, status FROM job WHERE transaction_id = %s", transaction_id)
    return dict(found)  # type: ignore[arg-type]


def finished(database_url: str, transaction_id: str, count: int) -> dict[str, str]:
    """Wait until the transaction has `count` jobs, all in a final status; return them by stepId."""
    statuses: dict[str, str] = {}

    def done() -> bool:
        statuses.update(job_statuses(database_url, transaction_id))
        return len(statuses) == count and all(status in FINAL_STATUSES for status in statuses.values())

    wait_until(done, f"the {count} jobs of {transaction_id} to finish")
    return job_statuses(database_url, transaction_id)


def trigger(api: httpx.Client, workflow_id: str, to: Any, **fields: Any) -> str:
    response = api.post("/v1/events/trigger", json={"name": workflow_id, "to": to, **fields})
    assert response.status_code == 201, response.text
    return str(response.json()["data"]["transactionId"])


def create_steps(api: httpx.Client, workflow_id: str, *steps: dict[str, Any]) -> None:
    body = {"name": workflow_id, "workflowId": workflow_id, "steps": list(steps)}
    response = api.post("/v2/workflows", json=body)
    assert response.status_code == 201, response.text


def in_app_step(step_id: str = "inbox", body: str = "Hello {{ payload.text }}") -> dict[str, Any]:
    return {"name": step_id, "stepId": step_id, "type": "in_app", "controlValues": {"body": body}}


class Mailbox:
    """An aiosmtpd handler that keeps the recipients of every accepted message."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.recipients: list[str] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            self.recipients.extend(envelope.rcpt_tos)
        return "250 2.0.0 Message accepted"


def call_step(url: str, **controls: Any) -> dict[str, Any]:
    controls = {"method": "PUT", "url": url, **controls}
    return {"name": "Call", "stepId": "call", "type": "http_request", "controlValues": controls}


def trigger_body(workflow_id: str, transaction_id: str, subscriber_id: str = "alice") -> dict[str, Any]:
    return {
        "name": workflow_id,
        "to": subscriber_id,
        "payload": {"text": transaction_id},
        "transactionId": transaction_id,
    }


def message_counts(database_url: str, transaction_ids: list[str]) -> dict[str, int]:
    placeholders = ", ".join(["%s"] * len(transaction_ids))
    counted = rows(
        database_url,
        f"SELECT transaction_id, count(*) FROM message WHERE transaction_id IN ({placeholders}) "
        "GROUP BY transaction_id",
        *transaction_ids,
    )
    return dict(counted)  # type: ignore[arg-type]


async def send_to_both(servers: tuple[ServerProcess, ServerProcess], bodies: list[dict[str, Any]]) -> None:
    """Send the bodies at once, alternating between the two servers."""
    clients = [
        httpx.AsyncClient(base_url=server.base_url, headers=AUTHORIZED, timeout=20) for server in servers
    ]
    try:
        responses = await asyncio.gather(
            *(clients[index % 2].post("/v1/events/trigger", json=body) for index, body in enumerate(bodies))
        )
    finally:
        for client in clients:
            await client.aclose()
    for response in responses:
        assert response.status_code == 201, response.text


def unfinished_jobs(database_url: str) -> int:
    ((count,),) = rows(database_url, "SELECT count(*) FROM job WHERE status NOT IN ('completed', 'merged')")
    return int(count)


def insert_jobs(database_url: str, count: int) -> list[str]:
    """Insert `count` queued jobs without the rows they refer to, after dropping the job table's foreign keys.

    Only the claims are under test, and the database belongs to this test alone.
    """
    ids = [f"claim{index:019d}" for index in range(count)]
    with psycopg.connect(database_url, autocommit=True) as connection:
        foreign_keys = connection.execute(
            "SELECT conname FROM pg_constraint WHERE conrelid = 'job'::regclass AND contype = 'f'"
        ).fetchall()
        for (name,) in foreign_keys:
            connection.execute(f'ALTER TABLE job DROP CONSTRAINT "{name}"')
        with connection.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO job (id, environment_id, notification_id, subscriber_pk, transaction_id, "
                "step_id, type, position, step, status, attempt, max_attempts, run_at, "
                "created_at, updated_at) "
                "VALUES (%s, 'e', 'n', 's', 't', 'inbox', 'in_app', 0, '{}', 'queued', 0, 3, "
                "now(), now(), now())",
                [(job_id,) for job_id in ids],
            )
    return ids


async def send_keyed_to_both(servers: tuple[ServerProcess, ServerProcess], key: str) -> list[httpx.Response]:
    """Send one trigger with Idempotency-Key `key` to both servers at once; return both responses."""
    body = {"name": "keyed", "to": "judy", "payload": {"key": key}}
    headers = {**AUTHORIZED, "Idempotency-Key": key}
    async with (
        httpx.AsyncClient(base_url=servers[0].base_url, headers=headers, timeout=20) as first,
        httpx.AsyncClient(base_url=servers[1].base_url, headers=headers, timeout=20) as second,
    ):
        return list(
            await asyncio.gather(
                first.post("/v1/events/trigger", json=body), second.post("/v1/events/trigger", json=body)
            )
        )


def in_app_deliveries(server: ServerProcess) -> float:
    """Return the in-app deliveries this server's workers made, from its metrics."""
    metrics = httpx.get(f"{server.base_url}/metrics", timeout=10).text
    found = re.search(
        r'^novulite_deliveries_total\{channel="in_app",provider="[^"]*"\} (\S+)$', metrics, re.M
    )
    return float(found.group(1)) if found else 0.0
