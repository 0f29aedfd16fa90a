"""A server shared by a test module, triggers, and job outcomes read from the database file.

No API exposes jobs yet, so these helpers open the SQLite file read-only, and wait
with a deadline until every job of a transaction has finished.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import ServerMode, start_server
from tests.servers import API_KEY, ServerProcess
from tests.stores import Row, read_rows

FINAL_STATUSES = ("completed", "failed", "skipped", "canceled", "merged")


def server_fixtures() -> tuple[Any, Any]:
    """Return the fixtures `module_server`, one server for a whole module, and `api`, a client for it.

    Assign both in a test module whose tests do not interfere, to start one server instead of one per test.
    """

    @pytest.fixture(scope="module")
    def module_server(
        tmp_path_factory: pytest.TempPathFactory, server_mode: ServerMode
    ) -> Iterator[ServerProcess]:
        process = start_server(tmp_path_factory.mktemp("module"), mode=server_mode)
        yield process
        process.stop()

    @pytest.fixture
    def api(module_server: ServerProcess) -> Iterator[httpx.Client]:
        with httpx.Client(
            base_url=module_server.base_url, headers={"Authorization": f"ApiKey {API_KEY}"}, timeout=10
        ) as client:
            yield client

    return module_server, api


@dataclasses.dataclass(frozen=True)
class JobOutcome:
    step_id: str
    status: str
    # The execution details' texts, oldest first.
    details: list[str]
    error: str | None

    @property
    def last_detail(self) -> str:
        return self.details[-1] if self.details else ""


def trigger(api: httpx.Client, workflow_id: str, to: Any, **fields: Any) -> str:
    """Trigger a workflow and return its transactionId."""
    response = api.post("/v1/events/trigger", json={"name": workflow_id, "to": to, **fields})
    assert response.status_code == 201, response.text
    return str(response.json()["data"]["transactionId"])


def query(server: ServerProcess, sql: str, parameters: tuple[Any, ...] = ()) -> list[Row]:
    """Run one read-only query on the server's job store; rows read by position or by column name."""
    return read_rows(server.database, sql, parameters)


def _read(server: ServerProcess, transaction_id: str) -> list[JobOutcome]:
    jobs = query(
        server,
        "SELECT id, step_id, status, error FROM job WHERE transaction_id = ? ORDER BY position",
        (transaction_id,),
    )
    details = query(
        server,
        "SELECT d.job_id, d.detail FROM execution_detail d JOIN job j ON j.id = d.job_id "
        "WHERE j.transaction_id = ? ORDER BY d.created_at, d.id",
        (transaction_id,),
    )
    return [
        JobOutcome(
            job["step_id"],
            job["status"],
            [row["detail"] for row in details if row["job_id"] == job["id"]],
            json.loads(job["error"]).get("message") if job["error"] else None,
        )
        for job in jobs
    ]


def finished_jobs(
    server: ServerProcess, transaction_id: str, count: int, timeout: float = 15.0
) -> dict[str, JobOutcome]:
    """Wait until the transaction has `count` jobs, all finished; return them by stepId."""
    deadline = time.monotonic() + timeout
    while True:
        outcomes = _read(server, transaction_id)
        if len(outcomes) == count and all(outcome.status in FINAL_STATUSES for outcome in outcomes):
            return {outcome.step_id: outcome for outcome in outcomes}
        assert time.monotonic() < deadline, (
            f"jobs of {transaction_id} did not finish in {timeout} s: {outcomes}"
        )
        time.sleep(0.05)


def messages_of(server: ServerProcess, transaction_id: str) -> list[dict[str, Any]]:
    """Return the transaction's messages: channel, subject, content, avatar, data and cta."""
    rows = query(
        server,
        "SELECT channel, subject, content, avatar, data, cta FROM message WHERE transaction_id = ?",
        (transaction_id,),
    )
    return [dict(row) for row in rows]
