"""Helpers for the delay step's tests: workflows with a delay, and delay jobs read from the SQLite file."""

from __future__ import annotations

import datetime as dt
from typing import Any

import httpx

from tests.helpers import poll
from tests.pipeline import query
from tests.servers import ServerProcess
from tests.stores import Row

# stepIds of the steps delay_workflow creates.
WAIT = "wait"
INBOX = "inbox"


def delay_workflow(
    api: httpx.Client, workflow_id: str, controls: dict[str, Any], body: str = "Delivered", *extra: Any
) -> None:
    """Create a workflow of a delay step `wait`, an in-app step `inbox` with `body`, then `extra` steps."""
    steps = [
        {"name": "Wait", "stepId": WAIT, "type": "delay", "controlValues": controls},
        {"name": "Inbox", "stepId": INBOX, "type": "in_app", "controlValues": {"body": body}},
        *extra,
    ]
    response = api.post(
        "/v2/workflows", json={"name": f"Workflow {workflow_id}", "workflowId": workflow_id, "steps": steps}
    )
    assert response.status_code == 201, response.text


def db_time(text: str) -> dt.datetime:
    """Read a datetime as the job store writes it: UTC without an offset."""
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)


def delay_jobs(server: ServerProcess, transaction_id: str) -> list[Row]:
    """Return the transaction's delay jobs, each with the count of the transaction's messages.

    One statement reads both, so a job seen `delayed` and the message count come from
    the same snapshot of the database.
    """
    return query(
        server,
        "SELECT j.id, j.status, j.run_at, j.updated_at, j.output, "
        "(SELECT count(*) FROM message m WHERE m.transaction_id = j.transaction_id) AS messages "
        "FROM job j WHERE j.transaction_id = ? AND j.type = 'delay' ORDER BY j.id",
        (transaction_id,),
    )


def wait_delayed(server: ServerProcess, transaction_id: str, count: int = 1) -> list[Row]:
    """Wait until the transaction has `count` delay jobs, all `delayed`; return them."""
    return poll(
        lambda: delay_jobs(server, transaction_id),
        lambda rows: len(rows) == count and all(row["status"] == "delayed" for row in rows),
        f"{count} delayed jobs in {transaction_id}",
    )


def cancel(api: httpx.Client, transaction_id: str) -> Any:
    response = api.delete(f"/v1/events/trigger/{transaction_id}")
    assert response.status_code == 200, response.text
    return response.json()
