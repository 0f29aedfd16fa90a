"""Time arithmetic for the steps that wait: durations, cron expressions and subscribers' timezones.

Every instant leaves this module as an aware UTC datetime. Wall-clock reasoning
(a cron's "9:00", a month's length, a timestamp written without an offset) happens in
the subscriber's timezone, never in the server's own.
"""

from __future__ import annotations

import calendar
import datetime as dt
import math
import zoneinfo
from typing import Any

from cronsim import CronSim, CronSimError

UNITS = ("seconds", "minutes", "hours", "days", "weeks", "months")
_UNIT_SECONDS = {"seconds": 1, "minutes": 60, "hours": 3600, "days": 86400, "weeks": 604800}
# The maximum duration a step may wait or span: ten years, which is 120 months.
MAX_DAYS = 3653
MAX_MONTHS = 120
UTC = zoneinfo.ZoneInfo("UTC")


class ScheduleError(ValueError):
    """A duration, timestamp or cron expression that cannot be used. The message gives the reason."""


def zone_named(name: Any) -> zoneinfo.ZoneInfo | None:
    """Return the IANA timezone called `name`, or None when there is no such zone."""
    if not isinstance(name, str) or not name.strip():
        return None
    try:
        return zoneinfo.ZoneInfo(name.strip())
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return None


def subscriber_zone(subscriber: Any) -> tuple[zoneinfo.ZoneInfo, str | None]:
    """Return the subscriber's timezone, and a note when UTC replaces an unknown one."""
    name = getattr(subscriber, "timezone", None)
    zone = zone_named(name)
    if zone is not None:
        return zone, None
    if name:
        return UTC, f"the subscriber's timezone {name!r} is not an IANA timezone; UTC was used"
    return UTC, None


def check_duration(amount: Any, unit: Any) -> str | None:
    """Return why (amount, unit) is not a usable duration, or None when it is."""
    if isinstance(amount, bool) or not isinstance(amount, int | float) or not math.isfinite(amount):
        return f"amount must be a number, got {amount!r}"
    if amount <= 0:
        return f"amount must be greater than 0, got {amount!r}"
    if unit not in UNITS:
        return f"unit must be one of {', '.join(UNITS)}, got {unit!r}"
    if unit == "months":
        if amount != int(amount):
            return f"a number of months must be whole, got {amount!r}"
        if amount > MAX_MONTHS:
            return f"amount must be at most {MAX_MONTHS} months (ten years), got {amount!r}"
    elif amount * _UNIT_SECONDS[unit] > MAX_DAYS * 86400:
        limit = MAX_DAYS * 86400 // _UNIT_SECONDS[unit]
        return f"amount must be at most {limit} {unit} (ten years), got {amount!r}"
    return None


def add_duration(start: dt.datetime, amount: float, unit: str, zone: dt.tzinfo = UTC) -> dt.datetime:
    """Return `start` plus the duration, in UTC.

    Seconds to weeks are fixed lengths. Months are calendar months on the subscriber's
    wall clock: 31 January plus one month is the last day of February, at the same time of day.
    """
    problem = check_duration(amount, unit)
    if problem:
        raise ScheduleError(problem)
    if unit != "months":
        try:
            return (start + dt.timedelta(seconds=amount * _UNIT_SECONDS[unit])).astimezone(dt.UTC)
        except OverflowError as exc:
            raise ScheduleError(f"{amount} {unit} from now is past the year 9999") from exc
    local = start.astimezone(zone)
    months = local.month - 1 + int(amount)
    year = local.year + months // 12
    if year > 9999:
        raise ScheduleError(f"{amount} months from now is past the year 9999")
    month = months % 12 + 1
    day = min(local.day, calendar.monthrange(year, month)[1])
    wall = local.replace(tzinfo=None, year=year, month=month, day=day)
    return wall.replace(tzinfo=zone).astimezone(dt.UTC)


def check_cron(expression: Any) -> str | None:
    """Return why `expression` is not a five-field cron expression, or None when it is."""
    if not isinstance(expression, str) or not expression.strip():
        return f"must be a cron expression such as '0 9 * * 1-5', got {expression!r}"
    try:
        CronSim(expression.strip(), dt.datetime(2000, 1, 1, tzinfo=dt.UTC))
    except CronSimError as exc:
        return f"is not a valid cron expression ({exc}); use five fields such as '0 9 * * 1-5'"
    return None


def next_cron(expression: str, after: dt.datetime, zone: dt.tzinfo = UTC) -> dt.datetime:
    """Return the first instant after `after` that matches the cron expression on `zone`'s wall clock."""
    problem = check_cron(expression)
    if problem:
        raise ScheduleError(f"cron {problem}")
    try:
        # CronSim yields matches from the given instant on; start one second later so `after` is excluded.
        found = next(CronSim(expression.strip(), (after + dt.timedelta(seconds=1)).astimezone(zone)))
    except StopIteration as exc:
        raise ScheduleError(f"cron expression {expression!r} never matches") from exc
    return found.astimezone(dt.UTC)


def parse_instant(value: Any, zone: dt.tzinfo = UTC) -> dt.datetime:
    """Read an ISO 8601 timestamp; one written without an offset is read on `zone`'s wall clock."""
    if not isinstance(value, str):
        raise ScheduleError(f"expected an ISO 8601 timestamp, got {value!r}")
    text = value.strip()
    try:
        parsed = dt.datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)
    except ValueError as exc:
        raise ScheduleError(f"{value!r} is not an ISO 8601 timestamp such as 2026-12-24T09:00:00Z") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=zone)
    return parsed.astimezone(dt.UTC)
