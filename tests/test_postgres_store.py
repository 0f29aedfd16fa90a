"""The workflow engine on the PostgreSQL job store: real `novulite serve` processes with --database-url.

One private PostgreSQL cluster serves the whole test session, and each test gets a
database of its own. Queues stay per-process SQLite files in the data directory,
so two servers on one database share the job store and nothing else.
"""

from __future__ import annotations

import asyncio
import datetime as dt
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
import websockets
from aiosmtpd.controller import Controller

from novulite.clock import SystemClock
from novulite.db.migrate import upgrade
from novulite.db.postgres import RawConnection
from novulite.db.store import Store
from novulite.engine import runner
from novulite.engine.cancel import cancel_transaction
from novulite.engine.failed_jobs import Requeued, discard_failed_jobs, retry_failed_jobs
from novulite.engine.retention import PurgeResult, purge_history
from novulite.engine.socket_events import count_frames
from novulite.idempotency import purge_expired
from tests.conftest import start_server
from tests.helpers import admin_session, create_workflow, inbox_messages, next_frame, open_session
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


def check_log(process: ServerProcess) -> None:
    """Fail on a traceback in the server's log: background threads log their errors instead of raising."""
    log = process.log()
    assert "Traceback" not in log, log


@pytest.fixture
def server(tmp_path: Path, database_url: str) -> Iterator[ServerProcess]:
    process = start_on(tmp_path / "one", database_url)
    yield process
    process.stop()
    check_log(process)


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


