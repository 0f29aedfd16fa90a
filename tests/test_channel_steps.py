"""Email, sms, push and chat steps: saved with checked controls, skipped at run time without a provider."""

from __future__ import annotations

import copy
from typing import Any

import httpx
import pytest
from novu_py import Novu

from tests.pipeline import finished_jobs, messages_of, server_fixtures, trigger
from tests.servers import API_KEY, ServerProcess

WORKFLOW: dict[str, Any] = {
    "name": "Every channel",
    "workflowId": "every-channel",
    "critical": True,
    "preferences": {
        "user": {"all": {"enabled": True, "readOnly": False}, "channels": {"sms": {"enabled": False}}},
        "workflow": {"all": {"enabled": True}, "channels": {"chat": {"enabled": True}}},
    },
    "steps": [
        {
            "name": "Email",
            "stepId": "email",
            "type": "email",
            "controlValues": {
                "subject": "Order {{ payload.order }}",
                "body": "<p>Shipped</p>",
                "editorType": "html",
                "layoutId": None,
                "from": {"email": "shop@example.com", "name": "Shop"},
                "replyTo": "help@example.com",
                "preheader": "Your order",
                "useProviderDefaults": True,
                "disableOutputSanitization": False,
            },
        },
        {
            "name": "Sms",
            "stepId": "sms",
            "type": "sms",
            "controlValues": {"body": "Order {{ payload.order }}"},
        },
        {
            "name": "Push",
            "stepId": "push",
            "type": "push",
            "controlValues": {"subject": "Shipped", "body": "Yes"},
        },
        {"name": "Chat", "stepId": "chat", "type": "chat", "controlValues": {"body": "Order shipped"}},
        {
            "name": "Inbox",
            "stepId": "inbox",
            "type": "in_app",
            "controlValues": {"body": "Order {{ payload.order }}"},
        },
    ],
}


module_server, api = server_fixtures()


@pytest.fixture(scope="module")
def steps_server(module_server: ServerProcess) -> ServerProcess:
    """The module's server with the workflow `every-channel`."""
    with httpx.Client(
        base_url=module_server.base_url, headers={"Authorization": f"ApiKey {API_KEY}"}, timeout=10
    ) as client:
        response = client.post("/v2/workflows", json=WORKFLOW)
        assert response.status_code == 201, response.text
    return module_server


def test_sdk_reads_channel_steps(steps_server: ServerProcess) -> None:
    novu = Novu(secret_key=API_KEY, server_url=steps_server.base_url)
    fetched = novu.workflows.get(workflow_id="every-channel").result
    assert [step.type for step in fetched.steps] == ["email", "sms", "push", "chat", "in_app"]
    assert fetched.steps[0].control_values is not None
    assert fetched.steps[0].control_values.subject == "Order {{ payload.order }}"
    assert fetched.preferences.user is not None
    assert fetched.preferences.user.channels["sms"].enabled is False
    assert fetched.preferences.default.channels["chat"].enabled is True
    assert fetched.preferences.default.all.enabled is True

    raw = httpx.get(
        f"{steps_server.base_url}/v2/workflows/every-channel",
        headers={"Authorization": f"ApiKey {API_KEY}"},
        timeout=10,
    ).json()["data"]
    assert raw["critical"] is True
    assert raw["preferences"]["user"] == WORKFLOW["preferences"]["user"]


def test_steps_without_provider_are_skipped(steps_server: ServerProcess, api: httpx.Client) -> None:
    transaction_id = trigger(api, "every-channel", "chan-ann", payload={"order": "B-2"})
    jobs = finished_jobs(steps_server, transaction_id, 5)
    for channel in ("email", "push", "chat"):
        assert jobs[channel].status == "skipped"
        assert jobs[channel].last_detail == f"no {channel} provider is configured"
        assert jobs[channel].error is None
    # A critical workflow bypasses subscriber preferences, but its own defaults still apply.
    assert jobs["sms"].status == "skipped"
    assert jobs["sms"].last_detail == "skipped by preference: sms is disabled by the workflow's defaults"
    assert jobs["inbox"].status == "completed"
    assert [message["content"] for message in messages_of(steps_server, transaction_id)] == ["Order B-2"]


