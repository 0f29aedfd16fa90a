"""The Idempotency-Key middleware for the server API's POST and PATCH routes (see novulite.idempotency)."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from collections.abc import Callable
from typing import Any

import msgspec
from litestar.types import ASGIApp

from novulite.api.auth import authenticate_api_key
from novulite.errors import ApiError, error_body
from novulite.idempotency import HEADER, REPLAY_HEADER, IdempotencyKey, check_repeat, read_key, store
from novulite.services import Services

logger = logging.getLogger("novulite.api")

# Inbox routes are left out, as in Novu.
_METHODS = ("POST", "PATCH")
_PREFIXES = ("/v1/", "/v2/")
_EXCLUDED_PREFIXES = ("/v1/inbox/",)

# ASGI messages are built and read as plain dicts here; Litestar's TypedDicts add nothing.
Scope = Any
Receive = Any
Send = Any
Message = Any


def json_response_headers(body: bytes, key: str, replay: bool) -> list[tuple[bytes, bytes]]:
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (HEADER, key.encode("latin-1")),
    ]
    if replay:
        headers.append((REPLAY_HEADER, b"true"))
    return headers


class IdempotencyMiddleware:
    """ASGI middleware that applies Idempotency-Key to the server API's POST and PATCH routes."""

    def __init__(self, app: ASGIApp, services: Services) -> None:
        self.app = app
        self.services = services

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self._applies(scope):
            await self.app(scope, receive, send)
            return
        authorization = next((v for n, v in scope["headers"] if n == b"authorization"), b"")
        try:
            environment = await authenticate_api_key(self.services, authorization.decode("latin-1"))
        except ApiError:
            # Let the route return its own 401.
            await self.app(scope, receive, send)
            return
        body, disconnected = await _read_body(receive)
        try:
            key = read_key(scope["headers"], scope["method"], scope["path"], body)
        except ApiError as exc:
            await send_error(send, scope["path"], exc, None)
            return
        if key is None or disconnected:
            await self.app(scope, replaying(body), send)
            return
        await self._run_once(scope, body, environment.id, key, send)

    def _applies(self, scope: Scope) -> bool:
        if scope["type"] != "http" or scope["method"] not in _METHODS:
            return False
        path: str = scope["path"]
        if not path.startswith(_PREFIXES) or path.startswith(_EXCLUDED_PREFIXES):
            return False
        return any(name == HEADER for name, _ in scope["headers"])

    async def _run_once(
        self, scope: Scope, body: bytes, environment_id: str, key: IdempotencyKey, send: Send
    ) -> None:
        now = self.services.clock.now()
        stored = await asyncio.to_thread(self._write, store, environment_id, key, now, None, None)
        if stored is not None:
            try:
                status, content = check_repeat(stored, key)
            except ApiError as exc:
                await send_error(send, scope["path"], exc, key.key)
                return
            await _send_json(send, status, content, key.key, replay=True)
            return

        captured = _CapturedResponse()
        try:
            await self.app(scope, replaying(body), captured.send)
        except BaseException:
            await asyncio.to_thread(self._write, _drop, environment_id, key)
            raise
        if captured.status < 500 and captured.is_json():
            await asyncio.to_thread(self._write, _complete, environment_id, key, captured)
        else:
            await asyncio.to_thread(self._write, _drop, environment_id, key)
        await captured.forward(send, key.key)

    def _write(self, function: Callable[..., Any], *args: Any) -> Any:
        with self.services.store.raw_write() as raw:
            return function(raw, *args)


def _complete(
    raw: sqlite3.Connection, environment_id: str, key: IdempotencyKey, captured: _CapturedResponse
) -> None:
    content = json.loads(captured.body) if captured.body else None
    raw.execute(
        "UPDATE idempotency_record SET status_code = ?, response = ? WHERE environment_id = ? AND key = ?",
        (captured.status, json.dumps(content), environment_id, key.key),
    )


def _drop(raw: sqlite3.Connection, environment_id: str, key: IdempotencyKey) -> None:
    raw.execute(
        "DELETE FROM idempotency_record WHERE environment_id = ? AND key = ? AND status_code IS NULL",
        (environment_id, key.key),
    )


class _CapturedResponse:
    """The response of the wrapped application, held back until its record is stored."""

    def __init__(self) -> None:
        self.status = 500
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunks: list[bytes] = []

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.headers = list(message.get("headers", []))
        elif message["type"] == "http.response.body":
            self.chunks.append(message.get("body", b""))

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)

    def is_json(self) -> bool:
        if not self.chunks or not any(c for c in self.chunks):
            return True
        content_type = next((v for n, v in self.headers if n.lower() == b"content-type"), b"")
        return content_type.startswith(b"application/json")

    async def forward(self, send: Send, key: str) -> None:
        headers = [*self.headers, (HEADER, key.encode("latin-1"))]
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": self.body})


async def _read_body(receive: Receive) -> tuple[bytes, bool]:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b"".join(chunks), True
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks), False


def replaying(body: bytes) -> Receive:
    """Return a receive callable that hands the already-read body to the application."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            # The application calls receive again only to wait for a disconnect.
            await asyncio.Event().wait()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


async def _send_json(send: Send, status: int, content: Any, key: str, replay: bool) -> None:
    encoded = b"" if content is None else msgspec.json.encode(content)
    headers = json_response_headers(encoded, key, replay)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": encoded})


async def send_error(send: Send, path: str, exc: ApiError, key: str | None = None) -> None:
    content = error_body(exc.status, path, exc.message, code=exc.error.code, errors=exc.errors)
    encoded = msgspec.json.encode(content)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(encoded)).encode())]
    headers += [(name.lower().encode(), value.encode()) for name, value in exc.headers.items()]
    if key is not None:
        headers.append((HEADER, key.encode("latin-1")))
    await send({"type": "http.response.start", "status": exc.status, "headers": headers})
    await send({"type": "http.response.body", "body": encoded})
