"""Every error source returns Novu's JSON error shape, which novu-py parses into typed errors."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from typing import Any

import httpx
import pytest
import websockets
from novu_py import Novu
from novu_py.models import ErrorDto, ValidationErrorDto
from novu_py.utils import RetryConfig

from tests.servers import API_KEY, ServerProcess

pytestmark = pytest.mark.both_modes

AUTHORIZED = {"Authorization": f"ApiKey {API_KEY}"}
MAX_BODY_BYTES = 2 * 1024 * 1024
WS_POLICY_VIOLATION = 1008
NO_RETRIES = RetryConfig("none", None, False)

CASES = [
    pytest.param("GET", "/v1/no-such-route", {}, None, 404, id="unknown-route"),
    pytest.param("DELETE", "/v1/events/trigger", AUTHORIZED, None, 405, id="wrong-method"),
    pytest.param(
        "POST",
        "/v1/events/trigger",
        AUTHORIZED,
        b'{"name": "' + b"x" * MAX_BODY_BYTES + b'"}',
        413,
        id="body-too-large",
    ),
    pytest.param("POST", "/v1/events/trigger", {}, b'{"name": "welcome", "to": "alice"}', 401, id="no-key"),
    pytest.param(
        "GET", "/v1/inbox/notifications", {"Authorization": "Bearer bogus"}, None, 401, id="bad-token"
    ),
    pytest.param("POST", "/v1/events/trigger", AUTHORIZED, b'{"name": "welcome"}', 400, id="missing-to"),
    pytest.param(
        "POST",
        "/v1/events/trigger",
        AUTHORIZED,
        b'{"name": "missing", "to": "alice"}',
        422,
        id="unknown-workflow",
    ),
]


def assert_error_shape(body: dict[str, Any], status: int, path: str) -> None:
    assert type(body["statusCode"]) is int
    assert body["statusCode"] == status
    assert isinstance(body["timestamp"], str)
    timestamp = dt.datetime.fromisoformat(body["timestamp"])
    assert timestamp.tzinfo is not None
    assert body["path"] == path
    assert isinstance(body["message"], str)
    assert body["message"].strip()


@pytest.mark.parametrize(("method", "path", "headers", "content", "status"), CASES)
def test_http_error_shape(
    shared_server: ServerProcess,
    method: str,
    path: str,
    headers: dict[str, str],
    content: bytes | None,
    status: int,
) -> None:
    if content is not None:
        headers = {**headers, "Content-Type": "application/json"}
    response = httpx.request(
        method, f"{shared_server.base_url}{path}", headers=headers, content=content, timeout=10
    )

    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert_error_shape(response.json(), status, path)


async def _refused_socket(server: ServerProcess) -> None:
    async with websockets.connect(f"{server.ws_url}?token=bogus") as socket:
        async with asyncio.timeout(10):
            text = await socket.recv()
            assert isinstance(text, str)
            frame = json.loads(text)
            assert frame["event"] == "error"
            assert_error_shape(frame["data"], 401, "/ws")

            with pytest.raises(websockets.ConnectionClosed) as closed:
                await socket.recv()
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == WS_POLICY_VIOLATION
    assert closed.value.rcvd.reason.strip()


def test_refused_socket_error_shape(shared_server: ServerProcess) -> None:
    asyncio.run(_refused_socket(shared_server))


def test_sdk_unknown_workflow_error(shared_server: ServerProcess) -> None:
    novu = Novu(secret_key=API_KEY, server_url=shared_server.base_url, retry_config=NO_RETRIES)

    with pytest.raises(ValidationErrorDto) as raised:
        novu.trigger(trigger_event_request_dto={"workflow_id": "missing", "to": "alice"})

    assert raised.value.data.status_code == 422
    assert raised.value.data.path == "/v1/events/trigger"
    assert "name" in raised.value.data.errors
    assert raised.value.data.errors["name"].messages


def test_sdk_wrong_key_error(shared_server: ServerProcess) -> None:
    novu = Novu(secret_key="wrong-key", server_url=shared_server.base_url, retry_config=NO_RETRIES)

    with pytest.raises(ErrorDto) as raised:
        novu.trigger(trigger_event_request_dto={"workflow_id": "welcome", "to": "alice"})

    assert raised.value.data.status_code == 401
    assert raised.value.data.path == "/v1/events/trigger"
    assert raised.value.data.message


def test_wrong_method_lists_allowed(shared_server: ServerProcess) -> None:
    response = httpx.delete(f"{shared_server.base_url}/v1/events/trigger", headers=AUTHORIZED, timeout=10)
    assert response.status_code == 405
    assert "POST" in response.headers.get("allow", "")
