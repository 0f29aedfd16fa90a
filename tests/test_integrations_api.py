"""Provider integrations through httpx and the official novu-py SDK: shapes, masking, primary, errors."""

from __future__ import annotations

import contextlib
import sqlite3
from typing import Any

import httpx
import pytest
from novu_py import Novu, models
from novu_py.utils import BackoffStrategy, RetryConfig

from novulite.integrations import find_integration
from tests.helpers import API_KEY
from tests.servers import ServerProcess

NO_RETRIES = RetryConfig("none", BackoffStrategy(1, 1, 1.0, 1), False)
SMTP_PASSWORD = "correct-horse-battery-staple"
SMTP_USER = "mailer-account-7781"


@pytest.fixture
def novu(server: ServerProcess) -> Novu:
    """novu-py pointed at the test's own server, so each test starts without integrations."""
    return Novu(secret_key=API_KEY, server_url=server.base_url)


def smtp_credentials(**changes: Any) -> dict[str, Any]:
    credentials: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 2525,
        "secure": False,
        "user": SMTP_USER,
        "password": SMTP_PASSWORD,
        "from": "alerts@example.com",
        "senderName": "Alerts",
    }
    credentials.update(changes)
    return credentials


def create(api: httpx.Client, **body: Any) -> dict[str, Any]:
    response = api.post("/v1/integrations", json=body)
    assert response.status_code == 201, response.text
    return response.json()["data"]


def field_errors(response: httpx.Response) -> dict[str, str]:
    assert response.status_code == 400, response.text
    return {entry["field"]: entry["message"] for entry in response.json()["errors"]}


def assert_no_secrets(response: httpx.Response) -> None:
    for secret in (SMTP_PASSWORD, SMTP_USER):
        assert secret not in response.text


def test_create_masks_secrets(shared_novu: Novu, shared_api: httpx.Client) -> None:
    created = shared_novu.integrations.create(
        create_integration_request_dto={
            "provider_id": "smtp",
            "channel": models.CreateIntegrationRequestDtoChannel.EMAIL,
            "name": "Office SMTP",
            "active": True,
            "credentials": {
                "host": "127.0.0.1",
                "port": "2525",
                "user": SMTP_USER,
                "password": SMTP_PASSWORD,
                "from_": "alerts@example.com",
                "secure": False,
            },
        }
    ).result
    assert created.provider_id == "smtp"
    assert created.identifier.startswith("office-smtp-")
    assert created.active is True
    assert created.primary is True
    assert created.credentials is not None
    assert created.credentials.host == "127.0.0.1"
    assert created.credentials.port == "2525"
    assert created.credentials.from_ == "alerts@example.com"
    assert created.credentials.password == "*" * (len(SMTP_PASSWORD) - 4) + SMTP_PASSWORD[-4:]
    assert SMTP_USER not in (created.credentials.user or "")

    listed = shared_api.get("/v1/integrations")
    assert listed.status_code == 200
    assert_no_secrets(listed)
    assert created.id in [entry["_id"] for entry in listed.json()["data"]]
    assert [entry.id for entry in shared_novu.integrations.list().result if entry.id == created.id]
    active = shared_novu.integrations.list_active().result
    assert created.id in [entry.id for entry in active]


def test_update_replaces_credentials(api: httpx.Client, novu: Novu) -> None:
    created = create(api, providerId="smtp", channel="email", active=True, credentials=smtp_credentials())
    masked = created["credentials"]

    sent_back = dict(masked, host="mail.example.com", port=465, secure=True)
    response = api.put(
        f"/v1/integrations/{created['_id']}", json={"name": "Renamed", "credentials": sent_back}
    )
    assert response.status_code == 200, response.text
    assert_no_secrets(response)
    updated = response.json()["data"]
    assert updated["name"] == "Renamed"
    assert updated["credentials"]["host"] == "mail.example.com"
    assert updated["credentials"]["port"] == "465"
    assert updated["credentials"]["secure"] is True
    assert updated["credentials"]["password"] == masked["password"]

    # Credentials are replaced: a field left out is gone.
    without_sender = novu.integrations.update(
        integration_id=created["_id"],
        update_integration_request_dto={
            "active": False,
            "credentials": {"host": "mail.example.com", "from_": "ops@example.com"},
        },
    ).result
    assert without_sender.active is False
    assert without_sender.primary is False
    assert without_sender.credentials is not None
    assert without_sender.credentials.sender_name is None
    assert without_sender.credentials.password is None
    assert without_sender.credentials.from_ == "ops@example.com"


