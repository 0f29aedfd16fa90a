"""Liquid templates in step controls: the data they see, missing values, errors and limits."""

from __future__ import annotations

import itertools
from typing import Any

import httpx
import pytest

from tests.pipeline import finished_jobs, messages_of, server_fixtures, trigger
from tests.servers import ServerProcess

_numbers = itertools.count()


module_server, api = server_fixtures()


def create(api: httpx.Client, *bodies: str, **fields: Any) -> str:
    """Create a workflow with one in-app step per body, with stepIds step0, step1, ..."""
    workflow_id = f"templates-{next(_numbers)}"
    steps = [
        {"name": f"Step {index}", "stepId": f"step{index}", "type": "in_app", "controlValues": {"body": body}}
        for index, body in enumerate(bodies)
    ]
    response = api.post(
        "/v2/workflows",
        json={"name": f"Name {workflow_id}", "workflowId": workflow_id, "steps": steps, **fields},
    )
    assert response.status_code == 201, response.text
    return workflow_id


def rendered(server: ServerProcess, transaction_id: str, count: int = 1) -> list[str]:
    finished_jobs(server, transaction_id, count)
    return sorted(message["content"] for message in messages_of(server, transaction_id))


SUBSCRIBER = {
    "subscriberId": "tpl-ada",
    "firstName": "Ada",
    "lastName": "Lovelace",
    "email": "ada@example.com",
    "phone": "+15555550100",
    "avatar": "https://example.com/ada.png",
    "locale": "en-GB",
    "timezone": "Europe/London",
    "data": {"plan": "pro"},
}
NAMESPACE_CASES = [
    pytest.param("{{ payload.order.id }}", "A-7", id="payload"),
    pytest.param("{{ subscriber.subscriberId }}", "tpl-ada", id="subscriber-id"),
    pytest.param(
        "{{ subscriber.firstName }} {{ subscriber.lastName }}", "Ada Lovelace", id="subscriber-name"
    ),
    pytest.param(
        "{{ subscriber.email }} {{ subscriber.phone }}",
        "ada@example.com +15555550100",
        id="subscriber-contact",
    ),
    pytest.param("{{ subscriber.avatar }}", "https://example.com/ada.png", id="subscriber-avatar"),
    pytest.param(
        "{{ subscriber.locale }} {{ subscriber.timezone }}", "en-GB Europe/London", id="subscriber-locale"
    ),
    pytest.param("{{ subscriber.data.plan }}", "pro", id="subscriber-data"),
    pytest.param("{{ workflow.identifier | slice: 0, 10 }}", "templates-", id="workflow-identifier"),
    pytest.param("{{ workflow.name | slice: 0, 5 }}", "Name ", id="workflow-name"),
    pytest.param("{{ workflow.description }}", "Order updates", id="workflow-description"),
    pytest.param("{{ workflow.tags | join: ',' }}", "orders,shipping", id="workflow-tags"),
    pytest.param("{{ workflow.severity }}", "high", id="workflow-severity"),
    pytest.param("{{ context.tenant.id }}", "acme", id="context-string"),
    pytest.param(
        "{{ context.project.id }}/{{ context.project.data.name }}", "p1/Apollo", id="context-object"
    ),
    pytest.param("{{ actor.subscriberId }} {{ actor.firstName }}", "tpl-bob Bob", id="actor"),
]


@pytest.mark.parametrize(("body", "expected"), NAMESPACE_CASES)
def test_namespaces_render(module_server: ServerProcess, api: httpx.Client, body: str, expected: str) -> None:
    workflow_id = create(api, body, description="Order updates", tags=["orders", "shipping"], severity="high")
    transaction_id = trigger(
        api,
        workflow_id,
        SUBSCRIBER,
        payload={"order": {"id": "A-7"}},
        context={"tenant": "acme", "project": {"id": "p1", "data": {"name": "Apollo"}}},
        actor={"subscriberId": "tpl-bob", "firstName": "Bob"},
    )
    assert rendered(module_server, transaction_id) == [expected]


