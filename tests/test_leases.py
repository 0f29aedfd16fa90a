"""Leases of jobs whose step runs outside a transaction: renewal, takeover and fencing.

The first tests drive the runner in this process against a real SQLite file and
a loopback stub, with an injected clock, so that a lease can expire without
waiting for it. The last one kills a real server in the middle of a request.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from novulite.app import build_services
from novulite.bootstrap import prepare_database
from novulite.config import Settings
from novulite.db.models import Environment, Step, TriggerEvent, Workflow
from novulite.db.store import Store
from novulite.engine.context import WorkerContext
from novulite.engine.expansion import expand_notifications
from novulite.engine.leases import LeaseKeeper
from novulite.engine.reconciler import reconcile
from novulite.engine.runner import run_jobs
from novulite.engine.triggers import handle_triggers
from novulite.ids import new_id
from novulite.queues import EXPAND_NOTIFICATIONS, RUN_JOBS
from tests.helpers import admin_session, poll, read_rows
from tests.http_stub import HttpStub, Reply
from tests.servers import API_KEY, ServerProcess, free_port, server_command

LEASE_SECONDS = 10.0
START = dt.datetime(2030, 1, 1, 12, 0, tzinfo=dt.UTC)


class FakeClock:
    def __init__(self) -> None:
        self.instant = START

    def now(self) -> dt.datetime:
        return self.instant

    def advance(self, seconds: float) -> None:
        self.instant += dt.timedelta(seconds=seconds)


@dataclasses.dataclass
class Engine:
    """The worker side of a server in this process, with its queues replaced by a list."""

    ctx: WorkerContext
    leases: LeaseKeeper
    clock: FakeClock
    database: Path
    enqueued: list[tuple[str, list[str]]]

    def enqueued_ids(self, task_name: str) -> list[str]:
        return [job_id for name, ids in self.enqueued if name == task_name for job_id in ids]

    def job(self, job_id: str) -> dict[str, Any]:
        rows = read_rows(
            self.database,
            "SELECT status, attempt, lease_until, json_extract(output, '$.body.reply'), "
            "json_extract(error, '$.message') FROM job WHERE id = ?",
            (job_id,),
        )
        status, attempt, lease_until, reply, error = rows[0]
        return {
            "status": status,
            "attempt": attempt,
            "lease_until": lease_until,
            "reply": reply,
            "error": error,
        }

    def details(self, job_id: str) -> list[str]:
        rows = read_rows(
            self.database,
            "SELECT detail FROM execution_detail WHERE job_id = ? ORDER BY created_at, rowid",
            (job_id,),
        )
        return [text for (text,) in rows]

    def chain(self, url: str) -> list[str]:
        """Trigger a workflow of an http_request step to `url` and an in-app step; return the job ids."""
        with self.ctx.store.write() as session:
            environment_id = session.scalar(select(Environment.id))
            assert environment_id is not None
            workflow = Workflow(
                id=new_id(), environment_id=environment_id, workflow_id=new_id(), name="lease"
            )
            workflow.created_at = workflow.updated_at = self.clock.now()
            session.add(workflow)
            session.flush()
            controls = [
                (
                    "call",
                    "http_request",
                    {"method": "POST", "url": url, "body": {"to": "{{ subscriber.subscriberId }}"}},
                ),
                ("inbox", "in_app", {"body": "Reply {{ steps.call.body.reply }}"}),
            ]
            for position, (step_id, step_type, values) in enumerate(controls):
                session.add(
                    Step(
                        id=new_id(),
                        workflow_pk=workflow.id,
                        position=position,
                        step_id=step_id,
                        name=step_id,
                        type=step_type,
                        control_values=values,
                    )
                )
            trigger = TriggerEvent(
                id=new_id(),
                environment_id=environment_id,
                transaction_id=new_id(),
                workflow_pk=workflow.id,
                recipients=[{"subscriberId": "alice"}],
                payload={},
                overrides={},
                status="received",
                attempts=0,
                created_at=self.clock.now(),
            )
            session.add(trigger)
        handle_triggers(self.ctx, [trigger.id])
        expand_notifications(self.ctx, self.enqueued_ids(EXPAND_NOTIFICATIONS))
        rows = read_rows(
            self.database,
            "SELECT id FROM job WHERE transaction_id = ? ORDER BY position",
            (trigger.transaction_id,),
        )
        self.enqueued.clear()
        return [job_id for (job_id,) in rows]


@pytest.fixture
def stub() -> Iterator[HttpStub]:
    server = HttpStub().start()
    yield server
    server.stop()


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    clock = FakeClock()
    settings = Settings(data_dir=tmp_path, job_lease_seconds=LEASE_SECONDS, outbound_allow=("127.0.0.1",))
    store = Store(settings.database_path)
    prepare_database(store.write_engine, settings, clock)
    store.dispose()
    services = build_services(settings, clock)
    ctx = services.worker
    enqueued: list[tuple[str, list[str]]] = []
    ctx.queues.enqueue = lambda name, ids: enqueued.append((name, list(ids)))  # type: ignore[method-assign]
    ctx.queues.schedule = lambda name, delay, ids: enqueued.append((name, list(ids)))  # type: ignore[method-assign]
    assert ctx.leases is not None
    # Calls run inline, in the thread that called run_jobs, so each test decides which worker runs when.
    ctx.calls = None
    yield Engine(ctx, ctx.leases, clock, settings.database_path, enqueued)
    if ctx.limiter is not None:
        ctx.limiter.close()
    services.store.dispose()


def start_worker(engine: Engine, job_id: str) -> threading.Thread:
    """Run the job in a thread of its own, as a second worker would."""
    worker = threading.Thread(target=run_jobs, args=(engine.ctx, [job_id]))
    worker.start()
    return worker


def test_expired_lease_taken_over_once(engine: Engine, stub: HttpStub) -> None:
    first_release, second_release = threading.Event(), threading.Event()
    stub.route(
        "/hook",
        Reply(body={"reply": "first"}, hold=first_release),
        Reply(body={"reply": "second"}, hold=second_release),
    )
    call_id, inbox_id = engine.chain(stub.url("/hook"))
    first_worker = start_worker(engine, call_id)
    stub.wait_for("/hook", 1)
    assert engine.leases.held() == [(call_id, 1)]

    engine.clock.advance(LEASE_SECONDS - 1)
    reconcile(engine.ctx, dt.timedelta(0))
    assert call_id not in engine.enqueued_ids(RUN_JOBS)
    engine.clock.advance(2)
    reconcile(engine.ctx, dt.timedelta(0))
    assert call_id in engine.enqueued_ids(RUN_JOBS)

    second_worker = start_worker(engine, call_id)
    stub.wait_for("/hook", 2)
    run_jobs(engine.ctx, [call_id])
    assert engine.job(call_id)["attempt"] == 2
    assert len(stub.received("/hook")) == 2
    assert engine.leases.renew() == [(call_id, 1)]

    # The stale worker finishes first, while the job runs under attempt 2: its outcome is discarded.
    first_release.set()
    first_worker.join(timeout=15)
    assert not first_worker.is_alive()
    still_running = engine.job(call_id)
    assert still_running["status"] == "running"
    assert still_running["attempt"] == 2
    assert still_running["reply"] is None
    second_release.set()
    second_worker.join(timeout=15)
    job = engine.job(call_id)
    assert job["status"] == "completed"
    assert job["attempt"] == 2
    assert job["reply"] == "second"
    assert job["lease_until"] is None
    details = engine.details(call_id)
    assert details.count("Worker lost; retried as attempt 2") == 1
    assert len([text for text in details if text.startswith("Request completed")]) == 1
    keys = [request.headers["idempotency-key"] for request in stub.received("/hook")]
    assert keys == [call_id, call_id]
    assert engine.enqueued_ids(RUN_JOBS).count(inbox_id) == 1


def test_renewed_lease_not_taken_over(engine: Engine, stub: HttpStub) -> None:
    release = threading.Event()
    stub.route("/hook", Reply(body={"reply": "only"}, hold=release))
    call_id, inbox_id = engine.chain(stub.url("/hook"))
    worker = start_worker(engine, call_id)
    stub.wait_for("/hook", 1)

    engine.clock.advance(LEASE_SECONDS * 2 / 3)
    assert engine.leases.renew() == []
    engine.clock.advance(LEASE_SECONDS * 2 / 3)
    run_jobs(engine.ctx, [call_id])
    reconcile(engine.ctx, dt.timedelta(0))
    running = engine.job(call_id)
    assert running["status"] == "running"
    assert running["attempt"] == 1
    assert call_id not in engine.enqueued_ids(RUN_JOBS)

    release.set()
    worker.join(timeout=15)
    job = engine.job(call_id)
    assert job["status"] == "completed"
    assert job["attempt"] == 1
    assert "Worker lost; retried as attempt 2" not in engine.details(call_id)
    assert len(stub.received("/hook")) == 1
    assert inbox_id in engine.enqueued_ids(RUN_JOBS)


def test_lost_last_attempt_fails_job(engine: Engine, stub: HttpStub) -> None:
    call_id, inbox_id = engine.chain(stub.url("/hook"))
    expired = (START - dt.timedelta(seconds=1)).replace(tzinfo=None).isoformat(" ")
    with engine.ctx.store.raw_write() as raw:
        raw.execute(
            "UPDATE job SET status = 'running', attempt = max_attempts, lease_until = ? WHERE id = ?",
            [expired, call_id],
        )

    run_jobs(engine.ctx, [call_id])

    job = engine.job(call_id)
    assert job["status"] == "failed"
    assert "was lost, and no attempts are left" in job["error"]
    assert engine.details(call_id)[-3:] == [
        "Worker lost during attempt 3; no attempts left",
        "Step failed",
        "Workflow stopped because this step failed; canceled 1 later step",
    ]
    assert engine.job(inbox_id)["status"] == "canceled"
    assert stub.connections == 0


def test_lease_renewal_stops_at_time_limit(engine: Engine, stub: HttpStub) -> None:
    release = threading.Event()
    stub.route("/hook", Reply(hold=release))
    call_id, _ = engine.chain(stub.url("/hook"))
    worker = start_worker(engine, call_id)
    stub.wait_for("/hook", 1)
    held_until = engine.job(call_id)["lease_until"]

    # The step's default timeout is 10 s, and the lookup allowance 30 s more.
    engine.clock.advance(41)
    assert engine.leases.renew() == [(call_id, 1)]
    assert engine.job(call_id)["lease_until"] == held_until
    assert engine.leases.held() == []

    release.set()
    worker.join(timeout=15)
    assert engine.job(call_id)["status"] == "completed"


# A kill -9 during a request, then a fresh server on the same data directory.

SLOW_REPLY_SECONDS = 5.0


def lease_server(root: Path, port: int) -> ServerProcess:
    return ServerProcess(
        data_dir=root / "data",
        port=port,
        command=server_command(),
        log_path=root / "server.log",
        env={"NOVULITE_OUTBOUND_ALLOW": "127.0.0.1"},
        args=["--job-lease-seconds", str(LEASE_SECONDS)],
    )


def test_killed_worker_job_retried(tmp_path: Path, stub: HttpStub) -> None:
    stub.route("/slow", Reply(body={"reply": "late"}, delay=SLOW_REPLY_SECONDS))
    server = lease_server(tmp_path, free_port()).start()
    headers = {"Authorization": f"ApiKey {API_KEY}"}
    try:
        with httpx.Client(base_url=server.base_url, headers=headers, timeout=10) as api:
            workflow = {
                "name": "Slow hook",
                "workflowId": "slow-hook",
                "steps": [
                    {
                        "name": "Call",
                        "stepId": "call",
                        "type": "http_request",
                        "controlValues": {"method": "POST", "url": stub.url("/slow"), "body": {"n": 1}},
                    },
                    {"name": "Inbox", "stepId": "inbox", "type": "in_app", "controlValues": {"body": "done"}},
                ],
            }
            assert api.post("/v2/workflows", json=workflow).status_code == 201
            response = api.post("/v1/events/trigger", json={"name": "slow-hook", "to": "alice"})
            assert response.status_code == 201, response.text
            transaction_id = response.json()["data"]["transactionId"]
        stub.wait_for("/slow", 1)
        server.kill()

        database = server.data_dir / "novulite.db"
        (status, attempt), *_ = read_rows(
            database,
            "SELECT status, attempt FROM job WHERE transaction_id = ? AND step_id = 'call'",
            (transaction_id,),
        )
        assert (status, attempt) == ("running", 1)

        server.start()
        statuses = poll(
            lambda: read_rows(
                database,
                "SELECT step_id, status, attempt FROM job WHERE transaction_id = ? ORDER BY position",
                (transaction_id,),
            ),
            lambda rows: all(row[1] in ("completed", "failed") for row in rows),
            "the restarted server to finish the job",
            timeout=30,
        )
        assert statuses == [("call", "completed", 2), ("inbox", "completed", 1)]
        requests = stub.received("/slow")
        assert len(requests) == 2
        assert requests[0].headers["idempotency-key"] == requests[1].headers["idempotency-key"]

        with httpx.Client(base_url=server.base_url, headers=headers, timeout=10) as api:
            feed = api.get("/v1/notifications", params={"transactionId": transaction_id}).json()["data"]
            activity = api.get(f"/v1/notifications/{feed[0]['_id']}").json()["data"]
        call_job = next(job for job in activity["jobs"] if job["step"]["stepId"] == "call")
        assert call_job["status"] == "completed"
        texts = [detail["detail"] for detail in call_job["executionDetails"]]
        assert "Worker lost; retried as attempt 2" in texts
        assert texts[-1].startswith("Request completed: POST")

        with admin_session(server.base_url) as admin:
            dashboard = admin.get("/admin/")
        assert dashboard.status_code == 200
        assert "Worker lost; retried as attempt 2" in dashboard.text
        assert "slow-hook" in dashboard.text
    finally:
        server.stop()
