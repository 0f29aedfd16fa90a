"""The admin workflow editor's form: flat form fields to a /v2/workflows body and back.

Each step has inputs for its type's common control values, a JSON object for the
other control values and a JSONLogic `skip` condition. The body this module builds
goes through the API's own validation, so the editor and the API accept the same
workflows.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from typing import Any

from novulite.api.step_controls import SUPPORTED_STEP_TYPES
from novulite.api.workflows import CHANNELS
from novulite.engine.schedule import UNITS
from novulite.engine.steps.http_request import METHODS
from novulite.errors import FieldError


@dataclasses.dataclass(frozen=True)
class ControlInput:
    """One control value that the editor shows as its own input."""

    # Dotted path inside controlValues, such as `primaryAction.redirect.url`.
    path: str
    label: str
    # text, textarea, number or select
    kind: str = "text"
    options: tuple[str, ...] = ()


_DURATION = (
    ControlInput("amount", "Amount", "number"),
    ControlInput("unit", "Unit", "select", ("", *UNITS)),
)
STEP_INPUTS: dict[str, tuple[ControlInput, ...]] = {
    "in_app": (
        ControlInput("subject", "Subject"),
        ControlInput("body", "Body", "textarea"),
        ControlInput("avatar", "Avatar URL"),
        ControlInput("primaryAction.label", "Primary action label"),
        ControlInput("primaryAction.redirect.url", "Primary action URL"),
        ControlInput("redirect.url", "Redirect URL"),
    ),
    "email": (ControlInput("subject", "Subject"), ControlInput("body", "Body (HTML)", "textarea")),
    "sms": (ControlInput("body", "Body", "textarea"),),
    "chat": (ControlInput("body", "Body", "textarea"),),
    "push": (ControlInput("subject", "Title"), ControlInput("body", "Body", "textarea")),
    "delay": _DURATION,
    "digest": (*_DURATION, ControlInput("digestKey", "Digest key")),
    "throttle": (
        *_DURATION,
        ControlInput("threshold", "Threshold", "number"),
        ControlInput("throttleKey", "Throttle key"),
    ),
    "http_request": (
        ControlInput("method", "Method", "select", ("", *METHODS)),
        ControlInput("url", "URL"),
    ),
}
STEP_TYPE_LABELS = {
    "in_app": "In-app",
    "email": "Email",
    "sms": "SMS",
    "chat": "Chat",
    "push": "Push",
    "delay": "Delay",
    "digest": "Digest",
    "throttle": "Throttle",
    "http_request": "HTTP request",
}
# More steps than this in one form are ignored, so a crafted form cannot make the server loop long.
MAX_STEPS = 50


@dataclasses.dataclass
class StepForm:
    type: str
    name: str = ""
    step_id: str = ""
    # Text of each ControlInput of the type, by path.
    values: dict[str, str] = dataclasses.field(default_factory=dict)
    # The other control values as a JSON object, and the skip condition as JSONLogic JSON.
    controls_json: str = ""
    skip_json: str = ""

    @property
    def inputs(self) -> tuple[ControlInput, ...]:
        return STEP_INPUTS.get(self.type, ())


@dataclasses.dataclass
class WorkflowForm:
    name: str = ""
    workflow_id: str = ""
    description: str = ""
    tags: str = ""
    active: bool = True
    critical: bool = False
    # Channel -> enabled by default for subscribers.
    channels: dict[str, bool] = dataclasses.field(default_factory=lambda: dict.fromkeys(CHANNELS, True))
    steps: list[StepForm] = dataclasses.field(default_factory=list)


def _get_path(values: dict[str, Any], path: str) -> Any:
    current: Any = values
    for part in path.split("."):
        if not isinstance(current, dict):
            return None
        current = current.get(part)
    return current


def _pop_path(values: dict[str, Any], path: str) -> None:
    """Remove the value at `path`, and the objects on the way that it leaves empty."""
    head, _, rest = path.partition(".")
    if not rest:
        values.pop(head, None)
        return
    child = values.get(head)
    if isinstance(child, dict):
        _pop_path(child, rest)
        if not child:
            values.pop(head)


def _set_path(values: dict[str, Any], path: str, value: Any) -> None:
    parts = path.split(".")
    current = values
    for part in parts[:-1]:
        child = current.get(part)
        if not isinstance(child, dict):
            child = {}
            current[part] = child
        current = child
    current[parts[-1]] = value


def _input_text(value: Any) -> str | None:
    """Return a stored control value as input text, or None when an input cannot show it."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str | int | float):
        return str(value)
    return None


def step_from_stored(step_type: str, name: str, step_id: str, controls: dict[str, Any]) -> StepForm:
    """Split a stored step's control values into its inputs, the other values and the condition."""
    others = copy.deepcopy(controls)
    values: dict[str, str] = {}
    for control in STEP_INPUTS.get(step_type, ()):
        text = _input_text(_get_path(controls, control.path))
        if text is not None:
            values[control.path] = text
            _pop_path(others, control.path)
    skip = others.pop("skip", None)
    return StepForm(
        type=step_type,
        name=name,
        step_id=step_id,
        values=values,
        controls_json=json.dumps(others, indent=2) if others else "",
        skip_json=json.dumps(skip, indent=2) if skip is not None else "",
    )


