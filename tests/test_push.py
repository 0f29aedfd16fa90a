"""Push steps through Web Push and the push webhook, against loopback push services.

The module's server may reach 127.0.0.1 only because it runs with
NOVULITE_OUTBOUND_ALLOW=127.0.0.1. The test plays the browser: it makes the
subscription's key pair and auth secret, and decrypts what the push service stub
receives.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import http_ece
import httpx
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from novu_py import Novu

from tests.conftest import api_client, start_server
from tests.http_stub import HttpStub, Received, Reply
from tests.pipeline import finished_jobs, query, trigger
from tests.servers import API_KEY, ServerProcess

CONTACT = "mailto:ops@example.com"
_numbers = itertools.count()


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def generate_vapid_credentials() -> dict[str, str]:
    """Run `novulite vapid-keys` and return the credentials JSON it prints."""
    completed = subprocess.run(
        [sys.executable, "-m", "novulite", "vapid-keys", "--subject", CONTACT],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    output = completed.stdout
    return json.loads(output[output.index("{") :])  # type: ignore[no-any-return]


class Browser:
    """One browser's push subscription: its ECDH key pair, auth secret and endpoint."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.auth = os.urandom(16)

    def subscription(self) -> str:
        """Return the PushSubscription as JSON.stringify() gives it."""
        point = self.key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        keys = {"p256dh": b64url(point), "auth": b64url(self.auth)}
        return json.dumps({"endpoint": self.endpoint, "expirationTime": None, "keys": keys})

    def decrypt(self, request: Received) -> Any:
        plaintext = http_ece.decrypt(
            request.body, private_key=self.key, auth_secret=self.auth, version="aes128gcm"
        )
        return json.loads(plaintext)


def verify_vapid(authorization: str, public_key: str, audience: str) -> dict[str, Any]:
    """Check a `vapid t=<JWT>,k=<key>` header against the integration's key; return the JWT claims."""
    scheme, _, parameters = authorization.partition(" ")
    assert scheme == "vapid"
    fields = dict(part.split("=", 1) for part in parameters.split(","))
    assert fields["k"] == public_key
    header, claims, signature = fields["t"].split(".")
    assert json.loads(b64url_decode(header))["alg"] == "ES256"
    raw = b64url_decode(signature)
    assert len(raw) == 64
    key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b64url_decode(public_key))
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    # Raises InvalidSignature unless the integration's private key signed the token.
    key.verify(der, f"{header}.{claims}".encode(), ec.ECDSA(hashes.SHA256()))
    decoded: dict[str, Any] = json.loads(b64url_decode(claims))
    assert decoded["aud"] == audience
    assert decoded["sub"] == CONTACT
    assert time.time() < decoded["exp"] <= time.time() + 24 * 3600
    return decoded


@pytest.fixture(scope="module")
def stub() -> Iterator[HttpStub]:
    server = HttpStub().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def push_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = start_server(tmp_path_factory.mktemp("push"), env={"NOVULITE_OUTBOUND_ALLOW": "127.0.0.1"})
    yield process
    process.stop()


@pytest.fixture
def api(push_server: ServerProcess) -> Iterator[httpx.Client]:
    with api_client(push_server) as client:
        yield client


def create_integration(api: httpx.Client, provider_id: str, credentials: dict[str, Any]) -> str:
    """Create an active push integration; return its identifier."""
    identifier = f"{provider_id}-{next(_numbers)}"
    response = api.post(
        "/v1/integrations",
        json={
            "providerId": provider_id,
            "channel": "push",
            "identifier": identifier,
            "active": True,
            "credentials": credentials,
        },
    )
    assert response.status_code == 201, response.text
    return identifier


@pytest.fixture(scope="module")
def vapid_credentials() -> dict[str, str]:
    return generate_vapid_credentials()


@pytest.fixture(scope="module")
def webpush_integration(push_server: ServerProcess, vapid_credentials: dict[str, str]) -> str:
    with api_client(push_server) as client:
        return create_integration(client, "webpush", vapid_credentials)


def push_workflow(api: httpx.Client, integration: str) -> str:
    """Create a workflow of one push step through `integration`; return its id."""
    workflow_id = f"push-{next(_numbers)}"
    controls = {
        "subject": "Order {{ payload.order }}",
        "body": "Hello {{ subscriber.firstName }}, it shipped",
        "integrationIdentifier": integration,
    }
    workflow = {
        "name": workflow_id,
        "workflowId": workflow_id,
        "steps": [{"name": "Push", "stepId": "push", "type": "push", "controlValues": controls}],
    }
    response = api.post("/v2/workflows", json=workflow)
    assert response.status_code == 201, response.text
    return workflow_id


