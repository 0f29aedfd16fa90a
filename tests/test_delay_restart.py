"""Delays across a stopped server, and instants that ignore the server's own timezone."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import api_client, start_server
from tests.delays import INBOX, WAIT, cancel, db_time, delay_jobs, delay_workflow, wait_delayed
from tests.helpers import poll
from tests.pipeline import finished_jobs, query, trigger
from tests.servers import ServerProcess

# How long past the due time the server stays down.
DOWNTIME_AFTER_DUE_SECONDS = 1.0


def queues_idle(server: ServerProcess) -> bool:
    health = httpx.get(f"{server.base_url}/v1/health-check", timeout=5).json()
    return all(count == 0 for count in health["info"]["queues"]["pending"].values())


@pytest.mark.parametrize("stop", ["sigterm", "sigkill"])
def test_delay_due_during_downtime_runs_once(tmp_path: Path, stop: str) -> None:
    server = start_server(tmp_path)
    try:
        with api_client(server) as api:
            delay_workflow(api, "restart", {"amount": 2, "unit": "seconds"})
            transaction_id = trigger(api, "restart", "delay-restart")
        (job,) = wait_delayed(server, transaction_id)
        if stop == "sigterm":
            server.terminate()
        else:
            server.kill()
    finally:
        server.stop()
    due = db_time(job["run_at"])
    assert dt.datetime.now(dt.UTC) < due, "the server stopped after the due time; the machine is too slow"

    # Nothing runs while the server is down, so there is no event to await.
    time.sleep((due - dt.datetime.now(dt.UTC)).total_seconds() + DOWNTIME_AFTER_DUE_SECONDS)
    (still,) = delay_jobs(server, transaction_id)
    assert still["status"] == "delayed"
    assert still["messages"] == 0

    restarted = start_server(tmp_path)
    try:
        jobs = finished_jobs(restarted, transaction_id, 2)
        poll(lambda: queues_idle(restarted), bool, "the queues to drain")
        assert jobs[WAIT].status == "completed"
        assert jobs[WAIT].details.count("Delay finished") == 1
        assert jobs[INBOX].status == "completed"
        messages = query(restarted, "SELECT job_id FROM message WHERE transaction_id = ?", (transaction_id,))
        assert len(messages) == 1
        (done,) = delay_jobs(restarted, transaction_id)
        assert db_time(done["run_at"]) == due
        assert db_time(done["updated_at"]) > due
    finally:
        restarted.stop()


def test_server_timezone_changes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Chatham Islands time is UTC+13:45 in December: any local-time slip would move run_at by hours.
    monkeypatch.setenv("TZ", "Pacific/Chatham")
    server = start_server(tmp_path)
    try:
        with api_client(server) as api:
            delay_workflow(api, "tz-regular", {"amount": 1, "unit": "hours"})
            delay_workflow(api, "tz-timed", {"type": "timed", "cron": "0 9 * * *"})
            delay_workflow(api, "tz-dynamic", {"type": "dynamic", "dynamicKey": "payload.sendAt"})
            before = dt.datetime.now(dt.UTC)
            regular = trigger(api, "tz-regular", "tz-utc")
            timed = trigger(api, "tz-timed", "tz-utc")
            send_at = (before + dt.timedelta(days=2)).replace(microsecond=0)
            naive = trigger(
                api, "tz-dynamic", "tz-utc", payload={"sendAt": send_at.replace(tzinfo=None).isoformat()}
            )
            kolkata = trigger(
                api,
                "tz-dynamic",
                {"subscriberId": "tz-kolkata", "timezone": "Asia/Kolkata"},
                payload={"sendAt": "2030-06-01T09:00:00"},
            )

            (regular_job,) = wait_delayed(server, regular)
            after = dt.datetime.now(dt.UTC)
            started = db_time(regular_job["updated_at"])
            assert before <= started <= after
            assert db_time(regular_job["run_at"]) - started == dt.timedelta(hours=1)

            (timed_job,) = wait_delayed(server, timed)
            nine = dt.datetime.combine(db_time(timed_job["updated_at"]).date(), dt.time(9), tzinfo=dt.UTC)
            expected = nine if nine > db_time(timed_job["updated_at"]) else nine + dt.timedelta(days=1)
            assert db_time(timed_job["run_at"]) == expected

            (naive_job,) = wait_delayed(server, naive)
            assert db_time(naive_job["run_at"]) == send_at

            (kolkata_job,) = wait_delayed(server, kolkata)
            assert db_time(kolkata_job["run_at"]) == dt.datetime(2030, 6, 1, 3, 30, tzinfo=dt.UTC)

            for transaction_id in (regular, timed, naive, kolkata):
                assert cancel(api, transaction_id) == {"data": True}
    finally:
        server.stop()
