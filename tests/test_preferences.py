"""Subscriber preferences: the v2 and v1 APIs, concurrent updates, and what triggers then deliver."""

from __future__ import annotations

import random
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from novu_py import Novu, models

from novulite.engine.preferences import StoredPreference, resolve
from tests.helpers import subscriber_hash
from tests.pipeline import finished_jobs, server_fixtures, trigger
from tests.servers import API_KEY, APP_ID, ServerProcess

pytestmark = pytest.mark.both_modes

AUTHORIZED = {"Authorization": f"ApiKey {API_KEY}"}
STEP_CONTROLS = {
    "in_app": {"body": "Order {{ payload.order }} shipped"},
    "email": {"subject": "Order {{ payload.order }}", "body": "It shipped"},
    "sms": {"body": "Order {{ payload.order }} shipped"},
    "push": {"subject": "Shipped", "body": "Order {{ payload.order }}"},
    "chat": {"body": "Order {{ payload.order }} shipped"},
}
STEP_IDS = {"in_app": "inbox", "email": "email", "sms": "sms", "push": "push", "chat": "chat"}


module_server, api = server_fixtures()


def create_workflow(api: httpx.Client, workflow_id: str, *types: str, **fields: Any) -> dict[str, Any]:
    steps = [
        {
            "name": step_type,
            "type": step_type,
            "stepId": STEP_IDS[step_type],
            "controlValues": STEP_CONTROLS[step_type],
        }
        for step_type in types
    ]
    response = api.post(
        "/v2/workflows",
        json={"name": f"Workflow {workflow_id}", "workflowId": workflow_id, "steps": steps, **fields},
    )
    assert response.status_code == 201, response.text
    return response.json()["data"]  # type: ignore[no-any-return]


def create_subscriber(server: ServerProcess, subscriber_id: str, **profile: Any) -> str:
    """Create a subscriber through an inbox session and return the session token."""
    response = httpx.post(
        f"{server.base_url}/v1/inbox/session",
        json={
            "applicationIdentifier": APP_ID,
            "subscriber": {"subscriberId": subscriber_id, **profile},
            "subscriberHash": subscriber_hash(subscriber_id),
        },
        timeout=10,
    )
    assert response.status_code == 201, response.text
    return str(response.json()["data"]["token"])


def workflow_entry(listing: list[dict[str, Any]], workflow_id: str) -> dict[str, Any]:
    return next(entry for entry in listing if entry["workflow"]["identifier"] == workflow_id)


def legacy_entry(listing: list[dict[str, Any]], workflow_id: str) -> dict[str, Any]:
    """Find a workflow in the v1 listing, whose entries are `{template, preference}`."""
    return next(entry for entry in listing if entry["template"]["triggers"][0]["identifier"] == workflow_id)


