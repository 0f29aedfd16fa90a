"""Time arithmetic for waiting steps, on fixed instants: durations, cron expressions and timezones."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from types import SimpleNamespace

import pytest

from novulite.engine import schedule
from novulite.engine.schedule import ScheduleError

NEW_YORK = zoneinfo.ZoneInfo("America/New_York")
KOLKATA = zoneinfo.ZoneInfo("Asia/Kolkata")


def utc(*parts: int) -> dt.datetime:
    return dt.datetime(*parts, tzinfo=dt.UTC)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("amount", "unit", "expected"),
    [
        (90, "seconds", utc(2026, 3, 7, 12, 1, 30)),
        (1.5, "minutes", utc(2026, 3, 7, 12, 1, 30)),
        (2, "hours", utc(2026, 3, 7, 14, 0)),
        (1, "days", utc(2026, 3, 8, 12, 0)),
        (2, "weeks", utc(2026, 3, 21, 12, 0)),
    ],
)
def test_fixed_units_ignore_the_zone(amount: float, unit: str, expected: dt.datetime) -> None:
    # A day is 86,400 s even across New York's switch to summer time on 8 March 2026.
    assert schedule.add_duration(utc(2026, 3, 7, 12, 0), amount, unit, NEW_YORK) == expected


def test_month_keeps_the_wall_clock_across_dst() -> None:
    # 10:00 EST on 15 February is 10:00 EDT on 15 March: one hour less in UTC.
    assert schedule.add_duration(utc(2026, 2, 15, 15, 0), 1, "months", NEW_YORK) == utc(2026, 3, 15, 14, 0)


def test_month_clamps_to_the_last_day() -> None:
    assert schedule.add_duration(utc(2026, 1, 31, 15, 0), 1, "months", NEW_YORK) == utc(2026, 2, 28, 15, 0)
    assert schedule.add_duration(utc(2027, 11, 30, 15, 0), 3, "months", NEW_YORK) == utc(2028, 2, 29, 15, 0)


def test_month_counts_in_the_subscriber_zone() -> None:
    # 31 January 20:00 UTC is already 1 February in Kolkata, so one month later is 1 March there.
    assert schedule.add_duration(utc(2026, 1, 31, 20, 0), 1, "months", KOLKATA) == utc(2026, 2, 28, 20, 0)
    assert schedule.add_duration(utc(2026, 1, 31, 20, 0), 1, "months") == utc(2026, 2, 28, 20, 0)


@pytest.mark.parametrize(
    ("amount", "unit", "problem"),
    [
        (0, "seconds", "greater than 0"),
        (-1, "days", "greater than 0"),
        (True, "days", "must be a number"),
        ("5", "days", "must be a number"),
        (float("nan"), "days", "must be a number"),
        (5, "fortnights", "unit must be one of"),
        (1.5, "months", "must be whole"),
    ],
)
def test_invalid_durations_are_rejected(amount: object, unit: object, problem: str) -> None:
    message = schedule.check_duration(amount, unit)
    assert message is not None
    assert problem in message
    with pytest.raises(ScheduleError, match=problem):
        schedule.add_duration(utc(2026, 1, 1), amount, unit)  # type: ignore[arg-type]


def test_duration_over_ten_years_is_rejected() -> None:
    with pytest.raises(ScheduleError, match="at most 521 weeks"):
        schedule.add_duration(utc(2026, 1, 1), 1e12, "weeks")
    with pytest.raises(ScheduleError, match="at most 120 months"):
        schedule.add_duration(utc(2026, 1, 1), 100_000, "months")


def test_duration_of_ten_years_is_accepted() -> None:
    assert schedule.check_duration(3653, "days") is None
    assert schedule.check_duration(120, "months") is None
    assert schedule.add_duration(utc(2026, 1, 31), 120, "months") == utc(2036, 1, 31)


def test_cron_in_kolkata() -> None:
    # Friday 4 December 2026, 17:30 in Kolkata: the next weekday 09:00 is Monday 7 December.
    assert schedule.next_cron("0 9 * * 1-5", utc(2026, 12, 4, 12, 0), KOLKATA) == utc(2026, 12, 7, 3, 30)


def test_cron_in_new_york_before_and_after_dst() -> None:
    # 09:00 EST is 14:00 UTC; the next day New York is on EDT, and 09:00 is 13:00 UTC.
    assert schedule.next_cron("0 9 * * *", utc(2026, 3, 7, 12, 0), NEW_YORK) == utc(2026, 3, 7, 14, 0)
    assert schedule.next_cron("0 9 * * *", utc(2026, 3, 8, 0, 0), NEW_YORK) == utc(2026, 3, 8, 13, 0)


def test_cron_in_skipped_hour_fires_after() -> None:
    # 02:30 does not exist on 8 March 2026 in New York; cron runs such a job at 03:00 EDT.
    assert schedule.next_cron("30 2 * * *", utc(2026, 3, 8, 5, 0), NEW_YORK) == utc(2026, 3, 8, 7, 0)


def test_cron_in_the_repeated_hour_fires_once() -> None:
    # 01:30 happens twice on 1 November 2026 in New York; the job runs at the first and not again.
    assert schedule.next_cron("30 1 * * *", utc(2026, 11, 1, 4, 0), NEW_YORK) == utc(2026, 11, 1, 5, 30)
    assert schedule.next_cron("30 1 * * *", utc(2026, 11, 1, 5, 30), NEW_YORK) == utc(2026, 11, 2, 6, 30)


def test_cron_excludes_the_start_instant() -> None:
    assert schedule.next_cron("0 * * * *", utc(2026, 1, 1, 10, 0), dt.UTC) == utc(2026, 1, 1, 11, 0)


@pytest.mark.parametrize(
    "expression", ["", "   ", "every day", "61 * * * *", "* * * *", "0 0 30 2 *", 5, None]
)
def test_invalid_cron_is_rejected(expression: object) -> None:
    assert schedule.check_cron(expression) is not None
    with pytest.raises(ScheduleError, match="cron"):
        schedule.next_cron(expression, utc(2026, 1, 1))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "zone", "expected"),
    [
        ("2026-03-08T09:00:00Z", NEW_YORK, utc(2026, 3, 8, 9, 0)),
        ("2026-03-08T09:00:00.250z", NEW_YORK, utc(2026, 3, 8, 9, 0, 0, 250_000)),
        ("2026-03-08T09:00:00+05:30", NEW_YORK, utc(2026, 3, 8, 3, 30)),
        ("2026-03-08T09:00:00", NEW_YORK, utc(2026, 3, 8, 13, 0)),
        ("2026-03-07T09:00:00", NEW_YORK, utc(2026, 3, 7, 14, 0)),
        ("2026-03-08T09:00:00", KOLKATA, utc(2026, 3, 8, 3, 30)),
        (" 2026-03-08 ", KOLKATA, utc(2026, 3, 7, 18, 30)),
    ],
)
def test_instants_read_in_the_zone_without_offset(text: str, zone: dt.tzinfo, expected: dt.datetime) -> None:
    parsed = schedule.parse_instant(text, zone)
    assert parsed == expected
    assert parsed.utcoffset() == dt.timedelta(0)


@pytest.mark.parametrize("value", ["tomorrow", "2026-13-01T00:00:00Z", "", 1765000000, None, {"at": 1}])
def test_invalid_instants_are_rejected(value: object) -> None:
    with pytest.raises(ScheduleError, match="ISO 8601"):
        schedule.parse_instant(value)


def test_subscriber_zone() -> None:
    assert schedule.subscriber_zone(SimpleNamespace(timezone="Asia/Kolkata")) == (KOLKATA, None)
    assert schedule.subscriber_zone(SimpleNamespace(timezone=None)) == (schedule.UTC, None)
    zone, note = schedule.subscriber_zone(SimpleNamespace(timezone="Mars/Olympus"))
    assert zone == schedule.UTC
    assert note is not None
    assert "Mars/Olympus" in note
