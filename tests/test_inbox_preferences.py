"""Inbox preferences under /v1/inbox with a session token, and CORS for browsers on inbox paths."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import websockets

from tests.helpers import open_session
from tests.pipeline import finished_jobs, server_fixtures, trigger
from tests.servers import ServerProcess

pytestmark = pytest.mark.both_modes

STEP_CONTROLS = {
    "in_app": {"body": "Order {{ payload.order }} shipped"},
    "email": {"subject": "Order {{ payload.order }}", "body": "It shipped"},
    "sms": {"body": "Order {{ payload.order }} shipped"},
}
STEP_IDS = {"in_app": "inbox", "email": "email", "sms": "sms"}
BROWSER_ORIGIN = "https://app.example.com"
# The headers @novu/js 3.19.2 sends on every inbox call, which make browsers send a preflight.
NOVU_JS_HEADERS = (
    "authorization",
    "content-type",
    "novu-api-version",
    "novu-client-version",
    "novu-application-identifier",
)

module_server, api = server_fixtures()


def create_workflow(api: httpx.Client, workflow_id: str, *types: str, **fields: Any) -> dict[str, Any]:
    steps = [
        {"name": kind, "type": kind, "stepId": STEP_IDS[kind], "controlValues": STEP_CONTROLS[kind]}
        for kind in types
    ]
    response = api.post(
        "/v2/workflows",
        json={"name": f"Workflow {workflow_id}", "workflowId": workflow_id, "steps": steps, **fields},
    )
    assert response.status_code == 201, response.text
    return response.json()["data"]  # type: ignore[no-any-return]


@pytest.fixture
def inbox_for(module_server: ServerProcess) -> Iterator[Any]:
    """Open inbox clients: `inbox_for("alice")` returns a client with alice's session token."""
    clients: list[httpx.Client] = []

    def open_inbox(subscriber_id: str) -> httpx.Client:
        token = open_session(module_server.base_url, subscriber_id)["token"]
        client = httpx.Client(
            base_url=module_server.base_url,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            timeout=10,
        )
        clients.append(client)
        return client

    yield open_inbox
    for client in clients:
        client.close()


def preferences(inbox: httpx.Client, **params: Any) -> list[dict[str, Any]]:
    response = inbox.get("/v1/inbox/preferences", params=params)
    assert response.status_code == 200, response.text
    return response.json()["data"]  # type: ignore[no-any-return]


def template(listing: list[dict[str, Any]], workflow_id: str) -> dict[str, Any]:
    return next(
        entry
        for entry in listing
        if entry["level"] == "template" and entry["workflow"]["identifier"] == workflow_id
    )


def identifiers(listing: list[dict[str, Any]]) -> set[str]:
    return {entry["workflow"]["identifier"] for entry in listing if entry["level"] == "template"}


def test_list_shape(api: httpx.Client, inbox_for: Any) -> None:
    workflow = create_workflow(
        api, "shape-orders", "in_app", "email", tags=["shape", "orders"], severity="high"
    )
    create_workflow(api, "shape-critical", "in_app", critical=True, tags=["shape"])
    inbox = inbox_for("shape-sub")

    listing = preferences(inbox, **{"tags[]": "shape"})

    assert listing[0]["level"] == "global"
    assert all(entry["level"] == "template" for entry in listing[1:])
    assert identifiers(listing) == {"shape-orders"}
    entry = template(listing, "shape-orders")
    assert entry["enabled"] is True
    assert entry["channels"] == {"email": True, "in_app": True}
    assert {item["channel"]: item["source"] for item in entry["overrides"]} == {
        "email": "template",
        "in_app": "template",
    }
    assert entry["workflow"] == {
        "id": workflow["_id"],
        "identifier": "shape-orders",
        "name": "Workflow shape-orders",
        "critical": False,
        "severity": "high",
        "tags": ["shape", "orders"],
    }