def new_subscriber(api: httpx.Client) -> str:
    subscriber_id = f"sub-{next(_numbers)}"
    response = api.post("/v2/subscribers", json={"subscriberId": subscriber_id, "firstName": "Ann"})
    assert response.status_code == 201, response.text
    return subscriber_id


def register(api: httpx.Client, subscriber_id: str, integration: str, tokens: list[str]) -> None:
    response = api.put(
        f"/v1/subscribers/{subscriber_id}/credentials",
        json={
            "providerId": "push-webhook",
            "integrationIdentifier": integration,
            "credentials": {"deviceTokens": tokens},
        },
    )
    assert response.status_code == 200, response.text


def stored_tokens(api: httpx.Client, subscriber_id: str) -> list[str]:
    response = api.get(f"/v2/subscribers/{subscriber_id}")
    assert response.status_code == 200, response.text
    return [
        token
        for channel in response.json()["data"]["channels"]
        for token in channel["credentials"].get("deviceTokens", [])
    ]


def job_of(server: ServerProcess, transaction_id: str) -> dict[str, Any]:
    (row,) = query(
        server,
        "SELECT id, status, attempt, error, output FROM job WHERE transaction_id = ? AND step_id = 'push'",
        (transaction_id,),
    )
    return {
        "id": row["id"],
        "status": row["status"],
        "attempt": row["attempt"],
        "error": json.loads(row["error"]) if row["error"] else None,
        "output": json.loads(row["output"]) if row["output"] else None,
    }


def message_of(server: ServerProcess, transaction_id: str) -> dict[str, Any]:
    (row,) = query(
        server,
        "SELECT status, subject, content, provider_id FROM message WHERE transaction_id = ?",
        (transaction_id,),
    )
    return dict(row)


def test_web_push_round_trip(
    api: httpx.Client,
    push_server: ServerProcess,
    stub: HttpStub,
    webpush_integration: str,
    vapid_credentials: dict[str, str],
) -> None:
    stub.route("/push/round-trip", Reply(201, b""))
    browser = Browser(stub.url("/push/round-trip"))
    subscriber_id = new_subscriber(api)
    register(api, subscriber_id, webpush_integration, [browser.subscription()])
    workflow_id = push_workflow(api, webpush_integration)

    transaction_id = trigger(api, workflow_id, subscriber_id, payload={"order": "B-7", "url": "/orders/7"})

    jobs = finished_jobs(push_server, transaction_id, 1)
    assert jobs["push"].status == "completed", jobs
    assert jobs["push"].last_detail == "Web Push delivered to 1 of 1 subscription(s)"
    (request,) = stub.received("/push/round-trip")
    assert request.method == "POST"
    assert request.headers["content-encoding"] == "aes128gcm"
    assert request.headers["content-type"] == "application/octet-stream"
    assert request.headers["ttl"] == "86400"
    assert request.headers["urgency"] == "normal"
    assert len(request.headers["topic"]) == 32
    job = job_of(push_server, transaction_id)
    assert request.headers["idempotency-key"] == job["id"]
    verify_vapid(
        request.headers["authorization"], vapid_credentials["apiKey"], f"http://127.0.0.1:{stub.port}"
    )
    assert browser.decrypt(request) == {
        "title": "Order B-7",
        "body": "Hello Ann, it shipped",
        "data": {"order": "B-7", "url": "/orders/7"},
        "transactionId": transaction_id,
        "workflowId": workflow_id,
        "stepId": "push",
        "subscriberId": subscriber_id,
    }
    assert job["output"]["delivered"] == 1
    message = message_of(push_server, transaction_id)
    assert message == {
        "status": "sent",
        "subject": "Order B-7",
        "content": "Hello Ann, it shipped",
        "provider_id": "webpush",
    }


def test_gone_subscription_removed(
    api: httpx.Client, push_server: ServerProcess, stub: HttpStub, webpush_integration: str
) -> None:
    stub.route("/push/gone", Reply(410, {"reason": "unsubscribed"}))
    stub.route("/push/alive", Reply(201, b""))
    gone = Browser(stub.url("/push/gone"))
    alive = Browser(stub.url("/push/alive"))
    subscriber_id = new_subscriber(api)
    register(api, subscriber_id, webpush_integration, [gone.subscription(), alive.subscription()])
    workflow_id = push_workflow(api, webpush_integration)

    transaction_id = trigger(api, workflow_id, subscriber_id, payload={"order": "G-1"})

    jobs = finished_jobs(push_server, transaction_id, 1)
    assert jobs["push"].status == "completed"
    assert any(
        "is gone (HTTP 410); removed from the subscriber's credentials" in detail
        for detail in jobs["push"].details
    ), jobs["push"].details
    assert jobs["push"].last_detail == "Web Push delivered to 1 of 2 subscription(s)"
    tokens = stored_tokens(api, subscriber_id)
    assert len(tokens) == 1
    assert json.loads(tokens[0])["endpoint"] == alive.endpoint
    assert alive.decrypt(stub.received("/push/alive")[0])["data"] == {"order": "G-1"}
    assert job_of(push_server, transaction_id)["output"]["removed"] == 1


