"""The digest step: one digest per window under concurrent triggers, keys, look-back, cron, cancel."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import sqlite3
import time
import zoneinfo
from pathlib import Path
from typing import Any

import httpx
import pytest

from novulite.engine.steps.digest import check_controls, key_value, look_back_start
from tests.conftest import start_server
from tests.helpers import poll
from tests.pipeline import query, server_fixtures, trigger
from tests.servers import API_KEY, ServerProcess

module_server, api = server_fixtures()

COMMENT_TEXT = "{{ step.total_count }} new comments"
RACE_ROUNDS = 20
RACE_EVENTS = 5
SETTLE_SECONDS = 30.0
# Jobs per notification of a digest_workflow.
STEPS = 3


def digest_workflow(workflow_id: str, digest: dict[str, Any], body: str = COMMENT_TEXT) -> dict[str, Any]:
    """A workflow of a digest step `collect`, an email step (skipped: no provider) and an in-app step."""
    return {
        "name": f"Workflow {workflow_id}",
        "workflowId": workflow_id,
        "steps": [
            {"name": "Collect", "stepId": "collect", "type": "digest", "controlValues": digest},
            {"name": "Email", "stepId": "email", "type": "email", "controlValues": {"subject": COMMENT_TEXT}},
            {
                "name": "Inbox",
                "stepId": "inbox",
                "type": "in_app",
                "controlValues": {"subject": body, "body": body},
            },
        ],
    }


def create(api: httpx.Client, workflow_id: str, digest: dict[str, Any], body: str = COMMENT_TEXT) -> None:
    response = api.post("/v2/workflows", json=digest_workflow(workflow_id, digest, body))
    assert response.status_code == 201, response.text


async def trigger_together(base_url: str, bodies: list[dict[str, Any]]) -> list[str]:
    """Send the triggers concurrently on separate connections; return their transactionIds in order."""
    async with httpx.AsyncClient(
        base_url=base_url, headers={"Authorization": f"ApiKey {API_KEY}"}, timeout=30
    ) as client:
        responses = await asyncio.gather(*(client.post("/v1/events/trigger", json=body) for body in bodies))
    for response in responses:
        assert response.status_code == 201, response.text
    return [response.json()["data"]["transactionId"] for response in responses]


def comment_events(workflow_id: str, subscriber_id: str, count: int) -> list[dict[str, Any]]:
    recipient = {"subscriberId": subscriber_id, "email": f"{subscriber_id}@example.com"}
    return [{"name": workflow_id, "to": recipient, "payload": {"n": n}} for n in range(1, count + 1)]


def marks(count: int) -> str:
    return ", ".join("?" * count)


def digest_jobs(server: ServerProcess, transaction_ids: list[str]) -> list[dict[str, Any]]:
    rows = query(
        server,
        "SELECT id, transaction_id, status, output, digest_id, run_at FROM job "
        f"WHERE step_id = 'collect' AND transaction_id IN ({marks(len(transaction_ids))})",
        tuple(transaction_ids),
    )
    return [{**dict(row), "output": json.loads(row["output"] or "null")} for row in rows]


def inbox_messages(server: ServerProcess, transaction_ids: list[str]) -> list[dict[str, Any]]:
    rows = query(
        server,
        "SELECT transaction_id, subject, content FROM message "
        f"WHERE channel = 'in_app' AND transaction_id IN ({marks(len(transaction_ids))})",
        tuple(transaction_ids),
    )
    return [dict(row) for row in rows]


def unfinished_jobs(server: ServerProcess, transaction_ids: list[str]) -> int:
    """Count the transactions' jobs still to run, and the jobs not created yet."""
    rows = query(
        server,
        "SELECT count(*), coalesce(sum(status IN ('pending', 'queued', 'delayed', 'running')), 0) FROM job "
        f"WHERE transaction_id IN ({marks(len(transaction_ids))})",
        tuple(transaction_ids),
    )
    created, unfinished = rows[0]
    return int(unfinished) + STEPS * len(transaction_ids) - int(created)


def wait_finished(server: ServerProcess, transaction_ids: list[str], timeout: float = SETTLE_SECONDS) -> None:
    poll(
        lambda: unfinished_jobs(server, transaction_ids),
        lambda left: left == 0,
        f"the jobs of {len(transaction_ids)} transactions to finish",
        timeout,
    )


