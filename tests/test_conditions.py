"""Step conditions: the JSONLogic `skip` control value and Novu's legacy `filters`."""

from __future__ import annotations

import itertools
from typing import Any

import httpx
import pytest

from novulite.engine.conditions import ConditionError, skip_reason
from tests.pipeline import finished_jobs, messages_of, server_fixtures, trigger
from tests.servers import ServerProcess

_workflow_numbers = itertools.count()


module_server, api = server_fixtures()


def two_steps(second_controls: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """Build a workflow of two in-app steps, `first` and `second`, with extra controls on the second."""
    workflow_id = f"conditions-{next(_workflow_numbers)}"
    return {
        "name": workflow_id,
        "workflowId": workflow_id,
        "steps": [
            {"name": "First", "stepId": "first", "type": "in_app", "controlValues": {"body": "first"}},
            {
                "name": "Second",
                "stepId": "second",
                "type": "in_app",
                "controlValues": {"body": "second", **second_controls},
            },
        ],
        **fields,
    }


def create(api: httpx.Client, workflow: dict[str, Any]) -> str:
    response = api.post("/v2/workflows", json=workflow)
    assert response.status_code == 201, response.text
    return str(workflow["workflowId"])


def test_skip_condition_skips_one_step(module_server: ServerProcess, api: httpx.Client) -> None:
    workflow_id = f"skip-first-{next(_workflow_numbers)}"
    create(
        api,
        {
            "name": workflow_id,
            "workflowId": workflow_id,
            "steps": [
                {
                    "name": "First",
                    "stepId": "first",
                    "type": "in_app",
                    "controlValues": {"body": "first", "skip": {"==": [{"var": "payload.quiet"}, True]}},
                },
                {"name": "Second", "stepId": "second", "type": "in_app", "controlValues": {"body": "second"}},
            ],
        },
    )
    quiet = trigger(api, workflow_id, "walt", payload={"quiet": True})
    jobs = finished_jobs(module_server, quiet, 2)
    assert jobs["first"].status == "skipped"
    assert jobs["first"].last_detail == "skipped by condition"
    assert jobs["second"].status == "completed"
    assert [message["content"] for message in messages_of(module_server, quiet)] == ["second"]

    loud = trigger(api, workflow_id, "walt", payload={"quiet": False})
    jobs = finished_jobs(module_server, loud, 2)
    assert jobs["first"].status == "completed"
    assert jobs["second"].status == "completed"


SKIP_CASES = [
    pytest.param(
        {"in": ["vip", {"var": "payload.tags"}]}, {"payload": {"tags": ["vip"]}}, {}, "skipped", id="payload"
    ),
    pytest.param(
        {"==": [{"var": "payload.count"}, 5]}, {"payload": {"count": 4}}, {}, "completed", id="payload-false"
    ),
    pytest.param(
        {"==": [{"var": "subscriber.data.plan"}, "free"]},
        {"to": {"subscriberId": "cond-free", "data": {"plan": "free"}}},
        {},
        "skipped",
        id="subscriber-data",
    ),
    pytest.param(
        {"missing": ["subscriber.email"]},
        {"to": {"subscriberId": "cond-no-email"}},
        {},
        "skipped",
        id="subscriber-missing-email",
    ),
    pytest.param(
        {"missing": ["subscriber.email"]},
        {"to": {"subscriberId": "cond-email", "email": "x@example.com"}},
        {},
        "completed",
        id="subscriber-has-email",
    ),
    pytest.param(
        {"in": ["quiet", {"var": "workflow.tags"}]}, {}, {"tags": ["quiet"]}, "skipped", id="workflow-tags"
    ),
    pytest.param(
        {"==": [{"var": "workflow.severity"}, "high"]},
        {},
        {"severity": "high"},
        "skipped",
        id="workflow-severity",
    ),
    pytest.param(
        {"==": [{"var": "context.tenant.id"}, "acme"]},
        {"context": {"tenant": "acme"}},
        {},
        "skipped",
        id="context",
    ),
    pytest.param(
        {"==": [{"var": "actor.firstName"}, "Ann"]},
        {"actor": {"subscriberId": "cond-ann", "firstName": "Ann"}},
        {},
        "skipped",
        id="actor",
    ),
    pytest.param({"==": [{"var": "steps.first.seen"}, False]}, {}, {}, "skipped", id="previous-step-unseen"),
    pytest.param({"!!": [{"var": "steps.first.messageId"}]}, {}, {}, "skipped", id="previous-step-output"),
    pytest.param({"!!": [{"var": "steps.second.messageId"}]}, {}, {}, "completed", id="later-step-absent"),
    pytest.param({}, {}, {}, "completed", id="empty-object"),
]


@pytest.mark.parametrize(("skip", "trigger_fields", "workflow_fields", "expected"), SKIP_CASES)
def test_skip_data_namespaces(
    module_server: ServerProcess,
    api: httpx.Client,
    skip: dict[str, Any],
    trigger_fields: dict[str, Any],
    workflow_fields: dict[str, Any],
    expected: str,
) -> None:
    workflow_id = create(api, two_steps({"skip": skip}, **workflow_fields))
    fields = {"to": "cond-default", **trigger_fields}
    transaction_id = trigger(api, workflow_id, **fields)
    jobs = finished_jobs(module_server, transaction_id, 2)
    assert jobs["first"].status == "completed"
    assert jobs["second"].status == expected
    if expected == "skipped":
        assert jobs["second"].last_detail == "skipped by condition"


FILTER_CASES = [
    pytest.param(
        [{"on": "payload", "field": "amount", "operator": "LARGER", "value": "100"}],
        "AND",
        150,
        "completed",
        id="larger",
    ),
    pytest.param(
        [{"on": "payload", "field": "amount", "operator": "LARGER", "value": "100"}],
        "AND",
        50,
        "skipped",
        id="smaller",
    ),
    pytest.param(
        [
            {"on": "payload", "field": "amount", "operator": "EQUAL", "value": "1"},
            {"on": "subscriber", "field": "data.plan", "operator": "EQUAL", "value": "pro"},
        ],
        "OR",
        50,
        "completed",
        id="or-subscriber",
    ),
    pytest.param(
        [
            {"on": "payload", "field": "amount", "operator": "SMALLER_EQUAL", "value": "50"},
            {"on": "subscriber", "field": "data.plan", "operator": "NOT_EQUAL", "value": "pro"},
        ],
        "AND",
        50,
        "skipped",
        id="and-one-fails",
    ),
    pytest.param(
        [{"on": "payload", "field": "coupon", "operator": "NOT_DEFINED"}],
        "AND",
        50,
        "completed",
        id="not-defined",
    ),
    pytest.param(
        [{"on": "subscriber", "field": "email", "operator": "LIKE", "value": "EXAMPLE"}],
        "AND",
        1,
        "completed",
        id="like",
    ),
    pytest.param(
        [{"on": "payload", "field": "labels", "operator": "IN", "value": "rush"}],
        "AND",
        1,
        "completed",
        id="in",
    ),
    pytest.param(
        [{"on": "previousStep", "step": "first", "stepType": "unread"}],
        "AND",
        1,
        "completed",
        id="previous-unread",
    ),
    pytest.param(
        [{"on": "previousStep", "step": "first", "stepType": "read"}], "AND", 1, "skipped", id="previous-read"
    ),
]


@pytest.mark.parametrize(("children", "group", "amount", "expected"), FILTER_CASES)
def test_legacy_filters(
    module_server: ServerProcess,
    api: httpx.Client,
    children: list[dict[str, Any]],
    group: str,
    amount: int,
    expected: str,
) -> None:
    filters = [{"isNegated": False, "type": "GROUP", "value": group, "children": children}]
    workflow_id = create(api, two_steps({"filters": filters}))
    transaction_id = trigger(
        api,
        workflow_id,
        {"subscriberId": "filter-pat", "email": "pat@example.com", "data": {"plan": "pro"}},
        payload={"amount": amount, "labels": ["rush", "gift"]},
    )
    jobs = finished_jobs(module_server, transaction_id, 2)
    assert jobs["second"].status == expected


def test_negated_filter_group(module_server: ServerProcess, api: httpx.Client) -> None:
    filters = [
        {
            "isNegated": True,
            "type": "GROUP",
            "value": "AND",
            "children": [{"on": "payload", "field": "amount", "operator": "EQUAL", "value": "5"}],
        }
    ]
    workflow_id = create(api, two_steps({"filters": filters}))
    five = finished_jobs(module_server, trigger(api, workflow_id, "neg", payload={"amount": 5}), 2)
    assert five["second"].status == "skipped"
    six = finished_jobs(module_server, trigger(api, workflow_id, "neg", payload={"amount": 6}), 2)
    assert six["second"].status == "completed"


REJECTED = [
    pytest.param(
        {"skip": {"regex": ["^a", {"var": "payload.x"}]}},
        "steps[1].controlValues.skip",
        "unknown operator 'regex'",
        id="unknown-operator",
    ),
    pytest.param(
        {"skip": {"and": [True, {"startsWith": ["a", "b"]}]}},
        "steps[1].controlValues.skip",
        "at and[1]",
        id="nested-unknown-operator",
    ),
    pytest.param(
        {"skip": "payload.quiet"}, "steps[1].controlValues.skip", "JSONLogic object", id="skip-string"
    ),
    pytest.param(
        {
            "filters": [
                {
                    "value": "AND",
                    "children": [{"on": "payload", "field": "x", "operator": "MATCHES", "value": "1"}],
                }
            ]
        },
        "steps[1].controlValues.filters[0].children[0].operator",
        "must be one of",
        id="filter-operator",
    ),
    pytest.param(
        {"filters": [{"value": "XOR", "children": []}]},
        "steps[1].controlValues.filters[0].value",
        "AND or OR",
        id="filter-group",
    ),
    pytest.param(
        {"filters": [{"children": [{"on": "webhook", "field": "x", "operator": "EQUAL", "value": "1"}]}]},
        "steps[1].controlValues.filters[0].children[0].on",
        "not supported",
        id="filter-webhook",
    ),
    pytest.param(
        {"filters": {"on": "payload"}}, "steps[1].controlValues.filters", "array", id="filters-object"
    ),
]


@pytest.mark.parametrize(("controls", "field", "message"), REJECTED)
def test_invalid_condition_rejected(
    api: httpx.Client, controls: dict[str, Any], field: str, message: str
) -> None:
    workflow = two_steps(controls)
    response = api.post("/v2/workflows", json=workflow)
    assert response.status_code == 400, response.text
    errors = {entry["field"]: entry["message"] for entry in response.json()["errors"]}
    assert field in errors
    assert message in errors[field]
    assert api.get(f"/v2/workflows/{workflow['workflowId']}").status_code == 404


def test_stored_invalid_filters_raise() -> None:
    """A workflow saved before filters were checked fails the job with a message instead of crashing."""
    controls = {"filters": [{"children": [{"on": "payload"}]}]}
    with pytest.raises(ConditionError, match=r"filters\[0\]\.children\[0\]\.field"):
        skip_reason(controls, {"payload": {}})
