"""POST /v1/events/trigger: validate, store durably, acknowledge."""

from __future__ import annotations

import uuid
from typing import Any

from litestar import Request, Response, Router, post

from novulite.api.auth import environment_from_api_key, services_of
from novulite.api.body import read_json_object
from novulite.api.triggers_validation import validate_trigger
from novulite.errors import (
    INVALID_FIELDS,
    SERVICE_UNAVAILABLE,
    TRIGGER_WORKFLOW_NOT_FOUND,
    ApiError,
    FieldError,
)
from novulite.ids import new_id


def _acknowledgement(status: str, transaction_id: str, error: list[str] | None = None) -> Response[Any]:
    data: dict[str, Any] = {"acknowledged": True, "status": status, "transactionId": transaction_id}
    if error:
        data["error"] = error
    return Response(content={"data": data}, status_code=201)


@post("/trigger", status_code=201)
async def trigger_event(request: Request[Any, Any, Any]) -> Response[Any]:
    # Called directly, not as a dependency: on this hot path Litestar's injection costs more.
    environment = await environment_from_api_key(request)
    services = services_of(request)

    body = await read_json_object(request)
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
        return _acknowledgement("trigger_not_active", transaction_id)
    if workflow.step_count == 0:
        return _acknowledgement("no_workflow_steps_defined", transaction_id)
    if workflow.active_step_count == 0:
        return _acknowledgement("no_workflow_active_steps_defined", transaction_id)

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
    if not await services.intake.submit(row):
        return _acknowledgement(
            "error",
            transaction_id,
            [f"transactionId {transaction_id!r} was already used in this environment; nothing new was sent"],
        )
    return _acknowledgement("processed", transaction_id)


events_router = Router(
    path="/v1/events",
    route_handlers=[trigger_event],
)
