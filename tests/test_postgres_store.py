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
from collections.abc import Iterator
from pathlib import Path

import httpx
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
from tests.helpers import (
    admin_session,
    create_workflow,
    inbox_messages,
    next_frame,
    open_session,
    send_and_kill,
)
from tests.http_stub import HttpStub, Reply
from tests.pg_store import (
    AUTHORIZED,
    Mailbox,
    call_step,
    check_log,
    create_steps,
    finished,
    in_app_deliveries,
    in_app_step,
    insert_jobs,
    job_statuses,
    message_counts,
    rows,
    send_keyed_to_both,
    send_to_both,
    start_on,
    trigger,
    trigger_body,
    unfinished_jobs,
    wait_until,
)
from tests.postgres import PostgresProcess
from tests.servers import ServerProcess, free_port

_databases = itertools.count()


@pytest.fixture
def postgres(postgres_cluster: PostgresProcess) -> PostgresProcess:
    """The run's private PostgreSQL cluster, shared with the other modules of this pytest worker."""
    return postgres_cluster


@pytest.fixture
def database_url(postgres: PostgresProcess) -> str:
    """Return the URL of a new, empty database for this test."""
    return postgres.create_database(f"test_{os.getpid()}_{next(_databases)}")


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
    # The job gauges come from the last metric-active-jobs pass, which the reconciler requests.
    completed = re.compile(r'^novulite_jobs\{status="completed"\} 1(\.0)?$', re.MULTILINE)
    wait_until(
        lambda: completed.search(httpx.get(f"{server.base_url}/metrics", timeout=10).text) is not None,
        "the completed job in /metrics",
    )


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


def test_unreachable_postgres_stops_serve(tmp_path: Path) -> None:
    url = f"postgresql://novulite:start-secret-52@127.0.0.1:{free_port()}/novulite"
    command = [sys.executable, "-m", "novulite", "serve", "--data-dir", str(tmp_path)]
    command += ["--port", str(free_port())]

    result = subprocess.run(
        [*command, "--startup-timeout", "1"],
        env={**os.environ, "NOVULITE_DATABASE_URL": url},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 1
    failures = [line for line in result.stderr.splitlines() if "start-up failed" in line]
    assert len(failures) == 1, result.stderr
    assert "the job store at postgresql://novulite:***@127.0.0.1" in failures[0]
    assert "check that PostgreSQL runs there" in result.stderr
    assert "start-secret-52" not in result.stderr
    assert "Traceback" not in result.stderr


def test_kill_mid_burst_delivers_once(server: ServerProcess, api: httpx.Client, database_url: str) -> None:
    create_workflow(api, "crash")

    for round_number in range(2):
        transaction_ids = [f"burst-{round_number}-{index}" for index in range(30)]
        bodies = [trigger_body("crash", transaction_id) for transaction_id in transaction_ids]
        acknowledged = asyncio.run(send_and_kill(server, bodies, kill_after=8))
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
            # The first transaction still has its job locked while the second claims both.
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


def test_two_servers_share_idempotency_keys(
    two_servers: tuple[ServerProcess, ServerProcess], database_url: str
) -> None:
    with httpx.Client(base_url=two_servers[0].base_url, headers=AUTHORIZED, timeout=10) as api:
        create_workflow(api, "keyed")
    keys = [f"order-{index}" for index in range(15)]

    for key in keys:
        responses = asyncio.run(send_keyed_to_both(two_servers, key))

        statuses = [response.status_code for response in responses]
        assert statuses == [201, 201], [response.text for response in responses]
        transaction_ids = {response.json()["data"]["transactionId"] for response in responses}
        assert len(transaction_ids) == 1, key

    assert rows(database_url, "SELECT count(*) FROM trigger_event") == [(15,)]
    assert rows(database_url, "SELECT count(*) FROM idempotency_record WHERE status_code = 201") == [(15,)]
    wait_until(lambda: unfinished_jobs(database_url) == 0, "the keyed triggers to be delivered")
    assert rows(database_url, "SELECT count(*) FROM message") == [(15,)]


def test_two_servers_release_due_jobs_once(
    tmp_path: Path, server: ServerProcess, api: httpx.Client, database_url: str, stub: HttpStub
) -> None:
    wait = {
        "name": "Wait",
        "stepId": "wait",
        "type": "delay",
        "controlValues": {"amount": 6, "unit": "seconds"},
    }
    create_steps(api, "due", wait, call_step(stub.url("/due")), in_app_step())
    transaction_ids = [f"due-{index}" for index in range(80)]
    bodies = [
        trigger_body("due", transaction_id, f"kim-{index % 5}")
        for index, transaction_id in enumerate(transaction_ids)
    ]
    asyncio.run(send_to_both((server, server), bodies))

    # The delays come due after the second server started, so both servers' timers queue
    # every due job, and the claims decide which server runs it.
    second = start_on(tmp_path / "second", database_url)
    try:
        wait_until(lambda: unfinished_jobs(database_url) == 0, "the delayed jobs to be delivered")
        deliveries = [in_app_deliveries(server), in_app_deliveries(second)]
    finally:
        second.stop()
    check_log(second)

    assert sum(deliveries) == 80
    assert all(count > 0 for count in deliveries), deliveries
    assert rows(database_url, "SELECT count(*) FROM job") == [(240,)]
    assert rows(database_url, "SELECT DISTINCT attempt FROM job") == [(1,)]
    assert message_counts(database_url, transaction_ids) == dict.fromkeys(transaction_ids, 1)
    keys = [request.headers["idempotency-key"] for request in stub.received("/due")]
    assert len(keys) == 80
    assert len(set(keys)) == 80
    resumed = rows(
        database_url,
        "SELECT count(*) FROM execution_detail d JOIN job j ON j.id = d.job_id "
        "WHERE j.step_id = 'wait' AND d.status = 'Success'",
    )
    assert resumed == [(80,)]


def test_cancel_delayed_transaction(api: httpx.Client, database_url: str) -> None:
    wait = {
        "name": "Wait",
        "stepId": "wait",
        "type": "delay",
        "controlValues": {"amount": 1, "unit": "hours"},
    }
    create_steps(api, "cancel", wait, in_app_step())
    transaction_id = trigger(api, "cancel", "lena", payload={"text": "never"})
    wait_until(
        lambda: job_statuses(database_url, transaction_id).get("wait") == "delayed", "the delay to wait"
    )

    response = api.delete(f"/v1/events/trigger/{transaction_id}")

    assert response.status_code == 200, response.text
    assert response.json()["data"] is True
    assert job_statuses(database_url, transaction_id) == {"wait": "canceled", "inbox": "canceled"}
    assert rows(database_url, "SELECT count(*) FROM message") == [(0,)]