def test_large_payload_left_out(
    api: httpx.Client, push_server: ServerProcess, stub: HttpStub, webpush_integration: str
) -> None:
    stub.route("/push/large", Reply(201, b""))
    browser = Browser(stub.url("/push/large"))
    subscriber_id = new_subscriber(api)
    # Registered without an integrationIdentifier, a subscription serves every webpush integration.
    response = api.put(
        f"/v1/subscribers/{subscriber_id}/credentials",
        json={"providerId": "fcm", "credentials": {"deviceTokens": [browser.subscription()]}},
    )
    assert response.status_code == 200, response.text
    workflow_id = push_workflow(api, webpush_integration)

    transaction_id = trigger(api, workflow_id, subscriber_id, payload={"order": "L-1", "notes": "x" * 5000})

    jobs = finished_jobs(push_server, transaction_id, 1)
    assert jobs["push"].status == "completed", jobs
    assert "left out of `data`" in jobs["push"].last_detail
    received = browser.decrypt(stub.received("/push/large")[0])
    assert received["data"] == {}
    assert received["dataOmitted"] is True
    assert received["title"] == "Order L-1"


def test_every_subscription_gone_fails(
    api: httpx.Client, push_server: ServerProcess, stub: HttpStub, webpush_integration: str
) -> None:
    stub.route("/push/expired", Reply(404, {"reason": "expired"}))
    subscriber_id = new_subscriber(api)
    register(api, subscriber_id, webpush_integration, [Browser(stub.url("/push/expired")).subscription()])
    workflow_id = push_workflow(api, webpush_integration)

    transaction_id = trigger(api, workflow_id, subscriber_id)

    jobs = finished_jobs(push_server, transaction_id, 1)
    assert jobs["push"].status == "failed"
    error = job_of(push_server, transaction_id)["error"]
    assert error["status"] == 404
    assert error["retryable"] is False
    assert len(error["removed"]) == 1
    assert stored_tokens(api, subscriber_id) == []
    assert message_of(push_server, transaction_id)["status"] == "error"


def test_transient_failures_retry_undelivered_only(
    api: httpx.Client, push_server: ServerProcess, stub: HttpStub, webpush_integration: str
) -> None:
    stub.route(
        "/push/limited", Reply(429, {"reason": "slow down"}, headers={"Retry-After": "1"}), Reply(201, b"")
    )
    stub.route("/push/down", Reply(503, {"reason": "maintenance"}), Reply(201, b""))
    stub.route("/push/steady", Reply(201, b""))
    browsers = [Browser(stub.url(f"/push/{name}")) for name in ("limited", "down", "steady")]
    subscriber_id = new_subscriber(api)
    register(api, subscriber_id, webpush_integration, [browser.subscription() for browser in browsers])
    workflow_id = push_workflow(api, webpush_integration)

    transaction_id = trigger(api, workflow_id, subscriber_id, payload={"order": "R-3"})

    jobs = finished_jobs(push_server, transaction_id, 1, timeout=30)
    assert jobs["push"].status == "completed", jobs
    assert "Attempt 1 failed; retrying" in jobs["push"].details
    assert jobs["push"].last_detail == "Web Push delivered to 3 of 3 subscription(s)"
    assert len(stub.received("/push/limited")) == 2
    assert len(stub.received("/push/down")) == 2
    # The subscription delivered on the first attempt is not sent to again.
    assert len(stub.received("/push/steady")) == 1
    job = job_of(push_server, transaction_id)
    assert job["attempt"] == 2
    assert job["output"]["delivered"] == 3
    retried = stub.received("/push/limited")
    assert retried[0].headers["idempotency-key"] == retried[1].headers["idempotency-key"] == job["id"]
    assert browsers[0].decrypt(retried[1])["title"] == "Order R-3"
    first_attempt = json.loads(
        query(
            push_server,
            "SELECT raw FROM execution_detail WHERE job_id = ? AND detail = 'Attempt 1 failed; retrying'",
            (job["id"],),
        )[0]["raw"]
    )
    assert first_attempt["retryAfterSeconds"] >= 1
    assert first_attempt["status"] in (429, 503)
    assert len(first_attempt["settledSubscriptions"]) == 1


