"""Admin workflow editor: create and edit workflows, preview step content, send a test trigger."""

from __future__ import annotations

import dataclasses
import json
import logging
from typing import Annotated, Any
from urllib.parse import quote

from litestar import Request, Response, Router, get, post
from litestar.di import Provide
from litestar.enums import RequestEncodingType
from litestar.exceptions import NotFoundException
from litestar.params import Body
from litestar.response import Template
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from novulite.api.auth import services_of
from novulite.api.events import accept_trigger
from novulite.api.step_controls import SUPPORTED_STEP_TYPES
from novulite.api.workflows import (
    CHANNELS,
    insert_workflow,
    serialize_workflow,
    steps_by_workflow,
    update_workflow,
    validate_workflow,
)
from novulite.db.models import Environment, Workflow
from novulite.engine.templates import TemplateError
from novulite.engine.templates import render as render_template
from novulite.engine.variables import digest_variables, workflow_variables
from novulite.errors import ApiError, FieldError
from novulite.services import Services
from novulite.subscribers import PROFILE_FIELDS
from novulite.ui.common import current_admin, flash_redirect, render
from novulite.ui.workflow_form import (
    STEP_TYPE_LABELS,
    WorkflowForm,
    apply_step_action,
    form_from_data,
    form_from_stored,
    workflow_body,
)

logger = logging.getLogger("novulite.ui")

FormData = Annotated[dict[str, str], Body(media_type=RequestEncodingType.URL_ENCODED)]
EDITOR = "admin/workflows/edit.html"
# Control values that a preview renders, per step type, in the order shown.
PREVIEW_PATHS: dict[str, tuple[str, ...]] = {
    "in_app": (
        "subject",
        "body",
        "avatar",
        "primaryAction.label",
        "primaryAction.redirect.url",
        "redirect.url",
    ),
    "email": ("subject", "preheader", "body"),
    "sms": ("body",),
    "chat": ("body",),
    "push": ("subject", "body"),
    "http_request": ("url",),
    "digest": ("digestKey",),
    "throttle": ("throttleKey",),
}
DEFAULT_PREVIEW_PAYLOAD = "{}"
DEFAULT_PREVIEW_SUBSCRIBER = '{"subscriberId": "preview-subscriber", "firstName": "Ada"}'


@dataclasses.dataclass
class Preview:
    """The rendered control values of one step, or the template error that stopped the rendering."""

    payload_text: str
    subscriber_text: str
    rendered: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    error: str | None = None


@dataclasses.dataclass
class TriggerInput:
    subscriber_id: str = ""
    payload_text: str = DEFAULT_PREVIEW_PAYLOAD


def _error_texts(errors: list[FieldError]) -> list[tuple[str, str]]:
    return [(error.field, f"{error.field} {error.message}") for error in errors]


def _editor_context(
    form: WorkflowForm,
    stored: dict[str, Any] | None,
    errors: list[FieldError],
    **extra: Any,
) -> dict[str, Any]:
    return {
        "form": form,
        "stored": stored,
        "errors": _error_texts(errors),
        "field_errors": {error.field: error.message for error in errors},
        "step_types": [(step_type, STEP_TYPE_LABELS[step_type]) for step_type in SUPPORTED_STEP_TYPES],
        "type_labels": STEP_TYPE_LABELS,
        "channels": CHANNELS,
        "previews": {},
        "preview_types": tuple(PREVIEW_PATHS),
        "trigger": TriggerInput(),
        "trigger_errors": [],
        "transaction_id": None,
        "environments": [],
        "environment_id": None,
        **extra,
    }


async def _load(services: Services, workflow_pk: str) -> tuple[Workflow, dict[str, Any]]:
    """Return the stored workflow and its /v2/workflows shape, or raise 404."""
    async with AsyncSession(services.reader) as session:
        workflow = await session.scalar(select(Workflow).where(Workflow.id == workflow_pk))
        if workflow is None:
            raise NotFoundException(f"workflow {workflow_pk!r} was not found")
        steps = (await steps_by_workflow(session, [workflow.id]))[workflow.id]
    return workflow, serialize_workflow(workflow, steps)


