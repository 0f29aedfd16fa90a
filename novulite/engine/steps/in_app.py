"""The in_app step: render a message for the subscriber's inbox.

The runner inserts the message in the same transaction that claims and completes
the job, and the message table allows one row per job, so an in-app message is
delivered exactly once.
"""

from __future__ import annotations

from typing import Any

from novulite.engine.steps.base import StepContext, StepResult
from novulite.engine.templates import render
from novulite.ids import new_id
from novulite.messages import context_key
from novulite.queues import MESSAGES_CREATED


def run(ctx: StepContext) -> StepResult:
    controls = ctx.controls
    variables = ctx.variables
    row = message_row(
        ctx,
        "in_app",
        subject=render(controls.get("subject"), variables, "subject") or None,
        content=render(controls.get("body"), variables, "body"),
        avatar=render(controls.get("avatar"), variables, "avatar") or None,
        cta=_cta(controls, variables),
        data=_render_data(controls.get("data"), variables, "data"),
        status="sent",
        created_at=ctx.now,
        updated_at=ctx.now,
    )
    return StepResult(
        output={"messageId": row["id"]},
        details=[("Message created", "Success", None)],
        events=[(MESSAGES_CREATED, (row["id"],))],
        messages=[row],
    )


def message_row(ctx: StepContext, channel: str, **fields: Any) -> dict[str, Any]:
    """Return a message row of the job's notification and subscriber, with `fields` set over the defaults."""
    return {
        "id": new_id(),
        "environment_id": ctx.job.environment_id,
        "notification_id": ctx.notification.id,
        "job_id": ctx.job.id,
        "subscriber_pk": ctx.subscriber.id,
        "workflow_pk": ctx.workflow.id,
        "transaction_id": ctx.job.transaction_id,
        "channel": channel,
        "subject": None,
        "avatar": None,
        "cta": {},
        "data": None,
        "tags": list(ctx.workflow.tags or []),
        "read": False,
        "seen": False,
        "archived": False,
        "read_at": None,
        "seen_at": None,
        "archived_at": None,
        "snoozed_until": None,
        "severity": ctx.trigger.overrides.get("severity") or ctx.workflow.severity or "none",
        "context_key": context_key(ctx.notification.context_keys or []),
        **fields,
    }


def _cta(controls: dict[str, Any], variables: dict[str, Any]) -> dict[str, Any]:
    cta: dict[str, Any] = {}
    redirect = controls.get("redirect")
    if isinstance(redirect, dict) and redirect.get("url"):
        cta["type"] = "redirect"
        cta["data"] = {
            "url": render(redirect["url"], variables, "redirect.url"),
            "target": redirect.get("target", "_self"),
        }
    buttons = []
    for kind in ("primary", "secondary"):
        action = controls.get(f"{kind}Action")
        if not isinstance(action, dict) or not action.get("label"):
            continue
        button: dict[str, Any] = {
            "type": kind,
            "content": render(action["label"], variables, f"{kind}Action.label"),
        }
        action_redirect = action.get("redirect")
        if isinstance(action_redirect, dict) and action_redirect.get("url"):
            button["url"] = render(action_redirect["url"], variables, f"{kind}Action.redirect.url")
            button["target"] = action_redirect.get("target", "_self")
        buttons.append(button)
    if buttons:
        cta["action"] = {"status": "pending", "buttons": buttons}
    return cta


def _render_data(data: Any, variables: dict[str, Any], field: str) -> Any:
    if isinstance(data, dict):
        return {key: _render_data(value, variables, f"{field}.{key}") for key, value in data.items()}
    if isinstance(data, str):
        return render(data, variables, field)
    return data