def with_step_change(index: int, controls: dict[str, Any] | None = None, **step: Any) -> dict[str, Any]:
    """Copy the valid workflow under a new id, changing one step's controls or fields."""
    workflow = copy.deepcopy(WORKFLOW)
    workflow["workflowId"] = "rejected"
    if controls is not None:
        workflow["steps"][index]["controlValues"] = controls
    workflow["steps"][index].update(step)
    return workflow


def with_preferences(preferences: Any) -> dict[str, Any]:
    workflow = copy.deepcopy(WORKFLOW)
    workflow["workflowId"] = "rejected"
    workflow["preferences"] = preferences
    return workflow


REJECTED = [
    pytest.param(
        with_step_change(0, {"body": "no subject"}), "steps[0].controlValues.subject", id="email-subject"
    ),
    pytest.param(
        with_step_change(0, {"subject": "x", "editorType": "markdown"}),
        "steps[0].controlValues.editorType",
        id="email-editor",
    ),
    pytest.param(
        with_step_change(0, {"subject": "x", "from": {"email": 5}}),
        "steps[0].controlValues.from.email",
        id="email-from",
    ),
    pytest.param(
        with_step_change(0, {"subject": "x", "preheader": "{% if %}"}),
        "steps[0].controlValues.preheader",
        id="email-preheader-template",
    ),
    pytest.param(with_step_change(1, {"body": "{{ x "}), "steps[1].controlValues.body", id="sms-template"),
    pytest.param(
        with_step_change(2, {"subject": 7}), "steps[2].controlValues.subject", id="push-subject-type"
    ),
    pytest.param(with_step_change(3, {"body": ["a"]}), "steps[3].controlValues.body", id="chat-body-type"),
    pytest.param(
        with_step_change(4, {"body": "x", "redirect": {"url": "/a", "target": "_new"}}),
        "steps[4].controlValues.redirect.target",
        id="in-app-target",
    ),
    pytest.param(
        with_step_change(4, {"body": "x", "primaryAction": {"label": "{% for %}"}}),
        "steps[4].controlValues.primaryAction.label",
        id="in-app-action-label",
    ),
    pytest.param(
        with_step_change(4, {"body": "x", "data": {"link": "{{ a | }}"}}),
        "steps[4].controlValues.data.link",
        id="in-app-data-template",
    ),
    pytest.param(with_step_change(1, None, type="tool"), "steps[1].type", id="tool-type"),
    pytest.param(with_step_change(1, None, type="fax"), "steps[1].type", id="unknown-type"),
    pytest.param(
        with_preferences({"user": {"channels": {"fax": {"enabled": False}}}}),
        "preferences.user.channels.fax",
        id="preferences-channel",
    ),
    pytest.param(
        with_preferences({"workflow": {"all": {"readOnly": "yes"}}}),
        "preferences.workflow.all.readOnly",
        id="preferences-read-only",
    ),
    pytest.param(with_preferences(["email"]), "preferences", id="preferences-array"),
]


@pytest.mark.parametrize(("workflow", "field"), REJECTED)
def test_invalid_steps_rejected(api: httpx.Client, workflow: dict[str, Any], field: str) -> None:
    response = api.post("/v2/workflows", json=workflow)
    assert response.status_code == 400, response.text
    assert field in [entry["field"] for entry in response.json()["errors"]]
    assert api.get(f"/v2/workflows/{workflow['workflowId']}").status_code == 404


def test_tool_type_message(api: httpx.Client) -> None:
    response = api.post("/v2/workflows", json=with_step_change(1, None, type="tool"))
    errors = {entry["field"]: entry["message"] for entry in response.json()["errors"]}
    assert errors["steps[1].type"] == (
        "is a Novu step type this server does not run yet; "
        "supported: in_app, email, sms, push, chat, delay, digest, throttle, http_request"
    )