def test_set_primary_moves_the_flag(api: httpx.Client, novu: Novu) -> None:
    first = create(api, providerId="smtp", channel="email", active=True, credentials=smtp_credentials())
    second = create(
        api,
        providerId="sendgrid",
        channel="email",
        identifier="sendgrid-main",
        credentials={"apiKey": "SG.x"},
    )
    assert first["primary"] is True
    assert second["primary"] is False
    assert second["active"] is False

    promoted = novu.integrations.set_as_primary(integration_id=second["_id"]).result
    assert promoted.primary is True
    assert promoted.active is True
    by_id = {entry.id: entry for entry in novu.integrations.list().result}
    assert by_id[first["_id"]].primary is False
    assert by_id[second["_id"]].primary is True

    again = api.post(f"/v1/integrations/{first['_id']}/set-primary")
    assert again.status_code == 200, again.text
    flags = {entry["_id"]: entry["primary"] for entry in api.get("/v1/integrations").json()["data"]}
    assert flags == {first["_id"]: True, second["_id"]: False}

    chat = create(
        api, providerId="slack", channel="chat", credentials={"webhookUrl": "https://hooks.example/x"}
    )
    rejected = api.post(f"/v1/integrations/{chat['_id']}/set-primary")
    assert rejected.status_code == 400, rejected.text
    assert "chat" in rejected.json()["message"]


def test_steps_find_primary_integration(api: httpx.Client, server: ServerProcess) -> None:
    first = create(api, providerId="smtp", channel="email", active=True, credentials=smtp_credentials())
    second = create(api, providerId="smtp", channel="email", active=True, credentials=smtp_credentials())
    assert api.post(f"/v1/integrations/{second['_id']}/set-primary").status_code == 200

    uri = f"{(server.data_dir / 'novulite.db').as_uri()}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True)) as raw:
        chosen = find_integration(raw, first["_environmentId"], "email")
        named = find_integration(raw, first["_environmentId"], "email", first["identifier"])
    assert chosen is not None
    assert chosen.id == second["_id"]
    assert chosen.credentials["password"] == SMTP_PASSWORD
    assert chosen.credentials["port"] == "2525"
    assert named is not None
    assert named.id == first["_id"]


def test_delete_returns_remaining_list(api: httpx.Client, novu: Novu) -> None:
    kept = create(
        api, providerId="twilio", channel="sms", identifier="twilio-1", credentials={"authToken": "t"}
    )
    gone = create(api, providerId="sns", channel="sms", identifier="sns-1")

    remaining = novu.integrations.delete(integration_id=gone["_id"]).result
    assert [entry.id for entry in remaining] == [kept["_id"]]

    missing = api.delete(f"/v1/integrations/{gone['_id']}")
    assert missing.status_code == 404, missing.text
    body = missing.json()
    assert body["statusCode"] == 404
    assert gone["_id"] in body["message"]
    with pytest.raises(models.APIError):
        novu.integrations.set_as_primary(integration_id=gone["_id"], retries=NO_RETRIES)
    assert api.put(f"/v1/integrations/{gone['_id']}", json={"name": "x"}).status_code == 404


