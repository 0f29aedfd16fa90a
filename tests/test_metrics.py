"""GET /metrics: Prometheus text with job, queue, delivery, request and socket metrics.

The chat steps post to a loopback stub, reached because the server runs with
NOVULITE_OUTBOUND_ALLOW=127.0.0.1.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import start_server
from tests.helpers import create_workflow, open_session, poll
from tests.http_stub import HttpStub, Reply
from tests.pipeline import finished_jobs, query, trigger
from tests.servers import API_KEY, ServerProcess

QUEUES = {"trigger-handler", "process-subscriber", "standard", "ws_socket_queue", "metric-active-jobs"}
# Seconds between metric-active-jobs passes in these tests' server (the reconciler's interval).
RECORD_INTERVAL = "0.2"

_numbers = itertools.count()


def unique(prefix: str) -> str:
    return f"{prefix}-{next(_numbers)}"


@pytest.fixture(scope="module")
def stub() -> Iterator[HttpStub]:
    server = HttpStub().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = start_server(
        tmp_path_factory.mktemp("metrics"),
        env={"NOVULITE_OUTBOUND_ALLOW": "127.0.0.1", "NOVULITE_RECONCILE_INTERVAL": RECORD_INTERVAL},
    )
    yield process
    process.stop()


@pytest.fixture
def api(server: ServerProcess) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"ApiKey {API_KEY}"}
    with httpx.Client(base_url=server.base_url, headers=headers, timeout=10) as client:
        yield client


def scrape(server: ServerProcess) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Fetch /metrics without credentials; return each sample's value by name and sorted labels."""
    response = httpx.get(f"{server.base_url}/metrics", timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    """Return one sample's value, or 0 for a series that has not appeared yet."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def chat_workflow(api: httpx.Client, stub: HttpStub, provider_id: str, path: str, **controls: Any) -> str:
    """Create a chat integration posting to the stub at `path` and a one-step chat workflow using it."""
    identifier = unique(provider_id)
    integration = {
        "providerId": provider_id,
        "channel": "chat",
        "identifier": identifier,
        "active": True,
        "credentials": {"webhookUrl": stub.url(path)},
    }
    response = api.post("/v1/integrations", json=integration)
    assert response.status_code == 201, response.text
    workflow_id = unique("chat")
    step = {
        "name": "Chat",
        "stepId": "chat",
        "type": "chat",
        "controlValues": {
            "body": "Order {{ payload.name }}",
            "integrationIdentifier": identifier,
            **controls,
        },
    }
    response = api.post(
        "/v2/workflows", json={"name": workflow_id, "workflowId": workflow_id, "steps": [step]}
    )
    assert response.status_code == 201, response.text
    return workflow_id


def create_subscriber(api: httpx.Client) -> str:
    subscriber_id = unique("sub")
    response = api.post("/v2/subscribers", json={"subscriberId": subscriber_id})
    assert response.status_code == 201, response.text
    return subscriber_id


def test_delivery_counters(api: httpx.Client, server: ServerProcess, stub: HttpStub) -> None:
    before = scrape(server)

    in_app_id = unique("inbox")
    create_workflow(api, in_app_id)
    in_app = trigger(api, in_app_id, create_subscriber(api), payload={"text": "x"})

    sent_path = f"/{unique('sent')}"
    stub.route(sent_path, Reply(status=200, body=b"ok"))
    sent = trigger(
        api, chat_workflow(api, stub, "mattermost", sent_path), create_subscriber(api), payload={"name": "a"}
    )

    # Two transient failures with maxAttempts 2: one final failure, which counts once.
    busy_path = f"/{unique('busy')}"
    busy = Reply(status=503, body={"error": "busy"}, headers={"Retry-After": "0"})
    stub.route(busy_path, busy, busy)
    failed = trigger(
        api,
        chat_workflow(api, stub, "slack", busy_path, maxAttempts=2),
        create_subscriber(api),
        payload={"name": "b"},
    )

    (in_app_job,) = finished_jobs(server, in_app, 1).values()
    assert in_app_job.status == "completed"
    assert finished_jobs(server, sent, 1)["chat"].status == "completed"
    assert finished_jobs(server, failed, 1, timeout=30)["chat"].status == "failed"
    assert len(stub.received(busy_path)) == 2

    after = scrape(server)
    deliveries = "novulite_deliveries_total"
    failures = "novulite_delivery_failures_total"
    in_app_labels = {"channel": "in_app", "provider": "none"}
    mattermost = {"channel": "chat", "provider": "mattermost"}
    slack = {"channel": "chat", "provider": "slack"}
    assert value(after, deliveries, **in_app_labels) - value(before, deliveries, **in_app_labels) == 1
    assert value(after, deliveries, **mattermost) - value(before, deliveries, **mattermost) == 1
    assert value(after, failures, **slack) - value(before, failures, **slack) == 1
    assert value(after, deliveries, **slack) == value(before, deliveries, **slack)
    assert value(after, failures, **mattermost) == value(before, failures, **mattermost)


def test_job_and_queue_gauges(api: httpx.Client, server: ServerProcess) -> None:
    workflow_id = unique("inbox")
    create_workflow(api, workflow_id)
    transaction_id = trigger(api, workflow_id, create_subscriber(api), payload={"text": "x"})
    finished_jobs(server, transaction_id, 1)

    stored = {
        row["status"]: row["count"]
        for row in query(server, "SELECT status, count(*) AS count FROM job GROUP BY status")
    }
    finished_at = time.time()

    # The gauges come from the last metric-active-jobs pass, so wait for one after the job finished.
    samples = poll(
        lambda: scrape(server),
        lambda found: found.get(("novulite_active_jobs_recorded_timestamp_seconds", ()), 0) > finished_at,
        "a metric-active-jobs pass after the job finished",
    )
    jobs = {dict(labels)["status"]: v for (name, labels), v in samples.items() if name == "novulite_jobs"}
    assert jobs == stored
    assert jobs["completed"] >= 1

    depths = {
        dict(labels)["queue"]: v for (name, labels), v in samples.items() if name == "novulite_queue_depth"
    }
    assert set(depths) == QUEUES
    assert all(depth >= 0 for depth in depths.values())


def test_open_sockets_gauge(server: ServerProcess) -> None:
    assert value(scrape(server), "novulite_open_sockets") == 0
    token = open_session(server.base_url, unique("listener"))["token"]

    async def scrape_while_open() -> float:
        async with websockets.connect(f"{server.ws_url}?token={token}") as connection:
            # The server sends the counts once it has registered the socket.
            json.loads(await asyncio.wait_for(connection.recv(), 10))
            return await asyncio.to_thread(lambda: value(scrape(server), "novulite_open_sockets"))

    assert asyncio.run(scrape_while_open()) == 1


def test_request_histogram_routes(api: httpx.Client, server: ServerProcess) -> None:
    workflow_id = unique("inbox")
    create_workflow(api, workflow_id)
    subscriber_id = create_subscriber(api)
    trigger(api, workflow_id, subscriber_id, payload={"text": "x"})
    assert api.get(f"/v2/subscribers/{subscriber_id}").status_code == 200
    assert api.get(f"/no-such-page/{unique('raw')}").status_code == 404
    # A scrape of its own, so the next one would list /metrics if the timer recorded it.
    scrape(server)

    samples = scrape(server)
    counts = {
        dict(labels)["route"]: v
        for (name, labels), v in samples.items()
        if name == "novulite_http_request_duration_seconds_count" and dict(labels)["method"] == "POST"
    }
    assert counts["/v1/events/trigger"] >= 1
    routes = {
        dict(labels)["route"]
        for (name, labels) in samples
        if name == "novulite_http_request_duration_seconds_count"
    }
    assert "/v2/subscribers/{subscriber_id}" in routes
    assert "unmatched" in routes
    assert subscriber_id not in json.dumps(sorted(routes))
    assert "/metrics" not in routes
    assert all(route.startswith("/") or route == "unmatched" for route in routes)


@pytest.mark.parametrize(
    ("args", "env"),
    [(["--no-metrics"], {}), ([], {"NOVULITE_METRICS": "false"})],
    ids=["option", "variable"],
)
def test_metrics_turned_off(tmp_path: Path, args: list[str], env: dict[str, str]) -> None:
    process = start_server(tmp_path, args=args, env=env)
    try:
        response = httpx.get(f"{process.base_url}/metrics", timeout=10)
        assert response.status_code == 404
        assert "novulite_jobs" not in response.text
    finally:
        process.stop()
