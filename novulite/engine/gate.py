"""Decide, before a step runs, whether its conditions or the subscriber's preferences skip it."""

from __future__ import annotations

from novulite.engine import conditions
from novulite.engine.preferences import CHANNELS, SOURCE_SUBSCRIBER
from novulite.engine.steps.base import StepContext, StepResult


def skipped_result(reason: str, raw: dict[str, object]) -> StepResult:
    return StepResult(status="skipped", output={"skipped": reason}, details=[(reason, "Success", raw)])


def check(ctx: StepContext) -> StepResult | None:
    """Return a skipped result when the step must not run, or None to run it.

    Raises conditions.ConditionError when a condition cannot be evaluated.
    """
    skipped = conditions.skip_reason(ctx.controls, ctx.variables)
    if skipped is not None:
        return skipped_result(*skipped)
    channel = ctx.job.type
    if channel not in CHANNELS or ctx.preferences is None:
        return None
    resolution = ctx.preferences
    if not resolution.enabled:
        scope = "all workflows are" if resolution.disabled_by == "global" else "this workflow is"
        return skipped_result(
            f"skipped by preference: {scope} disabled for this subscriber",
            {"reason": "preference", "channel": channel, "scope": resolution.disabled_by},
        )
    if not resolution.channels.get(channel, True):
        source = resolution.sources.get(channel)
        by = "for this subscriber" if source == SOURCE_SUBSCRIBER else "by the workflow's defaults"
        return skipped_result(
            f"skipped by preference: {channel} is disabled {by}",
            {"reason": "preference", "channel": channel, "source": source},
        )
    return None
