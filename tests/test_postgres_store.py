"""The workflow engine on the PostgreSQL job store: real `novulite serve` processes with --database-url.

One private PostgreSQL cluster serves the whole test session, and each test gets a
database of its own. Queues stay per-process SQLite files in the data directory,
so two servers on one database share the job store and nothing else.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from aiosmtpd.controller import Controller

from tests.conftest import start_server
from tests.helpers import admin_session, create_workflow, inbox_messages, open_session
from tests.http_stub import HttpStub, Reply
from tests.postgres import PostgresProcess
from tests.servers import API_KEY, ServerProcess, free_port

AUTHORIZED = {"Authorization": f"ApiKey {API_KEY}"}
SETTLE_SECONDS = 20.0
# Loopback only: the SMTP server and the HTTP stub that the steps call run in this test process.
OUTBOUND_ENV = {"NOVULITE_OUTBOUND_ALLOW": "127.0.0.1"}
FINAL_STATUSES = ("completed", "failed", "skipped", "canceled", "merged")

_databases = itertools.count()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresProcess]:
    cluster = PostgresProcess().start()
    yield cluster
    cluster.remove()


@pytest.fixture
def database_url(postgres: PostgresProcess) -> str:
    """Return the URL of a new, empty database for this test."""
    return postgres.create_database(f"test_{os.getpid()}_{next(_databases)}")


def start_on(root: Path, database_url: str, env: dict[str, str] | None = None) -> ServerProcess:
    root.mkdir(parents=True, exist_ok=True)
    return start_server(root, ["--database-url", database_url], {**OUTBOUND_ENV, **(env or {})})


@pytest.fixture
def server(tmp_path: Path, database_url: str) -> Iterator[ServerProcess]:
    process = start_on(tmp_path / "one", database_url)
    yield process
    process.stop()


@pytest.fixture
def api(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, headers=AUTHORIZED, timeout=10) as client:
        yield client


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


def test_inbox_delivery(server: ServerProcess, api: httpx.Client, database_url: str) -> None:
    create_workflow(api, "welcome")

    transaction_id = trigger(
        api, "welcome", {"subscriberId": "alice", "firstName": "Alice"}, payload={"text": "hi"}
    )

    assert finished(database_url, transaction_id, 1) == {"inbox": "completed"}
    token = open_session(server.base_url, "alice")["token"]
    (message,) = inbox_messages(server.base_url, token)
    assert message["body"] == "Hello Alice: hi"
    assert message["transactionId"] == transaction_id
    read = httpx.patch(
        f"{server.base_url}/v1/inbox/notifications/{message['id']}/read",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert read.status_code == 200, read.text
    assert read.json()["data"]["isRead"] is True
    assert rows(database_url, "SELECT count(*) FROM message WHERE transaction_id = %s", transaction_id) == [
        (1,)
    ]


def test_health_and_metrics(server: ServerProcess, api: httpx.Client, database_url: str) -> None:
    create_workflow(api, "counted")
    transaction_id = trigger(api, "counted", "bob", payload={"text": "x"})
    finished(database_url, transaction_id, 1)

    health = httpx.get(f"{server.base_url}/v1/health-check", timeout=10)
    assert health.status_code == 200, health.text
    assert health.json()["info"]["db"] == {"status": "up"}
    metrics = httpx.get(f"{server.base_url}/metrics", timeout=10).text
    assert re.search(r'^novulite_jobs\{status="completed"\} 1(\.0)?$', metrics, re.MULTILINE), metrics


class Mailbox:
    """An aiosmtpd handler that keeps the recipients of every accepted message."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.recipients: list[str] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            self.recipients.extend(envelope.rcpt_tos)
        return "250 2.0.0 Message accepted"


@pytest.fixture
def mailbox() -> Iterator[tuple[Mailbox, int]]:
    handler = Mailbox()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    yield handler, port
    controller.stop()


def test_email_delivery(api: httpx.Client, database_url: str, mailbox: tuple[Mailbox, int]) -> None:
    handler, port = mailbox
    credentials = {"host": "127.0.0.1", "port": port, "secure": False, "from": "alerts@example.com"}
    response = api.post(
        "/v1/integrations",
        json={"providerId": "smtp", "channel": "email", "credentials": credentials, "active": True},
    )
    assert response.status_code == 201, response.text
    email = {"subject": "Order {{ payload.text }}", "body": "Shipped {{ payload.text }}"}
    create_steps(api, "mail", {"name": "Mail", "stepId": "mail", "type": "email", "controlValues": email})

    transaction_id = trigger(
        api, "mail", {"subscriberId": "carol", "email": "carol@example.com"}, payload={"text": "7"}
    )

    assert finished(database_url, transaction_id, 1) == {"mail": "completed"}
    assert handler.recipients == ["carol@example.com"]
    (status,) = rows(database_url, "SELECT status FROM message WHERE transaction_id = %s", transaction_id)
    assert status == ("sent",)


