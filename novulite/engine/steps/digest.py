"""The digest step: collect a subscriber's events for a while, then run the rest of the chain once.

A job runs this step twice. Its first run opens the digest window for its scope
(workflow, subscriber, step, digestKey value) and waits until the window ends, or
joins the window that is already open and ends its chain as `merged`. The owner's
second run, when the window ends, closes the digest and outputs its events, so the
later steps see `steps.<stepId>.events` and `steps.<stepId>.eventCount`.

Controls (Novu v2):
- `type`: regular, a window of `amount` `unit` from the first event, or timed, which
  waits until the next match of `cron` in the subscriber's timezone.
- `lookBackWindow {amount, unit}`: an event is sent at once unless another one arrived
  within that time.
- `digestKey`: a payload path ("post.id" or "payload.post.id") or a Liquid template.
  Events with different values go to different digests.
"""

from __future__ import annotations

import calendar
import dataclasses
import datetime as dt
import hashlib
import json
from typing import Any

from novulite.clock import isoformat
from novulite.engine import digests
from novulite.engine.schedule import (
    ScheduleError,
    add_duration,
    check_cron,
    check_duration,
    next_cron,
    subscriber_zone,
)
from novulite.engine.steps.base import PermanentStepError, StepContext, StepResult
from novulite.engine.templates import TemplateError, compile_template, render

DIGEST_TYPES = ("regular", "timed")
# Longer key values are stored as their SHA-256, because the digest table's key column has room for 1000.
MAX_KEY_LENGTH = 1000


@dataclasses.dataclass(frozen=True)
class Window:
    """A digest step's valid controls."""

    kind: str
    amount: float | None
    unit: str | None
    cron: str | None
    look_back: tuple[float, str] | None
    key: str | None


def check_controls(controls: dict[str, Any]) -> list[tuple[str, str]]:
    """Return (control name, problem) for each invalid digest control value."""
    problems: list[tuple[str, str]] = []
    kind = controls.get("type") or "regular"
    if kind not in DIGEST_TYPES:
        # Novu's older "backoff" digest is a regular one with a look-back window.
        hint = "; for a backoff digest use type regular with lookBackWindow" if kind == "backoff" else ""
        problems.append(("type", f"must be one of {', '.join(DIGEST_TYPES)}, got {kind!r}{hint}"))
    elif kind == "regular":
        if controls.get("cron") is not None:
            problems.append(("cron", 'is read only by a timed digest; set type to "timed", or remove cron'))
        missing = [name for name in ("amount", "unit") if controls.get(name) is None]
        for name in missing:
            problems.append((name, "is required for a regular digest, whose window lasts amount units"))
        if not missing:
            problems.extend(_duration_problems("", controls["amount"], controls["unit"]))
    else:
        cron = controls.get("cron")
        problem = check_cron(cron)
        if cron is None:
            problems.append(
                ("cron", "is required for a timed digest: a cron expression such as '0 9 * * 1-5'")
            )
        elif problem:
            problems.append(("cron", problem))
    look_back = controls.get("lookBackWindow")
    if look_back is not None:
        if not isinstance(look_back, dict):
            problems.append(
                ("lookBackWindow", "must be an object {amount, unit}, such as {amount: 5, unit: minutes}")
            )
        else:
            problems.extend(
                _duration_problems("lookBackWindow.", look_back.get("amount"), look_back.get("unit"))
            )
    key = controls.get("digestKey")
    if key is not None and not isinstance(key, str):
        problems.append(("digestKey", "must be a payload path such as post.id, or a template"))
    elif isinstance(key, str) and "{" in key:
        try:
            compile_template(key)
        except TemplateError as exc:
            problems.append(("digestKey", f"is not a valid Liquid template: {exc}"))
    return problems


def _duration_problems(prefix: str, amount: Any, unit: Any) -> list[tuple[str, str]]:
    """Return the problem with (amount, unit), named by the control it is about."""
    problem = check_duration(amount, unit)
    if problem is None:
        return []
    for name in ("amount", "unit"):
        if problem.startswith(f"{name} "):
            return [(prefix + name, problem.removeprefix(f"{name} "))]
    return [(prefix + "amount", problem)]


def read_window(controls: dict[str, Any]) -> Window:
    problems = check_controls(controls)
    if problems:
        name, problem = problems[0]
        raise PermanentStepError(f"invalid digest control {name}: {problem}")
    look_back = controls.get("lookBackWindow")
    kind = controls.get("type") or "regular"
    return Window(
        kind=kind,
        amount=controls.get("amount") if kind == "regular" else None,
        unit=controls.get("unit") if kind == "regular" else None,
        cron=controls.get("cron") if kind == "timed" else None,
        look_back=(look_back["amount"], look_back["unit"]) if look_back else None,
        key=(controls.get("digestKey") or "").strip() or None,
    )


def run(ctx: StepContext) -> StepResult:
    # A job gets its digest link on its first run, so a linked job is an owner whose window has ended.
    if ctx.job.digest_id is not None:
        return _send(ctx)
    return _collect(ctx)