def wait_collected(server: ServerProcess, transaction_ids: list[str]) -> list[dict[str, Any]]:
    """Wait until every digest job of the transactions opened or joined a digest; return the jobs."""
    return poll(
        lambda: digest_jobs(server, transaction_ids),
        lambda jobs: len(jobs) == len(transaction_ids) and all(job["digest_id"] for job in jobs),
        "the events to open or join a digest",
        SETTLE_SECONDS,
    )


def owner_events(jobs: list[dict[str, Any]]) -> list[Any]:
    (owner,) = [job for job in jobs if job["status"] == "completed"]
    return [event["payload"].get("n") for event in owner["output"]["events"]]


def check_one_digest(server: ServerProcess, transaction_ids: list[str]) -> None:
    """Check that the transactions' events went out as one digest message holding all of them once."""
    jobs = digest_jobs(server, transaction_ids)
    statuses = sorted(job["status"] for job in jobs)
    assert statuses == ["completed"] + ["merged"] * (len(transaction_ids) - 1)
    assert len({job["digest_id"] for job in jobs}) == 1
    assert sorted(owner_events(jobs)) == list(range(1, len(transaction_ids) + 1))
    (owner,) = [job for job in jobs if job["status"] == "completed"]
    assert owner["output"]["eventCount"] == len(transaction_ids)
    messages = inbox_messages(server, transaction_ids)
    assert len(messages) == 1
    assert messages[0]["transaction_id"] == owner["transaction_id"]
    assert messages[0]["subject"] == f"{len(transaction_ids)} new comments"
    assert messages[0]["content"] == f"{len(transaction_ids)} new comments"
    (digest,) = query(server, "SELECT status, owner_job_id FROM digest WHERE id = ?", (owner["digest_id"],))
    assert tuple(digest) == ("sent", owner["id"])
    later = query(
        server,
        "SELECT status, count(*) FROM job WHERE step_id <> 'collect' "
        f"AND transaction_id IN ({marks(len(transaction_ids))}) GROUP BY status",
        tuple(transaction_ids),
    )
    # Each merged event's email and in-app steps never run; the owner's email is skipped (no provider).
    assert dict(later) == {"merged": 2 * (len(transaction_ids) - 1), "skipped": 1, "completed": 1}


def test_concurrent_triggers_make_one_digest(module_server: ServerProcess, api: httpx.Client) -> None:
    create(api, "comment-digest", {"amount": 3, "unit": "seconds"})

    async def race() -> list[list[str]]:
        rounds = []
        for round_number in range(RACE_ROUNDS):
            # A fresh subscriber per round lets the rounds' windows overlap without sharing a digest.
            events = comment_events("comment-digest", f"alice-{round_number:02d}", RACE_EVENTS)
            rounds.append(await trigger_together(module_server.base_url, events))
        return rounds

    rounds = asyncio.run(race())

    for transaction_ids in rounds:
        wait_finished(module_server, transaction_ids)
        check_one_digest(module_server, transaction_ids)


@pytest.mark.parametrize("digest_key", ["post.id", "payload.post.id", "{{ payload.post.id }}"])
def test_digest_key_groups_events(module_server: ServerProcess, api: httpx.Client, digest_key: str) -> None:
    workflow_id = f"keyed-{abs(hash(digest_key)) % 10_000}"
    create(api, workflow_id, {"amount": 1, "unit": "seconds", "digestKey": digest_key})
    carol, dave = f"carol-{workflow_id}", f"dave-{workflow_id}"
    payloads = [
        (carol, {"post": {"id": 1}, "n": 1}),
        (carol, {"post": {"id": 2}, "n": 2}),
        (carol, {"post": {"id": 1}, "n": 3}),
        (carol, {"n": 4}),
        (carol, {"post": {}, "n": 5}),
        (dave, {"n": 6}),
    ]
    bodies = [{"name": workflow_id, "to": subscriber, "payload": payload} for subscriber, payload in payloads]

    transaction_ids = asyncio.run(trigger_together(module_server.base_url, bodies))

    wait_finished(module_server, transaction_ids)
    jobs = digest_jobs(module_server, transaction_ids)
    groups: dict[str, list[int]] = {}
    n_of = {
        transaction_id: payload["n"]
        for transaction_id, (_, payload) in zip(transaction_ids, payloads, strict=True)
    }
    for job in jobs:
        groups.setdefault(job["digest_id"], []).append(n_of[job["transaction_id"]])
    assert sorted(sorted(group) for group in groups.values()) == [[1, 3], [2], [4, 5], [6]]
    owners = [job for job in jobs if job["status"] == "completed"]
    assert sorted(sorted(event["payload"]["n"] for event in job["output"]["events"]) for job in owners) == [
        [1, 3],
        [2],
        [4, 5],
        [6],
    ]
    assert sorted(message["content"] for message in inbox_messages(module_server, transaction_ids)) == [
        "1 new comments",
        "1 new comments",
        "2 new comments",
        "2 new comments",
    ]
    keys = query(
        module_server,
        f"SELECT key_value FROM digest WHERE id IN ({marks(len(groups))}) ORDER BY key_value",
        tuple(groups),
    )
    expected = ["", "", '"1"', '"2"'] if "{" in digest_key else ["", "", "1", "2"]
    assert [row[0] for row in keys] == expected


