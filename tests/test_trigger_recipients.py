"""Every recipient form of POST /v1/events/trigger, checked by the in-app messages that arrive."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from novu_py import Novu, models

from tests.helpers import inbox_messages, open_session, poll, read_rows, wait_settled
from tests.servers import ServerProcess
from tests.stores import Database

pytestmark = pytest.mark.both_modes

WORKFLOW_ID = "welcome"
TRIGGER_PATH = "/v1/events/trigger"
DELIVERY_SECONDS = 15.0
STORED_TABLES = ("trigger_event", "notification", "subscriber", "message")


class Inboxes:
    """Inbox sessions of the test subscribers; opening one creates the subscriber."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.tokens: dict[str, str] = {}

    def open(self, *subscriber_ids: str) -> None:
        for subscriber_id in subscriber_ids:
            self.tokens[subscriber_id] = open_session(self.server.base_url, subscriber_id)["token"]

    def received(self, subscriber_id: str, transaction_id: str) -> list[dict[str, Any]]:
        messages = inbox_messages(self.server.base_url, self.tokens[subscriber_id])
        return [message for message in messages if message["transactionId"] == transaction_id]

    def wait_for(self, transaction_id: str, subscriber_ids: list[str]) -> None:
        """Wait until each of these subscribers has the trigger's message and the pipeline is idle."""
        for subscriber_id in subscriber_ids:
            poll(
                lambda: self.received(subscriber_id, transaction_id),  # noqa: B023
                bool,
                f"{subscriber_id}'s message of {transaction_id}",
                DELIVERY_SECONDS,
            )
        settle(self.server)

    def counts(self, transaction_id: str) -> dict[str, int]:
        return {
            subscriber_id: len(self.received(subscriber_id, transaction_id)) for subscriber_id in self.tokens
        }


@pytest.fixture(scope="module")
def inboxes(shared_server: ServerProcess) -> Inboxes:
    return Inboxes(shared_server)


def settle(server: ServerProcess) -> None:
    wait_settled(server.database, DELIVERY_SECONDS)


def database_of(server: ServerProcess) -> Database:
    return server.database


def topics_of(server: ServerProcess, transaction_id: str) -> dict[str, list[str]]:
    """Return, per subscriberId, the topic keys stored on its notification of this transaction."""
    rows = read_rows(
        database_of(server),
        "SELECT s.subscriber_id, n.topics FROM notification n JOIN subscriber s ON s.id = n.subscriber_pk "
        "WHERE n.transaction_id = ?",
        (transaction_id,),
    )
    return {subscriber_id: json.loads(topics) for subscriber_id, topics in rows}


def stored_counts(server: ServerProcess) -> dict[str, int]:
    database = database_of(server)
    return {table: read_rows(database, f"SELECT count(*) FROM {table}")[0][0] for table in STORED_TABLES}


def subscribe(shared_novu: Novu, topic_key: str, subscriber_ids: list[str]) -> None:
    result = shared_novu.topics.subscriptions.create(
        topic_key=topic_key, create_topic_subscriptions_request_dto={"subscriptions": subscriber_ids}
    ).result
    assert result.meta.successful == len(subscriber_ids)


def test_single_topic_object_reaches_members(
    shared_novu: Novu, inboxes: Inboxes, shared_server: ServerProcess
) -> None:
    inboxes.open("alice", "bob", "outsider")
    subscribe(shared_novu, "all-staff", ["alice", "bob"])

    result = shared_novu.trigger(
        trigger_event_request_dto={
            "workflow_id": WORKFLOW_ID,
            "to": {"type": "Topic", "topic_key": "all-staff"},
            "payload": {"text": "hi"},
        }
    ).result

    assert result.acknowledged is True
    assert result.status == models.TriggerEventResponseDtoStatus.PROCESSED
    assert result.transaction_id is not None
    inboxes.wait_for(result.transaction_id, ["alice", "bob"])
    counts = inboxes.counts(result.transaction_id)
    assert counts["alice"] == 1
    assert counts["bob"] == 1
    assert counts["outsider"] == 0
    assert inboxes.received("alice", result.transaction_id)[0]["body"] == "Hello : hi"
    assert topics_of(shared_server, result.transaction_id) == {"alice": ["all-staff"], "bob": ["all-staff"]}


