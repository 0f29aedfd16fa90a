"""The subscribers API through novu-py: create, read, update, search, delete, bulk, credentials, presence."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from novu_py import Novu
from novu_py.models import ErrorDto, SubscriberResponseDtoError
from novu_py.utils import RetryConfig

from tests.helpers import poll, store_topic_subscription
from tests.servers import API_KEY, ServerProcess
from tests.stores import Database, read_rows, write_rows

pytestmark = pytest.mark.both_modes

AUTHORIZED = {"Authorization": f"ApiKey {API_KEY}"}
# Without retries, an error status fails the call at once instead of being retried for up to an hour.
NO_RETRIES = RetryConfig("none", None, False)


@pytest.fixture(scope="module")
def novu(shared_server: ServerProcess) -> Novu:
    return Novu(secret_key=API_KEY, server_url=shared_server.base_url, retry_config=NO_RETRIES)


@pytest.fixture(scope="module")
def api(shared_server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=shared_server.base_url, headers=AUTHORIZED, timeout=10) as client:
        yield client


def test_create_trims_subscriber_id(novu: Novu, api: httpx.Client) -> None:
    created = novu.subscribers.create(
        create_subscriber_request_dto={
            "subscriber_id": "  carol  ",
            "first_name": "Carol",
            "last_name": "Jones",
            "email": "carol@example.com",
            "locale": "en-GB",
            "data": {"plan": "pro"},
        }
    ).result
    assert created.subscriber_id == "carol"
    assert created.first_name == "Carol"
    assert created.email == "carol@example.com"
    assert created.data == {"plan": "pro"}
    assert created.deleted is False
    assert created.id
    assert created.organization_id
    assert created.environment_id
    assert created.created_at.endswith("Z")

    fetched = novu.subscribers.retrieve(subscriber_id="carol").result
    assert fetched.id == created.id
    assert fetched.locale == "en-GB"

    # Creating an existing subscriber updates it and still returns 201.
    again = api.post("/v2/subscribers", json={"subscriberId": "carol", "phone": "+15550100"})
    assert again.status_code == 201, again.text
    assert again.json()["data"]["phone"] == "+15550100"
    assert again.json()["data"]["firstName"] == "Carol"
    assert again.json()["data"]["_id"] == created.id


def test_fail_if_exists_gives_conflict(novu: Novu, api: httpx.Client) -> None:
    first = novu.subscribers.create(
        create_subscriber_request_dto={"subscriber_id": "dave"}, fail_if_exists=True
    )
    assert first.result.subscriber_id == "dave"

    # novu-py reads a 409 from this endpoint as the existing subscriber.
    with pytest.raises(SubscriberResponseDtoError) as caught:
        novu.subscribers.create(create_subscriber_request_dto={"subscriber_id": "dave"}, fail_if_exists=True)
    assert caught.value.raw_response.status_code == 409
    assert caught.value.data.subscriber_id == "dave"
    assert caught.value.data.id == first.result.id

    response = api.post("/v2/subscribers", params={"failIfExists": "true"}, json={"subscriberId": "dave"})
    assert response.status_code == 409
    assert {"statusCode", "timestamp", "path", "message"} <= response.json().keys()
    assert "dave" in response.json()["message"]


def test_patch_changes_only_sent_fields(novu: Novu) -> None:
    novu.subscribers.create(
        create_subscriber_request_dto={
            "subscriber_id": "erin",
            "first_name": "Erin",
            "email": "e@example.com",
        }
    )
    patched = novu.subscribers.patch(
        subscriber_id="erin", patch_subscriber_request_dto={"last_name": "Stone", "email": None}
    ).result
    assert patched.first_name == "Erin"
    assert patched.last_name == "Stone"
    assert patched.email is None
    assert patched.updated_at >= patched.created_at


def _create_pages(novu: Novu, count: int, last_name: str) -> list[str]:
    """Create `count` subscribers sharing a last name and return their ids in creation order."""
    ids = [f"{last_name.lower()}-{index:02d}" for index in range(count)]
    result = novu.subscribers.create_bulk(
        bulk_subscriber_create_dto={
            "subscribers": [
                {"subscriber_id": subscriber_id, "first_name": f"Page{index}", "last_name": last_name}
                for index, subscriber_id in enumerate(ids)
            ]
        }
    ).result
    assert [item.subscriber_id for item in result.created] == ids
    return ids


def test_search_walks_cursor_pages(novu: Novu) -> None:
    ids = _create_pages(novu, 25, "Walker")
    newest_first = list(reversed(ids))

    first = novu.subscribers.search(request={"name": "Walker", "limit": 10}).result
    assert [item.subscriber_id for item in first.data] == newest_first[:10]
    assert first.total_count == 25
    assert first.total_count_capped is False
    assert first.previous is None
    assert first.next is not None

    second = novu.subscribers.search(request={"name": "Walker", "limit": 10, "after": first.next}).result
    assert [item.subscriber_id for item in second.data] == newest_first[10:20]
    assert second.previous is not None
    assert second.next is not None

    third = novu.subscribers.search(request={"name": "Walker", "limit": 10, "after": second.next}).result
    assert [item.subscriber_id for item in third.data] == newest_first[20:]
    assert third.next is None
    assert third.previous is not None

    back = novu.subscribers.search(request={"name": "Walker", "limit": 10, "before": third.previous}).result
    assert [item.subscriber_id for item in back.data] == newest_first[10:20]
    assert back.next is not None
    start = novu.subscribers.search(request={"name": "Walker", "limit": 10, "before": back.previous}).result
    assert [item.subscriber_id for item in start.data] == newest_first[:10]
    assert start.previous is None


def test_search_ascending_with_cursor_included(novu: Novu) -> None:
    ids = _create_pages(novu, 6, "Ascender")
    request: dict[str, Any] = {
        "name": "Ascender",
        "limit": 4,
        "order_direction": "ASC",
        "order_by": "createdAt",
    }

    first = novu.subscribers.search(request=request).result
    assert [item.subscriber_id for item in first.data] == ids[:4]
    assert first.next is not None

    rest = novu.subscribers.search(request={**request, "after": first.next}).result
    assert [item.subscriber_id for item in rest.data] == ids[4:]
    assert rest.next is None

    with_cursor = novu.subscribers.search(
        request={**request, "after": first.next, "include_cursor": True}
    ).result
    assert [item.subscriber_id for item in with_cursor.data] == ids[3:]


def test_search_filters(novu: Novu) -> None:
    novu.subscribers.create(
        create_subscriber_request_dto={
            "subscriber_id": "frank",
            "first_name": "Frank",
            "last_name": "Filter",
            "email": "frank@example.com",
            "phone": "+15550111",
        }
    )
    cases: list[dict[str, Any]] = [
        {"email": "frank@example.com"},
        {"phone": "+15550111"},
        {"subscriber_id": "frank"},
        {"name": "Frank"},
        {"name": "Filter"},
        {"name": "Frank Filter"},
    ]
    for filters in cases:
        found = novu.subscribers.search(request=filters).result
        assert [item.subscriber_id for item in found.data] == ["frank"], filters
        assert found.total_count == 1, filters
    missing = novu.subscribers.search(request={"email": "nobody@example.com"}).result
    assert missing.data == []
    assert missing.next is None
    assert missing.previous is None


def _store_preference_and_subscription(database: Database, subscriber_pk: str, environment_id: str) -> None:
    """Store a preference and a topic subscription for the subscriber, as those APIs would."""
    store_topic_subscription(database, environment_id, subscriber_pk, "news")
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None).isoformat(sep=" ")
    insert = (
        "INSERT INTO preference (id, environment_id, subscriber_pk, scope, enabled, channels, "
        "context_key, created_at, updated_at) VALUES (?, ?, ?, 'global', TRUE, '{}', '', ?, ?)"
    )
    write_rows(database, [(insert, ("aaaaaaaaaaaaaaaaaaaaaaa3", environment_id, subscriber_pk, now, now))])


def _count(database: Database, table: str, subscriber_pk: str) -> int:
    (row,) = read_rows(database, f"SELECT count(*) FROM {table} WHERE subscriber_pk = ?", (subscriber_pk,))
    return int(row[0])


def test_delete_removes_owned_rows(novu: Novu, api: httpx.Client, shared_server: ServerProcess) -> None:
    database = shared_server.database
    created = novu.subscribers.create(
        create_subscriber_request_dto={"subscriber_id": "gina", "first_name": "Gina", "data": {"a": 1}}
    ).result
    assert created.id is not None
    novu.trigger(
        trigger_event_request_dto={"workflow_id": "welcome", "to": "gina", "payload": {"text": "hi"}}
    )
    poll(
        lambda: novu.messages.retrieve(request={"subscriber_id": "gina"}).result.data,
        bool,
        "the message to gina",
    )
    _store_preference_and_subscription(database, created.id, created.environment_id)
    novu.subscribers.credentials.update(
        subscriber_id="gina",
        update_subscriber_channel_request_dto={"provider_id": "fcm", "credentials": {"device_tokens": ["t"]}},
    )

    deleted = novu.subscribers.delete(subscriber_id="gina").result
    assert deleted.acknowledged is True
    assert deleted.status == "deleted"

    for table in ("message", "preference", "topic_subscription"):
        assert _count(database, table, created.id) == 0, table
    with pytest.raises(ErrorDto) as caught:
        novu.subscribers.retrieve(subscriber_id="gina")
    assert caught.value.data.status_code == 404
    assert api.patch("/v2/subscribers/gina", json={"firstName": "G"}).status_code == 404
    assert api.delete("/v2/subscribers/gina").status_code == 404
    assert novu.subscribers.search(request={"subscriber_id": "gina"}).result.data == []
    assert novu.messages.retrieve(request={"subscriber_id": "gina"}).result.data == []

    revived = novu.subscribers.create(
        create_subscriber_request_dto={"subscriber_id": "gina", "last_name": "New"}
    )
    assert revived.result.deleted is False
    assert revived.result.id == created.id
    assert revived.result.first_name is None
    assert revived.result.last_name == "New"
    assert revived.result.data is None
    assert revived.result.channels == []


def test_trigger_revives_deleted_subscriber(novu: Novu) -> None:
    novu.subscribers.create(create_subscriber_request_dto={"subscriber_id": "hugo", "first_name": "Hugo"})
    novu.subscribers.delete(subscriber_id="hugo")

    novu.trigger(
        trigger_event_request_dto={
            "workflow_id": "welcome",
            "to": {"subscriber_id": "hugo", "last_name": "Back"},
            "payload": {"text": "again"},
        }
    )
    poll(
        lambda: novu.messages.retrieve(request={"subscriber_id": "hugo"}).result.data,
        bool,
        "the message to hugo",
    )
    revived = novu.subscribers.retrieve(subscriber_id="hugo").result
    assert revived.deleted is False
    assert revived.first_name is None
    assert revived.last_name == "Back"
    found = novu.subscribers.search(request={"subscriber_id": "hugo"}).result.data
    assert [item.subscriber_id for item in found] == ["hugo"]


def test_bulk_create_reports_each_item(novu: Novu) -> None:
    novu.subscribers.create(create_subscriber_request_dto={"subscriber_id": "hank", "first_name": "Hank"})
    result = novu.subscribers.create_bulk(
        bulk_subscriber_create_dto={
            "subscribers": [
                {"subscriber_id": "hank", "last_name": "Hill"},
                {"subscriber_id": "ivy"},
                {"subscriber_id": "   "},
                {"subscriber_id": "jack", "data": {"x": 1}},
                {"subscriber_id": "ivy", "first_name": "Ivy"},
            ]
        }
    ).result
    assert [item.subscriber_id for item in result.created] == ["ivy", "jack"]
    assert [item.subscriber_id for item in result.updated] == ["hank", "ivy"]
    assert len(result.failed) == 1
    assert result.failed[0].message is not None
    assert "subscribers[2].subscriberId" in result.failed[0].message
    assert novu.subscribers.retrieve(subscriber_id="hank").result.last_name == "Hill"
    assert novu.subscribers.retrieve(subscriber_id="ivy").result.first_name == "Ivy"


def test_bulk_create_names_invalid_field(api: httpx.Client) -> None:
    response = api.post(
        "/v1/subscribers/bulk",
        json={"subscribers": [{"subscriberId": "kim", "email": 42}, "lee", {"subscriberId": "lee"}]},
    )
    assert response.status_code == 201, response.text
    data = response.json()["data"]
    assert data["created"] == [{"subscriberId": "lee"}]
    assert data["updated"] == []
    assert data["failed"][0]["subscriberId"] == "kim"
    assert "subscribers[0].email" in data["failed"][0]["message"]
    assert "subscribers[1]" in data["failed"][1]["message"]


def test_credentials_replace_append_delete(novu: Novu) -> None:
    novu.subscribers.create(create_subscriber_request_dto={"subscriber_id": "mia"})
    credentials = novu.subscribers.credentials

    replaced = credentials.update(
        subscriber_id="mia",
        update_subscriber_channel_request_dto={
            "provider_id": "fcm",
            "credentials": {"device_tokens": ["a", "b", "a"]},
        },
    ).result
    assert replaced.channels is not None
    (fcm,) = replaced.channels
    assert fcm.provider_id == "fcm"
    assert fcm.credentials.device_tokens == ["a", "b"]
    integration_id = fcm.integration_id

    replaced = credentials.update(
        subscriber_id="mia",
        update_subscriber_channel_request_dto={"provider_id": "fcm", "credentials": {"device_tokens": ["c"]}},
    ).result
    assert replaced.channels is not None
    assert replaced.channels[0].credentials.device_tokens == ["c"]
    assert replaced.channels[0].integration_id == integration_id

    appended = credentials.append(
        subscriber_id="mia",
        update_subscriber_channel_request_dto={
            "provider_id": "fcm",
            "credentials": {"device_tokens": ["c", "d"]},
        },
    ).result
    assert appended.channels is not None
    assert appended.channels[0].credentials.device_tokens == ["c", "d"]

    with_slack = credentials.append(
        subscriber_id="mia",
        update_subscriber_channel_request_dto={
            "provider_id": "slack",
            "credentials": {"webhook_url": "https://hooks.example.com/x"},
        },
    ).result
    assert with_slack.channels is not None
    assert [channel.provider_id for channel in with_slack.channels] == ["fcm", "slack"]
    assert with_slack.channels[1].integration_id != integration_id

    credentials.delete(subscriber_id="mia", provider_id="fcm")
    remaining = novu.subscribers.retrieve(subscriber_id="mia").result.channels
    assert remaining is not None
    assert [channel.provider_id for channel in remaining] == ["slack"]
    assert remaining[0].credentials.webhook_url == "https://hooks.example.com/x"


def test_online_status(novu: Novu) -> None:
    created = novu.subscribers.create(create_subscriber_request_dto={"subscriber_id": "noah"}).result
    assert created.is_online is False
    assert created.last_online_at is None
    properties = novu.subscribers.properties

    online = properties.update_online_flag(
        subscriber_id="noah", update_subscriber_online_flag_request_dto={"is_online": True}
    ).result
    assert online.is_online is True
    assert online.last_online_at is not None

    offline = properties.update_online_flag(
        subscriber_id="noah", update_subscriber_online_flag_request_dto={"is_online": False}
    ).result
    assert offline.is_online is False
    assert offline.last_online_at is not None
    assert offline.last_online_at >= online.last_online_at


# (method, path, JSON body or None, expected status, field the error names or None)
BAD_REQUESTS = [
    pytest.param("POST", "/v2/subscribers", {"subscriberId": "  "}, 400, "subscriberId", id="blank-id"),
    pytest.param("POST", "/v2/subscribers", {"firstName": "X"}, 400, "subscriberId", id="missing-id"),
    pytest.param(
        "POST", "/v2/subscribers", {"subscriberId": "x", "email": 1}, 400, "email", id="email-number"
    ),
    pytest.param("POST", "/v2/subscribers", {"subscriberId": "x", "data": [1]}, 400, "data", id="data-array"),
    pytest.param("GET", "/v2/subscribers/%20%20", None, 400, "subscriberId", id="blank-path-id"),
    pytest.param("GET", "/v2/subscribers?limit=0", None, 400, "limit", id="limit-zero"),
    pytest.param("GET", "/v2/subscribers?limit=ten", None, 400, "limit", id="limit-text"),
    pytest.param("GET", "/v2/subscribers?after=not-a-cursor", None, 400, "after", id="bad-cursor"),
    pytest.param("GET", "/v2/subscribers?orderDirection=UP", None, 400, "orderDirection", id="bad-direction"),
    pytest.param("POST", "/v1/subscribers/bulk", {"subscribers": []}, 400, "subscribers", id="bulk-empty"),
    pytest.param(
        "POST",
        "/v1/subscribers/bulk",
        {"subscribers": [{"subscriberId": f"bulk-{index}"} for index in range(501)]},
        400,
        "subscribers",
        id="bulk-501",
    ),
    pytest.param(
        "PUT",
        "/v1/subscribers/carol/credentials",
        {"providerId": "carrier-pigeon", "credentials": {"deviceTokens": ["x"]}},
        400,
        "providerId",
        id="bad-provider",
    ),
    pytest.param(
        "PATCH",
        "/v1/subscribers/carol/credentials",
        {"providerId": "fcm"},
        400,
        "credentials",
        id="no-credentials",
    ),
    pytest.param(
        "DELETE",
        "/v1/subscribers/carol/credentials/carrier-pigeon",
        None,
        400,
        "providerId",
        id="bad-provider-path",
    ),
    pytest.param(
        "PATCH", "/v1/subscribers/carol/online-status", {"isOnline": "yes"}, 400, "isOnline", id="online"
    ),
    pytest.param("GET", "/v2/subscribers/nobody", None, 404, None, id="unknown-get"),
    pytest.param("PATCH", "/v2/subscribers/nobody", {"firstName": "N"}, 404, None, id="unknown-patch"),
    pytest.param("DELETE", "/v2/subscribers/nobody", None, 404, None, id="unknown-delete"),
    pytest.param(
        "PUT",
        "/v1/subscribers/nobody/credentials",
        {"providerId": "fcm", "credentials": {"deviceTokens": ["x"]}},
        404,
        None,
        id="unknown-credentials",
    ),
    pytest.param(
        "PATCH", "/v1/subscribers/nobody/online-status", {"isOnline": True}, 404, None, id="unknown-online"
    ),
]


@pytest.mark.parametrize(("method", "path", "body", "status", "field"), BAD_REQUESTS)
def test_bad_request_rejected(
    api: httpx.Client, method: str, path: str, body: Any, status: int, field: str | None
) -> None:
    response = api.request(method, path, json=body)
    assert response.status_code == status, response.text
    error = response.json()
    assert error["statusCode"] == status
    assert {"timestamp", "path", "message"} <= error.keys()
    if field is not None:
        assert field in [entry["field"] for entry in error["errors"]]


def test_unknown_subscriber_is_sdk_error(novu: Novu) -> None:
    with pytest.raises(ErrorDto) as caught:
        novu.subscribers.retrieve(subscriber_id="nobody-at-all")
    assert caught.value.data.status_code == 404
    assert caught.value.data.path == "/v2/subscribers/nobody-at-all"