def test_look_back_sends_lone_event_at_once(module_server: ServerProcess, api: httpx.Client) -> None:
    create(
        api,
        "look-back",
        {"amount": 1, "unit": "seconds", "lookBackWindow": {"amount": 30, "unit": "seconds"}},
    )
    first = trigger(api, "look-back", "erin", payload={"n": 1})
    wait_finished(module_server, [first])
    (job,) = digest_jobs(module_server, [first])
    assert job["status"] == "completed"
    assert job["output"]["eventCount"] == 1
    assert [message["content"] for message in inbox_messages(module_server, [first])] == ["1 new comments"]
    (row,) = query(module_server, "SELECT status FROM digest WHERE id = ?", (job["digest_id"],))
    assert row[0] == "sent_at_once"

    # Within the look-back window, the next events are digested.
    later = asyncio.run(
        trigger_together(
            module_server.base_url, [{"name": "look-back", "to": "erin", "payload": {"n": n}} for n in (2, 3)]
        )
    )

    wait_finished(module_server, later)
    jobs = digest_jobs(module_server, later)
    assert sorted(job["status"] for job in jobs) == ["completed", "merged"]
    assert sorted(owner_events(jobs)) == [2, 3]
    assert [message["content"] for message in inbox_messages(module_server, later)] == ["2 new comments"]


def expected_nine_am(after: dt.datetime, zone: zoneinfo.ZoneInfo) -> dt.datetime:
    """Return the first 9:00 on `zone`'s wall clock strictly after `after`, in UTC."""
    local = after.astimezone(zone)
    day = local.date() if local.time() < dt.time(9) else local.date() + dt.timedelta(days=1)
    return dt.datetime.combine(day, dt.time(9), tzinfo=zone).astimezone(dt.UTC)


def stored_instant(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)


def test_timed_digest_uses_subscriber_zone(module_server: ServerProcess, api: httpx.Client) -> None:
    create(api, "daily-digest", {"type": "timed", "cron": "0 9 * * *"})
    zone = zoneinfo.ZoneInfo("Pacific/Auckland")
    recipient = {"subscriberId": "frank", "timezone": "Pacific/Auckland"}
    before = dt.datetime.now(dt.UTC)

    transaction_ids = [trigger(api, "daily-digest", recipient, payload={"n": n}) for n in (1, 2)]

    jobs = wait_collected(module_server, transaction_ids)
    after = dt.datetime.now(dt.UTC)
    (owner,) = [job for job in jobs if job["status"] == "delayed"]
    (digest,) = query(module_server, "SELECT status, due_at FROM digest WHERE id = ?", (owner["digest_id"],))
    due_at = stored_instant(digest["due_at"])
    assert digest["status"] == "open"
    assert due_at in {expected_nine_am(before, zone), expected_nine_am(after, zone)}
    assert due_at.astimezone(zone).time() == dt.time(9)
    assert stored_instant(owner["run_at"]) == due_at
    assert sorted(job["status"] for job in jobs) == ["delayed", "merged"]

    # Canceling both events leaves nothing to send, so the digest closes.
    for transaction_id in transaction_ids:
        assert api.delete(f"/v1/events/trigger/{transaction_id}").json() == {"data": True}

    assert {job["status"] for job in digest_jobs(module_server, transaction_ids)} == {"canceled"}
    (digest,) = query(module_server, "SELECT status FROM digest WHERE id = ?", (owner["digest_id"],))
    assert digest["status"] == "canceled"
    assert unfinished_jobs(module_server, transaction_ids) == 0