def test_bad_request_fails_with_excerpt(
    api: httpx.Client, push_server: ServerProcess, stub: HttpStub, webpush_integration: str
) -> None:
    stub.route("/push/rejects", Reply(400, {"reason": "UnauthorizedRegistration"}))
    subscriber_id = new_subscriber(api)
    register(api, subscriber_id, webpush_integration, [Browser(stub.url("/push/rejects")).subscription()])
    workflow_id = push_workflow(api, webpush_integration)

    transaction_id = trigger(api, workflow_id, subscriber_id)

    jobs = finished_jobs(push_server, transaction_id, 1)
    assert jobs["push"].status == "failed"
    assert len(stub.received("/push/rejects")) == 1
    job = job_of(push_server, transaction_id)
    assert job["attempt"] == 1
    assert job["error"]["status"] == 400
    assert "UnauthorizedRegistration" in job["error"]["responseExcerpt"]
    assert job["error"]["provider"] == "webpush"
    assert "HTTP 400" in job["error"]["message"]
    # A rejected request does not remove the subscription: only 404 and 410 mean it is gone.
    assert len(stored_tokens(api, subscriber_id)) == 1
    assert message_of(push_server, transaction_id)["status"] == "error"


def test_no_subscription_skips(
    api: httpx.Client, push_server: ServerProcess, webpush_integration: str
) -> None:
    subscriber_id = new_subscriber(api)
    register(api, subscriber_id, webpush_integration, ["fcm-token-not-web-push"])
    workflow_id = push_workflow(api, webpush_integration)

    transaction_id = trigger(api, workflow_id, subscriber_id)

    jobs = finished_jobs(push_server, transaction_id, 1)
    assert jobs["push"].status == "skipped"
    assert jobs["push"].last_detail == "the subscriber has no Web Push subscription"


def test_push_webhook_shape_and_signature(
    api: httpx.Client, push_server: ServerProcess, stub: HttpStub, webpush_integration: str
) -> None:
    stub.route("/hook", Reply(200, {"id": "h-1"}))
    secret = "hook-secret-0123"
    integration = create_integration(
        api, "push-webhook", {"webhookUrl": stub.url("/hook"), "secretKey": secret}
    )
    subscriber_id = new_subscriber(api)
    register(api, subscriber_id, integration, ["device-1", "device-2"])
    # A Web Push subscription of the same subscriber belongs to the other integration.
    register(api, subscriber_id, webpush_integration, [Browser(stub.url("/push/unused")).subscription()])
    workflow_id = push_workflow(api, integration)

    transaction_id = trigger(api, workflow_id, subscriber_id, payload={"order": "W-9"})

    jobs = finished_jobs(push_server, transaction_id, 1)
    assert jobs["push"].status == "completed", jobs
    (request,) = stub.received("/hook")
    assert request.headers["content-type"] == "application/json"
    expected = hmac.new(secret.encode(), request.body, hashlib.sha256).hexdigest()
    assert request.headers["x-novu-signature"] == expected
    body = request.json()
    assert body["target"] == ["device-1", "device-2"]
    assert body["title"] == "Order W-9"
    assert body["content"] == "Hello Ann, it shipped"
    assert body["payload"]["order"] == "W-9"
    assert body["payload"]["subscriber"]["subscriberId"] == subscriber_id
    assert body["payload"]["subscriber"]["firstName"] == "Ann"
    assert body["payload"]["step"] == {"digest": False, "events": [], "total_count": 0}
    assert stub.received("/push/unused") == []
    assert message_of(push_server, transaction_id)["provider_id"] == "push-webhook"


def test_push_webhook_unsigned_without_secret(
    api: httpx.Client, push_server: ServerProcess, stub: HttpStub
) -> None:
    stub.route("/hook-plain", Reply(200, {}))
    integration = create_integration(api, "push-webhook", {"webhookUrl": stub.url("/hook-plain")})
    subscriber_id = new_subscriber(api)
    workflow_id = push_workflow(api, integration)

    transaction_id = trigger(api, workflow_id, subscriber_id)

    assert finished_jobs(push_server, transaction_id, 1)["push"].status == "completed"
    (request,) = stub.received("/hook-plain")
    assert "x-novu-signature" not in request.headers
    assert request.json()["target"] == []


