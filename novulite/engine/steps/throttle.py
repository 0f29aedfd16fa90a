"""The throttle step: let `threshold` runs through per window and skip the chains of the others.

Each run reserves a slot with the limiter under a key made of the environment,
subscriber, workflow, step and throttleKey value. The member is the job's id, so a job
that runs again after a retry or a crash keeps the slot it was granted. The window
starts at the first granted run and is not extended by later ones.

Control values follow Novu. `type` is fixed (`amount` and `unit`) or dynamic
(`dynamicKey`, a payload path to an ISO 8601 end time or to `{amount, unit}`).
`threshold` is the number of runs allowed per window, 1 by default. `throttleKey` is a
payload path or a Liquid template; without one, each subscriber has one window.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from novulite.clock import isoformat
from novulite.engine.jsonlogic import lookup
from novulite.engine.schedule import (
    ScheduleError,
    add_duration,
    check_duration,
    parse_instant,
    subscriber_zone,
)
from novulite.engine.steps.base import (
    ExternalCall,
    PermanentStepError,
    StepContext,
    StepResult,
    TransientStepError,
)
from novulite.engine.templates import TemplateError, compile_template, render
from novulite.limiter import Reservation
from novulite.limiter.connect import OUTAGE_ERRORS

TYPES = ("fixed", "dynamic")
UNITS = ("seconds", "minutes", "hours", "days")
EXCEEDED = "Throttle limit exceeded"
MAX_THRESHOLD = 1_000_000


def check_controls(controls: dict[str, Any]) -> list[tuple[str, str]]:
    """Return (control name, problem) for each invalid control value of a throttle step."""
    problems: list[tuple[str, str]] = []
    kind = controls.get("type") or "fixed"
    if kind not in TYPES:
        problems.append(("type", f"must be fixed or dynamic, got {kind!r}"))
    elif kind == "fixed":
        problems.extend(_duration_problems(controls.get("amount"), controls.get("unit"), "a fixed throttle"))
    elif not isinstance(controls.get("dynamicKey"), str) or not controls["dynamicKey"].strip():
        problems.append(
            ("dynamicKey", "is required for a dynamic throttle: the payload path of the window's end")
        )
    threshold = controls.get("threshold")
    if threshold is not None and (
        isinstance(threshold, bool) or not isinstance(threshold, int) or not 1 <= threshold <= MAX_THRESHOLD
    ):
        problems.append(
            ("threshold", f"must be a whole number of runs from 1 to {MAX_THRESHOLD:,}, got {threshold!r}")
        )
    key = controls.get("throttleKey")
    if key is not None:
        if not isinstance(key, str):
            problems.append(("throttleKey", f"must be a payload path or a Liquid template, got {key!r}"))
        elif _is_template(key):
            try:
                compile_template(key)
            except TemplateError as exc:
                problems.append(("throttleKey", f"is not a valid Liquid template: {exc}"))
    return problems


def _duration_problems(amount: Any, unit: Any, what: str) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    if amount is None:
        problems.append(("amount", f"is required for {what}: the window length in `unit`"))
    else:
        # Without a valid unit, the amount is checked as seconds, so its own problems still show.
        problem = check_duration(amount, unit if unit in UNITS else "seconds")
        if problem:
            problems.append(("amount", problem.removeprefix("amount ")))
    if unit not in UNITS:
        problems.append(("unit", f"must be one of {', '.join(UNITS)}, got {unit!r}"))
    return problems


# The maximum time a reservation on a remote limiter may take; its client times out sooner.
REMOTE_SECONDS = 10.0


def run(ctx: StepContext) -> StepResult | ExternalCall:
    controls = ctx.controls
    problems = check_controls(controls)
    if problems:
        raise PermanentStepError("; ".join(f"{name} {problem}" for name, problem in problems))
    limiter = ctx.limiter
    if limiter is None:
        raise PermanentStepError("this process has no limiter, so it cannot run throttle steps")
    threshold = int(controls.get("threshold") or 1)
    window_end = _window_end(ctx, controls)
    window_seconds = (window_end - ctx.now).total_seconds()
    key = throttle_key(ctx, controls)
    now = ctx.now

    def decide(_: Any = None) -> StepResult:
        try:
            reservation = limiter.reserve(key, threshold, window_seconds, ctx.job.id)
        except OUTAGE_ERRORS as exc:
            raise TransientStepError(f"the limiter is unavailable ({type(exc).__name__}: {exc})") from exc
        return _result(reservation, threshold, now)

    if limiter.remote:
        # A Redis call must not hold the job store's write lock, which every other job batch needs.
        return ExternalCall(decide, REMOTE_SECONDS)
    return decide()


def _result(reservation: Reservation, threshold: int, now: dt.datetime) -> StepResult:

    output: dict[str, Any] = {
        "throttled": not reservation.granted,
        "executionCount": reservation.count,
        "threshold": threshold,
    }
    if reservation.granted:
        detail = f"Throttle passed: run {reservation.count} of {threshold} in this window"
        return StepResult(output=output, details=[(detail, "Success", output)])
    output["throttledUntil"] = isoformat(now + dt.timedelta(seconds=reservation.reset_seconds))
    return StepResult(
        status="skipped", halt="skipped", output=output, details=[(EXCEEDED, "Success", output)]
    )


def _window_end(ctx: StepContext, controls: dict[str, Any]) -> dt.datetime:
    """Return when a window opened now would end; raise PermanentStepError for a missing or past end."""
    zone, _ = subscriber_zone(ctx.subscriber)
    if (controls.get("type") or "fixed") == "fixed":
        try:
            return add_duration(ctx.now, controls["amount"], controls["unit"], zone)
        except ScheduleError as exc:
            raise PermanentStepError(f"the throttle window is invalid: {exc}") from exc
    path = controls["dynamicKey"].strip()
    value = _payload_value(ctx, path)
    try:
        if isinstance(value, str):
            end = parse_instant(value, zone)
        elif isinstance(value, dict):
            problems = _duration_problems(value.get("amount"), value.get("unit"), "a throttle window")
            if problems:
                raise ScheduleError("; ".join(f"{name} {problem}" for name, problem in problems))
            end = add_duration(ctx.now, value["amount"], value["unit"], zone)
        else:
            raise ScheduleError(
                f"expected an ISO 8601 timestamp or {{amount, unit}}, got {json.dumps(value)}"
            )
    except ScheduleError as exc:
        raise PermanentStepError(f"dynamicKey {path!r}: {exc}") from exc
    if end <= ctx.now:
        raise PermanentStepError(
            f"Throttle window in the past: dynamicKey {path!r} ends the window at {isoformat(end)}, "
            f"before now ({isoformat(ctx.now)}); send a later time"
        )
    return end


def throttle_key(ctx: StepContext, controls: dict[str, Any]) -> str:
    """Return the limiter key of this run's window; runs with equal keys share a window."""
    job = ctx.job
    key = f"throttle:{job.environment_id}:{job.subscriber_pk}:{ctx.workflow.id}:{job.step_id}"
    source = controls.get("throttleKey")
    if not isinstance(source, str) or not source.strip():
        return key
    value: Any
    if _is_template(source):
        value = render(source, ctx.variables, "throttleKey").strip()
    else:
        value = _payload_value(ctx, source.strip())
    if value is None or value == "":
        return key
    return f"{key}:{json.dumps([source, value], sort_keys=True, separators=(',', ':'))}"


def _payload_value(ctx: StepContext, path: str) -> Any:
    """Return the trigger payload's value at a dotted path, written with or without `payload.`."""
    return lookup(ctx.trigger.payload or {}, path.removeprefix("payload."))


def _is_template(text: str) -> bool:
    return "{{" in text or "{%" in text