def test_later_steps_see_digest_events(module_server: ServerProcess, api: httpx.Client) -> None:
    body = (
        "{{ steps.collect.eventCount }} events:"
        "{% for event in steps.collect.events %} {{ event.payload.n }}{% endfor %};"
        " digest={{ step.digest }} payloads:{% for payload in step.events %} {{ payload.n }}{% endfor %}"
    )
    create(api, "listed", {"amount": 1, "unit": "seconds"}, body=body)

    # Sent one by one, so the events' times, and with them their order, are known.
    transaction_ids = [trigger(api, "listed", "gina", payload={"n": n}) for n in (1, 2, 3)]

    wait_finished(module_server, transaction_ids)
    (message,) = inbox_messages(module_server, transaction_ids)
    assert message["content"] == "3 events: 1 2 3; digest=true payloads: 1 2 3"
    jobs = digest_jobs(module_server, transaction_ids)
    (owner,) = [job for job in jobs if job["status"] == "completed"]
    events = owner["output"]["events"]
    assert [set(event) for event in events] == [{"id", "time", "payload"}] * 3
    assert {event["id"] for event in events} == {job["id"] for job in jobs}
    assert [event["time"] for event in events] == sorted(event["time"] for event in events)


def test_cancel_hands_digest_to_next_event(module_server: ServerProcess, api: httpx.Client) -> None:
    create(api, "handover", {"amount": 3, "unit": "seconds"})
    first = trigger(api, "handover", "hank", payload={"n": 1})
    wait_collected(module_server, [first])
    # One by one, so the second event is the oldest follower.
    followers = [trigger(api, "handover", "hank", payload={"n": n}) for n in (2, 3, 4)]
    transaction_ids = [first, *followers]
    jobs = {job["transaction_id"]: job for job in wait_collected(module_server, transaction_ids)}
    assert [jobs[transaction_id]["status"] for transaction_id in transaction_ids] == [
        "delayed",
        "merged",
        "merged",
        "merged",
    ]
    digest_id = jobs[first]["digest_id"]

    assert api.delete(f"/v1/events/trigger/{first}").json() == {"data": True}
    assert api.delete(f"/v1/events/trigger/{followers[1]}").json() == {"data": True}

    jobs = {job["transaction_id"]: job for job in digest_jobs(module_server, transaction_ids)}
    new_owner = jobs[followers[0]]
    assert new_owner["status"] == "delayed"
    (digest,) = query(module_server, "SELECT owner_job_id, due_at FROM digest WHERE id = ?", (digest_id,))
    assert digest["owner_job_id"] == new_owner["id"]
    assert new_owner["run_at"] == digest["due_at"]
    pending = query(
        module_server,
        "SELECT step_id, status FROM job WHERE transaction_id = ? ORDER BY position",
        (followers[0],),
    )
    assert [tuple(row) for row in pending] == [
        ("collect", "delayed"),
        ("email", "pending"),
        ("inbox", "pending"),
    ]
    canceled = query(module_server, "SELECT status FROM job WHERE transaction_id = ?", (followers[1],))
    assert {row[0] for row in canceled} == {"canceled"}

    wait_finished(module_server, transaction_ids)
    messages = inbox_messages(module_server, transaction_ids)
    assert [(message["transaction_id"], message["content"]) for message in messages] == [
        (followers[0], "2 new comments")
    ]
    jobs = {job["transaction_id"]: job for job in digest_jobs(module_server, transaction_ids)}
    assert owner_events(list(jobs.values())) == [2, 4]
    # A merged event of a digest that was sent has run its course: canceling it changes nothing.
    assert api.delete(f"/v1/events/trigger/{followers[2]}").json() == {"data": False}
    assert digest_jobs(module_server, [followers[2]])[0]["status"] == "merged"


def test_cancel_of_lone_owner_closes_the_digest(module_server: ServerProcess, api: httpx.Client) -> None:
    create(api, "lone", {"amount": 2, "unit": "seconds"})
    first = trigger(api, "lone", "ivan", payload={"n": 1})
    (job,) = wait_collected(module_server, [first])

    assert api.delete(f"/v1/events/trigger/{first}").json() == {"data": True}

    (digest,) = query(module_server, "SELECT status FROM digest WHERE id = ?", (job["digest_id"],))
    assert digest["status"] == "canceled"
    second = trigger(api, "lone", "ivan", payload={"n": 2})
    wait_finished(module_server, [second])
    (job,) = digest_jobs(module_server, [second])
    assert job["status"] == "completed"
    assert owner_events([job]) == [2]
    assert inbox_messages(module_server, [first]) == []