def test_list_global_entry(inbox_for: Any, api: httpx.Client) -> None:
    create_workflow(api, "global-entry", "in_app", "sms")
    inbox = inbox_for("global-entry-sub")

    listing = preferences(inbox)
    global_entry = inbox.get("/v1/inbox/preferences/global")

    assert listing[0]["level"] == "global"
    assert listing[0]["enabled"] is True
    assert listing[0]["channels"]["in_app"] is True
    assert listing[0]["channels"]["sms"] is True
    assert global_entry.status_code == 200
    assert global_entry.json()["data"] == listing[0]


def test_list_criticality(api: httpx.Client, inbox_for: Any) -> None:
    create_workflow(api, "crit-plain", "in_app", tags=["crit"])
    create_workflow(api, "crit-alarm", "in_app", tags=["crit"], critical=True)
    inbox = inbox_for("crit-sub")

    default = preferences(inbox, **{"tags[]": "crit"})
    critical = preferences(inbox, **{"tags[]": "crit", "criticality": "critical"})
    every = preferences(inbox, **{"tags[]": "crit", "criticality": "all"})

    assert identifiers(default) == {"crit-plain"}
    assert identifiers(critical) == {"crit-alarm"}
    assert identifiers(every) == {"crit-plain", "crit-alarm"}
    assert template(every, "crit-alarm")["workflow"]["critical"] is True


def test_list_tag_and_severity_filters(api: httpx.Client, inbox_for: Any) -> None:
    create_workflow(api, "filter-a", "in_app", tags=["filter", "red"], severity="high")
    create_workflow(api, "filter-b", "in_app", tags=["filter", "blue"], severity="low")
    create_workflow(api, "filter-c", "in_app", tags=["other", "red"], severity="high")
    inbox = inbox_for("filter-sub")

    any_tag = preferences(inbox, **{"tags[]": ["filter", "other"]})
    plain_key = preferences(inbox, tags="blue")
    all_groups = preferences(inbox, **{"tags[0][]": "filter", "tags[1][]": ["red", "green"]})
    severity = preferences(inbox, **{"tags[]": ["filter", "other"], "severity[]": ["low"]})

    assert identifiers(any_tag) == {"filter-a", "filter-b", "filter-c"}
    assert identifiers(plain_key) == {"filter-b"}
    assert identifiers(all_groups) == {"filter-a"}
    assert identifiers(severity) == {"filter-b"}


def test_global_update_skips_channel(module_server: ServerProcess, api: httpx.Client, inbox_for: Any) -> None:
    create_workflow(api, "global-off", "in_app", "email")
    inbox = inbox_for("global-off-sub")

    response = inbox.patch("/v1/inbox/preferences", json={"email": False})

    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert data["level"] == "global"
    assert data["channels"]["email"] is False
    assert data["channels"]["in_app"] is True
    entry = template(preferences(inbox), "global-off")
    assert entry["channels"] == {"email": False, "in_app": True}
    transaction_id = trigger(api, "global-off", "global-off-sub", payload={"order": "G-1"})
    jobs = finished_jobs(module_server, transaction_id, 2)
    assert jobs["inbox"].status == "completed"
    assert jobs["email"].status == "skipped"
    assert jobs["email"].last_detail == "skipped by preference: email is disabled for this subscriber"


def test_global_schedule_stored(inbox_for: Any) -> None:
    inbox = inbox_for("schedule-sub")
    schedule = {
        "isEnabled": True,
        "weeklySchedule": {
            "monday": {"isEnabled": True, "hours": [{"start": "09:00 AM", "end": "05:00 PM"}]}
        },
    }

    response = inbox.patch("/v1/inbox/preferences", json={"schedule": schedule})

    assert response.status_code == 200, response.text
    assert response.json()["data"]["schedule"] == schedule
    assert inbox.get("/v1/inbox/preferences/global").json()["data"]["schedule"] == schedule


