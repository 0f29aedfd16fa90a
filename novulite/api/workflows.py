"""Workflows under /v2/workflows, in the shapes novu-py parses."""

from __future__ import annotations

import re
from typing import Any

from litestar import Request, Response, Router, get, post
from litestar.di import Provide
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from novulite.api.auth import environment_from_api_key, services_of
from novulite.api.body import json_type, read_json_object
from novulite.api.step_controls import SUPPORTED_STEP_TYPES, validate_controls, validate_preferences
from novulite.clock import isoformat
from novulite.db.models import Step, Workflow
from novulite.directory import EnvironmentInfo
from novulite.engine.preferences import merged_defaults
from novulite.errors import INVALID_FIELDS, INVALID_QUERY, WORKFLOW_NOT_FOUND, ApiError, FieldError
from novulite.ids import new_id
from novulite.services import Services

NOVU_STEP_TYPES = (
    "in_app", "email", "sms", "chat", "push", "tool", "digest", "trigger",
    "delay", "throttle", "custom", "http_request",
)  # fmt: skip
SEVERITIES = ("high", "medium", "low", "none")
CHANNELS = ("in_app", "email", "sms", "chat", "push")
IDENTIFIER_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")


def _slug(text: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug or "step"


def _validate_steps(steps: Any, errors: list[FieldError]) -> list[dict[str, Any]]:
    if not isinstance(steps, list):
        errors.append(FieldError("steps", f"is required: an array of steps, got {json_type(steps)}"))
        return []
    result: list[dict[str, Any]] = []
    seen_ids: set[str] = set()
    for index, step in enumerate(steps):
        field = f"steps[{index}]"
        if not isinstance(step, dict):
            errors.append(FieldError(field, f"must be an object, got {json_type(step)}"))
            continue
        name = step.get("name")
        if not isinstance(name, str) or not name.strip():
            errors.append(FieldError(f"{field}.name", "is required: a non-empty string", name))
            continue
        step_type = step.get("type")
        if step_type not in SUPPORTED_STEP_TYPES:
            known = (
                "is a Novu step type this server does not run yet"
                if step_type in NOVU_STEP_TYPES
                else "is not a step type"
            )
            errors.append(
                FieldError(
                    f"{field}.type",
                    f"{known}; supported: {', '.join(SUPPORTED_STEP_TYPES)}",
                    step_type,
                )
            )
            continue
        step_id = step.get("stepId") or _slug(name)
        if not isinstance(step_id, str) or not IDENTIFIER_PATTERN.match(step_id):
            errors.append(
                FieldError(f"{field}.stepId", "must use letters, digits, '.', '_' or '-' only", step_id)
            )
            continue
        if step_id in seen_ids:
            errors.append(
                FieldError(f"{field}.stepId", "repeats an earlier step's id; ids must be unique", step_id)
            )
            continue
        seen_ids.add(step_id)
        controls = step.get("controlValues") or {}
        if not isinstance(controls, dict):
            errors.append(
                FieldError(f"{field}.controlValues", f"must be an object, got {json_type(controls)}")
            )
            continue
        validate_controls(step_type, controls, f"{field}.controlValues", errors)
        result.append({"name": name.strip(), "type": step_type, "step_id": step_id, "controls": controls})
    return result


def validate_workflow(body: dict[str, Any]) -> dict[str, Any]:
    """Check a workflow body in the /v2/workflows shape; return its stored fields or raise ApiError (400)."""
    errors: list[FieldError] = []
    name = body.get("name")
    if not isinstance(name, str) or not name.strip():
        errors.append(FieldError("name", "is required: a non-empty string", name))

    workflow_id = body.get("workflowId")
    if not isinstance(workflow_id, str) or not IDENTIFIER_PATTERN.match(workflow_id):
        errors.append(
            FieldError(
                "workflowId",
                "is required: 1 to 200 letters, digits, '.', '_' or '-', starting with a letter or digit",
                workflow_id,
            )
        )

    steps = _validate_steps(body.get("steps"), errors)

    tags = body.get("tags") or []
    if not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags):
        errors.append(FieldError("tags", "must be an array of strings", tags))
    for flag in ("active", "critical", "validatePayload"):
        if flag in body and not isinstance(body[flag], bool):
            errors.append(FieldError(flag, f"must be true or false, got {json_type(body[flag])}"))
    severity = body.get("severity", "none")
    if severity not in SEVERITIES:
        errors.append(FieldError("severity", f"must be one of {', '.join(SEVERITIES)}", severity))
    description = body.get("description")
    if description is not None and not isinstance(description, str):
        errors.append(FieldError("description", f"must be a string, got {json_type(description)}"))
    preferences = validate_preferences(body.get("preferences"), errors)

    if errors:
        raise ApiError(INVALID_FIELDS, errors=errors)
    return {
        "name": name.strip() if isinstance(name, str) else "",
        "workflow_id": workflow_id,
        "steps": steps,
        "tags": tags,
        "active": body.get("active", True),
        "critical": body.get("critical", False),
        "validate_payload": body.get("validatePayload", False),
        "severity": severity,
        "description": description,
        "preferences": preferences,
        "payload_schema": body.get("payloadSchema") if isinstance(body.get("payloadSchema"), dict) else None,
    }