def test_unknown_topic_rejected_422(
    shared_novu: Novu, shared_api: httpx.Client, shared_server: ServerProcess
) -> None:
    settle(shared_server)
    before = stored_counts(shared_server)
    body = {"name": WORKFLOW_ID, "to": ["alice", {"type": "Topic", "topicKey": "no-such-topic"}]}

    response = shared_api.post(TRIGGER_PATH, json=body)

    assert response.status_code == 422, response.text
    payload = response.json()
    assert payload["statusCode"] == 422
    assert "no-such-topic" in payload["message"]
    assert payload["errors"]["to[1].topicKey"]["value"] == "no-such-topic"
    with pytest.raises(models.ValidationErrorDto) as raised:
        shared_novu.trigger(
            trigger_event_request_dto={
                "workflow_id": WORKFLOW_ID,
                "to": {"type": "Topic", "topic_key": "no-such-topic"},
            }
        )
    assert "to.topicKey" in raised.value.data.errors
    assert stored_counts(shared_server) == before


def test_empty_topic_reports_nothing_sent(shared_novu: Novu, shared_server: ServerProcess) -> None:
    shared_novu.topics.create(create_update_topic_request_dto={"key": "empty-room"})
    settle(shared_server)
    before = stored_counts(shared_server)

    result = shared_novu.trigger(
        trigger_event_request_dto={
            "workflow_id": WORKFLOW_ID,
            "to": [{"type": "Topic", "topic_key": "empty-room"}],
        }
    ).result

    assert result.status == models.TriggerEventResponseDtoStatus.INVALID_RECIPIENTS
    assert result.error == ["topic 'empty-room' has no subscribers; nothing was sent"]
    assert result.transaction_id is not None
    assert stored_counts(shared_server) == before


def test_mixed_array_deduplicates(shared_novu: Novu, inboxes: Inboxes, shared_server: ServerProcess) -> None:
    inboxes.open("carol", "erin", "frank")
    subscribe(shared_novu, "crew", ["carol", "erin", "frank"])
    subscribe(shared_novu, "leads", ["erin"])

    result = shared_novu.trigger(
        trigger_event_request_dto={
            "workflow_id": WORKFLOW_ID,
            "to": [
                " carol ",
                {"subscriber_id": "dave", "first_name": "Dave"},
                {"type": "Topic", "topic_key": "crew"},
                {"type": "Topic", "topic_key": "leads"},
                "carol",
            ],
            "payload": {"text": "mixed"},
        }
    ).result

    assert result.status == models.TriggerEventResponseDtoStatus.PROCESSED
    assert result.transaction_id is not None
    inboxes.open("dave")
    inboxes.wait_for(result.transaction_id, ["carol", "dave", "erin", "frank"])
    counts = inboxes.counts(result.transaction_id)
    for subscriber_id in ("carol", "dave", "erin", "frank"):
        assert counts[subscriber_id] == 1, subscriber_id
    assert inboxes.received("dave", result.transaction_id)[0]["body"] == "Hello Dave: mixed"
    topics = topics_of(shared_server, result.transaction_id)
    assert topics == {"carol": ["crew"], "dave": [], "erin": ["crew", "leads"], "frank": ["crew"]}