async def deliver_over_socket(server: ServerProcess, api: httpx.Client, database_url: str) -> None:
    create_workflow(api, "welcome")
    token = open_session(server.base_url, "alice")["token"]
    async with websockets.connect(f"{server.ws_url}?token={token}") as socket:
        initial = await next_frame(socket, "unread_count_changed")
        assert initial["unreadCount"] == 0

        to = {"subscriberId": "alice", "firstName": "Alice"}
        transaction_id = await asyncio.to_thread(trigger, api, "welcome", to, payload={"text": "hi"})

        received = await next_frame(socket, "notification_received")
        assert received["message"]["content"] == "Hello Alice: hi"
        assert received["message"]["transactionId"] == transaction_id
        counted = await next_frame(socket, "unread_count_changed")
        assert counted["unreadCount"] == 1

        (message,) = inbox_messages(server.base_url, token)
        assert message["body"] == "Hello Alice: hi"
        read = httpx.patch(
            f"{server.base_url}/v1/inbox/notifications/{message['id']}/read",
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
        assert read.status_code == 200, read.text
        assert read.json()["data"]["isRead"] is True
        dropped = await next_frame(socket, "unread_count_changed")
        assert dropped["unreadCount"] == 0

    assert job_statuses(database_url, transaction_id) == {"inbox": "completed"}
    messages = rows(database_url, "SELECT read FROM message WHERE transaction_id = %s", transaction_id)
    assert messages == [(True,)]


def test_inbox_delivery(server: ServerProcess, api: httpx.Client, database_url: str) -> None:
    asyncio.run(deliver_over_socket(server, api, database_url))


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
    command = [sys.executable, "-m", "novulite", "backup", str(tmp_path / "copy.db")]
    with_password = database_url.replace("postgres@", "postgres:backup-secret-81@")

    by_option = subprocess.run(
        [*command, "--database-url", database_url], capture_output=True, text=True, timeout=60, check=False
    )
    by_variable = subprocess.run(
        command,
        env={**os.environ, "NOVULITE_DATABASE_URL": with_password},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    for result in (by_option, by_variable):
        assert result.returncode == 1
        assert "pg_dump" in result.stderr
    assert "backup-secret-81" not in by_variable.stderr
    assert "postgres:***@127.0.0.1" in by_variable.stderr
    assert not (tmp_path / "copy.db").exists()


def trigger_body(workflow_id: str, transaction_id: str, subscriber_id: str = "alice") -> dict[str, Any]:
    return {
        "name": workflow_id,
        "to": subscriber_id,
        "payload": {"text": transaction_id},
        "transactionId": transaction_id,
    }


async def send_and_kill(server: ServerProcess, transaction_ids: list[str], kill_after: int) -> set[str]:
    """Send triggers concurrently, SIGKILL the server once `kill_after` were acknowledged; return those."""
    acknowledged: set[str] = set()
    enough = asyncio.Event()

    async def send(client: httpx.AsyncClient, transaction_id: str) -> None:
        try:
            response = await client.post("/v1/events/trigger", json=trigger_body("crash", transaction_id))
        except httpx.TransportError:
            return
        if response.status_code == 201:
            acknowledged.add(transaction_id)
        if len(acknowledged) >= kill_after:
            enough.set()

    limits = httpx.Limits(max_connections=len(transaction_ids))
    async with httpx.AsyncClient(
        base_url=server.base_url, headers=AUTHORIZED, timeout=10, limits=limits
    ) as client:
        tasks = [asyncio.create_task(send(client, transaction_id)) for transaction_id in transaction_ids]
        finished_sending = asyncio.create_task(asyncio.wait(tasks))
        await asyncio.wait(
            {finished_sending, asyncio.create_task(enough.wait())}, return_when=asyncio.FIRST_COMPLETED
        )
        server.kill()
        await finished_sending
    return set(acknowledged)


def message_counts(database_url: str, transaction_ids: list[str]) -> dict[str, int]:
    placeholders = ", ".join(["%s"] * len(transaction_ids))
    counted = rows(
        database_url,
        f"SELECT transaction_id, count(*) FROM message WHERE transaction_id IN ({placeholders}) "
        "GROUP BY transaction_id",
        *transaction_ids,
    )
    return dict(counted)  # type: ignore[arg-type]


def test_kill_mid_burst_delivers_once(server: ServerProcess, api: httpx.Client, database_url: str) -> None:
    create_workflow(api, "crash")

    for round_number in range(2):
        transaction_ids = [f"burst-{round_number}-{index}" for index in range(30)]
        acknowledged = asyncio.run(send_and_kill(server, transaction_ids, kill_after=8))
        assert len(acknowledged) >= 8

        server.start()
        wait_until(
            lambda: set(message_counts(database_url, transaction_ids)) >= acknowledged,  # noqa: B023
            f"{len(acknowledged)} acknowledged triggers to reach the inbox",
        )
        wait_until(
            lambda: rows(database_url, "SELECT count(*) FROM job WHERE status <> 'completed'") == [(0,)],
            "every job to complete",
        )
        counts = message_counts(database_url, transaction_ids)
        for transaction_id in acknowledged:
            assert counts[transaction_id] == 1, transaction_id
        assert all(count == 1 for count in counts.values()), counts
        attempts = rows(database_url, "SELECT DISTINCT attempt FROM job")
        assert attempts == [(1,)]


@pytest.fixture
def two_servers(tmp_path: Path, database_url: str) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    first = start_on(tmp_path / "first", database_url)
    second = start_on(tmp_path / "second", database_url)
    yield first, second
    first.stop()
    second.stop()
    check_log(first)
    check_log(second)


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


def test_two_servers_run_each_job_once(
    two_servers: tuple[ServerProcess, ServerProcess], database_url: str, stub: HttpStub
) -> None:
    first, _ = two_servers
    with httpx.Client(base_url=first.base_url, headers=AUTHORIZED, timeout=10) as api:
        create_steps(api, "shared", call_step(stub.url("/hook")), in_app_step())
    transaction_ids = [f"shared-{index}" for index in range(60)]
    # Each subscriber appears in several triggers sent to both servers, so both upsert it at once.
    bodies = [
        trigger_body("shared", transaction_id, f"user-{index % 7}")
        for index, transaction_id in enumerate(transaction_ids)
    ]

    asyncio.run(send_to_both(two_servers, bodies))

    wait_until(
        lambda: rows(database_url, "SELECT count(*) FROM job WHERE status = 'completed'") == [(120,)],
        "all 120 jobs to complete",
    )
    assert rows(database_url, "SELECT count(*) FROM job") == [(120,)]
    assert rows(database_url, "SELECT DISTINCT attempt FROM job") == [(1,)]
    assert message_counts(database_url, transaction_ids) == dict.fromkeys(transaction_ids, 1)
    assert rows(database_url, "SELECT count(*) FROM subscriber WHERE subscriber_id LIKE 'user-%%'") == [(7,)]
    keys = [request.headers["idempotency-key"] for request in stub.received("/hook")]
    assert len(keys) == 60
    assert len(set(keys)) == 60


def test_two_servers_share_one_digest(
    two_servers: tuple[ServerProcess, ServerProcess], database_url: str
) -> None:
    first, _ = two_servers
    digest = {
        "name": "Collect",
        "stepId": "collect",
        "type": "digest",
        "controlValues": {"amount": 2, "unit": "seconds"},
    }
    with httpx.Client(base_url=first.base_url, headers=AUTHORIZED, timeout=10) as api:
        create_steps(api, "together", digest, in_app_step(body="{{ steps.collect.eventCount }} events"))
    transaction_ids = [f"together-{index}" for index in range(12)]

    asyncio.run(
        send_to_both(
            two_servers,
            [trigger_body("together", transaction_id, "zoe") for transaction_id in transaction_ids],
        )
    )

    wait_until(lambda: unfinished_jobs(database_url) == 0, "the digest to be sent")
    assert rows(database_url, "SELECT count(*) FROM job") == [(24,)]
    assert rows(database_url, "SELECT status, count(*) FROM digest GROUP BY status") == [("sent", 1)]
    assert rows(database_url, "SELECT content FROM message") == [("12 events",)]


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


def test_concurrent_claims_take_each_job_once(database_url: str) -> None:
    stores = [Store(database_url), Store(database_url)]
    upgrade(stores[0].write_engine)
    job_ids = insert_jobs(database_url, 400)
    claimed: list[list[str]] = [[], []]
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def claim_all(worker: int) -> None:
        # Each worker takes the ids in another order, in overlapping batches, as two processes
        # whose reconcilers queued the same jobs would.
        order = job_ids[::-1] if worker else job_ids
        start.wait()
        try:
            for begin in range(0, len(order), 25):
                batch = order[begin : begin + 40]
                with stores[worker].raw_write() as raw:
                    jobs, _ = runner._claim(raw, batch, dt.datetime.now(dt.UTC), 60.0)
                    ids = [job.id for job in jobs]
                    if ids:
                        marks = ", ".join("?" * len(ids))
                        raw.execute(f"UPDATE job SET status = 'completed' WHERE id IN ({marks})", ids)
                claimed[worker].extend(ids)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=claim_all, args=(worker,)) for worker in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    for store in stores:
        store.dispose()

    assert errors == []
    assert set(claimed[0]).isdisjoint(claimed[1])
    assert sorted(claimed[0] + claimed[1]) == job_ids
    assert rows(database_url, "SELECT DISTINCT status, attempt FROM job") == [("completed", 1)]


def test_claim_skips_job_held_elsewhere(database_url: str) -> None:
    stores = [Store(database_url), Store(database_url)]
    upgrade(stores[0].write_engine)
    held_id, free_id = insert_jobs(database_url, 2)
    now = dt.datetime.now(dt.UTC)
    second_claim: list[list[str]] = []

    def claim_both() -> None:
        with stores[1].raw_write() as raw:
            jobs, _ = runner._claim(raw, [held_id, free_id], now, 60.0)
            second_claim.append([job.id for job in jobs])

    try:
        with stores[0].raw_write() as raw:
            first, _ = runner._claim(raw, [held_id], now, 60.0)
            assert [job.id for job in first] == [held_id]
            # The first transaction still holds its job while the second claims both.
            other = threading.Thread(target=claim_both)
            other.start()
            other.join(timeout=10)
            assert not other.is_alive(), "the second claim waited for the first transaction"
    finally:
        other.join(timeout=10)
        for store in stores:
            store.dispose()

    assert second_claim == [[free_id]]
    assert rows(database_url, "SELECT id, attempt FROM job ORDER BY id") == [(held_id, 1), (free_id, 1)]


def test_raw_connection_keeps_percent_literals(database_url: str) -> None:
    connection = RawConnection(database_url)
    try:
        assert connection.execute("SELECT '100%'").fetchone() == ("100%",)
        assert connection.execute("SELECT '5%' || ?", ["?"]).fetchone() == ("5%?",)
    finally:
        connection.close()


def test_maintenance_statements_run(database_url: str) -> None:
    store = Store(database_url)
    upgrade(store.write_engine)
    clock = SystemClock()
    now = clock.now()
    try:
        assert purge_history(store.raw_write, now, 1) == PurgeResult(0, 0)
        with store.raw_write() as raw:
            assert purge_expired(raw, now) == 0
        frames = count_frames(store.raw_read(), "nobody", "", now)
        assert [frame["event"] for frame in frames] == ["unread_count_changed", "unseen_count_changed"]
        assert retry_failed_jobs(store, clock, ["missing"], "admin") == Requeued([], 0)
        assert discard_failed_jobs(store, clock, ["missing"], "admin") == 0
        assert not cancel_transaction(store, clock, "environment", "transaction").anything
    finally:
        store.dispose()


def test_delivery_after_postgres_restart(
    server: ServerProcess, api: httpx.Client, database_url: str, postgres: PostgresProcess
) -> None:
    create_workflow(api, "restart")
    before = trigger(api, "restart", "ivan", payload={"text": "before"})
    assert finished(database_url, before, 1) == {"inbox": "completed"}

    postgres.stop()
    postgres.start()

    after = trigger(api, "restart", "ivan", payload={"text": "after"})
    assert finished(database_url, after, 1) == {"inbox": "completed"}
    token = open_session(server.base_url, "ivan")["token"]
    bodies = [message["body"] for message in inbox_messages(server.base_url, token)]
    assert bodies == ["Hello : after", "Hello : before"]
