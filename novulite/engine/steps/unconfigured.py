"""Channel steps this server cannot deliver yet: sms, push and chat.

Workflows may contain them, and their conditions and preferences are applied as
for any channel step. A job that gets past those ends as skipped, with the reason
in its execution details, and the chain goes on to the next step.
"""

from __future__ import annotations

from novulite.engine.steps.base import StepContext, StepResult


def run(ctx: StepContext) -> StepResult:
    channel = ctx.job.type
    # TODO: delivery for the sms, push and chat channels is not built: they have no
    # providers yet, so these steps never send anything.
    reason = f"no {channel} provider is configured"
    return StepResult(
        status="skipped",
        output={"skipped": reason},
        details=[(reason, "Warning", {"reason": "provider", "channel": channel})],
    )
