"""Rejected requests: each bad input gets its 4xx naming the field, and nothing is stored."""

from __future__ import annotations

import dataclasses
import sqlite3
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import create_workflow, subscriber_hash
from tests.servers import API_KEY, APP_ID, ServerProcess

WORKFLOW_ID = "welcome"
TRIGGER_PATH = "/v1/events/trigger"
SESSION_PATH = "/v1/inbox/session"
AUTHORIZED = {"Authorization": f"ApiKey {API_KEY}"}
PIPELINE_TABLES = ("trigger_event", "notification", "job", "message")


@dataclasses.dataclass(frozen=True)
class BadRequest:
    """One HTTP request and the rejection it must get."""

    path: str
    status: int
    field: str | None
    body: Any = None
    content: bytes | None = None
    headers: dict[str, str] = dataclasses.field(default_factory=lambda: dict(AUTHORIZED))

    def send(self, base_url: str) -> httpx.Response:
        request: dict[str, Any] = {"headers": self.headers, "timeout": 10}
        if self.content is not None:
            request["content"] = self.content
            request["headers"] = {**self.headers, "Content-Type": "application/json"}
        else:
            request["json"] = self.body
        return httpx.post(f"{base_url}{self.path}", **request)


def changed(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """Copy `base` with each of `changes` replacing a key, or dropping it when the value is None."""
    result = dict(base)
    for key, value in changes.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = value
    return result


def trigger(**changes: Any) -> dict[str, Any]:
    """Build a valid trigger body for the known workflow, then apply `changes`."""
    return changed({"name": WORKFLOW_ID, "to": "alice", "payload": {"text": "hi"}}, changes)


def session(**changes: Any) -> dict[str, Any]:
    """Build a valid inbox session body for subscriber mallory, then apply `changes`."""
    base = {
        "applicationIdentifier": APP_ID,
        "subscriber": {"subscriberId": "mallory"},
        "subscriberHash": subscriber_hash("mallory"),
    }
    return changed(base, changes)


# JSON nested this deep exhausts a recursive decoder's stack.
NESTING = 2000
DEEP_OBJECT = b'{"a":' * NESTING + b"1" + b"}" * NESTING
DEEP_TRIGGER = b'{"name": "welcome", "to": "alice", "payload": ' + DEEP_OBJECT + b"}"

CASES = [
    pytest.param(BadRequest(TRIGGER_PATH, 401, None, trigger(), headers={}), id="no-authorization"),
    pytest.param(
        BadRequest(TRIGGER_PATH, 401, None, trigger(), headers={"Authorization": "ApiKey wrong-key"}),
        id="wrong-key",
    ),
    pytest.param(
        BadRequest(TRIGGER_PATH, 401, None, trigger(), headers={"Authorization": "Basic x"}),
        id="basic-scheme",
    ),
    pytest.param(
        BadRequest(TRIGGER_PATH, 422, "name", trigger(name="no-such-workflow")), id="unknown-workflow"
    ),
    pytest.param(BadRequest(TRIGGER_PATH, 400, "to", trigger(to=None)), id="to-missing"),
    pytest.param(BadRequest(TRIGGER_PATH, 400, "to", trigger(to="")), id="to-empty"),
    pytest.param(BadRequest(TRIGGER_PATH, 400, "to", trigger(to="   ")), id="to-blank"),
    pytest.param(BadRequest(TRIGGER_PATH, 400, "to", trigger(to=[])), id="to-empty-array"),
    pytest.param(BadRequest(TRIGGER_PATH, 400, "to[1]", trigger(to=["alice", "  "])), id="to-blank-entry"),
    pytest.param(
        BadRequest(TRIGGER_PATH, 400, "to.subscriberId", trigger(to={"firstName": "Alice"})),
        id="subscriber-without-id",
    ),
    pytest.param(BadRequest(TRIGGER_PATH, 400, "payload", trigger(payload="text")), id="payload-string"),
    pytest.param(BadRequest(TRIGGER_PATH, 400, "payload", trigger(payload=["text"])), id="payload-list"),
    pytest.param(BadRequest(TRIGGER_PATH, 400, "payload", trigger(payload=42)), id="payload-number"),
    pytest.param(BadRequest(TRIGGER_PATH, 400, "body", content=b'{"name": "welcome",'), id="malformed-json"),
    pytest.param(BadRequest(TRIGGER_PATH, 400, "body", [trigger()]), id="array-body"),
    pytest.param(BadRequest(TRIGGER_PATH, 400, "body", content=DEEP_TRIGGER), id="deeply-nested-trigger"),
    pytest.param(BadRequest("/v2/workflows", 400, "body", content=DEEP_OBJECT), id="deeply-nested-workflow"),
    pytest.param(
        BadRequest("/v2/subscribers", 400, "body", content=DEEP_OBJECT), id="deeply-nested-subscriber"
    ),
    pytest.param(BadRequest(TRIGGER_PATH, 400, "to", trigger(to="al\x00ice")), id="to-control-character"),
    pytest.param(
        BadRequest(
            SESSION_PATH,
            400,
            "subscriber.subscriberId",
            session(subscriber={"subscriberId": "al\x00ice"}),
            headers={},
        ),
        id="session-subscriber-control-character",
    ),
    pytest.param(
        BadRequest(TRIGGER_PATH, 400, "context.project", trigger(context={"project": "p1,tenant:acme"})),
        id="context-id-with-comma",
    ),
    pytest.param(
        BadRequest(TRIGGER_PATH, 400, "context.a:b", trigger(context={"a:b": "x"})),
        id="context-type-with-colon",
    ),
    pytest.param(
        BadRequest(
            SESSION_PATH, 400, "context.project", session(context={"project": "p1,tenant:acme"}), headers={}
        ),
        id="session-context-id-with-comma",
    ),
    pytest.param(
        BadRequest(SESSION_PATH, 400, "context.t", session(context={"t": None}), headers={}),
        id="session-context-null-id",
    ),
    pytest.param(
        BadRequest(SESSION_PATH, 400, "context.t", session(context={"t": {"x": 1}}), headers={}),
        id="session-context-object-without-id",
    ),
    pytest.param(
        BadRequest(SESSION_PATH, 401, None, session(subscriberHash="0" * 64), headers={}),
        id="wrong-subscriber-hash",
    ),
    pytest.param(
        BadRequest(SESSION_PATH, 401, None, session(subscriberHash=None), headers={}),
        id="missing-subscriber-hash",
    ),
    pytest.param(
        BadRequest(
            SESSION_PATH, 400, "applicationIdentifier", session(applicationIdentifier="nope"), headers={}
        ),
        id="unknown-application",
    ),
    pytest.param(
        BadRequest(SESSION_PATH, 400, "applicationIdentifier", session(applicationIdentifier=5), headers={}),
        id="application-identifier-number",
    ),
]


def count_rows(database: Path, table: str) -> int:
    """Count the rows of `table`, reading the server's SQLite file without writing to it."""
    connection = sqlite3.connect(f"{database.as_uri()}?mode=ro", uri=True)
    try:
        (count,) = connection.execute(f"SELECT count(*) FROM {table}").fetchone()
    finally:
        connection.close()
    return int(count)


def assert_nothing_stored(database: Path) -> None:
    for table in PIPELINE_TABLES:
        assert count_rows(database, table) == 0, f"table {table} has rows after rejected requests"
    assert count_rows(database, "subscriber") == 0, "a rejected request created a subscriber"


def assert_rejection(response: httpx.Response, case: BadRequest) -> None:
    assert response.status_code == case.status, response.text
    body = response.json()
    assert body["statusCode"] == case.status
    if case.status == 400:
        assert isinstance(body["errors"], list)
        fields = [entry["field"] for entry in body["errors"]]
        if case.field is None:
            assert fields == []
        else:
            assert case.field in fields
        for entry in body["errors"]:
            assert isinstance(entry["message"], str)
            assert entry["message"]
    elif case.status == 422:
        assert isinstance(body["errors"], dict)
        assert case.field in body["errors"]
        messages = body["errors"][case.field]["messages"]
        assert isinstance(messages, list)
        assert messages
        assert all(isinstance(message, str) and message for message in messages)


@pytest.mark.parametrize("case", CASES)
def test_bad_input_rejected(shared_server: ServerProcess, case: BadRequest) -> None:
    response = case.send(shared_server.base_url)

    assert_rejection(response, case)
    assert_nothing_stored(shared_server.data_dir / "novulite.db")


def test_bad_inputs_store_nothing(server: ServerProcess, api: httpx.Client) -> None:
    create_workflow(api, WORKFLOW_ID)
    database = server.data_dir / "novulite.db"

    for param in CASES:
        (case,) = param.values
        response = case.send(server.base_url)
        assert response.status_code == case.status, f"{param.id}: {response.text}"
    assert_nothing_stored(database)

    accepted = api.post(TRIGGER_PATH, json=trigger())
    assert accepted.status_code == 201, accepted.text
    assert count_rows(database, "trigger_event") == 1

    deadline = time.monotonic() + 10
    while count_rows(database, "message") == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert count_rows(database, "message") == 1
    assert count_rows(database, "subscriber") == 1

    opened = httpx.post(f"{server.base_url}{SESSION_PATH}", json=session(), timeout=10)
    assert opened.status_code == 201, opened.text
    assert count_rows(database, "subscriber") == 2


def test_missing_fields_echo_no_value(shared_server: ServerProcess) -> None:
    response = httpx.post(
        f"{shared_server.base_url}{TRIGGER_PATH}", json={"payload": {}}, headers=AUTHORIZED, timeout=10
    )

    assert response.status_code == 400
    entries = {entry["field"]: entry for entry in response.json()["errors"]}
    assert set(entries) == {"name", "to"}
    assert "value" not in entries["name"]
    assert "value" not in entries["to"]


def test_null_name_echoes_null(shared_server: ServerProcess) -> None:
    response = httpx.post(
        f"{shared_server.base_url}{TRIGGER_PATH}",
        json={"name": None, "to": "alice"},
        headers=AUTHORIZED,
        timeout=10,
    )

    assert response.status_code == 400
    (entry,) = response.json()["errors"]
    assert entry["field"] == "name"
    assert entry["value"] is None