async def _environments(services: Services) -> list[tuple[str, str]]:
    async with AsyncSession(services.reader) as session:
        rows = await session.execute(
            select(Environment.id, Environment.name).order_by(Environment.created_at, Environment.id)
        )
    return [(row[0], row[1]) for row in rows]


def _edit_path(workflow_pk: str) -> str:
    return f"/admin/workflows/{quote(workflow_pk, safe='')}"


@get("/workflows/new", dependencies={"admin": Provide(current_admin)})
async def new_workflow_page(request: Request[Any, Any, Any], admin: str) -> Template:
    environments = await _environments(services_of(request))
    context = _editor_context(WorkflowForm(), None, [], environments=environments)
    context["environment_id"] = environments[0][0] if environments else None
    return render(request, EDITOR, admin, context)


def _validated(body: dict[str, Any], errors: list[FieldError]) -> dict[str, Any] | None:
    """Run the API's workflow validation; return its fields, or None with the problems in `errors`."""
    try:
        fields = validate_workflow(body)
    except ApiError as exc:
        errors.extend(exc.errors)
        return None
    return None if errors else fields


@post("/workflows/new", dependencies={"admin": Provide(current_admin)})
async def create_workflow_submit(
    request: Request[Any, Any, Any], admin: str, data: FormData
) -> Response[Any]:
    """Apply a step button, or validate and store the new workflow and open its edit page."""
    services = services_of(request)
    environments = await _environments(services)
    known = {environment_id for environment_id, _ in environments}
    environment_id = data.get("environment", "")
    if environment_id not in known:
        # The oldest environment, as the first one bootstrap creates.
        environment_id = environments[0][0] if environments else ""
    form = form_from_data(data)
    extra = {"environments": environments, "environment_id": environment_id}

    action = data.get("action", "save")
    if action != "save":
        apply_step_action(form, action, data.get("new_step_type", ""))
        return render(request, EDITOR, admin, _editor_context(form, None, [], **extra))

    errors: list[FieldError] = []
    fields = _validated(workflow_body(form, None, errors), errors)
    if fields is not None:
        try:
            workflow, _ = await insert_workflow(services, environment_id, fields)
        except ApiError as exc:
            errors.extend(exc.errors)
    if errors:
        context = _editor_context(form, None, errors, **extra)
        return render(request, EDITOR, admin, context, status_code=400)
    logger.info("admin %s created workflow %s", admin, workflow.workflow_id)
    return flash_redirect(request, _edit_path(workflow.id), "Workflow saved")


@get("/workflows/{workflow_pk:str}", dependencies={"admin": Provide(current_admin)})
async def edit_workflow_page(
    request: Request[Any, Any, Any], admin: str, workflow_pk: str, transactionId: str | None = None
) -> Template:
    _, stored = await _load(services_of(request), workflow_pk)
    context = _editor_context(form_from_stored(stored), stored, [], transaction_id=transactionId)
    return render(request, EDITOR, admin, context)


@post("/workflows/{workflow_pk:str}", dependencies={"admin": Provide(current_admin)})
async def edit_workflow_submit(
    request: Request[Any, Any, Any], admin: str, workflow_pk: str, data: FormData
) -> Response[Any]:
    """Apply a step button, or validate and store the changed workflow."""
    services = services_of(request)
    _, stored = await _load(services, workflow_pk)
    form = form_from_data(data)
    form.workflow_id = stored["workflowId"]

    action = data.get("action", "save")
    if action != "save":
        apply_step_action(form, action, data.get("new_step_type", ""))
        return render(request, EDITOR, admin, _editor_context(form, stored, []))

    errors: list[FieldError] = []
    fields = _validated(workflow_body(form, stored, errors), errors)
    if fields is not None:
        await update_workflow(services, workflow_pk, fields)
    if errors:
        return render(request, EDITOR, admin, _editor_context(form, stored, errors), status_code=400)
    logger.info("admin %s saved workflow %s", admin, stored["workflowId"])
    return flash_redirect(request, _edit_path(workflow_pk), "Workflow saved")


