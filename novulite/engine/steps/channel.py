"""The sms, chat and push steps: find the channel's integration, and let its provider send.

The integration is the one the step names in its `integrationIdentifier` control,
or else the channel's primary active integration (see find_integration). Without
one, or with a provider this server cannot deliver the channel through, the step is
skipped with the reason, as a step blocked by preferences is, and the chain goes on.

Providers build the delivery in `prepare`, inside the job store's transaction, and
send it in an ExternalCall after the claim has committed. The helpers below give
every provider the same message row, output and details.
"""

from __future__ import annotations

from typing import Any

from novulite.engine.steps.base import ExternalCall, StepContext, StepResult
from novulite.engine.steps.in_app import message_row
from novulite.integrations import find_integration


def run(ctx: StepContext) -> StepResult | ExternalCall:
    # Imported here, because the provider modules that the registry imports use this module's helpers.
    from novulite.providers import registry

    channel = ctx.job.type
    identifier = str(ctx.controls.get("integrationIdentifier") or "").strip() or None
    integration = find_integration(ctx.connection, ctx.job.environment_id, channel, identifier)
    if integration is None:
        if identifier:
            return skipped(channel, f"no active {channel} integration has the identifier {identifier!r}")
        return skipped(channel, f"no {channel} provider is configured")
    provider = registry.provider_for(integration.provider_id, channel)
    if provider is None:
        served = sorted(registry.channels_of(integration.provider_id))
        if served:
            reason = (
                f"the {integration.provider_id} provider of integration {integration.identifier!r} "
                f"delivers {', '.join(served)}, not {channel}"
            )
        else:
            reason = f"the {channel} provider {integration.provider_id!r} is not supported by this server"
        return skipped(channel, reason)
    return provider.prepare(ctx, integration)


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