def test_delay_then_inbox(api: httpx.Client, database_url: str) -> None:
    wait = {
        "name": "Wait",
        "stepId": "wait",
        "type": "delay",
        "controlValues": {"amount": 1, "unit": "seconds"},
    }
    create_steps(api, "later", wait, in_app_step())
    started = time.monotonic()

    transaction_id = trigger(api, "later", "dave", payload={"text": "late"})

    wait_until(
        lambda: job_statuses(database_url, transaction_id).get("wait") == "delayed", "the delay to wait"
    )
    statuses = finished(database_url, transaction_id, 2)
    assert statuses == {"wait": "completed", "inbox": "completed"}
    assert time.monotonic() - started >= 1.0
    (delayed,) = rows(
        database_url,
        "SELECT j.run_at, m.created_at FROM job j JOIN message m ON m.transaction_id = j.transaction_id "
        "WHERE j.transaction_id = %s AND j.step_id = 'wait'",
        transaction_id,
    )
    run_at, delivered_at = delayed
    assert delivered_at >= run_at


def test_digest_collects_events(server: ServerProcess, api: httpx.Client, database_url: str) -> None:
    digest = {
        "name": "Collect",
        "stepId": "collect",
        "type": "digest",
        "controlValues": {"amount": 2, "unit": "seconds"},
    }
    create_steps(api, "digest", digest, in_app_step(body="{{ steps.collect.eventCount }} events"))

    async def send_together() -> list[str]:
        async with httpx.AsyncClient(base_url=server.base_url, headers=AUTHORIZED, timeout=10) as client:
            bodies = [{"name": "digest", "to": "erin", "payload": {"n": n}} for n in range(5)]
            responses = await asyncio.gather(
                *(client.post("/v1/events/trigger", json=body) for body in bodies)
            )
        return [response.json()["data"]["transactionId"] for response in responses]

    transaction_ids = asyncio.run(send_together())

    for transaction_id in transaction_ids:
        finished(database_url, transaction_id, 2)
    placeholders = ", ".join(["%s"] * len(transaction_ids))
    collected = rows(
        database_url,
        f"SELECT status, count(*) FROM job WHERE step_id = 'collect' AND transaction_id IN ({placeholders}) "
        "GROUP BY status ORDER BY status",
        *transaction_ids,
    )
    assert collected == [("completed", 1), ("merged", 4)]
    contents = rows(
        database_url,
        f"SELECT content FROM message WHERE transaction_id IN ({placeholders})",
        *transaction_ids,
    )
    assert contents == [("5 events",)]


@pytest.fixture
def stub() -> Iterator[HttpStub]:
    server = HttpStub().start()
    yield server
    server.stop()


def call_step(url: str, **controls: Any) -> dict[str, Any]:
    controls = {"method": "PUT", "url": url, **controls}
    return {"name": "Call", "stepId": "call", "type": "http_request", "controlValues": controls}


def test_transient_failure_retried(api: httpx.Client, database_url: str, stub: HttpStub) -> None:
    stub.route("/flaky", Reply(503, {"error": "busy"}), Reply(200, {"ok": True}))
    create_steps(api, "flaky", call_step(stub.url("/flaky")), in_app_step())

    transaction_id = trigger(api, "flaky", "frank", payload={"text": "x"})

    assert finished(database_url, transaction_id, 2) == {"call": "completed", "inbox": "completed"}
    assert len(stub.received("/flaky")) == 2
    (attempt,) = rows(
        database_url, "SELECT attempt FROM job WHERE transaction_id = %s AND step_id = 'call'", transaction_id
    )
    assert attempt == (2,)


def test_failed_job_retried_from_admin(
    server: ServerProcess, api: httpx.Client, database_url: str, stub: HttpStub
) -> None:
    stub.route("/down", Reply(503), Reply(200, {"ok": True}))
    create_steps(api, "down", call_step(stub.url("/down"), maxAttempts=1), in_app_step())

    transaction_id = trigger(api, "down", "grace", payload={"text": "back"})

    assert finished(database_url, transaction_id, 2) == {"call": "failed", "inbox": "canceled"}
    ((job_id,),) = rows(
        database_url, "SELECT id FROM job WHERE transaction_id = %s AND step_id = 'call'", transaction_id
    )
    with admin_session(server.base_url) as admin:
        page = admin.get("/admin/failed-jobs").text
        token = re.search(r'name="_csrf_token" value="([^"]+)"', page)
        assert token, "the failed-jobs page has no CSRF token"
        form = {"_csrf_token": token.group(1), "only": job_id}
        response = admin.post("/admin/failed-jobs/retry", data=form)
    assert response.headers["location"] == "/admin/failed-jobs?retried=1&refused=0"
    wait_until(
        lambda: job_statuses(database_url, transaction_id) == {"call": "completed", "inbox": "completed"},
        "the retried job and the step after it to complete",
    )
    assert len(stub.received("/down")) == 2


def test_backup_points_to_pg_dump(tmp_path: Path, database_url: str) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "novulite",
            "backup",
            str(tmp_path / "copy.db"),
            "--database-url",
            database_url,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "pg_dump" in result.stderr
    assert not (tmp_path / "copy.db").exists()
