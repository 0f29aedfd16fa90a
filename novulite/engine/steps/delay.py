"""The delay step: hold the rest of the chain until a due instant.

Controls, as in Novu's v2 delay step:
- `type: regular` (the default) waits `amount` `unit`s. A trigger's `overrides.delay`
  {amount, unit} replaces the step's own, as in Novu v1.
- `type: timed` waits for the next match of `cron` on the subscriber's wall clock.
- `type: dynamic` reads `dynamicKey`, a variable path such as "payload.sendAt", whose
  value is an ISO 8601 timestamp or {amount, unit}.

The first run computes the due instant and returns it as `wait_until`, so the runner
stores the job as `delayed` with run_at at that instant and claims it again then. The
second run, recognised by the output the first one left, completes the step. A due
instant that has already passed completes the step at once, with a note.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from novulite.clock import isoformat
from novulite.engine import schedule
from novulite.engine.jsonlogic import lookup
from novulite.engine.steps.base import PermanentStepError, StepContext, StepResult

DELAY_TYPES = ("regular", "timed", "dynamic")
# Namespaces a dynamicKey may start with; a key without one is a payload path.
NAMESPACES = ("payload", "subscriber", "steps", "context", "actor", "workflow")
_PATH = re.compile(r"^[A-Za-z0-9_$-]+(\.[A-Za-z0-9_$-]+)*$")
_TEMPLATE = re.compile(r"^\{\{\s*(.*?)\s*\}\}$")


def check_controls(controls: dict[str, Any]) -> list[tuple[str, str]]:
    """Return (control name, problem) for each invalid or missing delay control."""
    kind = controls.get("type") or "regular"
    if kind not in DELAY_TYPES:
        return [("type", f"must be one of {', '.join(DELAY_TYPES)}, got {kind!r}")]
    if kind == "regular":
        problems = duration_problems(controls, "a regular delay")
        if controls.get("cron") is not None:
            problems.append(("cron", 'is read only by a timed delay; set type to "timed", or remove cron'))
        return problems
    if kind == "timed":
        if controls.get("cron") is None:
            return [("cron", "is required for a timed delay: a cron expression such as '0 9 * * 1-5'")]
        problem = schedule.check_cron(controls["cron"])
        return [("cron", problem)] if problem else []
    key = controls.get("dynamicKey")
    if key is None:
        return [("dynamicKey", "is required for a dynamic delay: a variable path such as 'payload.sendAt'")]
    if dynamic_path(key) is None:
        return [("dynamicKey", f"must be a variable path such as 'payload.sendAt', got {key!r}")]
    return []


def duration_problems(value: dict[str, Any], what: str) -> list[tuple[str, str]]:
    """Return (field, problem) for a missing or invalid `amount` and `unit` in `value`."""
    problems = []
    if value.get("amount") is None:
        problems.append(("amount", f"is required for {what}: a number greater than 0"))
    if value.get("unit") is None:
        problems.append(("unit", f"is required for {what}: one of {', '.join(schedule.UNITS)}"))
    if problems:
        return problems
    problem = schedule.check_duration(value["amount"], value["unit"])
    if problem is None:
        return []
    field = "unit" if problem.startswith("unit") else "amount"
    return [(field, problem.removeprefix(f"{field} "))]


def dynamic_path(key: Any) -> str | None:
    """Return the full variable path a dynamicKey names ("sendAt" is "payload.sendAt"), or None if invalid."""
    if not isinstance(key, str):
        return None
    text = key.strip()
    template = _TEMPLATE.match(text)
    if template:
        text = template.group(1)
    if not _PATH.match(text):
        return None
    return text if text.split(".")[0] in NAMESPACES else f"payload.{text}"


def run(ctx: StepContext) -> StepResult:
    if ctx.job.output:
        return _finish(ctx)
    zone, zone_note = schedule.subscriber_zone(ctx.subscriber)
    try:
        due, source = _due(ctx, zone)
    except schedule.ScheduleError as exc:
        raise PermanentStepError(f"invalid delay: {exc}") from exc
    notes = [(zone_note, "Warning", None)] if zone_note else []
    output = {
        "type": ctx.controls.get("type") or "regular",
        "dueAt": isoformat(due),
        "duration": max(_milliseconds(due - ctx.now), 0),
    }
    raw = {**output, "source": source, "timezone": str(zone)}
    if due <= ctx.now:
        text = f"Delay time {output['dueAt']} has already passed; continuing at once"
        return StepResult(output=output, details=[*notes, (text, "Warning", raw)])
    return StepResult(
        output=output,
        wait_until=due,
        details=[*notes, (f"Delay until {output['dueAt']}", "Pending", raw)],
    )


def _finish(ctx: StepContext) -> StepResult:
    output = dict(ctx.job.output)
    raw: dict[str, Any] = {"dueAt": output.get("dueAt")}
    due_at = output.get("dueAt")
    if isinstance(due_at, str):
        # How late the second run started, for operators comparing due and actual times.
        raw["lateMs"] = _milliseconds(ctx.now - schedule.parse_instant(due_at))
    return StepResult(output=output, details=[("Delay finished", "Success", raw)])


def _due(ctx: StepContext, zone: dt.tzinfo) -> tuple[dt.datetime, str]:
    """Return the due instant and a description of where it came from.

    Raises ScheduleError for a value that is not a usable time. Raises PermanentStepError
    for controls or trigger values that are missing or of the wrong kind.
    """
    controls = ctx.controls
    kind = controls.get("type") or "regular"
    problems = check_controls(controls)
    if problems:
        field, problem = problems[0]
        raise PermanentStepError(f"invalid delay control {field}: {problem}")
    if kind == "timed":
        return schedule.next_cron(controls["cron"], ctx.now, zone), f"cron {controls['cron']!r}"
    if kind == "dynamic":
        return _dynamic_due(ctx, zone)
    override = (ctx.trigger.overrides or {}).get("delay")
    if override is not None:
        if not isinstance(override, dict) or duration_problems(override, "overrides.delay"):
            raise PermanentStepError(
                f"invalid delay: overrides.delay must be {{amount, unit}}, got {override!r}"
            )
        amount, unit, source = override["amount"], override["unit"], "overrides.delay"
    else:
        amount, unit, source = controls["amount"], controls["unit"], "controls"
    return schedule.add_duration(ctx.now, amount, unit, zone), f"{source}: {amount} {unit}"


def _dynamic_due(ctx: StepContext, zone: dt.tzinfo) -> tuple[dt.datetime, str]:
    # check_controls has accepted the key, so it names a path.
    path = dynamic_path(ctx.controls["dynamicKey"]) or ""
    value = lookup(ctx.variables, path)
    if value is None:
        raise PermanentStepError(
            f"invalid delay: {path} is missing in this trigger; "
            "send an ISO 8601 timestamp or {amount, unit} there"
        )
    if isinstance(value, dict):
        problems = duration_problems(value, path)
        if problems:
            field, problem = problems[0]
            raise PermanentStepError(f"invalid delay: {path}.{field} {problem} (value {value!r})")
        return schedule.add_duration(ctx.now, value["amount"], value["unit"], zone), path
    if not isinstance(value, str):
        raise PermanentStepError(
            f"invalid delay: {path} contains {value!r}; expected an ISO 8601 timestamp "
            "such as 2026-12-24T09:00:00Z or {amount, unit}"
        )
    try:
        return schedule.parse_instant(value, zone), path
    except schedule.ScheduleError as exc:
        raise PermanentStepError(f"invalid delay: {path}: {exc}") from exc


def _milliseconds(delta: dt.timedelta) -> int:
    return round(delta.total_seconds() * 1000)
