"""Servers and triggers of a workflow whose http_request step calls a loopback stub, then an in-app step."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from tests.helpers import read_rows
from tests.servers import API_KEY, ServerProcess, free_port, server_command

SUBSCRIBER_ID = "alice"
WORKFLOW_ID = "held-call"


def held_server(
    root: Path, name: str, args: list[str] | None = None, env: dict[str, str] | None = None
) -> ServerProcess:
    """Return a server on the data directory under `root` that may call the loopback stub."""
    return ServerProcess(
        data_dir=root / "data",
        port=free_port(),
        command=server_command(),
        log_path=root / f"{name}.log",
        args=list(args or []),
        env={"NOVULITE_OUTBOUND_ALLOW": "127.0.0.1", **(env or {})},
    )


def create_held_workflow(server: ServerProcess, url: str) -> None:
    workflow = {
        "name": "Held call",
        "workflowId": WORKFLOW_ID,
        "steps": [
            {
                "name": "Call",
                "stepId": "call",
                "type": "http_request",
                "controlValues": {"method": "POST", "url": url, "body": {"n": 1}},
            },
            {"name": "Inbox", "stepId": "inbox", "type": "in_app", "controlValues": {"body": "done"}},
        ],
    }
    with httpx.Client(base_url=server.base_url, headers={"Authorization": f"ApiKey {API_KEY}"}) as api:
        assert api.post("/v2/workflows", json=workflow).status_code == 201


def trigger(server: ServerProcess) -> str:
    response = httpx.post(
        f"{server.base_url}/v1/events/trigger",
        json={"name": WORKFLOW_ID, "to": SUBSCRIBER_ID},
        headers={"Authorization": f"ApiKey {API_KEY}"},
        timeout=10,
    )
    assert response.status_code == 201, response.text
    return str(response.json()["data"]["transactionId"])


def jobs(server: ServerProcess, transaction_id: str) -> list[tuple[Any, ...]]:
    return read_rows(
        server.data_dir / "novulite.db",
        "SELECT step_id, status, attempt FROM job WHERE transaction_id = ? ORDER BY position",
        (transaction_id,),
    )


def message_count(server: ServerProcess, transaction_id: str) -> int:
    rows = read_rows(
        server.data_dir / "novulite.db",
        "SELECT count(*) FROM message WHERE transaction_id = ?",
        (transaction_id,),
    )
    return int(rows[0][0])
