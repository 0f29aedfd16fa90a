"""Records every provider writes for a channel step: the skip, the message row and the result."""

from __future__ import annotations

from typing import Any

from novulite.engine.steps.base import StepContext, StepResult
from novulite.engine.steps.in_app import message_row


def skipped(channel: str, reason: str, kind: str = "provider") -> StepResult:
    """Return a skipped step whose output and details give `reason`; `kind` is provider or recipient."""
    return StepResult(
        status="skipped",
        output={"skipped": reason},
        details=[(reason, "Warning", {"reason": kind, "channel": channel})],
    )


def channel_row(
    ctx: StepContext, provider_id: str, content: str, subject: str | None = None
) -> dict[str, Any]:
    """Return the job's message row for a delivery through `provider_id`, before its status is known."""
    return message_row(ctx, ctx.job.type, subject=subject, content=content, provider_id=provider_id)


def delivered(
    row: dict[str, Any],
    now: Any,
    detail: str,
    output: dict[str, Any],
    raw: dict[str, Any] | None = None,
) -> StepResult:
    """Return a completed delivery: the message row as sent, `output` for later steps, and one detail."""
    message = dict(row, status="sent", created_at=now, updated_at=now)
    return StepResult(output=output, details=[(detail, "Success", raw)], messages=[message])
