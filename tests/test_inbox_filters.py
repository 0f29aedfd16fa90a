"""Inbox list and count filters on tags, data and creation time, in each encoding @novu/js uses."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import ServerMode, api_client, start_server
from tests.helpers import in_app_workflow, poll, subscriber_hash
from tests.servers import APP_ID, ServerProcess

pytestmark = pytest.mark.both_modes

NOTIFICATIONS = "/v1/inbox/notifications"
DATA = {
    "kind": "{{ payload.kind }}",
    "level": 3,
    "labels": ["x", "y"],
    "meta": {"region": "{{ payload.region }}"},
}


def _workflow(workflow_id: str, tags: list[str]) -> dict[str, Any]:
    workflow = in_app_workflow(workflow_id, body="{{ payload.kind }}")
    workflow["tags"] = tags
    workflow["steps"][0]["controlValues"]["data"] = DATA
    return workflow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, server_mode: ServerMode) -> Iterator[ServerProcess]:
    process = start_server(tmp_path_factory.mktemp("filters"), mode=server_mode)
    yield process
    process.stop()


@pytest.fixture(scope="module")
def inbox(server: ServerProcess) -> Iterator[httpx.Client]:
    body = {
        "applicationIdentifier": APP_ID,
        "subscriber": {"subscriberId": "fil"},
        "subscriberHash": subscriber_hash("fil"),
    }
    response = httpx.post(f"{server.base_url}/v1/inbox/session", json=body, timeout=10)
    assert response.status_code == 201, response.text
    token = response.json()["data"]["token"]
    with httpx.Client(
        base_url=server.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=10
    ) as client:
        yield client


@pytest.fixture(scope="module")
def messages(server: ServerProcess, inbox: httpx.Client) -> dict[str, dict[str, Any]]:
    """Deliver one message at a time, so each has its own creation millisecond, and return them by name."""
    sent = (
        ("alert", "alerts", ["ops", "urgent"], "invoice", "eu"),
        ("digest", "digests", ["ops"], "refund", "us"),
        ("promo", "promos", ["marketing"], "invoice", "us"),
    )
    found: dict[str, dict[str, Any]] = {}
    with api_client(server) as api:
        for name, workflow_id, tags, kind, region in sent:
            assert api.post("/v2/workflows", json=_workflow(workflow_id, tags)).status_code == 201
            payload = {"kind": kind, "region": region}
            response = api.post(
                "/v1/events/trigger", json={"name": workflow_id, "to": "fil", "payload": payload}
            )
            assert response.status_code == 201, response.text
            items = poll(
                lambda: inbox.get(NOTIFICATIONS).json()["data"],
                lambda items: len(items) == len(found) + 1,
                f"message {name}",
            )
            found[name] = items[0]
    return found


def _names(messages: dict[str, dict[str, Any]], items: list[dict[str, Any]]) -> set[str]:
    by_id = {message["id"]: name for name, message in messages.items()}
    return {by_id[item["id"]] for item in items}


def _millis(iso: str) -> int:
    return int(dt.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


def test_stored_data_keeps_json_types(messages: dict[str, dict[str, Any]]) -> None:
    assert messages["alert"]["data"] == {
        "kind": "invoice",
        "level": 3,
        "labels": ["x", "y"],
        "meta": {"region": "eu"},
    }


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("tags[]=urgent", {"alert"}),
        ("tags[]=urgent&tags[]=marketing", {"alert", "promo"}),
        ("tags=marketing", {"promo"}),
        ("tags[0][]=ops&tags[1][]=urgent", {"alert"}),
        ("tags[0][]=ops&tags[1][]=urgent&tags[1][]=marketing", {"alert"}),
        ("tags[]=nothing", set()),
    ],
)
def test_list_tags_encodings(
    inbox: httpx.Client, messages: dict[str, dict[str, Any]], query: str, expected: set[str]
) -> None:
    response = inbox.get(f"{NOTIFICATIONS}?limit=100&{query}")
    assert response.status_code == 200, response.text
    assert _names(messages, response.json()["data"]) == expected


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"kind": "invoice"}, {"alert", "promo"}),
        ({"kind": ["invoice", "refund"]}, {"alert", "digest", "promo"}),
        ({"kind": {"or": ["refund"]}}, {"digest"}),
        ({"meta": {"region": "eu"}}, {"alert"}),
        ({"kind": "invoice", "meta": {"region": "us"}}, {"promo"}),
        # A stored array matches when any of its items is in the group.
        ({"labels": "x"}, {"alert", "digest", "promo"}),
        ({"labels": {"and": [{"or": ["x"]}, {"or": ["y", "q"]}]}}, {"alert", "digest", "promo"}),
        ({"labels": {"and": [{"or": ["x"]}, {"or": ["q"]}]}}, set()),
        # Types compare exactly, as JavaScript's === does.
        ({"level": 3}, {"alert", "digest", "promo"}),
        ({"level": "3"}, set()),
        ({"level": 3.0}, {"alert", "digest", "promo"}),
        ({"level": True}, set()),
        ({"missing": "x"}, set()),
        ({"missing": None}, set()),
        # A stored object is not a scalar.
        ({"meta": "eu"}, set()),
    ],
)
def test_list_data_filter(
    inbox: httpx.Client, messages: dict[str, dict[str, Any]], data: dict[str, Any], expected: set[str]
) -> None:
    response = inbox.get(NOTIFICATIONS, params={"limit": 100, "data": json.dumps(data)})
    assert response.status_code == 200, response.text
    assert _names(messages, response.json()["data"]) == expected
    assert response.json()["filter"]["data"] == data


def test_list_created_window(inbox: httpx.Client, messages: dict[str, dict[str, Any]]) -> None:
    middle = _millis(messages["digest"]["createdAt"])
    assert middle > _millis(messages["alert"]["createdAt"])

    def names(**params: Any) -> set[str]:
        response = inbox.get(NOTIFICATIONS, params={"limit": 100, **params})
        assert response.status_code == 200, response.text
        return _names(messages, response.json()["data"])

    assert names(createdGte=middle) == {"digest", "promo"}
    assert names(createdLte=middle) == {"alert", "digest"}
    assert names(createdGte=middle, createdLte=middle) == {"digest"}
    assert names(createdGte=messages["digest"]["createdAt"]) == {"digest", "promo"}


@pytest.mark.parametrize(
    ("filter_", "expected"),
    [
        ({"tags": ["ops"]}, 2),
        ({"tags": {"or": ["marketing", "urgent"]}}, 2),
        ({"tags": {"and": [{"or": ["ops"]}, {"or": ["urgent", "marketing"]}]}}, 1),
        ({"read": False, "data": {"kind": "invoice"}}, 2),
        ({"data": '{"kind":"refund"}'}, 1),
        ({"tags": ["ops"], "severity": "none", "archived": False}, 2),
    ],
)
def test_count_echoes_each_filter(
    inbox: httpx.Client, messages: dict[str, dict[str, Any]], filter_: dict[str, Any], expected: int
) -> None:
    response = inbox.get(f"{NOTIFICATIONS}/count", params={"filters": json.dumps([filter_, {}])})
    assert response.status_code == 200, response.text
    assert response.json()["data"] == [{"count": expected, "filter": filter_}, {"count": 3, "filter": {}}]


def test_count_created_window(inbox: httpx.Client, messages: dict[str, dict[str, Any]]) -> None:
    filter_ = {"createdGte": _millis(messages["digest"]["createdAt"])}
    response = inbox.get(f"{NOTIFICATIONS}/count", params={"filters": json.dumps([filter_])})
    assert response.json()["data"] == [{"count": 2, "filter": filter_}]


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        (NOTIFICATIONS, {"createdGte": "yesterday"}, "createdGte"),
        (NOTIFICATIONS, {"colour": "red"}, "colour"),
        (NOTIFICATIONS, [("read", "true"), ("read", "false")], "read"),
        (NOTIFICATIONS, {"limit": "1.5"}, "limit"),
        (NOTIFICATIONS, {"limit": "101"}, "limit"),
        (f"{NOTIFICATIONS}/count", {"filter": '[{"read": false}]'}, "filter"),
        (f"{NOTIFICATIONS}/count", {"filters": json.dumps([{}] * 51)}, "filters"),
        (f"{NOTIFICATIONS}/count", {"filters": '[{"colour": "red"}]'}, "filters[0].colour"),
        (NOTIFICATIONS, {"data": "{not json"}, "data"),
        (NOTIFICATIONS, {"data": '{"kind": {"or": [{"x": 1}]}}'}, "data.kind"),
        (f"{NOTIFICATIONS}/count", {"filters": '[{"tags": "ops"}]'}, "filters[0].tags"),
        (
            f"{NOTIFICATIONS}/count",
            {"filters": '[{}, {"tags": {"and": [{"or": [1]}]}}]'},
            "filters[1].tags.and[0].or[0]",
        ),
        (f"{NOTIFICATIONS}/count", {"filters": '[{"createdLte": true}]'}, "filters[0].createdLte"),
    ],
)
def test_bad_filter_is_400(inbox: httpx.Client, path: str, params: Any, field: str) -> None:
    response = inbox.get(path, params=params)
    assert response.status_code == 400, response.text
    assert [error["field"] for error in response.json()["errors"]] == [field]
