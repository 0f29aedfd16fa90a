"""Canceling a delayed transaction: nothing is delivered, all jobs end canceled, stale entries do nothing."""

from __future__ import annotations

import datetime as dt
import time
from types import SimpleNamespace

import httpx
import pytest

from novulite.engine.tasks import register_tasks
from novulite.queues import RUN_JOBS, Queues
from tests.delays import INBOX, WAIT, cancel, db_time, delay_jobs, delay_workflow, wait_delayed
from tests.helpers import create_workflow, poll
from tests.pipeline import finished_jobs, messages_of, query
from tests.pipeline import trigger as trigger_plain
from tests.servers import ServerProcess

WORKFLOW_ID = "delayed-reminder"
EMAIL = {"name": "Email", "stepId": "email", "type": "email", "controlValues": {"subject": "Reminder"}}
CANCEL_AT_SECONDS = 1.0
# How long past the due time the test waits for a delivery that must not happen.
AFTER_DUE_SECONDS = 1.5


@pytest.fixture
def workflow(api: httpx.Client) -> str:
    delay_workflow(api, WORKFLOW_ID, {"type": "regular", "amount": 3, "unit": "seconds"}, "Reminder", EMAIL)
    return WORKFLOW_ID


def trigger(api: httpx.Client, transaction_id: str, to: object) -> None:
    response = api.post(
        "/v1/events/trigger", json={"name": WORKFLOW_ID, "to": to, "transactionId": transaction_id}
    )
    assert response.status_code == 201, response.text
    assert response.json()["data"]["status"] == "processed", response.text


def job_rows(server: ServerProcess, transaction_id: str) -> list[tuple[str, str, str, str]]:
    return [
        (row["id"], row["step_id"], row["status"], row["updated_at"])
        for row in query(
            server,
            "SELECT id, step_id, status, updated_at FROM job WHERE transaction_id = ? ORDER BY id",
            (transaction_id,),
        )
    ]


def test_cancel_stops_delayed_delivery(server: ServerProcess, api: httpx.Client, workflow: str) -> None:
    started = time.monotonic()
    trigger(api, "tx-cancel-1", ["alice", "bob"])
    delayed = wait_delayed(server, "tx-cancel-1", count=2)
    time.sleep(max(0.0, CANCEL_AT_SECONDS - (time.monotonic() - started)))

    assert cancel(api, "tx-cancel-1") == {"data": True}

    due = max(db_time(row["run_at"]) for row in delayed)
    assert dt.datetime.now(dt.UTC) < due, "the cancel came after the due time; the machine is too slow"
    # No event marks a delivery that does not happen, so wait until well past the due time.
    time.sleep((due - dt.datetime.now(dt.UTC)).total_seconds() + AFTER_DUE_SECONDS)
    jobs = job_rows(server, "tx-cancel-1")
    assert len(jobs) == 6
    assert {status for _, _, status, _ in jobs} == {"canceled"}
    assert messages_of(server, "tx-cancel-1") == []
    details = query(
        server,
        "SELECT d.detail FROM execution_detail d JOIN job j ON j.id = d.job_id "
        "WHERE j.transaction_id = ? AND j.step_id = ?",
        ("tx-cancel-1", WAIT),
    )
    assert sorted(row["detail"] for row in details).count("Step canceled by request before it ran") == 2

    assert cancel(api, "tx-cancel-1") == {"data": False}
    assert cancel(api, "tx-unknown") == {"data": False}


def test_stale_queue_entry_after_cancel_does_nothing(
    server: ServerProcess, api: httpx.Client, workflow: str
) -> None:
    trigger(api, "tx-cancel-stale", "alice")
    (delayed,) = wait_delayed(server, "tx-cancel-stale")
    assert cancel(api, "tx-cancel-stale") == {"data": True}
    before = job_rows(server, "tx-cancel-stale")
    # The timer queues a job once it is due, so the stale entry must arrive after the due time.
    time.sleep(max(0.0, (db_time(delayed["run_at"]) - dt.datetime.now(dt.UTC)).total_seconds()) + 0.1)

    # A queue entry for the canceled job, as the due-job timer writes one: consumed after the cancel.
    job_ids = [row["id"] for row in delay_jobs(server, "tx-cancel-stale")]
    producer = Queues(server.data_dir / "queues")
    # Registered only to name the tasks as the server does; this process never runs them.
    register_tasks(SimpleNamespace(queues=producer, fanout=None))  # type: ignore[arg-type]
    producer.enqueue(RUN_JOBS, job_ids)
    producer.stop(0)
    # One consumer thread takes the standard queue in order, so once a job queued after the
    # stale entry has run, the stale entry has run too.
    create_workflow(api, "after-stale")
    later = trigger_plain(api, "after-stale", "alice")
    poll(lambda: messages_of(server, later), lambda rows: len(rows) == 1, "the later job's message")

    assert job_rows(server, "tx-cancel-stale") == before
    assert messages_of(server, "tx-cancel-stale") == []


def test_cancel_after_delivery_changes_nothing(
    server: ServerProcess, api: httpx.Client, workflow: str
) -> None:
    trigger(api, "tx-cancel-late", "alice")
    jobs = finished_jobs(server, "tx-cancel-late", 3)
    assert (jobs[WAIT].status, jobs[INBOX].status, jobs["email"].status) == (
        "completed",
        "completed",
        "skipped",
    )
    before = job_rows(server, "tx-cancel-late")
    messages = messages_of(server, "tx-cancel-late")
    assert len(messages) == 1

    assert cancel(api, "tx-cancel-late") == {"data": False}

    assert job_rows(server, "tx-cancel-late") == before
    assert messages_of(server, "tx-cancel-late") == messages