def _json_object(text: str, field: str, errors: list[FieldError]) -> dict[str, Any]:
    if not text.strip():
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        errors.append(FieldError(field, f"is not valid JSON ({exc.msg} at line {exc.lineno})"))
        return {}
    if not isinstance(value, dict):
        errors.append(FieldError(field, "must be a JSON object, such as {}"))
        return {}
    return value


def _subscriber_variables(sample: dict[str, Any]) -> dict[str, Any]:
    """Return the `subscriber` namespace of a sample subscriber, with the fields it leaves out empty."""
    variables: dict[str, Any] = {"subscriberId": "", **dict.fromkeys(PROFILE_FIELDS), "data": {}}
    variables.update(sample)
    return variables


def _render_step(
    workflow: Workflow, step: dict[str, Any], payload: dict[str, Any], subscriber: dict[str, Any]
) -> Preview:
    """Render a stored step's templates as the engine's step of that type renders them."""
    variables = {
        "payload": payload,
        "subscriber": _subscriber_variables(subscriber),
        "workflow": workflow_variables(workflow),
        "steps": {},
        "step": digest_variables({}),
        "context": {},
        "actor": {},
    }
    preview = Preview("", "")
    controls = step["controlValues"]
    for path in PREVIEW_PATHS.get(step["type"], ()):
        source: Any = controls
        for part in path.split("."):
            source = source.get(part) if isinstance(source, dict) else None
        if not isinstance(source, str) or not source:
            continue
        # Email bodies are HTML, so the engine HTML-escapes the values that variables insert.
        # NOTE: chat bodies render plain here; the engine escapes their values for the chat
        # integration's markup format, which the preview does not know.
        escape_html = step["type"] == "email" and path == "body"
        try:
            preview.rendered.append((path, render_template(source, variables, path, escape_html=escape_html)))
        except TemplateError as exc:
            preview.error = str(exc)
            break
    return preview


@post("/workflows/{workflow_pk:str}/preview", dependencies={"admin": Provide(current_admin)})
async def preview_step(
    request: Request[Any, Any, Any], admin: str, workflow_pk: str, data: FormData
) -> Template:
    """Render one saved step with a sample payload and subscriber, and show the result on the edit page."""
    workflow, stored = await _load(services_of(request), workflow_pk)
    errors: list[FieldError] = []
    payload_text = data.get("payload", "")
    subscriber_text = data.get("subscriber", "")
    payload = _json_object(payload_text, "payload", errors)
    subscriber = _json_object(subscriber_text, "subscriber", errors)
    step_id = data.get("step", "")
    step = next((item for item in stored["steps"] if item["stepId"] == step_id), None)
    if step is None:
        errors.append(
            FieldError("step", "is not a saved step of this workflow; save the workflow first", step_id)
        )
    if errors:
        preview = Preview(
            payload_text, subscriber_text, error="; ".join(text for _, text in _error_texts(errors))
        )
    else:
        assert step is not None
        preview = _render_step(workflow, step, payload, subscriber)
        preview.payload_text = payload_text
        preview.subscriber_text = subscriber_text
    context = _editor_context(form_from_stored(stored), stored, [], previews={step_id: preview})
    return render(request, EDITOR, admin, context, status_code=400 if errors else 200)


def _nested_controls(data: dict[str, str], paths: tuple[str, ...]) -> dict[str, Any]:
    """Build a step's controlValues from form fields named by their dotted path."""
    controls: dict[str, Any] = {}
    for path in paths:
        value = data.get(path)
        if not value:
            continue
        *parents, leaf = path.split(".")
        target = controls
        for part in parents:
            target = target.setdefault(part, {})
        target[leaf] = value
    return controls


