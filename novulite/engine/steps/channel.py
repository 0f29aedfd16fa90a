"""The sms, chat and push steps: find the channel's integration, and let its provider send.

The integration is the one the step names in its `integrationIdentifier` control,
or else the channel's primary active integration (see find_integration). Without
one, or with a provider this server cannot deliver the channel through, the step is
skipped with the reason, as a step blocked by preferences is, and the chain goes on.

Providers build the delivery in `prepare`, inside the job store's transaction, and
send it in an ExternalCall after the claim has committed. The helpers in
engine/steps/delivery.py give every provider the same message row, output and details.
"""

from __future__ import annotations

from novulite.engine.steps.base import ExternalCall, StepContext, StepResult
from novulite.engine.steps.delivery import skipped
from novulite.integrations import find_integration
from novulite.providers import registry


def run(ctx: StepContext) -> StepResult | ExternalCall:
    channel = ctx.job.type
    identifier = str(ctx.controls.get("integrationIdentifier") or "").strip() or None
    supported = registry.provider_ids_for(channel)
    integration = find_integration(ctx.connection, ctx.job.environment_id, channel, identifier, supported)
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
