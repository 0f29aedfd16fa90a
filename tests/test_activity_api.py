"""The activity feed and the messages API through novu-py, after real triggers reach the inbox."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import websockets
from novu_py import Novu
from novu_py.models import ErrorDto, MessageResponseDto
from novu_py.utils import RetryConfig

from tests.helpers import next_frame, open_session, poll, store_topic_subscription
from tests.servers import API_KEY, ServerProcess
from tests.stores import write_rows

AUTHORIZED = {"Authorization": f"ApiKey {API_KEY}"}
# Without retries, an error status fails the call at once instead of being retried for up to an hour.
NO_RETRIES = RetryConfig("none", None, False)
# novu-py 3.19.0 reads its own deprecated `search` field while building every activity list
# request, which raises a DeprecationWarning whether or not the caller set it.
pytestmark = [pytest.mark.both_modes, pytest.mark.filterwarnings("ignore:.*DEPRECATED.*:DeprecationWarning")]


@pytest.fixture(scope="module")
def novu(shared_server: ServerProcess) -> Novu:
    return Novu(secret_key=API_KEY, server_url=shared_server.base_url, retry_config=NO_RETRIES)


@pytest.fixture(scope="module")
def api(shared_server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=shared_server.base_url, headers=AUTHORIZED, timeout=10) as client:
        yield client


def deliver(novu: Novu, to: Any, text: str) -> tuple[str, list[MessageResponseDto]]:
    """Trigger the `welcome` workflow and return the transaction id and its messages once all exist."""
    recipients = to if isinstance(to, list) else [to]
    result = novu.trigger(
        trigger_event_request_dto={"workflow_id": "welcome", "to": to, "payload": {"text": text}}
    )
    transaction_id = result.result.transaction_id
    assert transaction_id is not None
    messages = poll(
        lambda: novu.messages.retrieve(request={"transaction_id": [transaction_id]}).result.data,
        lambda found: len(found) == len(recipients),
        f"the messages of transaction {transaction_id}",
    )
    return transaction_id, messages


def test_activity_entry_after_delivery(novu: Novu, api: httpx.Client) -> None:
    transaction_id, _ = deliver(novu, {"subscriber_id": "olga", "first_name": "Olga"}, "activity")

    listed = novu.notifications.list(request={"transaction_id": transaction_id}).result
    assert listed.has_more is False
    assert listed.page == 0
    (entry,) = listed.data
    assert entry.transaction_id == transaction_id
    assert entry.organization_id
    assert entry.subscriber is not None
    assert entry.subscriber.subscriber_id == "olga"
    assert entry.subscriber.first_name == "Olga"
    assert entry.template is not None
    assert entry.template.triggers[0].identifier == "welcome"
    assert entry.payload == {"text": "activity"}
    assert entry.to == {"subscriberId": "olga", "firstName": "Olga"}
    assert entry.channels == ["in_app"]
    assert entry.severity == "none"
    assert entry.topics == []

    fetched = novu.notifications.retrieve(notification_id=entry.id or "").result
    assert fetched.id == entry.id
    assert fetched.jobs is not None
    (job,) = fetched.jobs
    assert job.type == "in_app"
    assert job.status == "completed"
    assert job.provider_id == "novu"
    assert job.step.name == "Inbox"
    assert [detail.status for detail in job.execution_details] == ["Queued", "Success"]
    assert [detail.detail for detail in job.execution_details] == ["Step queued", "Message created"]

    missing = api.get("/v1/notifications/000000000000000000000000")
    assert missing.status_code == 404
    assert {"statusCode", "timestamp", "path", "message"} <= missing.json().keys()


def test_activity_filters(novu: Novu) -> None:
    transaction_id, messages = deliver(
        novu, [{"subscriber_id": "pia", "email": "pia@example.com"}, "quinn"], "f"
    )
    workflow_pk = messages[0].template_id
    assert isinstance(workflow_pk, str)

    def transactions(**filters: Any) -> list[str]:
        page = novu.notifications.list(request={"limit": 100, **filters}).result
        return [entry.transaction_id for entry in page.data]

    matching: list[dict[str, Any]] = [
        {"subscriber_ids": ["pia"]},
        {"emails": ["pia@example.com"]},
        {"search": "pia@example"},
        {"search": "pia"},
        {"channels": ["in_app"]},
        {"templates": [workflow_pk]},
        {"severity": ["none", "high"]},
        {"transaction_id": transaction_id},
    ]
    for filters in matching:
        assert transaction_id in transactions(**filters), filters
    excluded: list[dict[str, Any]] = [
        {"subscriber_ids": ["nobody"]},
        {"channels": ["email"]},
        {"templates": ["000000000000000000000000"]},
        {"severity": ["high"]},
        {"topic_key": "no-such-topic"},
        {"context_keys": ["tenant:acme"]},
        {"before": "2000-01-01T00:00:00Z"},
    ]
    for filters in excluded:
        assert transaction_id not in transactions(**filters), filters
    assert transactions(transaction_id=transaction_id, subscriber_ids=["quinn"]) == [transaction_id]


def test_activity_topic_filters(novu: Novu, shared_server: ServerProcess) -> None:
    transaction_id, (message,) = deliver(novu, "wes", "topics")
    database = shared_server.database
    # Trigger fan-out to topics is built elsewhere, so the test stores the rows it would leave.
    topic_pk, subscription_pk = store_topic_subscription(
        database, message.environment_id, message.subscriber_id, "alerts"
    )
    write_rows(
        database,
        [("UPDATE notification SET topics = ? WHERE id = ?", ('["alerts"]', message.notification_id))],
    )

    (entry,) = novu.notifications.list(
        request={"transaction_id": transaction_id, "topic_key": "alerts"}
    ).result.data
    assert entry.topics is not None
    assert [(topic.topic_id, topic.topic_key) for topic in entry.topics] == [(topic_pk, "alerts")]
    by_subscription = novu.notifications.list(request={"subscription_id": subscription_pk}).result.data
    assert [item.transaction_id for item in by_subscription] == [transaction_id]
    assert novu.notifications.list(request={"subscription_id": "000000000000000000000000"}).result.data == []
    assert (
        novu.notifications.list(request={"topic_key": "other", "transaction_id": transaction_id}).result.data
        == []
    )


def test_activity_pages(novu: Novu) -> None:
    deliver(novu, ["rita", "sam", "tom"], "pages")
    first = novu.notifications.list(request={"subscriber_ids": ["rita", "sam", "tom"], "limit": 2}).result
    assert len(first.data) == 2
    assert first.has_more is True
    assert first.page_size == 2
    second = novu.notifications.list(
        request={"subscriber_ids": ["rita", "sam", "tom"], "limit": 2, "page": 1}
    ).result
    assert len(second.data) == 1
    assert second.has_more is False
    assert {entry.id for entry in first.data}.isdisjoint({entry.id for entry in second.data})


def test_messages_list_and_filters(novu: Novu) -> None:
    first_transaction, _ = deliver(novu, "uma", "one")
    second_transaction, _ = deliver(novu, "uma", "two")

    listed = novu.messages.retrieve(request={"subscriber_id": "uma", "channel": "in_app"}).result
    assert listed.total_count == 2
    assert listed.has_more is False
    assert [message.content for message in listed.data] == ["Hello : two", "Hello : one"]
    message = listed.data[0]
    assert message.channel == "in_app"
    assert message.read is False
    assert message.seen is False
    assert message.status == "sent"
    assert message.organization_id
    assert message.template_identifier == "welcome"
    assert message.subscriber is not None
    assert message.subscriber.subscriber_id == "uma"
    assert message.payload == {"text": "two"}

    both = novu.messages.retrieve(request={"transaction_id": [first_transaction, second_transaction]}).result
    assert both.total_count == 2
    paged = novu.messages.retrieve(request={"subscriber_id": "uma", "limit": 1, "page": 1}).result
    assert paged.has_more is False
    assert paged.page == 1
    assert [item.transaction_id for item in paged.data] == [first_transaction]
    assert novu.messages.retrieve(request={"subscriber_id": "uma", "channel": "email"}).result.data == []


async def _delete_from_inbox(server: ServerProcess, novu: Novu) -> None:
    session = open_session(server.base_url, "vera")
    async with websockets.connect(f"{server.ws_url}?token={session['token']}") as socket:
        assert (await next_frame(socket, "unread_count_changed"))["unreadCount"] == 0
        _, messages = await asyncio.to_thread(deliver, novu, "vera", "to delete")
        assert (await next_frame(socket, "unread_count_changed"))["unreadCount"] == 1

        deleted = await asyncio.to_thread(novu.messages.delete, message_id=messages[0].id or "")
        assert deleted.result.acknowledged is True
        assert deleted.result.status == "deleted"
        assert (await next_frame(socket, "unread_count_changed"))["unreadCount"] == 0

    inbox = httpx.get(
        f"{server.base_url}/v1/inbox/notifications",
        headers={"Authorization": f"Bearer {session['token']}"},
        timeout=10,
    )
    assert inbox.status_code == 200
    assert inbox.json()["data"] == []


def test_message_delete_leaves_inbox(shared_server: ServerProcess, novu: Novu) -> None:
    asyncio.run(_delete_from_inbox(shared_server, novu))
    assert novu.messages.retrieve(request={"subscriber_id": "vera"}).result.data == []
    with pytest.raises(ErrorDto) as caught:
        novu.messages.delete(message_id="000000000000000000000000")
    assert caught.value.data.status_code == 404


# (path, expected status, field the error names)
BAD_QUERIES = [
    pytest.param("/v1/messages?limit=0", 400, "limit", id="messages-limit-zero"),
    pytest.param("/v1/messages?page=-1", 400, "page", id="messages-negative-page"),
    pytest.param("/v1/messages?channel=fax", 400, "channel", id="messages-channel"),
    pytest.param("/v1/notifications?limit=0", 400, "limit", id="activity-limit-zero"),
    pytest.param("/v1/notifications?channels=fax", 400, "channels", id="activity-channel"),
    pytest.param("/v1/notifications?severity=urgent", 400, "severity", id="activity-severity"),
    pytest.param("/v1/notifications?after=yesterday", 400, "after", id="activity-after"),
]


@pytest.mark.parametrize(("path", "status", "field"), BAD_QUERIES)
def test_bad_query_rejected(api: httpx.Client, path: str, status: int, field: str) -> None:
    response = api.get(path)
    assert response.status_code == status, response.text
    error = response.json()
    assert {"statusCode", "timestamp", "path", "message"} <= error.keys()
    assert field in [entry["field"] for entry in error["errors"]]