@post("/workflows/live-preview", status_code=200, dependencies={"admin": Provide(current_admin)})
async def live_preview(admin: str, data: FormData) -> Response[Any]:
    """Render a step's unsaved content with sample data, for the editor's preview as you type.

    The form carries `type`, the step's content fields by path (such as `subject` or
    `primaryAction.label`), the sample `payload` and `subscriber` as JSON, and the workflow's
    `name` and `workflowId`. The response is JSON: `{rendered: [[path, text]], error}`.
    """
    step_type = data.get("type", "")
    paths = PREVIEW_PATHS.get(step_type)
    if paths is None:
        message = f"type {step_type!r} has no content to preview; use one of {', '.join(PREVIEW_PATHS)}"
        return Response(content={"rendered": [], "error": message}, status_code=400)
    errors: list[FieldError] = []
    payload = _json_object(data.get("payload", "") or "{}", "payload", errors)
    subscriber = _json_object(data.get("subscriber", "") or "{}", "subscriber", errors)
    if errors:
        error = "; ".join(text for _, text in _error_texts(errors))
        return Response(content={"rendered": [], "error": error}, status_code=400)
    workflow = Workflow(
        workflow_id=data.get("workflowId", ""),
        name=data.get("name", ""),
        description="",
        tags=[],
        severity="none",
    )
    step = {"type": step_type, "controlValues": _nested_controls(data, paths)}
    preview = _render_step(workflow, step, payload, subscriber)
    return Response(content={"rendered": preview.rendered, "error": preview.error})


@post("/workflows/{workflow_pk:str}/trigger", dependencies={"admin": Provide(current_admin)})
async def test_trigger(
    request: Request[Any, Any, Any], admin: str, workflow_pk: str, data: FormData
) -> Response[Any]:
    """Trigger the workflow for one subscriber through the same code as POST /v1/events/trigger."""
    services = services_of(request)
    workflow, stored = await _load(services, workflow_pk)
    trigger = TriggerInput(data.get("subscriberId", "").strip(), data.get("payload", ""))
    errors: list[FieldError] = []
    if not trigger.subscriber_id:
        errors.append(FieldError("subscriberId", "is required: the subscriber to send the test to"))
    payload = _json_object(trigger.payload_text, "payload", errors)
    environment = await services.directory.environment_by_id(workflow.environment_id)
    if environment is None:
        errors.append(FieldError("environment", "of this workflow was not found", workflow.environment_id))
    content: dict[str, Any] = {}
    if not errors and environment is not None:
        body = {
            "name": workflow.workflow_id,
            "to": {"subscriberId": trigger.subscriber_id},
            "payload": payload,
        }
        try:
            content, _ = await accept_trigger(services, environment, body)
        except ApiError as exc:
            logger.info("test trigger of workflow %s was rejected: %s", workflow.workflow_id, exc.message)
            errors.extend(exc.errors or [FieldError("trigger", exc.message)])
    if errors:
        context = _editor_context(
            form_from_stored(stored), stored, [], trigger=trigger, trigger_errors=_error_texts(errors)
        )
        return render(request, EDITOR, admin, context, status_code=400)

    acknowledgement = content["data"]
    transaction_id = str(acknowledgement.get("transactionId", ""))
    if acknowledgement.get("status") != "processed":
        reasons = "; ".join(acknowledgement.get("error") or [])
        message = f"The test trigger was not sent: {acknowledgement.get('status')}. {reasons}".strip()
        return flash_redirect(request, _edit_path(workflow_pk), message, "error")
    logger.info(
        "admin %s sent a test trigger of workflow %s: %s", admin, workflow.workflow_id, transaction_id
    )
    return flash_redirect(
        request,
        f"{_edit_path(workflow_pk)}?transactionId={quote(transaction_id, safe='')}",
        f"Test trigger sent with transaction id {transaction_id}",
    )


workflows_router = Router(
    path="/admin",
    route_handlers=[
        new_workflow_page,
        create_workflow_submit,
        edit_workflow_page,
        edit_workflow_submit,
        preview_step,
        live_preview,
        test_trigger,
    ],
    include_in_schema=False,
)