def inbox_bodies(server: ServerProcess, token: str) -> list[str]:
    response = httpx.get(
        f"{server.base_url}/v1/inbox/notifications",
        headers={"Authorization": f"Bearer {token}"},
        params={"limit": 50},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return [item["body"] for item in response.json()["data"]]


def test_concurrent_channel_updates(module_server: ServerProcess, api: httpx.Client) -> None:
    """Two channels turned off at the same moment both stay off, and the trigger skips both steps."""
    create_workflow(api, "order-shipped", "in_app", "email", "push")
    token = create_subscriber(module_server, "frank", email="frank@example.com")
    # Push delivery is not built, so frank's push token "tok-frank" is left out.
    barrier = threading.Barrier(2)

    def disable(channel: str) -> httpx.Response:
        with httpx.Client(base_url=module_server.base_url, headers=AUTHORIZED, timeout=10) as client:
            barrier.wait()
            return client.patch(
                "/v1/subscribers/frank/preferences/order-shipped",
                json={"channel": {"type": channel, "enabled": False}},
            )

    with ThreadPoolExecutor(max_workers=2) as pool:
        responses = list(pool.map(disable, ["email", "push"]))
    assert [response.status_code for response in responses] == [200, 200], [r.text for r in responses]

    listing = api.get("/v1/subscribers/frank/preferences")
    assert listing.status_code == 200
    entry = legacy_entry(listing.json()["data"], "order-shipped")["preference"]
    assert entry["channels"] == {"email": False, "in_app": True, "push": False}
    assert {item["channel"]: item["source"] for item in entry["overrides"]} == {
        "email": "subscriber",
        "in_app": "template",
        "push": "subscriber",
    }

    transaction_id = trigger(api, "order-shipped", "frank", payload={"order": "A-1"})
    jobs = finished_jobs(module_server, transaction_id, 3)
    assert jobs["inbox"].status == "completed"
    assert jobs["email"].status == "skipped"
    assert jobs["email"].last_detail == "skipped by preference: email is disabled for this subscriber"
    assert jobs["email"].error is None
    assert jobs["push"].status == "skipped"
    assert jobs["push"].last_detail == "skipped by preference: push is disabled for this subscriber"
    assert inbox_bodies(module_server, token) == ["Order A-1 shipped"]


def test_many_concurrent_updates_all_persist(module_server: ServerProcess, api: httpx.Client) -> None:
    create_workflow(api, "many-channels", "in_app", "email", "sms", "push", "chat")
    create_subscriber(module_server, "mia")
    channels = ["in_app", "email", "sms", "push", "chat"]
    generator = random.Random(7)
    for _ in range(4):
        expected = {channel: generator.choice([True, False]) for channel in channels}
        barrier = threading.Barrier(len(channels))

        def update(
            channel: str, expected: dict[str, bool] = expected, barrier: threading.Barrier = barrier
        ) -> int:
            with httpx.Client(base_url=module_server.base_url, headers=AUTHORIZED, timeout=10) as client:
                barrier.wait()
                response = client.patch(
                    "/v2/subscribers/mia/preferences",
                    json={"workflowId": "many-channels", "channels": {channel: expected[channel]}},
                )
                return response.status_code

        with ThreadPoolExecutor(max_workers=len(channels)) as pool:
            assert list(pool.map(update, channels)) == [200] * len(channels)
        listing = api.get("/v2/subscribers/mia/preferences").json()["data"]
        assert workflow_entry(listing["workflows"], "many-channels")["channels"] == expected


def test_sdk_lists_and_updates(module_server: ServerProcess, api: httpx.Client) -> None:
    create_workflow(api, "sdk-prefs", "in_app", "email")
    create_workflow(api, "sdk-prefs-2", "in_app", "push")
    create_subscriber(module_server, "sam")
    novu = Novu(secret_key=API_KEY, server_url=module_server.base_url)

    listed = novu.subscribers.preferences.list(subscriber_id="sam")
    assert listed.result.global_.enabled is True
    assert listed.result.global_.channels.email is True
    entry = next(item for item in listed.result.workflows if item.workflow.identifier == "sdk-prefs")
    assert entry.channels.in_app is True
    assert entry.channels.email is True
    assert entry.channels.push is None
    assert entry.workflow.name == "Workflow sdk-prefs"

    updated = novu.subscribers.preferences.update(
        subscriber_id="sam",
        patch_subscriber_preferences_dto={"channels": {"email": False}, "workflow_id": "sdk-prefs"},
    )
    entry = next(item for item in updated.result.workflows if item.workflow.identifier == "sdk-prefs")
    assert entry.channels.email is False
    assert entry.channels.in_app is True
    assert {item.channel: item.source for item in entry.overrides}[
        "email"
    ] == models.PreferenceOverrideSourceEnum.SUBSCRIBER
    assert entry.updated_at is not None

    # A global change applies to every workflow that does not set the channel itself.
    updated = novu.subscribers.preferences.update(
        subscriber_id="sam",
        patch_subscriber_preferences_dto={
            "channels": {"in_app": False},
            "schedule": {
                "is_enabled": True,
                "weekly_schedule": {
                    "monday": {"is_enabled": True, "hours": [{"start": "09:00 AM", "end": "05:00 PM"}]}
                },
            },
        },
    )
    assert updated.result.global_.channels.in_app is False
    assert updated.result.global_.schedule is not None
    assert updated.result.global_.schedule.is_enabled is True
    second = next(item for item in updated.result.workflows if item.workflow.identifier == "sdk-prefs-2")
    assert second.channels.in_app is False

    bulk = novu.subscribers.preferences.bulk_update(
        subscriber_id="sam",
        bulk_update_subscriber_preferences_dto={
            "preferences": [
                {"workflow_id": "sdk-prefs", "channels": {"in_app": True}},
                {"workflow_id": "sdk-prefs-2", "channels": {"push": False}},
            ]
        },
    )
    by_identifier = {item.workflow.identifier: item for item in bulk.result if item.workflow}
    assert by_identifier["sdk-prefs"].level == models.PreferenceLevelEnum.TEMPLATE
    assert by_identifier["sdk-prefs"].channels.in_app is True
    assert by_identifier["sdk-prefs"].channels.email is False
    assert by_identifier["sdk-prefs-2"].channels.push is False
    assert by_identifier["sdk-prefs-2"].channels.in_app is False

    with pytest.raises(models.ErrorDto) as raised:
        novu.subscribers.preferences.list(subscriber_id="nobody-here")
    assert raised.value.data.status_code == 404


def test_critical_workflow_ignores_preferences(module_server: ServerProcess, api: httpx.Client) -> None:
    create_workflow(api, "security-alert", "in_app", "email", critical=True)
    token = create_subscriber(module_server, "carol")
    assert (
        api.patch("/v2/subscribers/carol/preferences", json={"channels": {"in_app": False}}).status_code
        == 200
    )
    turned_off = api.patch("/v1/subscribers/carol/preferences/security-alert", json={"enabled": False})
    assert turned_off.status_code == 200

    transaction_id = trigger(api, "security-alert", "carol", payload={"order": "S-9"})
    jobs = finished_jobs(module_server, transaction_id, 2)
    assert jobs["inbox"].status == "completed"
    # Email delivery does not exist yet, so the email job ends skipped for that reason instead.
    assert jobs["email"].last_detail == "no email provider is configured"
    assert inbox_bodies(module_server, token) == ["Order S-9 shipped"]

    critical = api.get("/v2/subscribers/carol/preferences", params={"criticality": "critical"}).json()["data"]
    assert [entry["workflow"]["identifier"] for entry in critical["workflows"]] == ["security-alert"]
    assert critical["workflows"][0]["channels"] == {"in_app": True, "email": True}
    default = api.get("/v2/subscribers/carol/preferences").json()["data"]
    assert "security-alert" not in [entry["workflow"]["identifier"] for entry in default["workflows"]]


def test_workflow_turned_off_skips_every_step(module_server: ServerProcess, api: httpx.Client) -> None:
    create_workflow(api, "digest-news", "in_app", "sms")
    token = create_subscriber(module_server, "dave")
    response = api.patch("/v1/subscribers/dave/preferences/digest-news", json={"enabled": False})
    assert response.status_code == 200
    assert response.json()["data"]["template"]["name"] == "Workflow digest-news"
    assert response.json()["data"]["preference"]["enabled"] is False

    jobs = finished_jobs(module_server, trigger(api, "digest-news", "dave", payload={"order": "1"}), 2)
    for step_id in ("inbox", "sms"):
        assert jobs[step_id].status == "skipped"
        assert (
            jobs[step_id].last_detail
            == "skipped by preference: this workflow is disabled for this subscriber"
        )
    assert inbox_bodies(module_server, token) == []


def test_global_turned_off_skips_every_workflow(module_server: ServerProcess, api: httpx.Client) -> None:
    create_workflow(api, "weekly-report", "in_app")
    create_subscriber(module_server, "gil")
    response = api.patch("/v1/subscribers/gil/preferences", json={"enabled": False})
    assert response.status_code == 200
    assert response.json()["data"]["preference"]["enabled"] is False

    jobs = finished_jobs(module_server, trigger(api, "weekly-report", "gil", payload={"order": "1"}), 1)
    assert jobs["inbox"].status == "skipped"
    assert (
        jobs["inbox"].last_detail == "skipped by preference: all workflows are disabled for this subscriber"
    )


def test_resolution_order(module_server: ServerProcess, api: httpx.Client) -> None:
    """Workflow defaults, then the global preference, then the workflow preference."""
    create_workflow(
        api,
        "quiet-by-default",
        "in_app",
        preferences={"workflow": {"all": {"enabled": True}, "channels": {"in_app": {"enabled": False}}}},
    )
    create_workflow(api, "plain", "in_app")
    token = create_subscriber(module_server, "erin")

    jobs = finished_jobs(module_server, trigger(api, "quiet-by-default", "erin", payload={"order": "1"}), 1)
    assert jobs["inbox"].last_detail == "skipped by preference: in_app is disabled by the workflow's defaults"

    # The global preference turns in-app off everywhere ...
    assert (
        api.patch(
            "/v1/subscribers/erin/preferences", json={"preferences": [{"type": "in_app", "enabled": False}]}
        ).status_code
        == 200
    )
    jobs = finished_jobs(module_server, trigger(api, "plain", "erin", payload={"order": "2"}), 1)
    assert jobs["inbox"].last_detail == "skipped by preference: in_app is disabled for this subscriber"

    # ... and a workflow preference turns it back on for one workflow.
    assert (
        api.patch(
            "/v2/subscribers/erin/preferences",
            json={"workflowId": "quiet-by-default", "channels": {"in_app": True}},
        ).status_code
        == 200
    )
    jobs = finished_jobs(module_server, trigger(api, "quiet-by-default", "erin", payload={"order": "3"}), 1)
    assert jobs["inbox"].status == "completed"
    assert inbox_bodies(module_server, token) == ["Order 3 shipped"]


def test_read_only_defaults_ignore_subscriber(module_server: ServerProcess, api: httpx.Client) -> None:
    create_workflow(
        api,
        "locked",
        "in_app",
        preferences={"user": {"all": {"enabled": True, "readOnly": True}, "channels": {}}},
    )
    create_subscriber(module_server, "fay")
    api.patch("/v2/subscribers/fay/preferences", json={"workflowId": "locked", "channels": {"in_app": False}})
    jobs = finished_jobs(module_server, trigger(api, "locked", "fay", payload={"order": "1"}), 1)
    assert jobs["inbox"].status == "completed"


def test_context_preference(module_server: ServerProcess, api: httpx.Client) -> None:
    """A preference saved for a context applies to triggers with that context only."""
    create_workflow(api, "tenant-news", "in_app")
    create_subscriber(module_server, "gus")
    response = api.patch(
        "/v2/subscribers/gus/preferences",
        json={"workflowId": "tenant-news", "channels": {"in_app": False}, "context": {"tenant": "acme"}},
    )
    assert response.status_code == 200
    assert workflow_entry(response.json()["data"]["workflows"], "tenant-news")["channels"] == {
        "in_app": False
    }
    plain = api.get("/v2/subscribers/gus/preferences").json()["data"]
    assert workflow_entry(plain["workflows"], "tenant-news")["channels"] == {"in_app": True}
    scoped = api.get("/v2/subscribers/gus/preferences", params={"contextKeys": "tenant:acme"}).json()["data"]
    assert workflow_entry(scoped["workflows"], "tenant-news")["channels"] == {"in_app": False}

    with_context = trigger(api, "tenant-news", "gus", payload={"order": "1"}, context={"tenant": "acme"})
    assert finished_jobs(module_server, with_context, 1)["inbox"].status == "skipped"
    without_context = trigger(api, "tenant-news", "gus", payload={"order": "2"})
    assert finished_jobs(module_server, without_context, 1)["inbox"].status == "completed"


BAD_REQUESTS = [
    pytest.param("GET", "/v2/subscribers/ghost/preferences", None, 404, None, id="v2-get-unknown-subscriber"),
    pytest.param("GET", "/v1/subscribers/ghost/preferences", None, 404, None, id="v1-get-unknown-subscriber"),
    pytest.param(
        "PATCH",
        "/v2/subscribers/ghost/preferences",
        {"channels": {"email": False}},
        404,
        None,
        id="v2-unknown-subscriber",
    ),
    pytest.param(
        "PATCH",
        "/v2/subscribers/hal/preferences",
        {"workflowId": "no-such-workflow", "channels": {"email": False}},
        404,
        None,
        id="v2-unknown-workflow",
    ),
    pytest.param(
        "PATCH",
        "/v1/subscribers/hal/preferences/no-such-workflow",
        {"channel": {"type": "email", "enabled": False}},
        404,
        None,
        id="v1-unknown-workflow",
    ),
    pytest.param(
        "PATCH",
        "/v2/subscribers/hal/preferences/bulk",
        {"preferences": [{"workflowId": "hal-flow", "channels": {}}, {"workflowId": "nope", "channels": {}}]},
        404,
        None,
        id="bulk-unknown-workflow",
    ),
    pytest.param(
        "PATCH",
        "/v2/subscribers/hal/preferences",
        {"channels": {"fax": False}},
        400,
        "channels.fax",
        id="unknown-channel",
    ),
    pytest.param(
        "PATCH",
        "/v2/subscribers/hal/preferences",
        {"channels": {"email": "off"}},
        400,
        "channels.email",
        id="non-boolean",
    ),
    pytest.param(
        "PATCH", "/v2/subscribers/hal/preferences", {"channels": []}, 400, "channels", id="channels-array"
    ),
    pytest.param(
        "PATCH",
        "/v1/subscribers/hal/preferences/hal-flow",
        {"channel": {"type": "pager", "enabled": False}},
        400,
        "channel.type",
        id="v1-unknown-channel",
    ),
    pytest.param(
        "PATCH",
        "/v1/subscribers/hal/preferences/hal-flow",
        {"channel": {"type": "email", "enabled": "no"}},
        400,
        "channel.enabled",
        id="v1-non-boolean",
    ),
    pytest.param(
        "PATCH", "/v1/subscribers/hal/preferences/hal-flow", {"enabled": 0}, 400, "enabled", id="v1-enabled"
    ),
    pytest.param("PATCH", "/v1/subscribers/hal/preferences/hal-flow", {}, 400, "channel", id="v1-nothing"),
    pytest.param(
        "PATCH",
        "/v1/subscribers/hal/preferences",
        {"preferences": [{"type": "email"}]},
        400,
        "preferences[0].enabled",
        id="v1-global-missing-enabled",
    ),
    pytest.param(
        "PATCH",
        "/v2/subscribers/hal/preferences",
        {"workflowId": "hal-flow", "schedule": {"isEnabled": True}},
        400,
        "schedule",
        id="schedule-with-workflow",
    ),
    pytest.param(
        "PATCH",
        "/v2/subscribers/hal/preferences",
        {"schedule": {"isEnabled": True, "weeklySchedule": {"funday": {"isEnabled": True}}}},
        400,
        "schedule.weeklySchedule.funday",
        id="schedule-weekday",
    ),
    pytest.param(
        "PATCH",
        "/v2/subscribers/hal/preferences/bulk",
        {"preferences": [{"workflowId": "hal-flow", "channels": {"email": False}}] * 101},
        400,
        "preferences",
        id="bulk-too-many",
    ),
    pytest.param(
        "PATCH",
        "/v2/subscribers/hal/preferences/bulk",
        {"preferences": []},
        400,
        "preferences",
        id="bulk-empty",
    ),
    pytest.param(
        "GET",
        "/v2/subscribers/hal/preferences?criticality=urgent",
        None,
        400,
        "criticality",
        id="bad-criticality",
    ),
]


@pytest.fixture(scope="module")
def hal(module_server: ServerProcess) -> None:
    with httpx.Client(base_url=module_server.base_url, headers=AUTHORIZED, timeout=10) as client:
        create_workflow(client, "hal-flow", "in_app", "email")
    create_subscriber(module_server, "hal")


@pytest.mark.parametrize(("method", "path", "body", "status", "field"), BAD_REQUESTS)
def test_rejected_requests(
    module_server: ServerProcess,
    hal: None,
    api: httpx.Client,
    method: str,
    path: str,
    body: Any,
    status: int,
    field: str | None,
) -> None:
    before = api.get("/v2/subscribers/hal/preferences").json()["data"]
    response = api.request(method, path, json=body)
    assert response.status_code == status, response.text
    error = response.json()
    assert error["statusCode"] == status
    assert error["path"] == path.split("?")[0]
    if field is not None:
        assert field in [entry["field"] for entry in error["errors"]]
    assert api.get("/v2/subscribers/hal/preferences").json()["data"] == before


def test_updates_merge_channels(module_server: ServerProcess, api: httpx.Client) -> None:
    """Each update changes only the channels it names."""
    create_workflow(api, "merge-check", "in_app", "email")
    create_subscriber(module_server, "ivy")
    for channels in ({"email": False}, {"in_app": False}, {"email": True}):
        response = api.patch(
            "/v2/subscribers/ivy/preferences", json={"workflowId": "merge-check", "channels": channels}
        )
        assert response.status_code == 200
    entry = workflow_entry(
        api.get("/v2/subscribers/ivy/preferences").json()["data"]["workflows"], "merge-check"
    )
    assert entry["channels"] == {"in_app": False, "email": True}


def test_malformed_stored_defaults_ignored() -> None:
    """Workflows saved before preferences were checked may hold any value; only booleans count."""
    stored = {
        "user": {
            "all": "yes",
            "channels": {"email": True, "sms": {"enabled": "no"}, "push": {"enabled": False}},
        }
    }
    resolution = resolve(stored, False, None, StoredPreference(enabled=True, channels={"chat": False}))
    assert resolution.channels["email"] is True
    assert resolution.channels["sms"] is True
    assert resolution.channels["push"] is False
    assert resolution.channels["chat"] is False
    assert resolution.sources["chat"] == "subscriber"
    assert resolve(["not", "an", "object"], False, None, None).channels["in_app"] is True
