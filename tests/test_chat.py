"""Chat steps through incoming webhooks: request shapes, escaping, addressing, retries and the guard.

The module's server may reach 127.0.0.1 only because it runs with
NOVULITE_OUTBOUND_ALLOW=127.0.0.1; test_guard_refuses_before_connecting starts
one without it.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from novulite.engine.templates import render
from novulite.providers import chat_formats
from tests.conftest import start_server
from tests.http_stub import HttpStub, Reply
from tests.pipeline import finished_jobs, query, trigger
from tests.servers import API_KEY, ServerProcess

# A value that tries every kind of markup: a mention, bold, an entity and italics.
HOSTILE = "<@here> *bold* & _x_"
# The template's own markup, which must arrive unchanged.
TEMPLATE = "**Order** {{ payload.name }}"
# What each provider receives for TEMPLATE with `name` HOSTILE, written out by hand.
EXPECTED_CONTENT = {
    "slack": "**Order** &lt;@here&gt; *bold* &amp; _x_",
    "discord": "**Order** \\<\\@here\\> \\*bold\\* & \\_x\\_",
    "msteams": "**Order** \\<@here\\> \\*bold\\* \\& \\_x\\_",
    "mattermost": "**Order** \\<@\u200bhere\\> \\*bold\\* \\& \\_x\\_",
    "chat-webhook": "**Order** <@here> *bold* & _x_",
}
PROVIDER_IDS = tuple(EXPECTED_CONTENT)

_numbers = itertools.count()


@pytest.fixture(scope="module")
def stub() -> Iterator[HttpStub]:
    server = HttpStub().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def allowed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = start_server(tmp_path_factory.mktemp("chat"), env={"NOVULITE_OUTBOUND_ALLOW": "127.0.0.1"})
    yield process
    process.stop()


def client(server: ServerProcess) -> httpx.Client:
    return httpx.Client(base_url=server.base_url, headers={"Authorization": f"ApiKey {API_KEY}"}, timeout=10)


@pytest.fixture
def api(allowed_server: ServerProcess) -> Iterator[httpx.Client]:
    with client(allowed_server) as http_client:
        yield http_client


def unique(prefix: str) -> str:
    return f"{prefix}-{next(_numbers)}"


def create_integration(api: httpx.Client, provider_id: str, credentials: dict[str, Any] | None = None) -> str:
    """Create an active chat integration through the API; return its identifier."""
    identifier = unique(provider_id)
    body = {
        "providerId": provider_id,
        "channel": "chat",
        "identifier": identifier,
        "active": True,
        "credentials": credentials or {},
    }
    response = api.post("/v1/integrations", json=body)
    assert response.status_code == 201, response.text
    return identifier


def chat_workflow(api: httpx.Client, integrations: list[str], body: str = TEMPLATE, **controls: Any) -> str:
    """Create a workflow of one chat step per integration, stepIds chat0, chat1 ...; return its id."""
    workflow_id = unique("chat")
    steps = [
        {
            "name": f"Chat {index}",
            "stepId": f"chat{index}",
            "type": "chat",
            "controlValues": {"body": body, "integrationIdentifier": identifier, **controls},
        }
        for index, identifier in enumerate(integrations)
    ]
    response = api.post(
        "/v2/workflows", json={"name": workflow_id, "workflowId": workflow_id, "steps": steps}
    )
    assert response.status_code == 201, response.text
    return workflow_id


def create_subscriber(api: httpx.Client, channels: list[dict[str, Any]] | None = None) -> str:
    subscriber_id = unique("sub")
    response = api.post("/v2/subscribers", json={"subscriberId": subscriber_id})
    assert response.status_code == 201, response.text
    for entry in channels or []:
        response = api.put(f"/v1/subscribers/{subscriber_id}/credentials", json=entry)
        assert response.status_code == 200, response.text
    return subscriber_id


def job_rows(server: ServerProcess, transaction_id: str) -> dict[str, dict[str, Any]]:
    rows = query(
        server,
        "SELECT id, step_id, notification_id, attempt, error FROM job WHERE transaction_id = ?",
        (transaction_id,),
    )
    return {
        row["step_id"]: {**dict(row), "error": json.loads(row["error"]) if row["error"] else None}
        for row in rows
    }


def message_rows(server: ServerProcess, transaction_id: str) -> list[dict[str, Any]]:
    rows = query(
        server,
        "SELECT channel, content, status, provider_id, error FROM message WHERE transaction_id = ?",
        (transaction_id,),
    )
    return [dict(row) for row in rows]


def activity_job(api: httpx.Client, notification_id: str, step_id: str) -> dict[str, Any]:
    response = api.get(f"/v1/notifications/{notification_id}")
    assert response.status_code == 200, response.text
    (job,) = [job for job in response.json()["data"]["jobs"] if job["step"]["stepId"] == step_id]
    return job  # type: ignore[no-any-return]


@pytest.mark.parametrize("provider_id", PROVIDER_IDS)
def test_request_shape_and_escaping(
    provider_id: str, api: httpx.Client, allowed_server: ServerProcess, stub: HttpStub
) -> None:
    path = f"/{unique(provider_id)}/T0001/s3cr3t-token"
    identifier = create_integration(api, provider_id, {"webhookUrl": stub.url(path)})
    workflow_id = chat_workflow(api, [identifier])
    subscriber_id = create_subscriber(api)

    transaction_id = trigger(api, workflow_id, subscriber_id, payload={"name": HOSTILE})

    jobs = finished_jobs(allowed_server, transaction_id, 1)
    assert jobs["chat0"].status == "completed", jobs
    (request,) = stub.wait_for(path, 1)
    assert request.method == "POST"
    assert request.headers["content-type"] == "application/json"
    job = job_rows(allowed_server, transaction_id)["chat0"]
    assert request.headers["idempotency-key"] == job["id"]
    content = EXPECTED_CONTENT[provider_id]
    body = request.json()
    if provider_id in ("slack", "mattermost"):
        assert body == {"text": content}
    elif provider_id == "discord":
        assert body["content"] == content
        assert body["allowed_mentions"] == {"parse": ["users"]}
    elif provider_id == "msteams":
        assert body["type"] == "message"
        (attachment,) = body["attachments"]
        assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
        card = attachment["content"]
        assert card["type"] == "AdaptiveCard"
        assert card["body"] == [{"type": "TextBlock", "text": content, "wrap": True}]
    else:
        assert body == {
            "content": content,
            "subscriberId": subscriber_id,
            "transactionId": transaction_id,
            "workflowId": workflow_id,
            "stepId": "chat0",
        }
        assert "x-novu-signature" not in request.headers

    (message,) = message_rows(allowed_server, transaction_id)
    assert message["channel"] == "chat"
    assert message["status"] == "sent"
    assert message["provider_id"] == provider_id
    assert message["content"] == content
    assert jobs["chat0"].last_detail == (
        f"Message sent to the integration's {provider_id} webhook at http://127.0.0.1:{stub.port}"
    )
    activity = activity_job(api, job["notification_id"], "chat0")
    assert "s3cr3t-token" not in json.dumps(activity)


def test_generic_webhook_signature(api: httpx.Client, allowed_server: ServerProcess, stub: HttpStub) -> None:
    path = f"/{unique('signed')}"
    identifier = create_integration(
        api, "chat-webhook", {"webhookUrl": stub.url(path), "secretKey": "shared-secret"}
    )
    transaction_id = trigger(
        api, chat_workflow(api, [identifier]), create_subscriber(api), payload={"name": "é"}
    )

    assert finished_jobs(allowed_server, transaction_id, 1)["chat0"].status == "completed"
    (request,) = stub.wait_for(path, 1)
    expected = hmac.new(b"shared-secret", request.body, hashlib.sha256).hexdigest()
    assert request.headers["x-novu-signature"] == expected
    assert request.json()["content"] == "**Order** é"


def test_subscriber_webhook_preferred(
    api: httpx.Client, allowed_server: ServerProcess, stub: HttpStub
) -> None:
    integration_path = f"/{unique('integration')}"
    general_path = f"/{unique('general')}"
    exact_path = f"/{unique('exact')}"
    other_path = f"/{unique('other')}"
    identifier = create_integration(api, "slack", {"webhookUrl": stub.url(integration_path)})
    plain = create_subscriber(
        api, [{"providerId": "slack", "credentials": {"webhookUrl": stub.url(general_path)}}]
    )
    specific = create_subscriber(
        api,
        [
            {"providerId": "slack", "credentials": {"webhookUrl": stub.url(general_path)}},
            {
                "providerId": "slack",
                "credentials": {"webhookUrl": stub.url(other_path)},
                "integrationIdentifier": "another-integration",
            },
            {
                "providerId": "slack",
                "credentials": {"webhookUrl": stub.url(exact_path)},
                "integrationIdentifier": identifier,
            },
        ],
    )
    workflow_id = chat_workflow(api, [identifier])

    first = trigger(api, workflow_id, plain, payload={"name": "one"})
    second = trigger(api, workflow_id, specific, payload={"name": "two"})

    jobs = finished_jobs(allowed_server, first, 1)
    assert jobs["chat0"].last_detail.startswith("Message sent to the subscriber's slack webhook")
    assert finished_jobs(allowed_server, second, 1)["chat0"].status == "completed"
    assert [request.json()["text"] for request in stub.wait_for(general_path, 1)] == ["**Order** one"]
    assert [request.json()["text"] for request in stub.wait_for(exact_path, 1)] == ["**Order** two"]
    assert stub.received(other_path) == []
    assert stub.received(integration_path) == []


def test_no_webhook_url_skipped(api: httpx.Client, allowed_server: ServerProcess) -> None:
    identifier = create_integration(api, "discord")
    transaction_id = trigger(api, chat_workflow(api, [identifier]), create_subscriber(api))

    jobs = finished_jobs(allowed_server, transaction_id, 1)
    assert jobs["chat0"].status == "skipped"
    assert jobs["chat0"].last_detail == (
        "no discord webhook URL: the subscriber has no discord channel credentials with a webhookUrl, "
        f"and integration {identifier!r} sets none"
    )
    (raw,) = [
        row["raw"]
        for row in query(
            allowed_server,
            "SELECT d.raw FROM execution_detail d JOIN job j ON j.id = d.job_id "
            "WHERE j.transaction_id = ? AND d.detail LIKE 'no discord webhook URL%'",
            (transaction_id,),
        )
    ]
    assert json.loads(raw) == {"reason": "recipient", "channel": "chat"}
    assert message_rows(allowed_server, transaction_id) == []


def test_client_error_fails_with_excerpt(
    api: httpx.Client, allowed_server: ServerProcess, stub: HttpStub
) -> None:
    path = f"/{unique('rejected')}/B0002/hidden-part"
    stub.route(path, Reply(status=404, body=b"no_team: the webhook was removed"))
    identifier = create_integration(api, "slack", {"webhookUrl": stub.url(path)})
    transaction_id = trigger(
        api, chat_workflow(api, [identifier]), create_subscriber(api), payload={"name": "x"}
    )

    jobs = finished_jobs(allowed_server, transaction_id, 1)
    assert jobs["chat0"].status == "failed"
    assert len(stub.received(path)) == 1
    job = job_rows(allowed_server, transaction_id)["chat0"]
    activity = activity_job(api, job["notification_id"], "chat0")
    assert activity["status"] == "failed"
    (failure,) = [detail for detail in activity["executionDetails"] if detail["status"] == "Failed"]
    error = json.loads(failure["raw"])
    assert error["status"] == 404
    assert error["responseExcerpt"] == "no_team: the webhook was removed"
    assert error["provider"] == "slack"
    assert error["retryable"] is False
    assert error["url"] == f"http://127.0.0.1:{stub.port}"
    assert "hidden-part" not in json.dumps(activity)
    (message,) = message_rows(allowed_server, transaction_id)
    assert message["status"] == "error"
    assert message["provider_id"] == "slack"
    assert "hidden-part" not in message["error"]
    assert "hidden-part" not in Path(allowed_server.log_path).read_text()


def test_invalid_subscriber_url_fails(api: httpx.Client, allowed_server: ServerProcess) -> None:
    identifier = create_integration(api, "slack")
    subscriber_id = create_subscriber(
        api, [{"providerId": "slack", "credentials": {"webhookUrl": "gopher://example.com/secret-path"}}]
    )
    transaction_id = trigger(api, chat_workflow(api, [identifier]), subscriber_id, payload={"name": "z"})

    jobs = finished_jobs(allowed_server, transaction_id, 1)
    assert jobs["chat0"].status == "failed"
    error = job_rows(allowed_server, transaction_id)["chat0"]["error"]
    assert "is not an http or https URL" in error["message"]
    assert "secret-path" not in json.dumps(error)
    (message,) = message_rows(allowed_server, transaction_id)
    assert message["status"] == "error"
    assert message["content"] == "**Order** z"


def test_empty_message_fails(api: httpx.Client, allowed_server: ServerProcess, stub: HttpStub) -> None:
    path = f"/{unique('empty')}"
    identifier = create_integration(api, "slack", {"webhookUrl": stub.url(path)})
    workflow_id = chat_workflow(api, [identifier], body="{{ payload.missing }}")
    transaction_id = trigger(api, workflow_id, create_subscriber(api))

    assert finished_jobs(allowed_server, transaction_id, 1)["chat0"].status == "failed"
    error = job_rows(allowed_server, transaction_id)["chat0"]["error"]
    assert error["message"] == "body: the message is empty after rendering; set the step's body"
    assert error["retryable"] is False
    assert stub.received(path) == []


def test_discord_content_limit(api: httpx.Client, allowed_server: ServerProcess, stub: HttpStub) -> None:
    path = f"/{unique('long')}"
    identifier = create_integration(api, "discord", {"webhookUrl": stub.url(path)})
    transaction_id = trigger(
        api, chat_workflow(api, [identifier]), create_subscriber(api), payload={"name": "a" * 2000}
    )

    assert finished_jobs(allowed_server, transaction_id, 1)["chat0"].status == "failed"
    error = job_rows(allowed_server, transaction_id)["chat0"]["error"]
    assert error["message"] == (
        "body: the message has 2010 characters, and discord accepts at most 2000; shorten the step's body"
    )
    assert stub.received(path) == []


def test_unavailable_retried_then_delivered(
    api: httpx.Client, allowed_server: ServerProcess, stub: HttpStub
) -> None:
    path = f"/{unique('busy')}"
    stub.route(
        path,
        Reply(status=503, body={"error": "busy"}, headers={"Retry-After": "0"}),
        Reply(status=503, body={"error": "busy"}),
        Reply(status=200, body=b"ok"),
    )
    identifier = create_integration(api, "mattermost", {"webhookUrl": stub.url(path)})
    transaction_id = trigger(
        api, chat_workflow(api, [identifier]), create_subscriber(api), payload={"name": "y"}
    )

    jobs = finished_jobs(allowed_server, transaction_id, 1, timeout=30)
    assert jobs["chat0"].status == "completed"
    assert jobs["chat0"].details.count("Attempt 1 failed; retrying") == 1
    assert jobs["chat0"].details.count("Attempt 2 failed; retrying") == 1
    received = stub.wait_for(path, 3)
    assert len(received) == 3
    job = job_rows(allowed_server, transaction_id)["chat0"]
    assert job["attempt"] == 3
    assert {request.headers["idempotency-key"] for request in received} == {job["id"]}
    assert {request.body for request in received} == {received[0].body}
    (message,) = message_rows(allowed_server, transaction_id)
    assert message["status"] == "sent"


def test_unsupported_provider_not_chosen(
    api: httpx.Client, allowed_server: ServerProcess, stub: HttpStub
) -> None:
    path = f"/{unique('fallback')}"
    create_integration(api, "slack", {"webhookUrl": stub.url(path)})
    # Newer and active, but of a provider this server cannot send with, as Novu's clients may store.
    create_integration(api, "carrier-pigeon", {"webhookUrl": stub.url("/never")})
    workflow_id = unique("chat")
    steps = [{"name": "Chat", "stepId": "chat0", "type": "chat", "controlValues": {"body": "hi"}}]
    response = api.post(
        "/v2/workflows", json={"name": workflow_id, "workflowId": workflow_id, "steps": steps}
    )
    assert response.status_code == 201, response.text

    transaction_id = trigger(api, workflow_id, create_subscriber(api))

    jobs = finished_jobs(allowed_server, transaction_id, 1)
    assert jobs["chat0"].status == "completed"
    (request,) = stub.wait_for(path, 1)
    assert request.json() == {"text": "hi"}
    assert stub.received("/never") == []


def test_guard_refuses_before_connecting(tmp_path: Path, stub: HttpStub) -> None:
    """Without --outbound-allow, loopback and private webhooks are refused, and nothing connects."""
    server = start_server(tmp_path)
    destinations = {
        "loopback": stub.url("/guarded/T9/loopback-secret"),
        "metadata": "http://169.254.169.254/latest/meta-data/",
        "private": "http://10.0.0.1/hooks/private-secret",
    }
    connections_before = stub.connections
    try:
        with client(server) as api:
            identifiers = [
                create_integration(api, "slack", {"webhookUrl": url}) for url in destinations.values()
            ]
            transaction_id = trigger(api, chat_workflow(api, identifiers), create_subscriber(api))
            jobs = finished_jobs(server, transaction_id, len(destinations))
            rows = job_rows(server, transaction_id)
            for index, (name, url) in enumerate(destinations.items()):
                step_id = f"chat{index}"
                assert jobs[step_id].status == "failed", name
                error = rows[step_id]["error"]
                assert "refused to connect" in error["message"], error
                assert error["exceptionType"] == "OutboundRefused"
                assert error["retryable"] is False
                assert url.split("/", 3)[3] not in json.dumps(error)
        assert stub.connections == connections_before
        assert stub.received("/guarded/T9/loopback-secret") == []
    finally:
        server.stop()


@pytest.mark.parametrize(
    "url",
    ["ftp://files.example.com/hook", "hooks.slack.com/services/T1", "http://", "https://exa mple.com/x"],
)
def test_invalid_webhook_url_rejected(api: httpx.Client, url: str) -> None:
    body = {"providerId": "slack", "channel": "chat", "credentials": {"webhookUrl": url}}
    response = api.post("/v1/integrations", json=body)
    assert response.status_code == 400, response.text
    errors = {entry["field"]: entry["message"] for entry in response.json()["errors"]}
    assert "credentials.webhookUrl" in errors
    assert url not in response.text


def test_chat_provider_on_other_channel_rejected(api: httpx.Client) -> None:
    body = {"providerId": "discord", "channel": "sms", "credentials": {}}
    response = api.post("/v1/integrations", json=body)
    assert response.status_code == 400, response.text
    assert [entry["field"] for entry in response.json()["errors"]] == ["channel"]


def test_escape_keeps_template_markup() -> None:
    variables = {"payload": {"name": HOSTILE, "url": "https://example.com/a_b"}}
    escape = chat_formats.escape_slack

    assert render("*{{ payload.name }}*", variables, escape=escape) == "*&lt;@here&gt; *bold* &amp; _x_*"
    assert render('{{ "<!here>" }}', variables, escape=escape) == "<!here>"
    assert render('{{ "<b>" | upcase }}', variables, escape=escape) == "&lt;B&gt;"
    assert render("{% echo payload.name %}", variables, escape=escape) == "&lt;@here&gt; *bold* &amp; _x_"
    captured = "{% capture c %}<{{ payload.name }}>{% endcapture %}{{ c }}"
    assert render(captured, variables, escape=escape) == "<&lt;@here&gt; *bold* &amp; _x_>"
    link = "[docs]({{ payload.url | safe }})"
    assert render(link, variables, escape=chat_formats.escape_discord) == "[docs](https://example.com/a_b)"
    assert render("{{ payload.url }}", variables, escape=chat_formats.escape_discord) == (
        "https://example.com/a\\_b"
    )


def test_render_without_escape_unchanged() -> None:
    variables = {"payload": {"name": HOSTILE}}
    assert render("{{ payload.name }}", variables) == HOSTILE
    assert render("{{ payload.name }}", variables, escape_html=True) == "&lt;@here&gt; *bold* &amp; _x_"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("@channel and @all", "@\u200bchannel and @\u200ball"),
        ("mail ann@example.com", "mail ann@example.com"),
        ("1. first", "1\\. first"),
        ("~town-square", "\\~town\\-square"),
    ],
)
def test_mattermost_escape(value: str, expected: str) -> None:
    assert chat_formats.escape_mattermost(value) == expected