@pytest.mark.parametrize(
    ("actor", "exclude", "direct", "reached"),
    [
        pytest.param("gina", None, [], ["hank", "ida"], id="actor-id"),
        pytest.param("gina", None, ["gina"], ["hank", "ida"], id="actor-named-directly"),
        pytest.param(
            {"subscriberId": "hank", "firstName": "Hank"}, None, [], ["gina", "ida"], id="actor-object"
        ),
        pytest.param(None, ["gina", "ida"], [], ["hank"], id="exclude"),
        pytest.param(None, ["gina"], ["gina"], ["gina", "hank", "ida"], id="exclude-only-the-topic"),
        pytest.param("ida", ["gina"], [], ["hank"], id="actor-and-exclude"),
    ],
)
def test_actor_and_exclude_left_out(
    shared_api: httpx.Client,
    shared_novu: Novu,
    inboxes: Inboxes,
    actor: Any,
    exclude: list[str] | None,
    direct: list[str],
    reached: list[str],
) -> None:
    inboxes.open("gina", "hank", "ida")
    subscribe(shared_novu, "writers", ["gina", "hank", "ida"])
    topic: dict[str, Any] = {"type": "Topic", "topicKey": "writers"}
    if exclude is not None:
        topic["exclude"] = exclude
    body: dict[str, Any] = {"name": WORKFLOW_ID, "to": [topic, *direct]}
    if actor is not None:
        body["actor"] = actor

    response = shared_api.post(TRIGGER_PATH, json=body)

    assert response.status_code == 201, response.text
    transaction_id = response.json()["data"]["transactionId"]
    inboxes.wait_for(transaction_id, reached)
    counts = inboxes.counts(transaction_id)
    for subscriber_id in ("gina", "hank", "ida"):
        assert counts[subscriber_id] == (1 if subscriber_id in reached else 0), subscriber_id


def test_everyone_excluded_reports_nothing_sent(
    shared_api: httpx.Client, shared_novu: Novu, inboxes: Inboxes, shared_server: ServerProcess
) -> None:
    inboxes.open("jo", "kim")
    subscribe(shared_novu, "pair", ["jo", "kim"])
    settle(shared_server)
    before = stored_counts(shared_server)

    response = shared_api.post(
        TRIGGER_PATH,
        json={
            "name": WORKFLOW_ID,
            "to": {"type": "Topic", "topicKey": "pair", "exclude": ["jo"]},
            "actor": "kim",
        },
    )

    assert response.status_code == 201, response.text
    data = response.json()["data"]
    assert data["status"] == "invalid_recipients"
    assert data["error"] == ["every subscriber of topic 'pair' is excluded or is the actor; nothing was sent"]
    assert stored_counts(shared_server) == before


TOPIC = {"type": "Topic", "topicKey": "all-staff"}


@pytest.mark.parametrize(
    ("to", "field"),
    [
        pytest.param(None, "to", id="missing"),
        pytest.param("", "to", id="empty-string"),
        pytest.param("   ", "to", id="blank-string"),
        pytest.param([], "to", id="empty-array"),
        pytest.param(["alice", "bob", {"type": "Topic"}], "to[2].topicKey", id="topic-without-key"),
        pytest.param({"type": "Topic", "topicKey": "  "}, "to.topicKey", id="topic-blank-key"),
        pytest.param({"topicKey": 42}, "to.topicKey", id="topic-number-key"),
        pytest.param([TOPIC, {"subscriberId": ""}], "to[1].subscriberId", id="empty-subscriber-id"),
        pytest.param(["alice", " "], "to[1]", id="blank-entry"),
        pytest.param([TOPIC, 7], "to[1]", id="number-entry"),
        pytest.param({"type": "Group", "subscriberId": "alice"}, "to.type", id="unknown-type"),
        pytest.param({**TOPIC, "exclude": "alice"}, "to.exclude", id="exclude-string"),
        pytest.param({**TOPIC, "exclude": ["alice", ""]}, "to.exclude[1]", id="exclude-blank"),
        pytest.param([f"user-{index}" for index in range(100)] + [TOPIC], "to", id="over-100"),
    ],
)
def test_bad_recipients_rejected(
    shared_api: httpx.Client, shared_server: ServerProcess, to: Any, field: str
) -> None:
    settle(shared_server)
    before = stored_counts(shared_server)
    body: dict[str, Any] = {"name": WORKFLOW_ID, "payload": {}}
    if to is not None:
        body["to"] = to

    response = shared_api.post(TRIGGER_PATH, json=body)

    assert response.status_code == 400, response.text
    payload = response.json()
    assert payload["statusCode"] == 400
    assert field in [entry["field"] for entry in payload["errors"]]
    assert stored_counts(shared_server) == before


