"""Small helpers shared by the tests: workflows, inbox sessions and socket frames."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import hmac
import json
import re
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import httpx
import websockets

from tests.servers import ADMIN_PASSWORD, API_KEY, APP_ID, ServerProcess
from tests.stores import Database, read_rows, write_rows

T = TypeVar("T")


def subscriber_hash(subscriber_id: str, key: str = API_KEY) -> str:
    return hmac.new(key.encode(), subscriber_id.encode(), hashlib.sha256).hexdigest()


def context_hash(context: dict[str, Any], key: str = API_KEY) -> str:
    """Return the contextHash for a context whose strings need no escaping beyond JSON's own."""
    canonical = json.dumps(context, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hmac.new(key.encode(), canonical.encode(), hashlib.sha256).hexdigest()


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


def poll(fetch: Callable[[], T], ready: Callable[[T], bool], description: str, timeout: float = 10.0) -> T:
    """Call `fetch` until `ready` accepts its result and return that result; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = fetch()
        if ready(result):
            return result
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {description}"
        time.sleep(0.02)


def store_topic_subscription(
    database: Database, environment_id: str, subscriber_pk: str, topic_key: str
) -> tuple[str, str]:
    """Insert a topic and the subscriber's subscription to it straight into the job store.

    Returns the topic's pk and the subscription's pk, both fixed per topic key.
    """
    topic_pk = hashlib.sha256(f"topic:{topic_key}".encode()).hexdigest()[:24]
    subscription_pk = hashlib.sha256(f"subscription:{topic_key}".encode()).hexdigest()[:24]
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None).isoformat(sep=" ")
    write_rows(
        database,
        [
            (
                "INSERT INTO topic (id, environment_id, key, name, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (topic_pk, environment_id, topic_key, topic_key, now, now),
            ),
            (
                "INSERT INTO topic_subscription (id, environment_id, topic_pk, subscriber_pk, identifier, "
                "context_keys, created_at, updated_at) VALUES (?, ?, ?, ?, ?, '[]', ?, ?)",
                (
                    subscription_pk,
                    environment_id,
                    topic_pk,
                    subscriber_pk,
                    f"tk_{topic_key}:{subscriber_pk}",
                    now,
                    now,
                ),
            ),
        ],
    )
    return topic_pk, subscription_pk


def pipeline_busy(database: Database) -> int:
    """Count triggers, notifications and jobs the pipeline has yet to finish; 0 once it has settled."""
    (row,) = read_rows(
        database,
        "SELECT (SELECT count(*) FROM trigger_event WHERE status = 'received')"
        " + (SELECT count(*) FROM notification WHERE expansion = 'pending')"
        " + (SELECT count(*) FROM job WHERE status IN ('pending', 'queued', 'running'))",
    )
    return int(row[0])


def wait_settled(database: Database, timeout: float) -> None:
    """Wait until the pipeline has no trigger, notification or job left to process."""
    poll(lambda: pipeline_busy(database), lambda busy: busy == 0, "the pipeline to settle", timeout)


def inbox_messages(base_url: str, token: str) -> list[dict[str, Any]]:
    """Return the newest 100 notifications of an inbox session, newest first."""
    response = httpx.get(
        f"{base_url}/v1/inbox/notifications",
        params={"limit": 100},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return response.json()["data"]  # type: ignore[no-any-return]


@contextlib.contextmanager
def admin_session(base_url: str) -> Iterator[httpx.Client]:
    """Yield a client signed in to the admin UI through its form, CSRF token included."""
    with httpx.Client(base_url=base_url, timeout=10) as client:
        form = client.get("/admin/login")
        match = re.search(r'name="_csrf_token" value="([^"]+)"', form.text)
        assert match, "the sign-in form has no CSRF token"
        response = client.post(
            "/admin/login",
            data={"_csrf_token": match.group(1), "username": "admin", "password": ADMIN_PASSWORD},
        )
        assert response.status_code == 303, response.text
        yield client


async def send_and_kill(server: ServerProcess, bodies: list[dict[str, Any]], kill_after: int) -> set[str]:
    """Send the trigger bodies concurrently and SIGKILL the server once `kill_after` were acknowledged.

    Returns the transaction ids of the acknowledged triggers.
    """
    acknowledged: set[str] = set()
    enough = asyncio.Event()

    async def send(client: httpx.AsyncClient, body: dict[str, Any]) -> None:
        try:
            response = await client.post("/v1/events/trigger", json=body)
        except httpx.TransportError:
            return
        if response.status_code == 201:
            acknowledged.add(body["transactionId"])
        if len(acknowledged) >= kill_after:
            enough.set()

    limits = httpx.Limits(max_connections=len(bodies))
    headers = {"Authorization": f"ApiKey {API_KEY}"}
    async with httpx.AsyncClient(
        base_url=server.base_url, headers=headers, timeout=10, limits=limits
    ) as client:
        tasks = [asyncio.create_task(send(client, body)) for body in bodies]
        finished_sending = asyncio.create_task(asyncio.wait(tasks))
        await asyncio.wait(
            {finished_sending, asyncio.create_task(enough.wait())}, return_when=asyncio.FIRST_COMPLETED
        )
        server.kill()
        await finished_sending
    return set(acknowledged)