def _preferences(workflow: Workflow) -> dict[str, Any]:
    """Return Novu's {default, user} pair: the `workflow` level with every channel filled in, and `user`."""
    stored = workflow.preferences if isinstance(workflow.preferences, dict) else {}
    merged = merged_defaults({"workflow": stored.get("workflow")})
    fallback = merged["all"].get("enabled", True)
    channels = {channel: {"enabled": fallback} for channel in CHANNELS}
    for channel, setting in merged["channels"].items():
        channels[channel] = {"enabled": setting.get("enabled", fallback)}
    user = None
    if isinstance(stored.get("user"), dict):
        # novu-py requires both `all` and `channels` in the user level.
        user_level = merged_defaults({"user": stored["user"]})
        user = {
            "all": {"enabled": True, "readOnly": False, **user_level["all"]},
            "channels": user_level["channels"],
        }
    return {
        "default": {
            "all": {"enabled": fallback, "readOnly": merged["all"].get("readOnly", False)},
            "channels": channels,
        },
        "user": user,
    }


def serialize_step(step: Step, workflow: Workflow) -> dict[str, Any]:
    return {
        "_id": step.id,
        "stepId": step.step_id,
        "name": step.name,
        "slug": step.step_id,
        "type": step.type,
        "origin": "novu-cloud",
        "workflowId": workflow.workflow_id,
        "workflowDatabaseId": workflow.id,
        "controls": {"values": step.control_values or {}},
        "controlValues": step.control_values or {},
        "variables": {},
    }


def serialize_workflow(workflow: Workflow, steps: list[Step]) -> dict[str, Any]:
    return {
        "_id": workflow.id,
        "workflowId": workflow.workflow_id,
        "name": workflow.name,
        "slug": workflow.workflow_id,
        "description": workflow.description,
        "tags": workflow.tags or [],
        "active": workflow.active,
        "critical": workflow.critical,
        "status": "ACTIVE" if workflow.active else "INACTIVE",
        "origin": "novu-cloud",
        "severity": workflow.severity,
        "validatePayload": workflow.validate_payload,
        "payloadSchema": workflow.payload_schema,
        "preferences": _preferences(workflow),
        "steps": [serialize_step(step, workflow) for step in steps],
        "createdAt": isoformat(workflow.created_at),
        "updatedAt": isoformat(workflow.updated_at),
    }


def serialize_list_item(workflow: Workflow, steps: list[Step]) -> dict[str, Any]:
    return {
        "_id": workflow.id,
        "workflowId": workflow.workflow_id,
        "name": workflow.name,
        "slug": workflow.workflow_id,
        "tags": workflow.tags or [],
        "status": "ACTIVE" if workflow.active else "INACTIVE",
        "origin": "novu-cloud",
        "stepTypeOverviews": [step.type for step in steps],
        "steps": [{"slug": step.step_id, "type": step.type} for step in steps],
        "createdAt": isoformat(workflow.created_at),
        "updatedAt": isoformat(workflow.updated_at),
    }


async def steps_by_workflow(session: AsyncSession, workflow_pks: list[str]) -> dict[str, list[Step]]:
    grouped: dict[str, list[Step]] = {pk: [] for pk in workflow_pks}
    rows = await session.scalars(
        select(Step).where(Step.workflow_pk.in_(workflow_pks)).order_by(Step.position)
    )
    for step in rows:
        grouped[step.workflow_pk].append(step)
    return grouped


def _step_rows(workflow_pk: str, steps: list[dict[str, Any]]) -> list[Step]:
    return [
        Step(
            id=new_id(),
            workflow_pk=workflow_pk,
            position=position,
            step_id=step["step_id"],
            name=step["name"],
            type=step["type"],
            active=True,
            control_values=step["controls"],
        )
        for position, step in enumerate(steps)
    ]


async def insert_workflow(
    services: Services, environment_id: str, fields: dict[str, Any]
) -> tuple[Workflow, list[Step]]:
    """Store a new workflow from validate_workflow's fields; raise ApiError when its workflowId is taken."""
    now = services.clock.now()
    workflow = Workflow(
        id=new_id(),
        environment_id=environment_id,
        workflow_id=fields["workflow_id"],
        name=fields["name"],
        description=fields["description"],
        tags=fields["tags"],
        active=fields["active"],
        critical=fields["critical"],
        severity=fields["severity"],
        preferences=fields["preferences"],
        payload_schema=fields["payload_schema"],
        validate_payload=fields["validate_payload"],
        created_at=now,
        updated_at=now,
    )
    steps = _step_rows(workflow.id, fields["steps"])
    try:
        async with (
            AsyncSession(services.writer, expire_on_commit=False) as session,
            session.begin(),
        ):
            session.add(workflow)
            await session.flush()
            session.add_all(steps)
    except IntegrityError:
        raise ApiError(
            INVALID_FIELDS,
            errors=[
                FieldError(
                    "workflowId",
                    "is already used by another workflow in this environment; choose another",
                    fields["workflow_id"],
                )
            ],
        ) from None
    services.directory.invalidate_workflow(environment_id, workflow.workflow_id)
    return workflow, steps


