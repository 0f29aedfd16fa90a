"""POST /v1/events/trigger: validate, store durably, acknowledge.

The route is served twice over. TriggerRoute handles it at the ASGI level, ahead
of Litestar, because on this hot path Litestar's per-request work (middleware,
dependency injection, response building) cost more CPU than storing the trigger.
The Litestar handler below keeps the route in the application's router, so other
methods get Litestar's 405 with its Allow header, and serves any request that
reaches Litestar directly.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from typing import Any

import msgspec
from litestar import Request, Response, Router, post
from litestar.types import ASGIApp, Receive, Scope, Send

from novulite.api.audience import actor_only_problems, broadcast_problems, topic_trigger_problems
from novulite.api.auth import authenticate_api_key, services_of
from novulite.api.body import decode_json_object, json_type
from novulite.api.triggers_validation import TriggerRequest, validate_broadcast, validate_trigger
from novulite.directory import EnvironmentInfo
from novulite.engine import fanout
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
from novulite.idempotency import IdempotencyKey, StoredResponse, check_repeat, find, read_key
from novulite.ids import new_id, new_transaction_id
from novulite.intake import KeyedTrigger
from novulite.services import Services

logger = logging.getLogger("novulite.api")

TRIGGER_PATH = "/v1/events/trigger"
MAX_BULK_EVENTS = 100


def _acknowledgement(
    status: str, transaction_id: str | None, error: list[str] | None = None
) -> dict[str, Any]:
    data: dict[str, Any] = {"acknowledged": True, "status": status}
    if transaction_id is not None:
        data["transactionId"] = transaction_id
    if error:
        data["error"] = error
    return data


def _parse(
    validate: Callable[[dict[str, Any], list[FieldError]], TriggerRequest], body: dict[str, Any]
) -> TriggerRequest:
    errors: list[FieldError] = []
    parsed = validate(body, errors)
    if errors:
        raise ApiError(INVALID_FIELDS, errors=errors)
    return parsed


async def _admit(
    services: Services, environment: EnvironmentInfo, parsed: TriggerRequest, *, kind: str, to: Any = None
) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """Check a validated trigger against the stored workflows and topics.

    Return (row, acknowledgement). The caller stores a row before it responds with
    the acknowledgement. A None row means there is nothing to store and the
    acknowledgement is the whole response. Raise ApiError for an unknown workflow
    or topic (422) and while the server shuts down (503).

    A trigger whose recipients come down to no subscriber, such as one to a topic
    without subscribers, gets status `invalid_recipients` with an `error` giving the
    reason, and nothing is stored. Novu responds the same way to a trigger whose
    recipients are all invalid. Reporting `processed` would tell the caller that
    something was sent when nothing was, and `invalid_recipients` is the closest
    value of the closed status enum that the SDKs accept.
    """
    workflow = await services.directory.workflow(environment.id, parsed.name)
    if workflow is None:
        raise ApiError(
            TRIGGER_WORKFLOW_NOT_FOUND,
            name=parsed.name,
            errors=[FieldError("name", "no workflow has this identifier", parsed.name)],
        )

    # Like Novu, a workflow that cannot run is acknowledged with a status, not an error.
    transaction_id = parsed.transaction_id or new_transaction_id()
    if not workflow.active:
        return None, _acknowledgement("trigger_not_active", transaction_id)
    if workflow.step_count == 0:
        return None, _acknowledgement("no_workflow_steps_defined", transaction_id)
    if workflow.active_step_count == 0:
        return None, _acknowledgement("no_workflow_active_steps_defined", transaction_id)

    paged = kind == "broadcast" or bool(parsed.topics)
    if kind == "broadcast":
        problems = await broadcast_problems(services.reader, environment.id, parsed)
    elif paged:
        problems = await topic_trigger_problems(services.reader, environment.id, parsed, to)
    else:
        problems = actor_only_problems(parsed)
    if problems:
        logger.info(
            "trigger %s of workflow %r reaches no subscriber, so it was not stored: %s",
            transaction_id,
            parsed.name,
            problems,
        )
        return None, _acknowledgement("invalid_recipients", transaction_id, problems)

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
    if paged:
        row["kind"] = kind
        row["cursor"] = fanout.START
    return row, _acknowledgement("processed", transaction_id)


async def _store(services: Services, row: dict[str, Any], acknowledgement: dict[str, Any]) -> dict[str, Any]:
    """Store a trigger row durably; return the acknowledgement, or an error for a reused transactionId."""
    return _stored_acknowledgement(row, acknowledgement, await services.intake.submit(row))


def _stored_acknowledgement(
    row: dict[str, Any], acknowledgement: dict[str, Any], inserted: bool
) -> dict[str, Any]:
    if inserted:
        return acknowledgement
    transaction_id = row["transaction_id"]
    return _acknowledgement(
        "error",
        transaction_id,
        [f"transactionId {transaction_id!r} was already used in this environment; nothing new was sent"],
    )


def _find_stored(services: Services, environment_id: str, key: str) -> StoredResponse | None:
    return find(services.store.raw_read(), environment_id, key, services.clock.now())


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
        # Off the event loop: on PostgreSQL the lookup is a network round trip, or a reconnect.
        stored = await asyncio.to_thread(_find_stored, services, environment.id, key.key)
        if stored is not None:
            return check_repeat(stored, key)[1], True
    parsed = _parse(validate_trigger, body)
    row, acknowledgement = await _admit(services, environment, parsed, kind="single", to=body.get("to"))
    if row is None:
        return {"data": acknowledgement}, False
    if key is None:
        return {"data": await _store(services, row, acknowledgement)}, False

    def respond(inserted: bool) -> dict[str, Any]:
        return {"data": _stored_acknowledgement(row, acknowledgement, inserted)}

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


def _bulk_events(body: dict[str, Any]) -> list[Any]:
    events = body.get("events")
    if not isinstance(events, list) or not events:
        raise ApiError(
            INVALID_FIELDS,
            errors=[
                FieldError(
                    "events",
                    f"is required: an array of 1 to {MAX_BULK_EVENTS} trigger objects",
                    events,
                )
            ],
        )
    if len(events) > MAX_BULK_EVENTS:
        raise ApiError(
            INVALID_FIELDS,
            errors=[
                FieldError(
                    "events",
                    f"has {len(events)} events; send at most {MAX_BULK_EVENTS} per request "
                    "and split the rest across several requests",
                )
            ],
        )
    return events


def _rejected(exc: ApiError, event: Any) -> dict[str, Any]:
    """Return the result of a bulk event that failed its checks, naming each problem."""
    if exc.status == 400 and exc.errors:
        messages = [f"{error.field}: {error.message}" for error in exc.errors]
    else:
        messages = [exc.message]
    transaction_id = event.get("transactionId") if isinstance(event, dict) else None
    return _acknowledgement("error", transaction_id if isinstance(transaction_id, str) else None, messages)


@post("/trigger/bulk", status_code=201)
async def trigger_bulk(request: Request[Any, Any, Any]) -> Response[Any]:
    """Trigger up to 100 events and return one result per event, in request order.

    Each event is checked like a single trigger. One that fails its checks gets a
    result with status `error` naming the problems, and the others still run,
    as Novu's bulk trigger does. The accepted events are stored together, each
    durably, before the response.
    """
    services = services_of(request)
    environment = await authenticate_api_key(services, request.headers.get("authorization", ""))
    events = _bulk_events(decode_json_object(await request.body()))
    results: list[dict[str, Any]] = []
    stored: list[tuple[int, dict[str, Any]]] = []
    for index, event in enumerate(events):
        try:
            if not isinstance(event, dict):
                raise ApiError(
                    INVALID_FIELDS,
                    errors=[
                        FieldError(f"events[{index}]", f"must be a trigger object, got {json_type(event)}")
                    ],
                )
            parsed = _parse(validate_trigger, event)
            row, acknowledgement = await _admit(
                services, environment, parsed, kind="single", to=event.get("to")
            )
        except ApiError as exc:
            if exc.status not in (400, 422):
                raise
            results.append(_rejected(exc, event))
            continue
        results.append(acknowledgement)
        if row is not None:
            stored.append((index, row))
    outcomes = await asyncio.gather(*(_store(services, row, results[index]) for index, row in stored))
    for (index, _), outcome in zip(stored, outcomes, strict=True):
        results[index] = outcome
    return Response(content={"data": results}, status_code=201)


@post("/trigger/broadcast", status_code=201)
async def trigger_broadcast(request: Request[Any, Any, Any]) -> Response[Any]:
    """Trigger a workflow for every subscriber of the environment, fanned out in pages."""
    services = services_of(request)
    environment = await authenticate_api_key(services, request.headers.get("authorization", ""))
    parsed = _parse(validate_broadcast, decode_json_object(await request.body()))
    row, acknowledgement = await _admit(services, environment, parsed, kind="broadcast")
    if row is not None:
        acknowledgement = await _store(services, row, acknowledgement)
    return Response(content={"data": acknowledgement}, status_code=201)


events_router = Router(path="/v1/events", route_handlers=[trigger_event, trigger_bulk, trigger_broadcast])


class TriggerRoute:
    """An ASGI wrapper that serves POST /v1/events/trigger itself and passes everything else on."""

    def __init__(self, app: ASGIApp, services: Services) -> None:
        self.app = app
        self.services = services

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST" or scope["path"] != TRIGGER_PATH:
            await self.app(scope, receive, send)
            return
        # The route label of request metrics, as Litestar's router sets it for the routes it serves.
        scope["path_template"] = TRIGGER_PATH
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