@pytest.mark.parametrize("stop", ["sigterm", "kill"])
def test_digest_due_during_downtime_sent_once(tmp_path: Path, stop: str) -> None:
    server = start_server(tmp_path)
    try:
        with httpx.Client(
            base_url=server.base_url, headers={"Authorization": f"ApiKey {API_KEY}"}, timeout=10
        ) as client:
            create(client, "restart-digest", {"amount": 2, "unit": "seconds"})
        transaction_ids = asyncio.run(
            trigger_together(server.base_url, comment_events("restart-digest", "judy", 3))
        )
        jobs = wait_collected(server, transaction_ids)
        (owner,) = [job for job in jobs if job["status"] == "delayed"]
        if stop == "sigterm":
            server.terminate()
        else:
            server.kill()
        # Stay down until the digest is past due, so the restarted server finds it overdue.
        due_at = stored_instant(owner["run_at"])
        time.sleep(max(0.0, (due_at - dt.datetime.now(dt.UTC)).total_seconds()) + 0.5)
        assert inbox_messages(server, transaction_ids) == []

        server = start_server(tmp_path)

        wait_finished(server, transaction_ids)
        check_one_digest(server, transaction_ids)
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("controls", "field"),
    [
        ({"type": "weekly", "amount": 1, "unit": "hours"}, "type"),
        ({"type": "backoff", "amount": 1, "unit": "hours"}, "type"),
        ({"unit": "hours"}, "amount"),
        ({"amount": 1}, "unit"),
        ({"amount": 0, "unit": "hours"}, "amount"),
        ({"amount": 1, "unit": "fortnights"}, "unit"),
        ({"type": "timed"}, "cron"),
        ({"type": "timed", "cron": "every morning"}, "cron"),
        ({"amount": 1, "unit": "hours", "lookBackWindow": 5}, "lookBackWindow"),
        ({"amount": 1, "unit": "hours", "lookBackWindow": {"amount": 5}}, "lookBackWindow.unit"),
        (
            {"amount": 1, "unit": "hours", "lookBackWindow": {"amount": -1, "unit": "hours"}},
            "lookBackWindow.amount",
        ),
        ({"amount": 1.5, "unit": "months"}, "amount"),
        ({"amount": 10**30, "unit": "seconds"}, "amount"),
        (
            {"amount": 1, "unit": "hours", "lookBackWindow": {"amount": 10**30, "unit": "days"}},
            "lookBackWindow.amount",
        ),
        ({"amount": 1, "unit": "hours", "cron": "* * * * *"}, "cron"),
        ({"amount": 1, "unit": "hours", "digestKey": 7}, "digestKey"),
        ({"amount": 1, "unit": "hours", "digestKey": "{{ payload.id"}, "digestKey"),
    ],
)
def test_invalid_digest_controls_are_rejected(
    api: httpx.Client, controls: dict[str, Any], field: str
) -> None:
    response = api.post("/v2/workflows", json=digest_workflow("bad-digest", controls))

    assert response.status_code == 400, response.text
    fields = [error["field"] for error in response.json()["errors"]]
    assert fields == [f"steps[0].controlValues.{field}"]


@pytest.mark.parametrize(
    ("key", "payload", "expected"),
    [
        (None, {"post": {"id": 1}}, ""),
        ("post.id", {"post": {"id": 1}}, "1"),
        ("payload.post.id", {"post": {"id": "a"}}, '"a"'),
        ("post.id", {"post": {}}, ""),
        ("post.id", {"post": "flat"}, ""),
        ("items.1", {"items": ["x", "y"]}, '"y"'),
        ("items.5", {"items": ["x"]}, ""),
        ("post", {"post": {"b": 1, "a": 2}}, '{"a":2,"b":1}'),
        ("{{ payload.post.id }}", {"post": {"id": 1}}, '"1"'),
        ("{{ payload.missing }}", {}, ""),
    ],
)
def test_key_value(key: str | None, payload: dict[str, Any], expected: str) -> None:
    assert key_value(key, {"payload": payload}) == expected


def test_long_key_value_is_hashed() -> None:
    value = key_value("text", {"payload": {"text": "x" * 2000}})

    assert value.startswith("sha256:")
    assert len(value) == 7 + 64