def test_actor_only_reports_nothing_sent(shared_api: httpx.Client, shared_server: ServerProcess) -> None:
    settle(shared_server)
    before = stored_counts(shared_server)

    response = shared_api.post(
        TRIGGER_PATH, json={"name": WORKFLOW_ID, "to": ["alice", {"subscriberId": "alice"}], "actor": "alice"}
    )

    assert response.status_code == 201, response.text
    data = response.json()["data"]
    assert data["status"] == "invalid_recipients"
    assert data["error"] == [
        "the only recipient, 'alice', is the trigger's actor, who is not notified; nothing was sent"
    ]
    assert stored_counts(shared_server) == before


def test_actor_topic_rejected(shared_api: httpx.Client) -> None:
    response = shared_api.post(TRIGGER_PATH, json={"name": WORKFLOW_ID, "to": "alice", "actor": TOPIC})

    assert response.status_code == 400, response.text
    assert "actor" in [entry["field"] for entry in response.json()["errors"]]


def test_bulk_trigger_answers_each_event(
    shared_novu: Novu, inboxes: Inboxes, shared_server: ServerProcess
) -> None:
    inboxes.open("liam", "mia", "noah")
    subscribe(shared_novu, "bulk-team", ["mia", "noah"])

    results = shared_novu.trigger_bulk(
        bulk_trigger_event_dto={
            "events": [
                {
                    "workflow_id": WORKFLOW_ID,
                    "to": "liam",
                    "payload": {"text": "one"},
                    "transaction_id": "bulk-1",
                },
                {"workflow_id": "no-such-workflow", "to": "liam", "transaction_id": "bulk-2"},
                {
                    "workflow_id": WORKFLOW_ID,
                    "to": [{"type": "Topic", "topic_key": "bulk-team"}, "mia"],
                    "payload": {"text": "two"},
                    "transaction_id": "bulk-3",
                },
                {"workflow_id": WORKFLOW_ID, "to": {"type": "Topic", "topic_key": "no-such-topic"}},
            ]
        }
    ).result

    assert [result.status for result in results] == [
        models.TriggerEventResponseDtoStatus.PROCESSED,
        models.TriggerEventResponseDtoStatus.ERROR,
        models.TriggerEventResponseDtoStatus.PROCESSED,
        models.TriggerEventResponseDtoStatus.ERROR,
    ]
    assert [result.transaction_id for result in results[:3]] == ["bulk-1", "bulk-2", "bulk-3"]
    assert results[1].error is not None
    assert "no-such-workflow" in results[1].error[0]
    assert results[3].error is not None
    assert "no-such-topic" in results[3].error[0]

    inboxes.wait_for("bulk-1", ["liam"])
    inboxes.wait_for("bulk-3", ["mia", "noah"])
    assert inboxes.counts("bulk-1")["liam"] == 1
    assert inboxes.counts("bulk-2")["liam"] == 0
    counts = inboxes.counts("bulk-3")
    assert counts["mia"] == 1
    assert counts["noah"] == 1
    assert counts["liam"] == 0


def test_bulk_invalid_event_named(shared_api: httpx.Client, shared_server: ServerProcess) -> None:
    settle(shared_server)
    before = stored_counts(shared_server)

    response = shared_api.post(
        "/v1/events/trigger/bulk",
        json={"events": [{"name": WORKFLOW_ID, "to": [{"type": "Topic"}]}, "not an event"]},
    )

    assert response.status_code == 201, response.text
    first, second = response.json()["data"]
    assert first["status"] == "error"
    assert first["error"][0].startswith("to[0].topicKey: ")
    assert second["status"] == "error"
    assert second["error"][0].startswith("events[1]: ")
    assert stored_counts(shared_server) == before


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({}, id="events-missing"),
        pytest.param({"events": []}, id="events-empty"),
        pytest.param({"events": {"name": WORKFLOW_ID}}, id="events-object"),
        pytest.param({"events": [{"name": WORKFLOW_ID, "to": "x"}] * 101}, id="events-over-100"),
    ],
)
def test_bulk_bad_envelope_rejected(shared_api: httpx.Client, body: dict[str, Any]) -> None:
    response = shared_api.post("/v1/events/trigger/bulk", json=body)

    assert response.status_code == 400, response.text
    assert [entry["field"] for entry in response.json()["errors"]] == ["events"]