async def update_workflow(
    services: Services, workflow_pk: str, fields: dict[str, Any]
) -> tuple[Workflow, list[Step]]:
    """Replace a stored workflow's fields and steps with validate_workflow's fields.

    The workflowId stays as stored. A step whose stepId is kept keeps its row, so jobs
    still point at it. Steps left out are deleted, and their jobs' step_pk becomes NULL.
    Raises ApiError (404) when the workflow is gone.
    """
    async with (
        AsyncSession(services.writer, expire_on_commit=False) as session,
        session.begin(),
    ):
        workflow = await session.get(Workflow, workflow_pk)
        if workflow is None:
            raise ApiError(WORKFLOW_NOT_FOUND, workflow_id=workflow_pk)
        workflow.name = fields["name"]
        workflow.description = fields["description"]
        workflow.tags = fields["tags"]
        workflow.active = fields["active"]
        workflow.critical = fields["critical"]
        workflow.severity = fields["severity"]
        workflow.preferences = fields["preferences"]
        workflow.payload_schema = fields["payload_schema"]
        workflow.validate_payload = fields["validate_payload"]
        workflow.updated_at = services.clock.now()
        existing = {
            step.step_id: step
            for step in await session.scalars(select(Step).where(Step.workflow_pk == workflow_pk))
        }
        kept_step_ids = {step["step_id"] for step in fields["steps"]}
        for step_id, removed in existing.items():
            if step_id not in kept_step_ids:
                await session.delete(removed)
        await session.flush()
        steps: list[Step] = []
        for position, step in enumerate(fields["steps"]):
            stored = existing.get(step["step_id"])
            if stored is None:
                stored = _step_rows(workflow_pk, [step])[0]
                session.add(stored)
            row = stored
            row.position = position
            row.name = step["name"]
            row.type = step["type"]
            row.control_values = step["controls"]
            steps.append(row)
    services.directory.invalidate_workflow(workflow.environment_id, workflow.workflow_id)
    return workflow, steps


@post("/", status_code=201)
async def create_workflow(request: Request[Any, Any, Any], environment: EnvironmentInfo) -> Response[Any]:
    fields = validate_workflow(await read_json_object(request))
    workflow, steps = await insert_workflow(services_of(request), environment.id, fields)
    return Response(content={"data": serialize_workflow(workflow, steps)}, status_code=201)


def _int_param(request: Request[Any, Any, Any], name: str, default: int, maximum: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(float(raw))
    except ValueError:
        raise ApiError(INVALID_QUERY, errors=[FieldError(name, "must be a whole number", raw)]) from None
    if value < 0 or value > maximum:
        raise ApiError(INVALID_QUERY, errors=[FieldError(name, f"must be between 0 and {maximum}", raw)])
    return value


@get("/")
async def list_workflows(request: Request[Any, Any, Any], environment: EnvironmentInfo) -> dict[str, Any]:
    services = services_of(request)
    limit = _int_param(request, "limit", 10, 100)
    offset = _int_param(request, "offset", 0, 1_000_000)
    query = request.query_params.get("query")
    condition = [Workflow.environment_id == environment.id]
    if query:
        pattern = f"%{query}%"
        condition.append(Workflow.name.ilike(pattern) | Workflow.workflow_id.ilike(pattern))
    async with AsyncSession(services.reader) as session:
        total = await session.scalar(select(func.count()).select_from(Workflow).where(*condition))
        workflows = list(
            await session.scalars(
                select(Workflow)
                .where(*condition)
                .order_by(Workflow.created_at.desc(), Workflow.id.desc())
                .limit(limit)
                .offset(offset)
            )
        )
        steps = await steps_by_workflow(session, [workflow.id for workflow in workflows])
    items = [serialize_list_item(workflow, steps[workflow.id]) for workflow in workflows]
    return {"data": {"workflows": items, "totalCount": total or 0}}


@get("/{workflow_id:str}")
async def get_workflow(
    request: Request[Any, Any, Any], environment: EnvironmentInfo, workflow_id: str
) -> dict[str, Any]:
    services = services_of(request)
    async with AsyncSession(services.reader) as session:
        workflow = await session.scalar(
            select(Workflow).where(
                Workflow.environment_id == environment.id,
                (Workflow.workflow_id == workflow_id) | (Workflow.id == workflow_id),
            )
        )
        if workflow is None:
            raise ApiError(WORKFLOW_NOT_FOUND, workflow_id=workflow_id)
        steps = (await steps_by_workflow(session, [workflow.id]))[workflow.id]
    return {"data": serialize_workflow(workflow, steps)}


workflows_router = Router(
    path="/v2/workflows",
    route_handlers=[create_workflow, list_workflows, get_workflow],
    dependencies={"environment": Provide(environment_from_api_key)},
)