def _collect(ctx: StepContext) -> StepResult:
    window = read_window(ctx.controls)
    zone, zone_note = subscriber_zone(ctx.subscriber)
    scope = digests.Scope(
        ctx.job.environment_id,
        ctx.workflow.id,
        ctx.subscriber.id,
        ctx.job.step_id,
        key_value(window.key, ctx.variables),
    )
    notes = [(zone_note, "Warning", None)] if zone_note else []
    raw = ctx.connection
    digests.lock_scope(raw, scope)

    if window.look_back is not None:
        since = look_back_start(ctx.now, *window.look_back, zone)
        if not digests.is_active_since(raw, scope, since):
            digest_id = digests.record_sent_at_once(raw, scope, ctx.job, ctx.now)
            text = "No event arrived within the look-back window; this event is sent at once"
            return _sent(
                digests.collect(raw, digest_id), [*notes, (text, "Success", {"digestId": digest_id})]
            )

    due_at = _due_at(window, ctx.now, zone)
    member = digests.open_or_join(raw, scope, ctx.job, due_at, ctx.now)
    raw_detail = {"digestId": member.digest_id, "ownerJobId": member.owner_job_id}
    if not member.owned_by(ctx.job.id):
        text = f"Merged into the digest of job {member.owner_job_id}"
        return StepResult(
            status="merged",
            halt="merged",
            output={"digestId": member.digest_id, "mergedInto": member.owner_job_id},
            details=[*notes, (text, "Success", raw_detail)],
        )

    text = f"Digest opened; it collects events until {isoformat(due_at)}"
    return StepResult(
        wait_until=due_at,
        output={"digestId": member.digest_id, "dueAt": isoformat(due_at)},
        details=[*notes, (text, "Success", {**raw_detail, "dueAt": isoformat(due_at)})],
    )


def _send(ctx: StepContext) -> StepResult:
    # Locked, so an event that joins at this moment is either collected here or opens the next digest.
    digest = digests.find(ctx.connection, ctx.job.digest_id, lock=True)
    if digest is None or digest.status != "open" or digest.owner_job_id != ctx.job.id:
        state = "missing" if digest is None else f"{digest.status}, owned by job {digest.owner_job_id}"
        raise PermanentStepError(f"digest {ctx.job.digest_id} cannot be sent by this job: it is {state}")
    events = digests.close_and_collect(ctx.connection, digest.id, ctx.now)
    text = f"Digest sent with {len(events)} events"
    return _sent(events, [(text, "Success", {"digestId": digest.id, "eventCount": len(events)})])


def _sent(events: list[dict[str, Any]], details: list[Any]) -> StepResult:
    return StepResult(output={"events": events, "eventCount": len(events)}, details=details)


def _due_at(window: Window, now: dt.datetime, zone: dt.tzinfo) -> dt.datetime:
    if window.kind == "timed":
        assert window.cron is not None
        try:
            return next_cron(window.cron, now, zone)
        except ScheduleError as exc:
            raise PermanentStepError(f"the digest's cron cannot be used: {exc}") from exc
    assert window.amount is not None and window.unit is not None
    return _add(now, window.amount, window.unit, zone)


def _add(start: dt.datetime, amount: float, unit: str, zone: dt.tzinfo) -> dt.datetime:
    try:
        return add_duration(start, amount, unit, zone)
    except ScheduleError as exc:
        raise PermanentStepError(f"the digest's window cannot be used: {exc}") from exc


def look_back_start(now: dt.datetime, amount: float, unit: str, zone: dt.tzinfo) -> dt.datetime:
    """Return `now` minus the look-back window; months are calendar months on the subscriber's clock."""
    if unit != "months":
        return now - (_add(now, amount, unit, zone) - now)
    local = now.astimezone(zone)
    year, month_index = divmod(local.year * 12 + local.month - 1 - int(amount), 12)
    if year < 1:
        raise PermanentStepError(f"the digest's look-back window of {amount} months reaches before year 1")
    day = min(local.day, calendar.monthrange(year, month_index + 1)[1])
    wall = local.replace(tzinfo=None, year=year, month=month_index + 1, day=day)
    return wall.replace(tzinfo=zone).astimezone(dt.UTC)


def key_value(key: str | None, variables: dict[str, Any]) -> str:
    """Return the digestKey's value for an event as stored in the digest table, "" when there is none."""
    if key is None:
        return ""
    value: Any
    if "{" in key:
        value = render(key, variables, "digestKey").strip()
    else:
        value = lookup(variables.get("payload") or {}, key.removeprefix("payload."))
    if value is None or value == "":
        return ""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    if len(text) > MAX_KEY_LENGTH:
        return "sha256:" + hashlib.sha256(text.encode()).hexdigest()
    return text


def lookup(data: Any, path: str) -> Any:
    """Return the value at a dotted path such as "post.id" or "items.0.id", or None when it is missing."""
    for part in path.split("."):
        if isinstance(data, dict):
            data = data.get(part)
        elif isinstance(data, list) and part.isdigit() and int(part) < len(data):
            data = data[int(part)]
        else:
            return None
    return data