def test_duplicate_identifier_conflicts(api: httpx.Client, novu: Novu) -> None:
    first = create(api, providerId="sendgrid", channel="email", identifier="mail")
    other = create(api, providerId="mailgun", channel="email", identifier="other-mail")

    again = api.post(
        "/v1/integrations", json={"providerId": "mailgun", "channel": "email", "identifier": "mail"}
    )
    assert again.status_code == 409, again.text
    assert "'mail'" in again.json()["message"]
    renamed = api.put(f"/v1/integrations/{other['_id']}", json={"identifier": "mail"})
    assert renamed.status_code == 409, renamed.text
    assert api.get("/v1/integrations").json()["data"][1]["identifier"] == "other-mail"
    with pytest.raises(models.ErrorDto) as raised:
        novu.integrations.create(
            create_integration_request_dto={
                "provider_id": "mailgun",
                "channel": "email",
                "identifier": "mail",
            },
            retries=NO_RETRIES,
        )
    assert raised.value.data.status_code == 409
    assert api.put(f"/v1/integrations/{first['_id']}", json={"identifier": "mail"}).status_code == 200


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"channel": "email"}, "providerId"),
        ({"providerId": None, "channel": "email"}, "providerId"),
        ({"providerId": "sendgrid", "channel": "email", "credentials": []}, "credentials"),
        ({"providerId": "smtp", "channel": "fax"}, "channel"),
        ({"providerId": "sendgrid", "channel": "email", "credentials": "key"}, "credentials"),
        ({"providerId": "sendgrid", "channel": "email", "credentials": {"apiKey": 5}}, "credentials.apiKey"),
        ({"providerId": "sendgrid", "channel": "email", "active": "yes"}, "active"),
        ({"providerId": "smtp", "channel": "email", "active": True, "credentials": {}}, "credentials.host"),
        ({"providerId": "smtp", "channel": "sms"}, "channel"),
        ({"providerId": "smtp"}, "channel"),
        (
            {"providerId": "sendgrid", "channel": "email", "credentials": {"password": 123456789}},
            "credentials.password",
        ),
    ],
)
def test_create_rejects_invalid_fields(shared_api: httpx.Client, body: dict[str, Any], field: str) -> None:
    response = shared_api.post("/v1/integrations", json=body)
    assert field in field_errors(response)
    assert "123456789" not in response.text


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"host": None}, "credentials.host"),
        ({"from": "not-an-address"}, "credentials.from"),
        ({"from": None}, "credentials.from"),
        ({"port": 70000}, "credentials.port"),
        ({"port": "smtp"}, "credentials.port"),
        ({"secure": "true"}, "credentials.secure"),
        ({"requireTls": True, "ignoreTls": True}, "credentials.ignoreTls"),
        ({"user": None}, "credentials.user"),
    ],
)
def test_smtp_credentials_are_checked(shared_api: httpx.Client, changes: dict[str, Any], field: str) -> None:
    body = {
        "providerId": "smtp",
        "channel": "email",
        "active": True,
        "credentials": smtp_credentials(**changes),
    }
    response = shared_api.post("/v1/integrations", json=body)
    errors = field_errors(response)
    assert field in errors
    assert_no_secrets(response)


def test_smtp_update_rolls_back(api: httpx.Client) -> None:
    created = create(api, providerId="smtp", channel="email", credentials={"host": "127.0.0.1"})
    assert created["active"] is False

    # Activating needs a sender address.
    rejected = api.put(f"/v1/integrations/{created['_id']}", json={"active": True, "name": "Live"})
    assert "credentials.from" in field_errors(rejected)
    unchanged = api.get("/v1/integrations").json()["data"][0]
    assert unchanged["active"] is False
    assert unchanged["name"] == "Smtp"

    for body in ({"credentials": [1]}, {"primary": "yes"}, {"name": ""}):
        assert api.put(f"/v1/integrations/{created['_id']}", json=body).status_code == 400

    fixed = api.put(
        f"/v1/integrations/{created['_id']}",
        json={"active": True, "credentials": {"host": "127.0.0.1", "from": "a@example.com"}},
    )
    assert fixed.status_code == 200, fixed.text
    assert fixed.json()["data"]["active"] is True


def test_non_object_bodies_rejected(shared_api: httpx.Client) -> None:
    for content in (b"[]", b"{", b""):
        response = shared_api.post(
            "/v1/integrations", content=content, headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 400, response.text