@pytest.mark.parametrize("by", ["identifier", "id"])
def test_workflow_update_skips_channel(
    module_server: ServerProcess, api: httpx.Client, inbox_for: Any, by: str
) -> None:
    workflow_id = f"workflow-off-{by}"
    workflow = create_workflow(api, workflow_id, "in_app", "sms")
    subscriber_id = f"workflow-off-sub-{by}"
    inbox = inbox_for(subscriber_id)
    reference = workflow_id if by == "identifier" else workflow["_id"]

    response = inbox.patch(f"/v1/inbox/preferences/{reference}", json={"in_app": False, "sms": False})

    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert data["level"] == "template"
    assert data["workflow"]["identifier"] == workflow_id
    assert data["channels"] == {"in_app": False, "sms": False}
    assert {item["channel"]: item["source"] for item in data["overrides"]} == {
        "in_app": "subscriber",
        "sms": "subscriber",
    }
    transaction_id = trigger(api, workflow_id, subscriber_id, payload={"order": "W-1"})
    jobs = finished_jobs(module_server, transaction_id, 2)
    assert jobs["inbox"].status == "skipped"
    assert jobs["inbox"].last_detail == "skipped by preference: in_app is disabled for this subscriber"
    assert jobs["sms"].status == "skipped"
    assert inbox.get("/v1/inbox/notifications").json()["data"] == []


def test_workflow_disabled_skips_steps(
    module_server: ServerProcess, api: httpx.Client, inbox_for: Any
) -> None:
    create_workflow(api, "workflow-disabled", "in_app")
    inbox = inbox_for("workflow-disabled-sub")

    response = inbox.patch("/v1/inbox/preferences/workflow-disabled", json={"enabled": False})

    assert response.status_code == 200, response.text
    assert response.json()["data"]["enabled"] is False
    transaction_id = trigger(api, "workflow-disabled", "workflow-disabled-sub", payload={"order": "D-1"})
    jobs = finished_jobs(module_server, transaction_id, 1)
    assert jobs["inbox"].status == "skipped"


def test_update_seen_by_server_api(api: httpx.Client, inbox_for: Any) -> None:
    create_workflow(api, "shared-rows", "in_app", "email")
    inbox = inbox_for("shared-rows-sub")

    response = inbox.patch("/v1/inbox/preferences/shared-rows", json={"email": False})
    server_view = api.get("/v2/subscribers/shared-rows-sub/preferences")

    assert response.status_code == 200, response.text
    assert server_view.status_code == 200
    entries = server_view.json()["data"]["workflows"]
    entry = next(item for item in entries if item["workflow"]["identifier"] == "shared-rows")
    assert entry["channels"] == {"email": False, "in_app": True}


def test_bulk_update(module_server: ServerProcess, api: httpx.Client, inbox_for: Any) -> None:
    first = create_workflow(api, "bulk-one", "in_app", "email")
    create_workflow(api, "bulk-two", "in_app", "sms")
    inbox = inbox_for("bulk-sub")

    response = inbox.patch(
        "/v1/inbox/preferences/bulk",
        json={
            "preferences": [
                {"workflowId": "bulk-two", "sms": False},
                {"workflowId": first["_id"], "in_app": False, "email": False},
            ]
        },
    )

    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert [entry["level"] for entry in data] == ["template", "template"]
    assert [entry["workflow"]["identifier"] for entry in data] == ["bulk-two", "bulk-one"]
    assert data[0]["channels"] == {"in_app": True, "sms": False}
    assert data[1]["channels"] == {"email": False, "in_app": False}
    transaction_id = trigger(api, "bulk-two", "bulk-sub", payload={"order": "B-2"})
    jobs = finished_jobs(module_server, transaction_id, 2)
    assert jobs["inbox"].status == "completed"
    assert jobs["sms"].status == "skipped"
    transaction_id = trigger(api, "bulk-one", "bulk-sub", payload={"order": "B-1"})
    jobs = finished_jobs(module_server, transaction_id, 2)
    assert jobs["inbox"].status == "skipped"
    assert jobs["email"].status == "skipped"


