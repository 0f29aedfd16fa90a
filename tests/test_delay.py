"""The delay step: regular, timed and dynamic due times, late and invalid values, and checks on save."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import zoneinfo
from typing import Any

import httpx
import pytest

from novulite.engine.steps.delay import check_controls, dynamic_path
from tests.delays import INBOX, WAIT, cancel, db_time, delay_jobs, delay_workflow, wait_delayed
from tests.pipeline import finished_jobs, messages_of, query, server_fixtures, trigger
from tests.servers import ServerProcess

module_server, api = server_fixtures()

_numbers = itertools.count()
KOLKATA = zoneinfo.ZoneInfo("Asia/Kolkata")
NEW_YORK = zoneinfo.ZoneInfo("America/New_York")


def workflow(api: httpx.Client, controls: dict[str, Any], body: str = "Delivered") -> str:
    workflow_id = f"delay-{next(_numbers)}"
    delay_workflow(api, workflow_id, controls, body)
    return workflow_id


def iso(instant: dt.datetime) -> str:
    """Format an instant as the delay step reports it: UTC, milliseconds and Z."""
    return instant.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{instant.microsecond // 1000:03d}Z"


def next_wall_time(
    after: dt.datetime, zone: dt.tzinfo, hour: int, minute: int, weekdays: bool
) -> dt.datetime:
    """Return the first instant after `after` whose wall clock in `zone` shows hour:minute (on Mon-Fri)."""
    day = after.astimezone(zone).date()
    while True:
        candidate = dt.datetime.combine(day, dt.time(hour, minute), tzinfo=zone)
        if candidate > after and (not weekdays or candidate.weekday() < 5):
            return candidate.astimezone(dt.UTC)
        day += dt.timedelta(days=1)


def test_regular_delay_delivers_after_the_wait(module_server: ServerProcess, api: httpx.Client) -> None:
    workflow_id = workflow(
        api, {"type": "regular", "amount": 2, "unit": "seconds"}, "waited {{ steps.wait.duration }} ms"
    )
    transaction_id = trigger(api, workflow_id, "delay-regular")

    (job,) = wait_delayed(module_server, transaction_id)
    # Read in the same snapshot as the delayed status: nothing is delivered while the job waits.
    assert job["messages"] == 0
    run_at = db_time(job["run_at"])
    assert run_at - db_time(job["updated_at"]) == dt.timedelta(seconds=2)

    jobs = finished_jobs(module_server, transaction_id, 2)
    assert jobs[WAIT].status == "completed"
    assert jobs[WAIT].details == ["Step queued", f"Delay until {iso(run_at)}", "Delay finished"]
    assert jobs[INBOX].status == "completed"
    assert [message["content"] for message in messages_of(module_server, transaction_id)] == [
        "waited 2000 ms"
    ]
    (message,) = query(
        module_server, "SELECT created_at FROM message WHERE transaction_id = ?", (transaction_id,)
    )
    assert db_time(message["created_at"]) >= run_at
    (done,) = delay_jobs(module_server, transaction_id)
    assert json.loads(done["output"]) == {"type": "regular", "dueAt": iso(run_at), "duration": 2000}


def test_trigger_override_replaces_the_amount(module_server: ServerProcess, api: httpx.Client) -> None:
    workflow_id = workflow(api, {"amount": 1, "unit": "hours"})
    transaction_id = trigger(
        api, workflow_id, "delay-override", overrides={"delay": {"amount": 1, "unit": "seconds"}}
    )

    (job,) = wait_delayed(module_server, transaction_id)
    assert db_time(job["run_at"]) - db_time(job["updated_at"]) == dt.timedelta(seconds=1)
    jobs = finished_jobs(module_server, transaction_id, 2)
    assert jobs[INBOX].status == "completed"


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"delay": {"amount": 1, "unit": "fortnights"}}, "overrides.delay.unit"),
        ({"delay": {"amount": "1", "unit": "seconds"}}, "overrides.delay.amount"),
        ({"delay": {"unit": "seconds"}}, "overrides.delay.amount"),
        ({"delay": 5}, "overrides.delay"),
    ],
)
def test_invalid_override_is_rejected(api: httpx.Client, overrides: dict[str, Any], field: str) -> None:
    workflow_id = workflow(api, {"amount": 1, "unit": "hours"})
    response = api.post(
        "/v1/events/trigger", json={"name": workflow_id, "to": "delay-override", "overrides": overrides}
    )
    assert response.status_code == 400, response.text
    assert field in {error["field"] for error in response.json()["errors"]}


@pytest.mark.parametrize(
    ("subscriber", "cron", "zone", "hour", "minute", "weekdays"),
    [
        ({"subscriberId": "delay-kolkata", "timezone": "Asia/Kolkata"}, "0 9 * * *", KOLKATA, 9, 0, False),
        (
            {"subscriberId": "delay-new-york", "timezone": "America/New_York"},
            "30 8 * * 1-5",
            NEW_YORK,
            8,
            30,
            True,
        ),
        ({"subscriberId": "delay-no-zone"}, "15 6 * * *", dt.UTC, 6, 15, False),
    ],
)
def test_timed_delay_uses_the_subscriber_zone(
    module_server: ServerProcess,
    api: httpx.Client,
    subscriber: dict[str, Any],
    cron: str,
    zone: dt.tzinfo,
    hour: int,
    minute: int,
    weekdays: bool,
) -> None:
    workflow_id = workflow(api, {"type": "timed", "cron": cron})
    transaction_id = trigger(api, workflow_id, subscriber)

    (job,) = wait_delayed(module_server, transaction_id)
    expected = next_wall_time(db_time(job["updated_at"]), zone, hour, minute, weekdays)
    assert db_time(job["run_at"]) == expected

    assert cancel(api, transaction_id) == {"data": True}
    jobs = finished_jobs(module_server, transaction_id, 2)
    assert (jobs[WAIT].status, jobs[INBOX].status) == ("canceled", "canceled")


def test_dynamic_timestamp_with_offset(module_server: ServerProcess, api: httpx.Client) -> None:
    workflow_id = workflow(api, {"type": "dynamic", "dynamicKey": "payload.sendAt"})
    due = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=2)).replace(microsecond=0)
    send_at = due.astimezone(dt.timezone(dt.timedelta(hours=5, minutes=30))).isoformat()
    transaction_id = trigger(
        api,
        workflow_id,
        {"subscriberId": "delay-offset", "timezone": "America/New_York"},
        payload={"sendAt": send_at},
    )

    (job,) = wait_delayed(module_server, transaction_id)
    assert job["messages"] == 0
    assert db_time(job["run_at"]) == due
    jobs = finished_jobs(module_server, transaction_id, 2)
    assert jobs[INBOX].status == "completed"
    assert len(messages_of(module_server, transaction_id)) == 1


@pytest.mark.parametrize(
    ("subscriber", "zone"),
    [
        ({"subscriberId": "delay-naive-ny", "timezone": "America/New_York"}, NEW_YORK),
        ({"subscriberId": "delay-naive-kolkata", "timezone": "Asia/Kolkata"}, KOLKATA),
        ({"subscriberId": "delay-naive-utc"}, dt.UTC),
    ],
)
def test_dynamic_timestamp_without_offset_is_local(
    module_server: ServerProcess, api: httpx.Client, subscriber: dict[str, Any], zone: dt.tzinfo
) -> None:
    workflow_id = workflow(api, {"type": "dynamic", "dynamicKey": "payload.sendAt"})
    due = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).replace(microsecond=0)
    wall = due.astimezone(zone).replace(tzinfo=None).isoformat()
    transaction_id = trigger(api, workflow_id, subscriber, payload={"sendAt": wall})

    (job,) = wait_delayed(module_server, transaction_id)
    assert db_time(job["run_at"]) == due

    assert cancel(api, transaction_id) == {"data": True}


def test_dynamic_amount_and_unit(module_server: ServerProcess, api: httpx.Client) -> None:
    workflow_id = workflow(api, {"type": "dynamic", "dynamicKey": "payload.wait"})
    transaction_id = trigger(
        api, workflow_id, "delay-dynamic-amount", payload={"wait": {"amount": 1, "unit": "seconds"}}
    )

    (job,) = wait_delayed(module_server, transaction_id)
    assert db_time(job["run_at"]) - db_time(job["updated_at"]) == dt.timedelta(seconds=1)
    jobs = finished_jobs(module_server, transaction_id, 2)
    assert jobs[INBOX].status == "completed"
    assert len(messages_of(module_server, transaction_id)) == 1


def test_dynamic_key_in_subscriber_data(module_server: ServerProcess, api: httpx.Client) -> None:
    workflow_id = workflow(api, {"type": "dynamic", "dynamicKey": "{{ subscriber.data.quietUntil }}"})
    due = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=3)).replace(microsecond=0)
    subscriber = {"subscriberId": "delay-data", "data": {"quietUntil": due.isoformat()}}
    transaction_id = trigger(api, workflow_id, subscriber)

    (job,) = wait_delayed(module_server, transaction_id)
    assert db_time(job["run_at"]) == due
    assert cancel(api, transaction_id) == {"data": True}


def test_past_time_runs_at_once(module_server: ServerProcess, api: httpx.Client) -> None:
    workflow_id = workflow(api, {"type": "dynamic", "dynamicKey": "sendAt"})
    transaction_id = trigger(api, workflow_id, "delay-past", payload={"sendAt": "2020-01-01T00:00:00Z"})

    jobs = finished_jobs(module_server, transaction_id, 2)
    assert jobs[WAIT].status == "completed"
    assert (
        jobs[WAIT].last_detail == "Delay time 2020-01-01T00:00:00.000Z has already passed; continuing at once"
    )
    assert jobs[INBOX].status == "completed"
    assert len(messages_of(module_server, transaction_id)) == 1
    (job,) = delay_jobs(module_server, transaction_id)
    assert json.loads(job["output"])["duration"] == 0


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ({}, "payload.sendAt is missing"),
        ({"sendAt": None}, "payload.sendAt is missing"),
        ({"sendAt": "next tuesday"}, "payload.sendAt: 'next tuesday' is not an ISO 8601 timestamp"),
        ({"sendAt": "2026-02-30T10:00:00Z"}, "payload.sendAt: '2026-02-30T10:00:00Z' is not an ISO 8601"),
        ({"sendAt": 1765000000}, "payload.sendAt contains 1765000000; expected an ISO 8601 timestamp"),
        ({"sendAt": {"amount": -5, "unit": "seconds"}}, "payload.sendAt.amount must be greater than 0"),
        ({"sendAt": {"amount": 5, "unit": "fortnights"}}, "payload.sendAt.unit must be one of"),
        ({"sendAt": {"amount": 5}}, "payload.sendAt.unit is required"),
        ({"sendAt": {"amount": 1e12, "unit": "weeks"}}, "must be at most 521 weeks (ten years)"),
    ],
)
def test_invalid_value_fails_with_reason(
    module_server: ServerProcess, api: httpx.Client, payload: dict[str, Any], reason: str
) -> None:
    workflow_id = workflow(api, {"type": "dynamic", "dynamicKey": "payload.sendAt"})
    transaction_id = trigger(api, workflow_id, "delay-invalid", payload=payload)

    jobs = finished_jobs(module_server, transaction_id, 2)
    assert jobs[WAIT].status == "failed"
    assert jobs[WAIT].details[-2:] == [
        "Step failed",
        "Workflow stopped because this step failed; canceled 1 later step",
    ]
    assert jobs[WAIT].error is not None
    assert reason in jobs[WAIT].error
    # The rest of the chain must not run undelayed.
    assert jobs[INBOX].status == "canceled"
    assert messages_of(module_server, transaction_id) == []


@pytest.mark.parametrize(
    ("controls", "field", "problem"),
    [
        (
            {"type": "sometimes", "amount": 1, "unit": "seconds"},
            "type",
            "must be one of regular, timed, dynamic",
        ),
        ({"type": "regular"}, "amount", "is required for a regular delay"),
        ({"type": "regular"}, "unit", "is required for a regular delay"),
        ({"amount": 5}, "unit", "is required for a regular delay"),
        ({"amount": "5", "unit": "seconds"}, "amount", "must be a number"),
        ({"amount": 0, "unit": "seconds"}, "amount", "greater than 0"),
        ({"amount": 5, "unit": "years"}, "unit", "must be one of seconds, minutes"),
        ({"amount": 1.5, "unit": "months"}, "amount", "must be whole"),
        ({"amount": 10**30, "unit": "seconds"}, "amount", "must be at most 315619200 seconds"),
        ({"amount": 121, "unit": "months"}, "amount", "must be at most 120 months"),
        ({"amount": 5, "unit": "seconds", "cron": "* * * * *"}, "cron", 'set type to "timed"'),
        ({"type": "timed"}, "cron", "is required for a timed delay"),
        ({"type": "timed", "cron": "61 * * * *"}, "cron", "is not a valid cron expression"),
        ({"type": "timed", "cron": ["0 9 * * *"]}, "cron", "must be a cron expression"),
        ({"type": "dynamic"}, "dynamicKey", "is required for a dynamic delay"),
        ({"type": "dynamic", "dynamicKey": "payload.send at"}, "dynamicKey", "must be a variable path"),
        ({"type": "dynamic", "dynamicKey": 7}, "dynamicKey", "must be a variable path"),
    ],
)
def test_invalid_controls_rejected_on_save(
    api: httpx.Client, controls: dict[str, Any], field: str, problem: str
) -> None:
    response = api.post(
        "/v2/workflows",
        json={
            "name": "Bad delay",
            "workflowId": f"bad-delay-{next(_numbers)}",
            "steps": [{"name": "Wait", "type": "delay", "controlValues": controls}],
        },
    )
    assert response.status_code == 400, response.text
    errors = {error["field"]: error["message"] for error in response.json()["errors"]}
    assert f"steps[0].controlValues.{field}" in errors
    assert problem in errors[f"steps[0].controlValues.{field}"]


def test_valid_controls_are_stored(api: httpx.Client) -> None:
    controls = {"type": "timed", "cron": "0 9 * * 1-5"}
    workflow_id = workflow(api, controls)
    response = api.get(f"/v2/workflows/{workflow_id}")
    assert response.status_code == 200, response.text
    step = response.json()["data"]["steps"][0]
    assert step["type"] == "delay"
    assert step["controls"]["values"] == controls


@pytest.mark.parametrize(
    ("key", "path"),
    [
        ("payload.sendAt", "payload.sendAt"),
        ("sendAt", "payload.sendAt"),
        ("{{payload.when.at}}", "payload.when.at"),
        ("{{ subscriber.data.quietUntil }}", "subscriber.data.quietUntil"),
        ("steps.digest.events.0.time", "steps.digest.events.0.time"),
        ("payload..sendAt", None),
        ("payload.send at", None),
        ("{{ payload.sendAt | date }}", None),
        ("", None),
        (None, None),
    ],
)
def test_dynamic_key_paths(key: Any, path: str | None) -> None:
    assert dynamic_path(key) == path


def test_controls_default_to_regular() -> None:
    assert check_controls({"amount": 5, "unit": "minutes"}) == []
    assert check_controls({"type": None, "amount": 5, "unit": "minutes"}) == []
