"""Small helpers shared by the tests: workflows, inbox sessions and socket frames."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from typing import Any

import httpx
import websockets

from tests.servers import API_KEY, APP_ID


def subscriber_hash(subscriber_id: str, key: str = API_KEY) -> str:
    return hmac.new(key.encode(), subscriber_id.encode(), hashlib.sha256).hexdigest()


def in_app_workflow(
    workflow_id: str, body: str = "Hello {{ subscriber.firstName }}: {{ payload.text }}"
) -> dict[str, Any]:
    return {
        "name": f"Workflow {workflow_id}",
        "workflowId": workflow_id,
        "steps": [
            {
                "name": "Inbox",
                "type": "in_app",
                "controlValues": {"subject": "Subject {{ payload.text }}", "body": body},
            }
        ],
    }


def create_workflow(api: httpx.Client, workflow_id: str, **kwargs: Any) -> dict[str, Any]:
    response = api.post("/v2/workflows", json=in_app_workflow(workflow_id, **kwargs))
    assert response.status_code == 201, response.text
    return response.json()["data"]  # type: ignore[no-any-return]


def open_session(base_url: str, subscriber_id: str) -> dict[str, Any]:
    response = httpx.post(
        f"{base_url}/v1/inbox/session",
        json={
            "applicationIdentifier": APP_ID,
            "subscriber": {"subscriberId": subscriber_id},
            "subscriberHash": subscriber_hash(subscriber_id),
        },
        timeout=10,
    )
    assert response.status_code == 201, response.text
    return response.json()["data"]  # type: ignore[no-any-return]


async def next_frame(
    socket: websockets.ClientConnection, event: str, timeout: float = 10.0
) -> dict[str, Any]:
    """Return the data of the next frame named `event`, skipping others."""
    async with asyncio.timeout(timeout):
        while True:
            frame = json.loads(await socket.recv())
            if frame["event"] == event:
                return frame["data"]  # type: ignore[no-any-return]
