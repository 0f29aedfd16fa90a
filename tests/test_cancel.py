"""Canceling a transaction: DELETE /v1/events/trigger/{transactionId} through HTTP and novu-py."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from novu_py import Novu

from tests.helpers import create_workflow, poll, read_rows, wait_settled
from tests.servers import ServerProcess
from tests.stores import Database

pytestmark = pytest.mark.both_modes

WORKFLOW_ID = "cancel-me"
TOPIC_KEY = "crowd"
# More than two fan-out pages of 500, so a cancel right after the trigger lands before the fan-out ends.
MEMBERS = 1_200
BATCH = 100
SETTLE_SECONDS = 60.0


def database(server: ServerProcess) -> Database:
    return server.database


@pytest.fixture(scope="module")
def workflow(shared_api: httpx.Client) -> str:
    create_workflow(shared_api, WORKFLOW_ID)
    return WORKFLOW_ID


def cancel(api: httpx.Client, transaction_id: str) -> object:
    response = api.delete(f"/v1/events/trigger/{transaction_id}")
    assert response.status_code == 200, response.text
    return response.json()


def trigger(api: httpx.Client, to: object) -> str:
    response = api.post("/v1/events/trigger", json={"name": WORKFLOW_ID, "to": to, "payload": {"text": "x"}})
    assert response.status_code == 201, response.text
    assert response.json()["data"]["status"] == "processed", response.text
    return str(response.json()["data"]["transactionId"])


def job_states(server: ServerProcess, transaction_id: str) -> list[tuple[str, str, str]]:
    return [
        (row[0], row[1], row[2])
        for row in read_rows(
            database(server),
            "SELECT id, status, updated_at FROM job WHERE transaction_id = ? ORDER BY id",
            (transaction_id,),
        )
    ]


def test_unknown_transaction_is_not_canceled(shared_api: httpx.Client, workflow: str) -> None:
    assert cancel(shared_api, "no-such-transaction") == {"data": False}


def test_cancel_after_delivery_changes_nothing(
    shared_server: ServerProcess, shared_api: httpx.Client, workflow: str
) -> None:
    transaction_id = trigger(shared_api, "delivered-subscriber")
    poll(
        lambda: read_rows(
            database(shared_server), "SELECT status FROM message WHERE transaction_id = ?", (transaction_id,)
        ),
        lambda rows: len(rows) == 1,
        "the in-app message",
        SETTLE_SECONDS,
    )
    wait_settled(database(shared_server), SETTLE_SECONDS)
    jobs_before = job_states(shared_server, transaction_id)
    messages_before = read_rows(
        database(shared_server), "SELECT * FROM message WHERE transaction_id = ?", (transaction_id,)
    )

    assert cancel(shared_api, transaction_id) == {"data": False}

    assert [status for _, status, _ in jobs_before] == ["completed"]
    assert job_states(shared_server, transaction_id) == jobs_before
    assert (
        read_rows(
            database(shared_server), "SELECT * FROM message WHERE transaction_id = ?", (transaction_id,)
        )
        == messages_before
    )
    (trigger_status,) = read_rows(
        database(shared_server),
        "SELECT status FROM trigger_event WHERE transaction_id = ?",
        (transaction_id,),
    )
    assert trigger_status == ("processed",)


@pytest.fixture(scope="module")
def crowd(shared_server: ServerProcess, shared_api: httpx.Client, workflow: str) -> Iterator[list[str]]:
    """A topic of MEMBERS subscribers, created through bulk triggers and topic subscriptions."""
    ids = [f"crowd-{index:05d}" for index in range(MEMBERS)]
    events = [{"name": WORKFLOW_ID, "to": ids[start : start + BATCH]} for start in range(0, MEMBERS, BATCH)]
    response = shared_api.post("/v1/events/trigger/bulk", json={"events": events})
    assert response.status_code == 201, response.text
    # Only existing subscribers can subscribe, and the bulk triggers create them in the background.
    wait_settled(database(shared_server), SETTLE_SECONDS)
    for start in range(0, MEMBERS, BATCH):
        response = shared_api.post(
            f"/v2/topics/{TOPIC_KEY}/subscriptions", json={"subscriberIds": ids[start : start + BATCH]}
        )
        assert response.status_code == 201, response.text
    yield ids


def test_cancel_stops_a_topic_fan_out(
    shared_server: ServerProcess, shared_api: httpx.Client, crowd: list[str]
) -> None:
    transaction_id = trigger(shared_api, {"type": "Topic", "topicKey": TOPIC_KEY})

    assert cancel(shared_api, transaction_id) == {"data": True}

    wait_settled(database(shared_server), SETTLE_SECONDS)
    jobs = job_states(shared_server, transaction_id)
    messages = read_rows(
        database(shared_server),
        "SELECT job_id, created_at FROM message WHERE transaction_id = ?",
        (transaction_id,),
    )
    assert len(messages) < MEMBERS
    assert {status for _, status, _ in jobs} <= {"completed", "canceled"}
    completed = {job_id for job_id, status, _ in jobs if status == "completed"}
    assert {job_id for job_id, _ in messages} == completed
    # Every canceled job carries the cancel's time, read under the write lock: no message may be newer.
    canceled_at = {updated_at for _, status, updated_at in jobs if status == "canceled"}
    if canceled_at:
        assert len(canceled_at) == 1
        assert all(created_at <= min(canceled_at) for _, created_at in messages)
        (details,) = read_rows(
            database(shared_server),
            "SELECT count(*) FROM execution_detail d JOIN job j ON j.id = d.job_id "
            "WHERE j.transaction_id = ? AND d.detail LIKE '%canceled by request%'",
            (transaction_id,),
        )
        assert details == (len(jobs) - len(completed),)
    (trigger_row,) = read_rows(
        database(shared_server),
        "SELECT status FROM trigger_event WHERE transaction_id = ?",
        (transaction_id,),
    )
    (pending_notifications,) = read_rows(
        database(shared_server),
        "SELECT count(*) FROM notification WHERE transaction_id = ? AND expansion != 'done'",
        (transaction_id,),
    )
    # The cancel stopped the fan-out, or notifications before their jobs, or jobs before they ran.
    assert trigger_row == ("canceled",) or pending_notifications[0] > 0 or canceled_at

    assert cancel(shared_api, transaction_id) == {"data": False}


def test_novu_py_parses_both_answers(shared_novu: Novu, shared_api: httpx.Client, crowd: list[str]) -> None:
    assert shared_novu.cancel(transaction_id="never-triggered").result is False

    transaction_id = trigger(shared_api, {"type": "Topic", "topicKey": TOPIC_KEY})
    assert shared_novu.cancel(transaction_id=transaction_id).result is True
    assert shared_novu.cancel(transaction_id=transaction_id).result is False
