"""Paged fan-out: broadcasts, topics larger than one page, and a SIGKILL in the middle of a fan-out."""

from __future__ import annotations

import json
import sqlite3
import time

import httpx
from novu_py import Novu, models

from tests.helpers import create_workflow, open_session, poll, read_rows, wait_settled
from tests.servers import API_KEY, ServerProcess

WORKFLOW_ID = "fanout"
TOPIC_KEY = "everyone"
BATCH = 100
# More than two pages of the fan-out (500 recipients each), so the cursor moves within and across pages.
MEMBERS = 1_200
SETTLE_SECONDS = 60.0


def subscriber_ids(count: int) -> list[str]:
    return [f"member-{index:05d}" for index in range(count)]


def topic_with_members(server: ServerProcess, api: httpx.Client) -> list[str]:
    """Create the workflow and a topic of MEMBERS subscribers; return their ids once the setup settled."""
    create_workflow(api, WORKFLOW_ID)
    ids = subscriber_ids(MEMBERS)
    create_subscribers(api, ids)
    # The triggers create the subscribers in the background, and only existing subscribers can subscribe.
    settle(server)
    subscribe_all(api, ids)
    return ids


def create_subscribers(api: httpx.Client, ids: list[str]) -> None:
    """Create subscribers by triggering the workflow to them, in bulk requests of 100-recipient events."""
    events = [{"name": WORKFLOW_ID, "to": ids[start : start + BATCH]} for start in range(0, len(ids), BATCH)]
    for start in range(0, len(events), BATCH):
        response = api.post("/v1/events/trigger/bulk", json={"events": events[start : start + BATCH]})
        assert response.status_code == 201, response.text
        assert {result["status"] for result in response.json()["data"]} == {"processed"}


def subscribe_all(api: httpx.Client, ids: list[str]) -> None:
    for start in range(0, len(ids), BATCH):
        chunk = ids[start : start + BATCH]
        response = api.post(f"/v2/topics/{TOPIC_KEY}/subscriptions", json={"subscriberIds": chunk})
        assert response.status_code == 201, response.text
        assert response.json()["meta"]["successful"] == len(chunk)


def settle(server: ServerProcess) -> None:
    wait_settled(server.data_dir / "novulite.db", SETTLE_SECONDS)


def deliveries(server: ServerProcess, transaction_id: str) -> tuple[int, int, int]:
    """Count the transaction's notifications, its messages, and the distinct subscribers messaged."""
    database = server.data_dir / "novulite.db"
    ((notifications,),) = read_rows(
        database, "SELECT count(*) FROM notification WHERE transaction_id = ?", (transaction_id,)
    )
    ((messages, distinct),) = read_rows(
        database,
        "SELECT count(*), count(DISTINCT subscriber_pk) FROM message WHERE transaction_id = ?",
        (transaction_id,),
    )
    return notifications, messages, distinct


def wait_delivered(server: ServerProcess, transaction_id: str, expected: int) -> tuple[int, int, int]:
    """Wait for `expected` messages of the transaction and for the pipeline to settle; return deliveries()."""
    poll(
        lambda: deliveries(server, transaction_id)[1],
        lambda count: count >= expected,
        f"{expected} messages of {transaction_id}",
        SETTLE_SECONDS,
    )
    settle(server)
    return deliveries(server, transaction_id)


def trigger_state(server: ServerProcess, transaction_id: str) -> tuple[str, str, dict[str, object] | None]:
    ((kind, status, cursor),) = read_rows(
        server.data_dir / "novulite.db",
        "SELECT kind, status, cursor FROM trigger_event WHERE transaction_id = ?",
        (transaction_id,),
    )
    return kind, status, json.loads(cursor) if cursor else None


