"""The throttle step on both limiters: refusals, windows, throttleKey groups, bad controls, Redis outages."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import LIMITER_MODES, api_client, limiter_env, start_server
from tests.helpers import poll
from tests.pipeline import finished_jobs, messages_of, query, trigger
from tests.servers import RedisProcess, ServerProcess

# Long enough that three triggers processed one after another land in one window on a busy machine.
SHORT_WINDOW_SECONDS = 5
LONG_WINDOW = {"amount": 10, "unit": "minutes"}


@pytest.fixture(scope="module", params=LIMITER_MODES)
def limiter_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """One server per limiter: the SQLite file in its data directory, or the private Redis."""
    process = start_server(tmp_path_factory.mktemp(request.param), env=limiter_env(request, request.param))
    yield process
    process.stop()


@pytest.fixture
def api(limiter_server: ServerProcess) -> Iterator[httpx.Client]:
    with api_client(limiter_server) as client:
        yield client


def throttled_workflow(api: httpx.Client, workflow_id: str, **controls: Any) -> None:
    """Create a workflow of a throttle step `throttle` followed by an in-app step `inbox`."""
    response = api.post(
        "/v2/workflows",
        json={
            "name": workflow_id,
            "workflowId": workflow_id,
            "steps": [
                {"name": "Throttle", "type": "throttle", "controlValues": controls},
                {"name": "Inbox", "type": "in_app", "controlValues": {"body": "n={{ payload.n }}"}},
            ],
        },
    )
    assert response.status_code == 201, response.text


def throttle_output(server: ServerProcess, transaction_id: str) -> dict[str, Any]:
    (row,) = query(
        server, "SELECT output FROM job WHERE transaction_id = ? AND step_id = 'throttle'", (transaction_id,)
    )
    return json.loads(row["output"])  # type: ignore[no-any-return]


def run_statuses(
    server: ServerProcess, api: httpx.Client, workflow_id: str, to: Any, payload: dict[str, Any]
) -> tuple[str, str, str]:
    """Trigger once, wait for both jobs and return their statuses and the transactionId."""
    transaction_id = trigger(api, workflow_id, to, payload=payload)
    jobs = finished_jobs(server, transaction_id, 2)
    return jobs["throttle"].status, jobs["inbox"].status, transaction_id


def parse_instant(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_third_run_in_window_skipped(limiter_server: ServerProcess, api: httpx.Client) -> None:
    throttled_workflow(api, "capped", amount=SHORT_WINDOW_SECONDS, unit="seconds", threshold=2)
    for number in (1, 2):
        throttle_status, inbox_status, _ = run_statuses(limiter_server, api, "capped", "ann", {"n": number})
        assert (throttle_status, inbox_status) == ("completed", "completed")

    transaction_id = trigger(api, "capped", "ann", payload={"n": 3})
    jobs = finished_jobs(limiter_server, transaction_id, 2)
    assert jobs["throttle"].status == "skipped"
    assert jobs["throttle"].details[-1] == "Throttle limit exceeded"
    assert jobs["inbox"].status == "skipped"
    assert messages_of(limiter_server, transaction_id) == []
    output = throttle_output(limiter_server, transaction_id)
    assert output["throttled"] is True
    assert output["executionCount"] == 2
    assert output["threshold"] == 2
    until = parse_instant(output["throttledUntil"])
    now = dt.datetime.now(dt.UTC)
    assert now < until <= now + dt.timedelta(seconds=SHORT_WINDOW_SECONDS)

    # Nothing marks the end of the window except the clock, so wait for the instant the step reported.
    time.sleep(max(0.0, (until - dt.datetime.now(dt.UTC)).total_seconds()) + 0.2)
    throttle_status, inbox_status, transaction_id = run_statuses(
        limiter_server, api, "capped", "ann", {"n": 4}
    )
    assert (throttle_status, inbox_status) == ("completed", "completed")
    assert throttle_output(limiter_server, transaction_id)["executionCount"] == 1


def test_throttle_key_payload_path(limiter_server: ServerProcess, api: httpx.Client) -> None:
    throttled_workflow(api, "per-group", **LONG_WINDOW, throttleKey="payload.group")
    runs = [
        ("ann", {"group": "a"}, "completed"),
        ("ann", {"group": "b"}, "completed"),
        ("ann", {"group": "a"}, "skipped"),
        # Another subscriber has windows of its own.
        ("bob", {"group": "a"}, "completed"),
        # Runs without the key's value share one window per subscriber.
        ("ann", {}, "completed"),
        ("ann", {"other": 1}, "skipped"),
    ]
    for to, payload, expected in runs:
        throttle_status, inbox_status, _ = run_statuses(limiter_server, api, "per-group", to, payload)
        assert throttle_status == expected, (to, payload)
        assert inbox_status == expected, (to, payload)


def test_throttle_key_template(limiter_server: ServerProcess, api: httpx.Client) -> None:
    throttled_workflow(api, "per-team", **LONG_WINDOW, throttleKey="{{ payload.team }}-{{ payload.kind }}")
    runs = [
        ({"team": "x", "kind": "alert"}, "completed"),
        ({"team": "y", "kind": "alert"}, "completed"),
        ({"team": "x", "kind": "alert"}, "skipped"),
        ({"team": "x", "kind": "digest"}, "completed"),
    ]
    for payload, expected in runs:
        throttle_status, _, _ = run_statuses(limiter_server, api, "per-team", "ann", payload)
        assert throttle_status == expected, payload


def test_dynamic_window_timestamp(limiter_server: ServerProcess, api: httpx.Client) -> None:
    throttled_workflow(api, "until", type="dynamic", dynamicKey="payload.until")
    end = (dt.datetime.now(dt.UTC) + dt.timedelta(minutes=2)).replace(microsecond=0)
    payload = {"until": end.isoformat().replace("+00:00", "Z")}
    assert run_statuses(limiter_server, api, "until", "ann", payload)[0] == "completed"

    throttle_status, _, transaction_id = run_statuses(limiter_server, api, "until", "ann", payload)
    assert throttle_status == "skipped"
    until = parse_instant(throttle_output(limiter_server, transaction_id)["throttledUntil"])
    assert abs((until - end).total_seconds()) < 2


def test_dynamic_window_duration(limiter_server: ServerProcess, api: httpx.Client) -> None:
    throttled_workflow(api, "for-a-while", type="dynamic", dynamicKey="window", threshold=1)
    payload = {"window": {"amount": 2, "unit": "minutes"}}
    started = dt.datetime.now(dt.UTC)
    assert run_statuses(limiter_server, api, "for-a-while", "ann", payload)[0] == "completed"

    throttle_status, _, transaction_id = run_statuses(limiter_server, api, "for-a-while", "ann", payload)
    assert throttle_status == "skipped"
    until = parse_instant(throttle_output(limiter_server, transaction_id)["throttledUntil"])
    assert started + dt.timedelta(seconds=110) < until < dt.datetime.now(dt.UTC) + dt.timedelta(minutes=2)


@pytest.mark.parametrize(
    ("workflow_id", "payload", "message"),
    [
        ("past", {"until": "2020-01-01T00:00:00Z"}, "Throttle window in the past"),
        ("not-a-time", {"until": "next tuesday"}, "is not an ISO 8601 timestamp"),
        ("missing", {}, "expected an ISO 8601 timestamp or {amount, unit}, got null"),
        ("bad-unit", {"until": {"amount": 1, "unit": "weeks"}}, "unit must be one of"),
    ],
)
def test_dynamic_window_invalid_fails(
    limiter_server: ServerProcess, api: httpx.Client, workflow_id: str, payload: dict[str, Any], message: str
) -> None:
    throttled_workflow(api, workflow_id, type="dynamic", dynamicKey="until")
    transaction_id = trigger(api, workflow_id, "ann", payload=payload)
    jobs = finished_jobs(limiter_server, transaction_id, 2)
    assert jobs["throttle"].status == "failed"
    assert jobs["throttle"].error is not None
    assert message in jobs["throttle"].error
    # A throttle that could not decide cancels the steps after it rather than letting them run unthrottled.
    assert jobs["inbox"].status == "canceled"


def with_throttle(**controls: Any) -> dict[str, Any]:
    return {
        "name": "Bad throttle",
        "workflowId": "bad-throttle",
        "steps": [{"name": "Throttle", "type": "throttle", "controlValues": controls}],
    }


@pytest.mark.parametrize(
    ("controls", "fields"),
    [
        pytest.param({"type": "sliding", **LONG_WINDOW}, ["type"], id="type"),
        pytest.param({"unit": "minutes"}, ["amount"], id="amount-missing"),
        pytest.param({"amount": 5}, ["unit"], id="unit-missing"),
        pytest.param({"amount": -1, "unit": "minutes"}, ["amount"], id="amount-negative"),
        pytest.param({"amount": "5", "unit": "minutes"}, ["amount"], id="amount-string"),
        pytest.param({"amount": 1, "unit": "weeks"}, ["unit"], id="unit-weeks"),
        pytest.param({**LONG_WINDOW, "threshold": 0}, ["threshold"], id="threshold-zero"),
        pytest.param({**LONG_WINDOW, "threshold": 1.5}, ["threshold"], id="threshold-fraction"),
        pytest.param({**LONG_WINDOW, "threshold": "2"}, ["threshold"], id="threshold-string"),
        pytest.param({**LONG_WINDOW, "threshold": 10**30}, ["threshold"], id="threshold-huge"),
        pytest.param({"amount": 10**12, "unit": "days"}, ["amount"], id="amount-past-ten-years"),
        pytest.param({"type": "dynamic"}, ["dynamicKey"], id="dynamic-without-key"),
        pytest.param({**LONG_WINDOW, "throttleKey": 5}, ["throttleKey"], id="key-number"),
        pytest.param({**LONG_WINDOW, "throttleKey": "{{ payload.x "}, ["throttleKey"], id="key-template"),
        pytest.param({"amount": 0, "unit": "days", "threshold": -2}, ["amount", "threshold"], id="several"),
    ],
)
def test_invalid_controls_rejected(
    shared_api: httpx.Client, controls: dict[str, Any], fields: list[str]
) -> None:
    response = shared_api.post("/v2/workflows", json=with_throttle(**controls))
    assert response.status_code == 400, response.text
    reported = [entry["field"] for entry in response.json()["errors"]]
    assert reported == [f"steps[0].controlValues.{field}" for field in fields]
    assert shared_api.get("/v2/workflows/bad-throttle").status_code == 404


def test_redis_error_retries_job(tmp_path: Path) -> None:
    """A limiter call that Redis rejects fails the throttle's attempt, and the retry passes.

    The queues use the same Redis, so stopping it would stop the job from running at all.
    Denying the scripting commands by ACL fails only the limiter's script calls.
    """
    redis_process = RedisProcess(tmp_path).start()
    server = start_server(tmp_path, env={"NOVULITE_REDIS_URL": redis_process.url})
    admin = redis_process.client()
    try:
        with api_client(server) as api:
            throttled_workflow(api, "outage", **LONG_WINDOW)
            admin.acl_setuser("default", enabled=True, commands=["-evalsha", "-eval"], reset_keys=False)
            transaction_id = trigger(api, "outage", "ann", payload={"n": 1})
            poll(
                lambda: query(
                    server,
                    "SELECT id FROM job "
                    "WHERE transaction_id = ? AND step_id = 'throttle' AND error IS NOT NULL",
                    (transaction_id,),
                ),
                bool,
                "the throttle's first attempt to fail",
            )
            admin.acl_setuser("default", enabled=True, commands=["+evalsha", "+eval"], reset_keys=False)
            jobs = finished_jobs(server, transaction_id, 2)
        assert jobs["throttle"].status == "completed"
        assert "Attempt 1 failed; retrying" in jobs["throttle"].details
        assert jobs["inbox"].status == "completed"
        assert len(messages_of(server, transaction_id)) == 1
    finally:
        admin.close()
        server.stop()
        redis_process.stop()
