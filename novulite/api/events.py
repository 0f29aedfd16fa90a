"""POST /v1/events/trigger: validate, store durably, acknowledge.

The route is served twice over. TriggerRoute handles it at the ASGI level, ahead
of Litestar, because on this hot path Litestar's per-request work (middleware,
dependency injection, response building) cost more CPU than storing the trigger.
The Litestar handler below keeps the route in the application's router, so other
methods get Litestar's 405 with its Allow header, and serves any request that
reaches Litestar directly.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import msgspec
from litestar import Request, Response, Router, post
from litestar.types import ASGIApp, Receive, Scope, Send

from novulite.api.auth import authenticate_api_key, services_of
from novulite.api.body import decode_json_object
from novulite.api.triggers_validation import validate_trigger
from novulite.directory import EnvironmentInfo
from novulite.errors import (
    BODY_TOO_LARGE,
    INTERNAL_ERROR,
    INVALID_FIELDS,
    SERVICE_UNAVAILABLE,
    TRIGGER_WORKFLOW_NOT_FOUND,
    ApiError,
    FieldError,
    error_body,
)
from novulite.idempotency import IdempotencyKey, check_repeat, find, read_key
from novulite.ids import new_id
from novulite.intake import KeyedTrigger
from novulite.services import Services

logger = logging.getLogger("novulite.api")

TRIGGER_PATH = "/v1/events/trigger"


def _acknowledgement(status: str, transaction_id: str, error: list[str] | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {"acknowledged": True, "status": status, "transactionId": transaction_id}
    if error:
        data["error"] = error
    return {"data": data}


async def accept_trigger(
    services: Services,
    environment: EnvironmentInfo,
    body: dict[str, Any],
    key: IdempotencyKey | None = None,
) -> tuple[dict[str, Any], bool]:
    """Validate a trigger and store it before returning; raise ApiError when invalid.

    Returns the 201 body and whether it replays the stored response of an earlier
    request with the same Idempotency-Key.
    """
    if key is not None:
        stored = find(services.store.raw_read(), environment.id, key.key, services.clock.now())
        if stored is not None:
            return check_repeat(stored, key)[1], True
    return await _accept_new(services, environment, body, key)


async def _accept_new(
    services: Services, environment: EnvironmentInfo, body: dict[str, Any], key: IdempotencyKey | None
) -> tuple[dict[str, Any], bool]:
    errors: list[FieldError] = []
    parsed = validate_trigger(body, errors)
    if errors:
        raise ApiError(INVALID_FIELDS, errors=errors)

    workflow = await services.directory.workflow(environment.id, parsed.name)
    if workflow is None:
        raise ApiError(
            TRIGGER_WORKFLOW_NOT_FOUND,
            name=parsed.name,
            errors=[FieldError("name", "no workflow has this identifier", parsed.name)],
        )

    # Like Novu, a workflow that cannot run is acknowledged with a status, not an error.
    transaction_id = parsed.transaction_id or str(uuid.uuid4())
    if not workflow.active:
        return _acknowledgement("trigger_not_active", transaction_id), False
    if workflow.step_count == 0:
        return _acknowledgement("no_workflow_steps_defined", transaction_id), False
    if workflow.active_step_count == 0:
        return _acknowledgement("no_workflow_active_steps_defined", transaction_id), False

    if not services.accepting:
        raise ApiError(SERVICE_UNAVAILABLE, headers={"Retry-After": "1"})
    row = {
        "id": new_id(),
        "environment_id": environment.id,
        "transaction_id": transaction_id,
        "workflow_pk": workflow.pk,
        "recipients": parsed.recipients,
        "payload": parsed.payload,
        "overrides": parsed.overrides,
        "actor": parsed.actor,
        "context": parsed.context,
        "status": "received",
        "attempts": 0,
        "created_at": services.clock.now(),
    }

    def respond(inserted: bool) -> dict[str, Any]:
        if inserted:
            return _acknowledgement("processed", transaction_id)
        return _acknowledgement(
            "error",
            transaction_id,
            [f"transactionId {transaction_id!r} was already used in this environment; nothing new was sent"],
        )

    if key is None:
        return respond(await services.intake.submit(row)), False
    result = await services.intake.submit_keyed(row, KeyedTrigger(key, respond))
    if result.repeated is not None:
        # A request with the same key was stored between the check above and this commit.
        return dict(check_repeat(result.repeated, key)[1]), True
    return respond(result.inserted), False


@post("/trigger", status_code=201)
async def trigger_event(request: Request[Any, Any, Any]) -> Response[Any]:
    services = services_of(request)
    environment = await authenticate_api_key(services, request.headers.get("authorization", ""))
    body = decode_json_object(await request.body())
    content, _ = await accept_trigger(services, environment, body)
    return Response(content=content, status_code=201)


events_router = Router(path="/v1/events", route_handlers=[trigger_event])


class TriggerRoute:
    """An ASGI wrapper that serves POST /v1/events/trigger itself and passes everything else on."""

    def __init__(self, app: ASGIApp, services: Services) -> None:
        self.app = app
        self.services = services

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST" or scope["path"] != TRIGGER_PATH:
            await self.app(scope, receive, send)
            return
        headers: dict[str, str] = {}
        try:
            content, replayed, key = await self._handle(scope, receive)
            status = 201
            if key is not None:
                headers["idempotency-key"] = key
            if replayed:
                headers["idempotency-replay"] = "true"
        except ApiError as exc:
            logger.debug("POST %s -> %s: %s", TRIGGER_PATH, exc.status, exc.message)
            status, headers = exc.status, exc.headers
            content = error_body(
                exc.status, TRIGGER_PATH, exc.message, code=exc.error.code, errors=exc.errors
            )
        except Exception as exc:
            error_id = str(uuid.uuid4())
            logger.error("unhandled error in POST %s, errorId %s", TRIGGER_PATH, error_id, exc_info=exc)
            status, headers = 500, {}
            message = INTERNAL_ERROR.with_message(error_id=error_id)
            content = error_body(
                500, TRIGGER_PATH, message, code=INTERNAL_ERROR.code, extra={"errorId": error_id}
            )
        encoded = msgspec.json.encode(content)
        response_headers: list[tuple[bytes, bytes]] = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(encoded)).encode()),
            *((name.lower().encode(), value.encode()) for name, value in headers.items()),
        ]
        start: Any = {
            "type": "http.response.start",
            "status": status,
            "headers": response_headers,
        }
        await send(start)
        body: Any = {"type": "http.response.body", "body": encoded}
        await send(body)

    async def _handle(self, scope: Scope, receive: Receive) -> tuple[dict[str, Any], bool, str | None]:
        authorization = ""
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value.decode("latin-1")
        environment = await authenticate_api_key(self.services, authorization)
        body = await self._read_body(receive)
        key = read_key(scope["headers"], "POST", TRIGGER_PATH, body)
        content, replayed = await accept_trigger(self.services, environment, decode_json_object(body), key)
        return content, replayed, None if key is None else key.key

    async def _read_body(self, receive: Receive) -> bytes:
        limit = self.services.settings.max_body_bytes
        chunks: list[bytes] = []
        size = 0
        while True:
            message: Any = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise ApiError(BODY_TOO_LARGE, limit=limit)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)