def test_critical_workflow_not_editable(
    module_server: ServerProcess, api: httpx.Client, inbox_for: Any
) -> None:
    create_workflow(api, "critical-alarm", "in_app", critical=True)
    create_workflow(api, "critical-neighbour", "in_app")
    inbox = inbox_for("critical-sub")

    single = inbox.patch("/v1/inbox/preferences/critical-alarm", json={"in_app": False})
    bulk = inbox.patch(
        "/v1/inbox/preferences/bulk",
        json={
            "preferences": [
                {"workflowId": "critical-neighbour", "in_app": False},
                {"workflowId": "critical-alarm", "in_app": False},
            ]
        },
    )

    for response in (single, bulk):
        assert response.status_code == 400, response.text
        error = response.json()
        assert error["errors"][0]["field"] == "workflowId"
        assert error["errors"][0]["value"] == "critical-alarm"
        assert "critical" in error["errors"][0]["message"]
    listing = preferences(inbox, criticality="all")
    assert template(listing, "critical-alarm")["channels"] == {"in_app": True}
    assert template(listing, "critical-neighbour")["channels"] == {"in_app": True}
    transaction_id = trigger(api, "critical-alarm", "critical-sub", payload={"order": "C-1"})
    assert finished_jobs(module_server, transaction_id, 1)["inbox"].status == "completed"


def test_critical_ignores_global_update(
    module_server: ServerProcess, api: httpx.Client, inbox_for: Any
) -> None:
    create_workflow(api, "critical-global", "in_app", critical=True)
    inbox = inbox_for("critical-global-sub")

    response = inbox.patch("/v1/inbox/preferences", json={"in_app": False})

    assert response.status_code == 200, response.text
    listing = preferences(inbox, criticality="critical")
    assert template(listing, "critical-global")["channels"] == {"in_app": True}
    transaction_id = trigger(api, "critical-global", "critical-global-sub", payload={"order": "C-2"})
    assert finished_jobs(module_server, transaction_id, 1)["inbox"].status == "completed"


BAD_REQUESTS = [
    ("PATCH", "/v1/inbox/preferences", {"email": "no"}, 400, "email"),
    ("PATCH", "/v1/inbox/preferences", {"emial": False}, 400, "emial"),
    ("PATCH", "/v1/inbox/preferences", {"enabled": False}, 400, "enabled"),
    ("PATCH", "/v1/inbox/preferences", {"schedule": {"weeklySchedule": {}}}, 400, "schedule.isEnabled"),
    ("PATCH", "/v1/inbox/preferences", [], 400, None),
    ("PATCH", "/v1/inbox/preferences/bad-input", {"in_app": 1}, 400, "in_app"),
    ("PATCH", "/v1/inbox/preferences/bad-input", {"condition": {"==": [1, 1]}}, 400, "condition"),
    ("PATCH", "/v1/inbox/preferences/bad-input", {"schedule": {"isEnabled": True}}, 400, "schedule"),
    ("PATCH", "/v1/inbox/preferences/no-such-workflow", {"in_app": False}, 404, None),
    ("PATCH", "/v1/inbox/preferences/bulk", {}, 400, "preferences"),
    ("PATCH", "/v1/inbox/preferences/bulk", {"preferences": "all"}, 400, "preferences"),
    (
        "PATCH",
        "/v1/inbox/preferences/bulk",
        {"preferences": [{"in_app": False}]},
        400,
        "preferences[0].workflowId",
    ),
    (
        "PATCH",
        "/v1/inbox/preferences/bulk",
        {"preferences": [{"workflowId": "bad-input", "sms": "off"}]},
        400,
        "preferences[0].sms",
    ),
    (
        "PATCH",
        "/v1/inbox/preferences/bulk",
        {"preferences": [{"workflowId": "bad-input", "enabled": False}]},
        400,
        "preferences[0].enabled",
    ),
    ("GET", "/v1/inbox/preferences?criticality=some", None, 400, "criticality"),
    ("GET", "/v1/inbox/preferences?severity[]=urgent", None, 400, "severity"),
]