def form_from_stored(workflow: dict[str, Any]) -> WorkflowForm:
    """Return the form of a workflow in the shape serialize_workflow returns."""
    channels = workflow["preferences"]["default"]["channels"]
    return WorkflowForm(
        name=workflow["name"],
        workflow_id=workflow["workflowId"],
        description=workflow.get("description") or "",
        tags=", ".join(workflow.get("tags") or []),
        active=bool(workflow["active"]),
        critical=bool(workflow["critical"]),
        channels={channel: bool(channels.get(channel, {}).get("enabled", True)) for channel in CHANNELS},
        steps=[
            step_from_stored(step["type"], step["name"], step["stepId"], step["controlValues"])
            for step in workflow["steps"]
        ],
    )


def form_from_data(data: dict[str, str]) -> WorkflowForm:
    """Read the editor's posted fields; values are kept as typed so the form can be shown again."""
    steps = []
    for index in range(min(_count(data.get("step_count")), MAX_STEPS)):
        prefix = f"step-{index}-"
        step_type = data.get(prefix + "type", "")
        step = StepForm(
            type=step_type,
            name=data.get(prefix + "name", ""),
            step_id=data.get(prefix + "stepId", "").strip(),
            controls_json=data.get(prefix + "controls", ""),
            skip_json=data.get(prefix + "skip", ""),
        )
        for control in step.inputs:
            step.values[control.path] = data.get(prefix + control.path, "")
        steps.append(step)
    return WorkflowForm(
        name=data.get("name", ""),
        workflow_id=data.get("workflowId", "").strip(),
        description=data.get("description", ""),
        tags=data.get("tags", ""),
        active="active" in data,
        critical="critical" in data,
        channels={channel: f"channel-{channel}" in data for channel in CHANNELS},
        steps=steps,
    )


def _count(text: str | None) -> int:
    try:
        return max(int(text or 0), 0)
    except ValueError:
        return 0


def apply_step_action(form: WorkflowForm, action: str, new_type: str) -> bool:
    """Add, remove or move a step as the pressed button's `action` value names.

    Returns False for an unknown action, which leaves the form as it was.
    """
    if action == "add":
        step_type = new_type if new_type in SUPPORTED_STEP_TYPES else "in_app"
        number = sum(1 for step in form.steps if step.type == step_type) + 1
        label = STEP_TYPE_LABELS[step_type]
        form.steps.append(StepForm(type=step_type, name=f"{label} {number}" if number > 1 else label))
        return True
    verb, _, position = action.partition("-")
    index = _count(position) if position.isdigit() else -1
    if verb not in ("remove", "up", "down") or not 0 <= index < len(form.steps):
        return False
    if verb == "remove":
        del form.steps[index]
    elif verb == "up" and index > 0:
        form.steps[index - 1], form.steps[index] = form.steps[index], form.steps[index - 1]
    elif verb == "down" and index < len(form.steps) - 1:
        form.steps[index + 1], form.steps[index] = form.steps[index], form.steps[index + 1]
    return True


def _number(text: str) -> Any:
    """Return typed number text as an int or float, or the text itself for validation to reject."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def _json_value(text: str, field: str, errors: list[FieldError], hint: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        errors.append(FieldError(field, f"is not valid JSON ({exc.msg} at line {exc.lineno}): {hint}"))
        return None


def _step_body(index: int, step: StepForm, errors: list[FieldError]) -> dict[str, Any]:
    field = f"steps[{index}].controlValues"
    controls: dict[str, Any] = {}
    if step.controls_json.strip():
        others = _json_value(step.controls_json, field, errors, "write a JSON object of control values")
        if isinstance(others, dict):
            controls = others
        elif others is not None:
            errors.append(FieldError(field, "must be a JSON object of control values, such as {}"))
    for control in step.inputs:
        text = step.values.get(control.path, "")
        if text.strip():
            _set_path(controls, control.path, _number(text.strip()) if control.kind == "number" else text)
    if step.skip_json.strip():
        skip = _json_value(
            step.skip_json, f"{field}.skip", errors, 'write a JSONLogic object such as {"==": [1, 1]}'
        )
        if skip is not None:
            controls["skip"] = skip
    body: dict[str, Any] = {"name": step.name, "type": step.type, "controlValues": controls}
    if step.step_id:
        body["stepId"] = step.step_id
    return body


def workflow_body(
    form: WorkflowForm, stored: dict[str, Any] | None, errors: list[FieldError]
) -> dict[str, Any]:
    """Build the /v2/workflows body of `form`, appending JSON errors of its text areas to `errors`.

    With `stored`, the serialized workflow being edited, its workflowId and the fields the
    form does not show (severity, payload schema, the user preference level) are kept.
    """
    tags = [tag.strip() for tag in form.tags.split(",") if tag.strip()]
    preferences: dict[str, Any] = {
        "workflow": {
            "all": {"enabled": True},
            "channels": {channel: {"enabled": enabled} for channel, enabled in form.channels.items()},
        }
    }
    body: dict[str, Any] = {
        "name": form.name,
        "workflowId": form.workflow_id,
        "description": form.description.strip() or None,
        "tags": tags,
        "active": form.active,
        "critical": form.critical,
        "steps": [_step_body(index, step, errors) for index, step in enumerate(form.steps)],
        "preferences": preferences,
    }
    if stored is not None:
        body["workflowId"] = stored["workflowId"]
        body["severity"] = stored["severity"]
        body["validatePayload"] = stored["validatePayload"]
        body["payloadSchema"] = stored["payloadSchema"]
        default_all = stored["preferences"]["default"]["all"]
        preferences["workflow"]["all"] = {
            "enabled": default_all.get("enabled", True),
            "readOnly": default_all.get("readOnly", False),
        }
        user = stored["preferences"].get("user")
        if user is not None:
            preferences["user"] = user
    return body