def test_broadcast_reaches_every_subscriber(server: ServerProcess, api: httpx.Client) -> None:
    create_workflow(api, WORKFLOW_ID)
    novu = Novu(secret_key=API_KEY, server_url=server.base_url)

    empty = novu.trigger_broadcast(
        trigger_event_to_all_request_dto={"name": WORKFLOW_ID, "payload": {}}
    ).result
    assert empty.status == models.TriggerEventResponseDtoStatus.INVALID_RECIPIENTS
    assert empty.error == ["the environment has no subscribers other than the actor; nothing was sent"]
    assert read_rows(server.data_dir / "novulite.db", "SELECT count(*) FROM trigger_event") == [(0,)]

    tokens = {
        subscriber_id: open_session(server.base_url, subscriber_id)["token"] for subscriber_id in "pqrs"
    }
    result = novu.trigger_broadcast(
        trigger_event_to_all_request_dto={
            "name": WORKFLOW_ID,
            "payload": {"text": "to all"},
            "actor": "s",
            "transaction_id": "broadcast-1",
        }
    ).result

    assert result.status == models.TriggerEventResponseDtoStatus.PROCESSED
    assert result.transaction_id == "broadcast-1"
    assert wait_delivered(server, "broadcast-1", 3) == (3, 3, 3)
    for subscriber_id, token in tokens.items():
        response = httpx.get(
            f"{server.base_url}/v1/inbox/notifications",
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
        bodies = [message["body"] for message in response.json()["data"]]
        expected = [] if subscriber_id == "s" else ["Hello : to all"]
        assert bodies == expected, subscriber_id
    kind, status, _ = trigger_state(server, "broadcast-1")
    assert kind == "broadcast"
    assert status == "processed"


def test_broadcast_bad_input_rejected(server: ServerProcess, api: httpx.Client) -> None:
    create_workflow(api, WORKFLOW_ID)
    cases = [
        ({"name": WORKFLOW_ID}, "payload"),
        ({"name": WORKFLOW_ID, "payload": "text"}, "payload"),
        ({"name": WORKFLOW_ID, "payload": {}, "to": "alice"}, "to"),
        ({"payload": {}}, "name"),
    ]
    for body, field in cases:
        response = api.post("/v1/events/trigger/broadcast", json=body)
        assert response.status_code == 400, response.text
        assert field in [entry["field"] for entry in response.json()["errors"]], body

    unknown = api.post("/v1/events/trigger/broadcast", json={"name": "no-such-workflow", "payload": {}})
    assert unknown.status_code == 422, unknown.text
    assert read_rows(server.data_dir / "novulite.db", "SELECT count(*) FROM trigger_event") == [(0,)]


def test_topic_larger_than_page(server: ServerProcess, api: httpx.Client) -> None:
    ids = topic_with_members(server, api)

    response = api.post(
        "/v1/events/trigger",
        json={"name": WORKFLOW_ID, "to": {"type": "Topic", "topicKey": TOPIC_KEY, "exclude": ids[:2]}},
    )

    assert response.status_code == 201, response.text
    transaction_id = response.json()["data"]["transactionId"]
    expected = MEMBERS - 2
    assert wait_delivered(server, transaction_id, expected) == (expected, expected, expected)
    kind, status, cursor = trigger_state(server, transaction_id)
    assert (kind, status) == ("single", "processed")
    assert cursor == {"step": 2, "after": None}


def test_kill_mid_fan_out_resumes(server: ServerProcess, api: httpx.Client) -> None:
    topic_with_members(server, api)
    database = server.data_dir / "novulite.db"

    response = api.post(
        "/v1/events/trigger", json={"name": WORKFLOW_ID, "to": {"type": "Topic", "topicKey": TOPIC_KEY}}
    )
    assert response.status_code == 201, response.text
    transaction_id = response.json()["data"]["transactionId"]
    # Kill as soon as the first page is committed, while later pages are still to come. The loop
    # polls without pausing because a page takes only milliseconds.
    connection = sqlite3.connect(f"{database.as_uri()}?mode=ro", uri=True)
    deadline = time.monotonic() + SETTLE_SECONDS
    while (
        connection.execute(
            "SELECT count(*) FROM notification WHERE transaction_id = ?", (transaction_id,)
        ).fetchone()[0]
        == 0
    ):
        assert time.monotonic() < deadline, "the fan-out never started"
    server.kill()
    connection.close()

    _, status, cursor = trigger_state(server, transaction_id)
    notifications_at_kill = deliveries(server, transaction_id)[0]
    assert status == "received", "the fan-out finished before the kill, so nothing was left to resume"
    assert cursor is not None
    assert 0 < notifications_at_kill < MEMBERS

    server.start()
    assert wait_delivered(server, transaction_id, MEMBERS) == (MEMBERS, MEMBERS, MEMBERS)
    assert trigger_state(server, transaction_id)[1] == "processed"