def test_steps_namespace(module_server: ServerProcess, api: httpx.Client) -> None:
    workflow_id = create(
        api, "first", "{{ steps.step0.messageId | size }} {{ steps.step0.read }} {{ steps.step0.seen }}"
    )
    transaction_id = trigger(api, workflow_id, "tpl-steps")
    assert rendered(module_server, transaction_id, 2) == ["24 false false", "first"]


def test_stored_actor_fields(module_server: ServerProcess, api: httpx.Client) -> None:
    """An actor named by id shows the stored subscriber's fields."""
    setup = create(api, "setup")
    rendered(
        module_server,
        trigger(api, setup, {"subscriberId": "tpl-cy", "firstName": "Cy", "data": {"team": "ops"}}),
    )
    workflow_id = create(api, "{{ actor.firstName }} of {{ actor.data.team }}")
    assert rendered(module_server, trigger(api, workflow_id, "tpl-dee", actor="tpl-cy")) == ["Cy of ops"]


def test_missing_values_render_empty(module_server: ServerProcess, api: httpx.Client) -> None:
    workflow_id = create(
        api,
        "[{{ payload.absent.deeper }}][{{ subscriber.lastName }}][{{ actor.firstName }}]"
        "[{{ context.tenant.id }}][{{ steps.nothing.read }}]",
    )
    assert rendered(module_server, trigger(api, workflow_id, "tpl-empty")) == ["[][][][][]"]


def test_python_internals_unreachable(module_server: ServerProcess, api: httpx.Client) -> None:
    workflow_id = create(
        api,
        "[{{ payload.__class__ }}][{{ payload.items }}][{{ subscriber.__dict__ }}][{{ payload.keys }}]"
        "[{{ workflow.name.__class__.__mro__ }}]",
    )
    assert rendered(module_server, trigger(api, workflow_id, "tpl-code", payload={"a": 1})) == ["[][][][][]"]


FAILURES = [
    pytest.param(
        "{{ payload.n | divided_by: 0 }}", "body: divided_by: can't divide by 0", id="runtime-error"
    ),
    pytest.param(
        "{{ payload.n | no_such_filter }}", "body: unknown filter 'no_such_filter'", id="unknown-filter"
    ),
    pytest.param("{% for i in (1..20000) %}x{% endfor %}", "loop iteration limit reached", id="loop-limit"),
    pytest.param(
        "{% for i in (1..2000) %}{{ payload.big }}{% endfor %}",
        "output stream limit reached",
        id="output-limit",
    ),
]


@pytest.mark.parametrize(("body", "message"), FAILURES)
def test_template_error_fails_job(
    module_server: ServerProcess, api: httpx.Client, body: str, message: str
) -> None:
    workflow_id = create(api, body, "after")
    transaction_id = trigger(api, workflow_id, "tpl-fail", payload={"n": 1, "big": "x" * 1000})
    jobs = finished_jobs(module_server, transaction_id, 2)
    assert jobs["step0"].status == "failed"
    assert jobs["step0"].last_detail == "Step failed"
    assert jobs["step0"].error is not None
    assert message in jobs["step0"].error
    # A failed step does not stop the chain unless it sets stopOnFailure.
    assert jobs["step1"].status == "completed"
    assert [message["content"] for message in messages_of(module_server, transaction_id)] == ["after"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param("{% if %}x{% endif %}", "missing expression", id="syntax"),
        pytest.param("{% exec 'ls' %}", "unexpected tag 'exec'", id="unknown-tag"),
        pytest.param("{{ payload.x ", "expected", id="unclosed"),
    ],
)
def test_invalid_template_rejected_on_save(api: httpx.Client, body: str, message: str) -> None:
    response = api.post(
        "/v2/workflows",
        json={
            "name": "Broken",
            "workflowId": f"broken-{next(_numbers)}",
            "steps": [{"name": "Inbox", "type": "in_app", "controlValues": {"body": body}}],
        },
    )
    assert response.status_code == 400, response.text
    errors = {entry["field"]: entry["message"] for entry in response.json()["errors"]}
    assert "steps[0].controlValues.body" in errors
    assert message in errors["steps[0].controlValues.body"]