def test_look_back_start_counts_calendar_months() -> None:
    zone = zoneinfo.ZoneInfo("Europe/Berlin")
    now = dt.datetime(2026, 3, 31, 10, 0, tzinfo=zone).astimezone(dt.UTC)

    assert look_back_start(now, 1, "months", zone) == dt.datetime(2026, 2, 28, 10, 0, tzinfo=zone)
    assert look_back_start(now, 90, "seconds", zone) == now - dt.timedelta(seconds=90)


def test_valid_digest_controls_pass() -> None:
    assert check_controls({"amount": 5, "unit": "minutes", "digestKey": "post.id"}) == []
    assert check_controls({"type": "timed", "cron": "0 9 * * 1-5"}) == []
    assert (
        check_controls({"amount": 1, "unit": "days", "lookBackWindow": {"amount": 2, "unit": "hours"}}) == []
    )


def test_second_digest_step_collects_again(module_server: ServerProcess, api: httpx.Client) -> None:
    text = "{{ steps.first.eventCount }}/{{ steps.second.eventCount }}/{{ step.total_count }}"
    steps = [
        {
            "name": "First",
            "stepId": "first",
            "type": "digest",
            "controlValues": {"amount": 1, "unit": "seconds"},
        },
        {
            "name": "Second",
            "stepId": "second",
            "type": "digest",
            "controlValues": {"amount": 1, "unit": "seconds"},
        },
        {"name": "Inbox", "stepId": "inbox", "type": "in_app", "controlValues": {"body": text}},
    ]
    response = api.post("/v2/workflows", json={"name": "Twice", "workflowId": "twice", "steps": steps})
    assert response.status_code == 201, response.text

    transaction_ids = asyncio.run(
        trigger_together(module_server.base_url, comment_events("twice", "kate", RACE_EVENTS))
    )

    wait_finished(module_server, transaction_ids)
    assert [message["content"] for message in inbox_messages(module_server, transaction_ids)] == ["5/1/1"]


def test_failed_owner_digest_goes_to_follower(module_server: ServerProcess, api: httpx.Client) -> None:
    create(api, "orphan", {"amount": 3, "unit": "seconds"})
    first = trigger(api, "orphan", "liam", payload={"n": 1})
    wait_collected(module_server, [first])
    second = trigger(api, "orphan", "liam", payload={"n": 2})
    (owner, follower) = sorted(
        wait_collected(module_server, [first, second]), key=lambda job: job["transaction_id"] != first
    )
    # An owner that failed without sending, as after its last attempt raised.
    database = module_server.data_dir / "novulite.db"
    with contextlib.closing(sqlite3.connect(database, timeout=10)) as connection, connection:
        failed = connection.execute(
            "UPDATE job SET status = 'failed' WHERE id = ? AND status = 'delayed'", (owner["id"],)
        )
    assert failed.rowcount == 1

    third = trigger(api, "orphan", "liam", payload={"n": 3})

    wait_finished(module_server, [second, third])
    jobs = {job["transaction_id"]: job for job in digest_jobs(module_server, [first, second, third])}
    assert [jobs[transaction_id]["status"] for transaction_id in (first, second, third)] == [
        "failed",
        "completed",
        "merged",
    ]
    assert {job["digest_id"] for job in jobs.values()} == {owner["digest_id"]}
    assert [event["payload"]["n"] for event in jobs[second]["output"]["events"]] == [1, 2, 3]
    messages = inbox_messages(module_server, [first, second, third])
    assert [(message["transaction_id"], message["content"]) for message in messages] == [
        (second, "3 new comments")
    ]
    assert follower["status"] == "merged"


def test_owner_sends_after_its_condition_changes(module_server: ServerProcess, api: httpx.Client) -> None:
    muted = {"==": [{"var": "subscriber.data.muted"}, True]}
    create(api, "conditional", {"amount": 2, "unit": "seconds", "skip": muted})
    recipient = {"subscriberId": "mona", "data": {"muted": False}}
    transaction_ids = [trigger(api, "conditional", recipient, payload={"n": n}) for n in (1, 2)]
    wait_collected(module_server, transaction_ids)

    # The condition passed when the events were collected; the owner must not be skipped when it resumes.
    response = api.patch("/v2/subscribers/mona", json={"data": {"muted": True}})
    assert response.status_code == 200, response.text

    wait_finished(module_server, transaction_ids)
    check_one_digest(module_server, transaction_ids)