def test_sdk_lists_push_integrations(
    push_server: ServerProcess, webpush_integration: str, vapid_credentials: dict[str, str]
) -> None:
    novu = Novu(secret_key=API_KEY, server_url=push_server.base_url)
    listed = {integration.identifier: integration for integration in novu.integrations.list().result}
    integration = listed[webpush_integration]
    assert integration.provider_id == "webpush"
    assert integration.channel == "push"
    # Pages need the VAPID public key, so it is shown; the private key stays masked.
    assert integration.credentials.api_key == vapid_credentials["apiKey"]
    assert integration.credentials.secret_key is not None
    assert integration.credentials.secret_key.startswith("****")
    assert vapid_credentials["secretKey"][-4:] == integration.credentials.secret_key[-4:]


def field_errors(response: httpx.Response) -> dict[str, str]:
    assert response.status_code == 400, response.text
    return {entry["field"]: entry["message"] for entry in response.json()["errors"]}


def test_invalid_vapid_credentials_rejected(api: httpx.Client, vapid_credentials: dict[str, str]) -> None:
    other = generate_vapid_credentials()
    cases = [
        ({**vapid_credentials, "apiKey": other["apiKey"]}, "credentials.apiKey", "is not the public key"),
        ({**vapid_credentials, "secretKey": "c2hvcnQ"}, "credentials.secretKey", "32-byte"),
        ({**vapid_credentials, "from": "ops@example.com"}, "credentials.from", "mailto:"),
        ({"apiKey": vapid_credentials["apiKey"], "from": CONTACT}, "credentials.secretKey", "is required"),
    ]
    for credentials, field, fragment in cases:
        response = api.post(
            "/v1/integrations",
            json={"providerId": "webpush", "channel": "push", "active": True, "credentials": credentials},
        )
        errors = field_errors(response)
        assert field in errors, (field, errors)
        assert fragment in errors[field]
        # An error body never repeats the private key.
        assert vapid_credentials["secretKey"] not in response.text


def test_push_webhook_requires_url(api: httpx.Client) -> None:
    response = api.post(
        "/v1/integrations",
        json={"providerId": "push-webhook", "channel": "push", "active": True, "credentials": {}},
    )
    assert "credentials.webhookUrl" in field_errors(response)
    response = api.post(
        "/v1/integrations",
        json={
            "providerId": "push-webhook",
            "channel": "push",
            "active": True,
            "credentials": {"webhookUrl": "ftp://example.com/hook"},
        },
    )
    assert "credentials.webhookUrl" in field_errors(response)


def test_invalid_subscription_rejected(api: httpx.Client) -> None:
    subscriber_id = new_subscriber(api)
    broken = json.dumps({"endpoint": "https://push.example.com/x", "keys": {"p256dh": "abc", "auth": "def"}})
    response = api.put(
        f"/v1/subscribers/{subscriber_id}/credentials",
        json={"providerId": "push-webhook", "credentials": {"deviceTokens": ["plain-token", broken]}},
    )
    errors = field_errors(response)
    assert "keys.p256dh" in errors["credentials.deviceTokens[1]"]
    assert stored_tokens(api, subscriber_id) == []


def test_vapid_keys_command_pair() -> None:
    credentials = generate_vapid_credentials()
    private_value = int.from_bytes(b64url_decode(credentials["secretKey"]), "big")
    public = ec.derive_private_key(private_value, ec.SECP256R1()).public_key()
    point = public.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    assert credentials["apiKey"] == b64url(point)
    assert credentials["from"] == CONTACT


def test_forbidden_endpoint_refused(tmp_path: Path, vapid_credentials: dict[str, str]) -> None:
    """A server without an outbound allowance refuses a loopback endpoint before connecting."""
    forbidden = HttpStub().start()
    server = start_server(tmp_path)
    try:
        with api_client(server) as api:
            integration = create_integration(api, "webpush", vapid_credentials)
            subscriber_id = new_subscriber(api)
            register(api, subscriber_id, integration, [Browser(forbidden.url("/push/inside")).subscription()])
            workflow_id = push_workflow(api, integration)

            transaction_id = trigger(api, workflow_id, subscriber_id)

            jobs = finished_jobs(server, transaction_id, 1)
            assert jobs["push"].status == "failed"
            error = job_of(server, transaction_id)["error"]
            assert error["exceptionType"] == "OutboundRefused"
            assert "loopback" in error["message"]
            assert error["retryable"] is False
            assert forbidden.received("/push/inside") == []
            assert forbidden.connections == 0
            # A refused endpoint is not a gone subscription, so it stays registered.
            assert len(stored_tokens(api, subscriber_id)) == 1
    finally:
        server.stop()
        forbidden.stop()
