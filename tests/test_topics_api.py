"""Topics and topic subscriptions through the official novu-py SDK, plus the status codes it relies on."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from novu_py import Novu, models
from novu_py.utils import BackoffStrategy, RetryConfig

from tests.helpers import open_session, read_rows
from tests.servers import ServerProcess

pytestmark = pytest.mark.both_modes

# novu-py retries a 409 for up to an hour by default; a test wants the error at once.
NO_RETRIES = RetryConfig("none", BackoffStrategy(1, 1, 1.0, 1), False)


@pytest.fixture(scope="module")
def members(shared_server: ServerProcess) -> list[str]:
    """Subscribers that exist on the server: an inbox session creates each one."""
    subscriber_ids = ["alice", "bob", "carol"]
    for subscriber_id in subscriber_ids:
        open_session(shared_server.base_url, subscriber_id)
    return subscriber_ids


def test_topic_create_then_upsert(shared_novu: Novu, shared_api: httpx.Client) -> None:
    created = shared_api.post("/v2/topics", json={"key": "release-notes", "name": "Release notes"})
    assert created.status_code == 201, created.text
    first = created.json()["data"]
    assert first["key"] == "release-notes"
    assert first["name"] == "Release notes"

    again = shared_api.post("/v2/topics", json={"key": "release-notes", "name": "Releases"})
    assert again.status_code == 200, again.text
    assert again.json()["data"]["_id"] == first["_id"]

    upserted = shared_novu.topics.create(
        create_update_topic_request_dto={"key": "release-notes", "name": "News"}
    )
    assert upserted.result.id == first["_id"]
    assert upserted.result.name == "News"
    assert upserted.result.created_at == first["createdAt"]


def test_topic_fail_if_exists_conflicts(shared_novu: Novu, shared_api: httpx.Client) -> None:
    shared_novu.topics.create(create_update_topic_request_dto={"key": "incidents"})

    response = shared_api.post(
        "/v2/topics", params={"failIfExists": "true"}, json={"key": "incidents", "name": "x"}
    )
    assert response.status_code == 409, response.text
    body = response.json()
    assert body["statusCode"] == 409
    assert body["key"] == "incidents"
    assert "incidents" in body["message"]

    with pytest.raises(models.TopicResponseDtoError) as raised:
        shared_novu.topics.create(
            create_update_topic_request_dto={"key": "incidents"}, fail_if_exists=True, retries=NO_RETRIES
        )
    assert raised.value.data.key == "incidents"
    assert shared_novu.topics.get(topic_key="incidents").result.name is None


def test_topic_list_pages_and_filters(shared_novu: Novu) -> None:
    keys = [f"page-{index}" for index in range(5)]
    for index, key in enumerate(keys):
        shared_novu.topics.create(
            create_update_topic_request_dto={"key": key, "name": f"Paging topic {index}"}
        )

    seen: list[str] = []
    page = shared_novu.topics.list(
        request={"name": "paging topic", "limit": 2.0, "order_direction": "ASC"}
    ).result
    assert page.total_count == 5
    assert page.total_count_capped is False
    assert page.previous is None
    while True:
        seen.extend(topic.key for topic in page.data)
        if page.next is None:
            break
        last = page
        page = shared_novu.topics.list(
            request={"name": "paging topic", "limit": 2.0, "after": page.next, "order_direction": "ASC"}
        ).result
        assert page.previous == page.data[0].id
    assert seen == keys

    back = shared_novu.topics.list(
        request={"name": "paging topic", "limit": 2.0, "before": last.data[0].id, "order_direction": "ASC"}
    ).result
    assert [topic.key for topic in back.data] == keys[:2]
    assert back.previous is None
    assert back.next == back.data[-1].id

    newest_first = shared_novu.topics.list(request={"name": "PAGING", "limit": 10.0}).result
    assert [topic.key for topic in newest_first.data] == keys[::-1]

    by_key = shared_novu.topics.list(request={"key": "page-3"}).result
    assert [topic.key for topic in by_key.data] == ["page-3"]
    assert by_key.total_count == 1


def test_topic_get_rename_delete(shared_novu: Novu, members: list[str], shared_server: ServerProcess) -> None:
    created = shared_novu.topics.create(
        create_update_topic_request_dto={"key": "on-call", "name": "On call"}
    ).result
    shared_novu.topics.subscriptions.create(
        topic_key="on-call", create_topic_subscriptions_request_dto={"subscriptions": members[:2]}
    )

    fetched = shared_novu.topics.get(topic_key="on-call").result
    assert fetched.id == created.id
    assert fetched.name == "On call"

    renamed = shared_novu.topics.update(
        topic_key="on-call", update_topic_request_dto={"name": "Pager duty"}
    ).result
    assert renamed.name == "Pager duty"
    assert shared_novu.topics.get(topic_key="on-call").result.name == "Pager duty"

    deleted = shared_novu.topics.delete(topic_key="on-call").result
    assert deleted.acknowledged is True
    with pytest.raises(models.ErrorDto) as raised:
        shared_novu.topics.get(topic_key="on-call")
    assert raised.value.data.status_code == 404
    database = shared_server.database
    rows = read_rows(database, "SELECT count(*) FROM topic_subscription WHERE topic_pk = ?", (created.id,))
    assert rows == [(0,)]


def test_subscriptions_add_list_remove(shared_novu: Novu, members: list[str]) -> None:
    shared_novu.topics.create(create_update_topic_request_dto={"key": "team"})

    added = shared_novu.topics.subscriptions.create(
        topic_key="team",
        create_topic_subscriptions_request_dto={
            "subscriptions": ["alice", {"identifier": "bob-desk", "subscriber_id": "bob", "name": "Desk"}]
        },
    ).result
    assert added.meta.total_count == 2
    assert added.meta.successful == 2
    assert added.meta.failed == 0
    assert added.errors is None
    assert [item.identifier for item in added.data] == ["tk_team:si_alice", "bob-desk"]
    assert [item.subscriber.subscriber_id for item in added.data if item.subscriber] == ["alice", "bob"]
    assert added.data[1].name == "Desk"
    assert added.data[0].topic.key == "team"

    listed = shared_novu.topics.subscriptions.list(request={"topic_key": "team", "limit": 10.0}).result
    assert listed.total_count == 2
    assert {item.subscriber.subscriber_id for item in listed.data} == {"alice", "bob"}

    desk = shared_novu.topics.subscriptions.get_subscription(topic_key="team", identifier="bob-desk").result
    assert desk.id == added.data[1].id
    assert desk.name == "Desk"
    default = shared_novu.topics.subscriptions.get_subscription(
        topic_key="team", identifier="tk_team:si_alice"
    )
    assert default.result.id == added.data[0].id
    with pytest.raises(models.ErrorDto) as raised:
        shared_novu.topics.subscriptions.get_subscription(topic_key="team", identifier="nobody-desk")
    assert raised.value.data.status_code == 404

    only_bob = shared_novu.topics.subscriptions.list(
        request={"topic_key": "team", "subscriber_id": "bob"}
    ).result
    assert [item.identifier for item in only_bob.data] == ["bob-desk"]

    removed = shared_novu.topics.subscriptions.delete(
        topic_key="team",
        delete_topic_subscriptions_request_dto={"subscriptions": ["bob", {"identifier": "nope"}]},
    ).result
    assert [item.identifier for item in removed.data] == ["bob-desk"]
    assert removed.meta.successful == 1
    assert removed.meta.failed == 1
    assert removed.errors is not None
    assert removed.errors[0].code == "SUBSCRIPTION_NOT_FOUND"

    after = shared_novu.topics.subscriptions.list(request={"topic_key": "team"}).result
    assert [item.subscriber.subscriber_id for item in after.data] == ["alice"]


def test_subscriptions_unknown_subscriber_per_item(shared_novu: Novu, members: list[str]) -> None:
    result = shared_novu.topics.subscriptions.create(
        topic_key="mixed-bag",
        create_topic_subscriptions_request_dto={"subscriber_ids": ["carol", "ghost", "alice"]},
    ).result

    assert result.meta.total_count == 3
    assert result.meta.successful == 2
    assert result.meta.failed == 1
    assert [item.subscriber.subscriber_id for item in result.data if item.subscriber] == ["carol", "alice"]
    assert result.errors is not None
    assert [(error.subscriber_id, error.code) for error in result.errors] == [
        ("ghost", "SUBSCRIBER_NOT_FOUND")
    ]
    assert "ghost" in result.errors[0].message


def test_subscriptions_add_twice_idempotent(shared_novu: Novu, members: list[str]) -> None:
    request: dict[str, Any] = {"subscriptions": ["alice", "bob"]}
    first = shared_novu.topics.subscriptions.create(
        topic_key="twice", create_topic_subscriptions_request_dto=request
    )
    second = shared_novu.topics.subscriptions.create(
        topic_key="twice", create_topic_subscriptions_request_dto=request
    )

    assert [item.id for item in second.result.data] == [item.id for item in first.result.data]
    assert second.result.meta.successful == 2
    listed = shared_novu.topics.subscriptions.list(request={"topic_key": "twice"}).result
    assert listed.total_count == 2


def test_subscriptions_create_missing_topic(shared_novu: Novu, members: list[str]) -> None:
    with pytest.raises(models.ErrorDto):
        shared_novu.topics.get(topic_key="created-on-demand")

    shared_novu.topics.subscriptions.create(
        topic_key="created-on-demand",
        create_topic_subscriptions_request_dto={"subscriptions": ["carol"], "name": "On demand"},
    )

    topic = shared_novu.topics.get(topic_key="created-on-demand").result
    assert topic.name == "On demand"


def test_subscription_identifier_taken(shared_novu: Novu, members: list[str]) -> None:
    shared_novu.topics.subscriptions.create(
        topic_key="desks",
        create_topic_subscriptions_request_dto={
            "subscriptions": [{"identifier": "desk-1", "subscriber_id": "alice"}]
        },
    )
    result = shared_novu.topics.subscriptions.create(
        topic_key="desks",
        create_topic_subscriptions_request_dto={
            "subscriptions": [{"identifier": "desk-1", "subscriber_id": "bob"}]
        },
    ).result

    assert result.meta.failed == 1
    assert result.errors is not None
    assert result.errors[0].code == "IDENTIFIER_IN_USE"


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        pytest.param("POST", "/v2/topics", {"name": "no key"}, "key", id="key-missing"),
        pytest.param("POST", "/v2/topics", {"key": "  "}, "key", id="key-blank"),
        pytest.param("POST", "/v2/topics", {"key": "a b"}, "key", id="key-space"),
        pytest.param("POST", "/v2/topics", {"key": "k" * 101}, "key", id="key-too-long"),
        pytest.param("POST", "/v2/topics", {"key": "ok", "name": 5}, "name", id="name-number"),
        pytest.param("PATCH", "/v2/topics/team", {}, "name", id="rename-without-name"),
        pytest.param("PATCH", "/v2/topics/team", {"name": ""}, "name", id="rename-empty"),
        pytest.param("POST", "/v2/topics/team/subscriptions", {}, "subscriptions", id="add-nothing"),
        pytest.param(
            "POST", "/v2/topics/team/subscriptions", {"subscriptions": []}, "subscriptions", id="add-empty"
        ),
        pytest.param(
            "POST",
            "/v2/topics/team/subscriptions",
            {"subscriptions": [f"s{index}" for index in range(101)]},
            "subscriptions",
            id="add-too-many",
        ),
        pytest.param(
            "POST",
            "/v2/topics/team/subscriptions",
            {"subscriptions": ["alice", " "]},
            "subscriptions[1]",
            id="add-blank",
        ),
        pytest.param(
            "POST",
            "/v2/topics/team/subscriptions",
            {"subscriptions": [{"identifier": "x"}]},
            "subscriptions[0].subscriberId",
            id="add-object-without-id",
        ),
        pytest.param(
            "POST",
            "/v2/topics/team/subscriptions",
            {"subscriberIds": [7]},
            "subscriberIds[0]",
            id="add-number",
        ),
        pytest.param(
            "POST",
            "/v2/topics/team/subscriptions",
            {"subscriptions": ["alice"], "context": {"tenant": "acme"}},
            "context",
            id="add-with-context",
        ),
        pytest.param(
            "POST",
            "/v2/topics/bad key/subscriptions",
            {"subscriptions": ["alice"]},
            "topicKey",
            id="add-bad-topic-key",
        ),
        pytest.param("DELETE", "/v2/topics/team/subscriptions", {}, "subscriptions", id="remove-nothing"),
        pytest.param(
            "DELETE",
            "/v2/topics/team/subscriptions",
            {"subscriptions": [{}]},
            "subscriptions[0]",
            id="remove-empty-object",
        ),
        pytest.param("GET", "/v2/topics?limit=0", None, "limit", id="limit-zero"),
        pytest.param("GET", "/v2/topics?limit=2.5", None, "limit", id="limit-fraction"),
        pytest.param("GET", "/v2/topics?orderDirection=up", None, "orderDirection", id="bad-direction"),
    ],
)
def test_topic_bad_input_rejected(
    shared_api: httpx.Client, members: list[str], method: str, path: str, body: Any, field: str
) -> None:
    shared_api.post("/v2/topics", json={"key": "team"})
    before = listed_counts(shared_api)

    response = shared_api.request(method, path, json=body)

    assert response.status_code == 400, response.text
    payload = response.json()
    assert payload["statusCode"] == 400
    assert field in [entry["field"] for entry in payload["errors"]]
    assert listed_counts(shared_api) == before


def listed_counts(shared_api: httpx.Client) -> tuple[int, int]:
    """Return how many topics and subscriptions the API lists, to show a rejected request changed nothing."""
    topics = shared_api.get("/v2/topics", params={"limit": 100}).json()["totalCount"]
    subscriptions = shared_api.get("/v2/topics/team/subscriptions").json()["totalCount"]
    return topics, subscriptions


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        pytest.param("GET", "/v2/topics/absent", None, id="get"),
        pytest.param("PATCH", "/v2/topics/absent", {"name": "x"}, id="rename"),
        pytest.param("DELETE", "/v2/topics/absent", None, id="delete"),
        pytest.param("GET", "/v2/topics/absent/subscriptions", None, id="list-subscriptions"),
        pytest.param("DELETE", "/v2/topics/absent/subscriptions", {"subscriptions": ["alice"]}, id="remove"),
    ],
)
def test_unknown_topic_not_found(shared_api: httpx.Client, method: str, path: str, body: Any) -> None:
    response = shared_api.request(method, path, json=body)

    assert response.status_code == 404, response.text
    payload = response.json()
    assert payload["statusCode"] == 404
    assert "absent" in payload["message"]


@pytest.fixture(scope="module")
def subscribed_reader(shared_novu: Novu) -> tuple[str, list[str]]:
    """A subscriber of its own, subscribed to three topics that no other test uses."""
    subscriber_id = "topic-reader"
    keys = ["reader-news", "reader-alerts", "reader-billing"]
    shared_novu.subscribers.create(create_subscriber_request_dto={"subscriber_id": subscriber_id})
    for key in keys:
        shared_novu.topics.subscriptions.create(
            topic_key=key, create_topic_subscriptions_request_dto={"subscriptions": [subscriber_id]}
        )
    return subscriber_id, keys


def test_subscriber_topics_list_and_page(shared_novu: Novu, subscribed_reader: tuple[str, list[str]]) -> None:
    subscriber_id, keys = subscribed_reader

    listed = shared_novu.subscribers.topics.list(request={"subscriber_id": subscriber_id, "limit": 10.0})
    everything = listed.result
    assert everything.total_count == 3
    assert everything.total_count_capped is False
    assert everything.next is None
    assert everything.previous is None
    assert {item.topic.key for item in everything.data} == set(keys)
    assert {item.subscriber.subscriber_id for item in everything.data if item.subscriber} == {subscriber_id}
    assert {item.identifier for item in everything.data} == {f"tk_{key}:si_{subscriber_id}" for key in keys}

    first = shared_novu.subscribers.topics.list(
        request={"subscriber_id": subscriber_id, "limit": 2.0, "order_direction": "ASC"}
    ).result
    assert [item.topic.key for item in first.data] == keys[:2]
    assert first.next is not None
    assert first.previous is None
    second = shared_novu.subscribers.topics.list(
        request={"subscriber_id": subscriber_id, "limit": 2.0, "order_direction": "ASC", "after": first.next}
    ).result
    assert [item.topic.key for item in second.data] == keys[2:]
    assert second.next is None
    assert second.previous == second.data[0].id
    assert second.total_count == 3


def test_subscriber_topics_filters(shared_novu: Novu, subscribed_reader: tuple[str, list[str]]) -> None:
    subscriber_id, keys = subscribed_reader

    by_key = shared_novu.subscribers.topics.list(request={"subscriber_id": subscriber_id, "key": keys[1]})
    assert [item.topic.key for item in by_key.result.data] == [keys[1]]
    assert by_key.result.total_count == 1

    other_context = shared_novu.subscribers.topics.list(
        request={"subscriber_id": subscriber_id, "context_keys": ["tenant:acme"]}
    )
    assert other_context.result.data == []
    assert other_context.result.total_count == 0


def test_subscriber_topics_unknown_subscriber(shared_novu: Novu, shared_api: httpx.Client) -> None:
    with pytest.raises(models.ErrorDto) as raised:
        shared_novu.subscribers.topics.list(request={"subscriber_id": "nobody-here"})
    assert raised.value.data.status_code == 404

    response = shared_api.get("/v2/subscribers/nobody-here/subscriptions")
    assert response.status_code == 404, response.text
    payload = response.json()
    assert payload["statusCode"] == 404
    assert payload["path"] == "/v2/subscribers/nobody-here/subscriptions"
    assert "timestamp" in payload
    assert "nobody-here" in payload["message"]


def test_subscriber_topics_bad_limit(
    shared_api: httpx.Client, subscribed_reader: tuple[str, list[str]]
) -> None:
    subscriber_id, _ = subscribed_reader

    response = shared_api.get(f"/v2/subscribers/{subscriber_id}/subscriptions", params={"limit": "0"})

    assert response.status_code == 400, response.text
    assert "limit" in [entry["field"] for entry in response.json()["errors"]]