@pytest.mark.parametrize(("method", "path", "body", "status", "field"), BAD_REQUESTS)
def test_bad_input(
    api: httpx.Client,
    inbox_for: Any,
    method: str,
    path: str,
    body: Any,
    status: int,
    field: str | None,
) -> None:
    if not _exists(api, "bad-input"):
        create_workflow(api, "bad-input", "in_app", "sms")
    inbox = inbox_for("bad-input-sub")
    before = preferences(inbox, criticality="all")

    response = inbox.request(method, path, content=None if body is None else json.dumps(body))

    assert response.status_code == status, response.text
    error = response.json()
    assert error["statusCode"] == status
    assert error["path"] == path.split("?")[0]
    if field is not None:
        assert field in [entry["field"] for entry in error["errors"]]
    assert preferences(inbox, criticality="all") == before


def _exists(api: httpx.Client, workflow_id: str) -> bool:
    return api.get(f"/v2/workflows/{workflow_id}").status_code == 200


def test_requires_session_token(module_server: ServerProcess) -> None:
    for headers in ({}, {"Authorization": "Bearer not-a-token"}):
        response = httpx.patch(
            f"{module_server.base_url}/v1/inbox/preferences", json={"email": False}, headers=headers
        )
        assert response.status_code == 401, response.text
        assert response.json()["statusCode"] == 401


def preflight(server: ServerProcess, path: str, method: str) -> httpx.Response:
    return httpx.options(
        f"{server.base_url}{path}",
        headers={
            "Origin": BROWSER_ORIGIN,
            "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": ",".join(NOVU_JS_HEADERS),
        },
        timeout=10,
    )


@pytest.mark.parametrize(
    ("path", "method"),
    [
        ("/v1/inbox/session", "POST"),
        ("/v1/inbox/preferences", "GET"),
        ("/v1/inbox/preferences", "PATCH"),
        ("/v1/inbox/preferences/bulk", "PATCH"),
        ("/v1/inbox/preferences/some-workflow", "PATCH"),
        ("/v1/inbox/notifications", "GET"),
        ("/v1/inbox/notifications/count", "GET"),
        ("/v1/inbox/notifications/some-id/read", "PATCH"),
        ("/v1/inbox/notifications/some-id/delete", "DELETE"),
    ],
)
def test_cors_preflight(module_server: ServerProcess, path: str, method: str) -> None:
    response = preflight(module_server, path, method)

    assert 200 <= response.status_code < 300, response.text
    assert response.headers["access-control-allow-origin"] in ("*", BROWSER_ORIGIN)
    allowed_methods = response.headers["access-control-allow-methods"].upper()
    assert allowed_methods == "*" or method in allowed_methods.replace(" ", "").split(",")
    allowed_headers = response.headers["access-control-allow-headers"].lower()
    for header in NOVU_JS_HEADERS:
        assert allowed_headers == "*" or header in allowed_headers.replace(" ", "").split(","), header


def test_cors_actual_responses(module_server: ServerProcess, inbox_for: Any) -> None:
    inbox = inbox_for("cors-sub")
    origin = {"Origin": BROWSER_ORIGIN}

    listing = inbox.get("/v1/inbox/preferences", headers=origin)
    update = inbox.patch("/v1/inbox/preferences", json={"sms": True}, headers=origin)
    invalid = inbox.patch("/v1/inbox/preferences", json={"sms": "on"}, headers=origin)
    unauthorized = httpx.get(f"{module_server.base_url}/v1/inbox/preferences", headers=origin, timeout=10)

    for response, status in ((listing, 200), (update, 200), (invalid, 400), (unauthorized, 401)):
        assert response.status_code == status, response.text
        assert response.headers["access-control-allow-origin"] in ("*", BROWSER_ORIGIN)


def test_socket_accepts_other_origin(module_server: ServerProcess) -> None:
    """Browsers send no preflight for WebSockets; the server must accept a foreign Origin header."""
    token = open_session(module_server.base_url, "socket-origin-sub")["token"]

    async def first_frame() -> dict[str, Any]:
        url = f"{module_server.ws_url}?token={token}"
        async with websockets.connect(url, origin=BROWSER_ORIGIN) as socket:  # type: ignore[arg-type]
            return json.loads(await asyncio.wait_for(socket.recv(), 10))  # type: ignore[no-any-return]

    frame = asyncio.run(first_frame())
    assert frame["event"] == "unread_count_changed", frame
