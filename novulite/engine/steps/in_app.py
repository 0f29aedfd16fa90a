"""The in_app step: render the message and store it in the subscriber's inbox.

The message is inserted in the same transaction that completes the job, and the
message table allows one row per job, so an in-app message is delivered exactly once.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from novulite.db.dialect import insert
from novulite.db.models import Message
from novulite.engine.steps.base import StepContext, StepResult
from novulite.engine.templates import render
from novulite.ids import new_id
from novulite.messages import context_key
from novulite.queues import MESSAGES_CREATED


def run(ctx: StepContext) -> StepResult:
    controls = ctx.controls
    variables = ctx.template_variables()
    severity = ctx.trigger.overrides.get("severity") or ctx.workflow.severity or "none"
    row = {
        "id": new_id(),
        "environment_id": ctx.job.environment_id,
        "notification_id": ctx.notification.id,
        "job_id": ctx.job.id,
        "subscriber_pk": ctx.subscriber.id,
        "workflow_pk": ctx.workflow.id,
        "transaction_id": ctx.job.transaction_id,
        "channel": "in_app",
        "subject": render(controls.get("subject"), variables) or None,
        "content": render(controls.get("body"), variables),
        "avatar": render(controls.get("avatar"), variables) or None,
        "cta": _cta(controls, variables),
        "data": _render_data(controls.get("data"), variables),
        "tags": list(ctx.workflow.tags or []),
        "severity": severity,
        "context_key": context_key(ctx.notification.context_keys or []),
        "status": "sent",
        "created_at": ctx.now,
        "updated_at": ctx.now,
    }
    statement = (
        insert(ctx.session.get_bind().dialect.name, Message)
        .values(row)
        .on_conflict_do_nothing(index_elements=["job_id"])
        .returning(Message.id)
    )
    message_id = ctx.session.scalar(statement)
    if message_id is None:
        # An earlier attempt already stored this job's message; keep that one.
        message_id = ctx.session.scalar(select(Message.id).where(Message.job_id == ctx.job.id))
    return StepResult(
        output={"messageId": message_id},
        details=[("Message created", "Success")],
        events=[(MESSAGES_CREATED, (message_id,))],
    )


def _cta(controls: dict[str, Any], variables: dict[str, Any]) -> dict[str, Any]:
    cta: dict[str, Any] = {}
    redirect = controls.get("redirect")
    if isinstance(redirect, dict) and redirect.get("url"):
        cta["type"] = "redirect"
        cta["data"] = {
            "url": render(redirect["url"], variables),
            "target": redirect.get("target", "_self"),
        }
    buttons = []
    for kind in ("primary", "secondary"):
        action = controls.get(f"{kind}Action")
        if not isinstance(action, dict) or not action.get("label"):
            continue
        button: dict[str, Any] = {"type": kind, "content": render(action["label"], variables)}
        action_redirect = action.get("redirect")
        if isinstance(action_redirect, dict) and action_redirect.get("url"):
            button["url"] = render(action_redirect["url"], variables)
            button["target"] = action_redirect.get("target", "_self")
        buttons.append(button)
    if buttons:
        cta["action"] = {"status": "pending", "buttons": buttons}
    return cta


def _render_data(data: Any, variables: dict[str, Any]) -> Any:
    if isinstance(data, dict):
        return {key: _render_data(value, variables) for key, value in data.items()}
    if isinstance(data, str):
        return render(data, variables)
    return data
