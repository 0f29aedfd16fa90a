"""Repeated requests: transactionId on triggers and the Idempotency-Key header on POST and PATCH."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.conftest import api_client, start_server
from tests.helpers import in_app_workflow
from tests.servers import ServerProcess


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = start_server(tmp_path_factory.mktemp("idempotency"))
    with api_client(process) as api:
        assert api.post("/v2/workflows", json=in_app_workflow("ping")).status_code == 201
    yield process
    process.stop()


@pytest.fixture
def client(keyed_server: ServerProcess) -> Iterator[httpx.Client]:
    with api_client(keyed_server) as api:
        yield api


def count_rows(server: ServerProcess, sql: str, *parameters: str) -> int:
    database = Path(server.data_dir) / "novulite.db"
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as connection:
        return int(connection.execute(sql, parameters).fetchone()[0])


def trigger_body(subscriber_id: str, **extra: object) -> dict[str, object]:
    return {"name": "ping", "to": subscriber_id, "payload": {"n": 1}, **extra}


def test_repeated_transaction_id_stores_nothing(client: httpx.Client, keyed_server: ServerProcess) -> None:
    body = trigger_body("tx-sub", transactionId="tx-repeat-1")
    first = client.post("/v1/events/trigger", json=body)
    second = client.post("/v1/events/trigger", json=body)

    assert first.status_code == 201
    assert first.json()["data"]["status"] == "processed"
    assert second.status_code == 201
    assert second.json()["data"]["status"] == "error"
    assert "already used" in second.json()["data"]["error"][0]
    count_sql = "SELECT count(*) FROM trigger_event WHERE transaction_id = ?"
    assert count_rows(keyed_server, count_sql, "tx-repeat-1") == 1


def test_trigger_key_replays_first_response(client: httpx.Client, keyed_server: ServerProcess) -> None:
    body = trigger_body("key-sub")
    headers = {"Idempotency-Key": "trigger-key-1"}
    first = client.post("/v1/events/trigger", json=body, headers=headers)
    second = client.post("/v1/events/trigger", json=body, headers=headers)

    assert first.status_code == 201
    assert first.headers["idempotency-key"] == "trigger-key-1"
    assert "idempotency-replay" not in first.headers
    assert second.status_code == 201
    assert second.headers["idempotency-replay"] == "true"
    assert second.json() == first.json()
    transaction_id = first.json()["data"]["transactionId"]
    count_sql = "SELECT count(*) FROM trigger_event WHERE transaction_id = ?"
    assert count_rows(keyed_server, count_sql, transaction_id) == 1


def test_trigger_key_with_other_body_is_422(client: httpx.Client, keyed_server: ServerProcess) -> None:
    headers = {"Idempotency-Key": "trigger-key-2"}
    assert client.post("/v1/events/trigger", json=trigger_body("a-sub"), headers=headers).status_code == 201
    before = count_rows(keyed_server, "SELECT count(*) FROM trigger_event")

    reused = client.post("/v1/events/trigger", json=trigger_body("b-sub"), headers=headers)

    assert reused.status_code == 422
    assert "Idempotency-Key" in reused.json()["errors"]
    assert count_rows(keyed_server, "SELECT count(*) FROM trigger_event") == before


def test_overlong_key_is_400(client: httpx.Client) -> None:
    headers = {"Idempotency-Key": "k" * 256}
    for path, body in [("/v1/events/trigger", trigger_body("long-key")), ("/v2/workflows", {})]:
        response = client.post(path, json=body, headers=headers)
        assert response.status_code == 400, path
        assert "Idempotency-Key" in response.json()["message"], path


def test_workflow_create_key_replays(client: httpx.Client, keyed_server: ServerProcess) -> None:
    headers = {"Idempotency-Key": "workflow-key-1"}
    body = in_app_workflow("replayed-workflow")
    first = client.post("/v2/workflows", json=body, headers=headers)
    second = client.post("/v2/workflows", json=body, headers=headers)

    assert first.status_code == 201
    assert second.status_code == 201
    assert second.headers["idempotency-replay"] == "true"
    assert second.json() == first.json()
    count_sql = "SELECT count(*) FROM workflow WHERE workflow_id = ?"
    assert count_rows(keyed_server, count_sql, "replayed-workflow") == 1


def test_workflow_key_with_other_body_is_422(client: httpx.Client) -> None:
    headers = {"Idempotency-Key": "workflow-key-2"}
    assert client.post("/v2/workflows", json=in_app_workflow("wf-a"), headers=headers).status_code == 201

    reused = client.post("/v2/workflows", json=in_app_workflow("wf-b"), headers=headers)

    assert reused.status_code == 422
    assert reused.json()["path"] == "/v2/workflows"
    assert client.get("/v2/workflows/wf-b").status_code == 404


def test_client_error_is_replayed(client: httpx.Client) -> None:
    headers = {"Idempotency-Key": "bad-workflow-key"}
    first = client.post("/v2/workflows", json={"name": "no steps"}, headers=headers)
    second = client.post("/v2/workflows", json={"name": "no steps"}, headers=headers)

    assert first.status_code == 400
    assert second.status_code == 400
    assert second.headers["idempotency-replay"] == "true"
    assert second.json()["errors"] == first.json()["errors"]


def test_concurrent_repeats_create_one_workflow(client: httpx.Client, keyed_server: ServerProcess) -> None:
    headers = {"Idempotency-Key": "concurrent-key"}
    body = in_app_workflow("concurrent-workflow")
    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(
            pool.map(lambda _: client.post("/v2/workflows", json=body, headers=headers).status_code, range(8))
        )

    # Each repeat gets the stored 201 or, while the first still runs, a 409 to retry.
    assert set(statuses) <= {201, 409}
    assert 201 in statuses
    count_sql = "SELECT count(*) FROM workflow WHERE workflow_id = ?"
    assert count_rows(keyed_server, count_sql, "concurrent-workflow") == 1


def test_concurrent_trigger_repeats_replay(client: httpx.Client, keyed_server: ServerProcess) -> None:
    headers = {"Idempotency-Key": "concurrent-trigger-key"}
    body = trigger_body("concurrent-sub")
    with ThreadPoolExecutor(max_workers=8) as pool:
        responses = list(
            pool.map(lambda _: client.post("/v1/events/trigger", json=body, headers=headers), range(16))
        )

    assert [response.status_code for response in responses] == [201] * 16
    assert len({response.json()["data"]["transactionId"] for response in responses}) == 1
    replays = [response for response in responses if response.headers.get("idempotency-replay") == "true"]
    assert len(replays) == 15
    transaction_id = responses[0].json()["data"]["transactionId"]
    count_sql = "SELECT count(*) FROM trigger_event WHERE transaction_id = ?"
    assert count_rows(keyed_server, count_sql, transaction_id) == 1


def test_requests_without_key_never_get_409(client: httpx.Client) -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        responses = list(
            pool.map(lambda i: client.post("/v1/events/trigger", json=trigger_body(f"plain-{i}")), range(16))
        )
    assert [response.status_code for response in responses] == [201] * 16
    assert all("idempotency-key" not in response.headers for response in responses)
