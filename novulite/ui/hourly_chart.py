"""Notifications and failed jobs per hour over the last 24 hours, laid out for an SVG bar chart."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from novulite.db.models import Job, Notification
from novulite.json_sql import hour_text

HOURS = 24
# The chart's coordinate system, which is the SVG viewBox. The page scales it to its width.
WIDTH = 720
HEIGHT = 220
LEFT = 44
RIGHT = 8
TOP = 10
BOTTOM = 26
# Horizontal grid lines above the baseline.
GRID_STEPS = 4
# Stored datetimes are UTC text "YYYY-MM-DD HH:MM:SS.ffffff", so the first 13 characters name the hour.
HOUR_PREFIX = 13


@dataclasses.dataclass(frozen=True)
class HourBar:
    start: dt.datetime
    notifications: int
    failures: int
    # Rectangles in viewBox units: x, y and height of each bar. `label` is set every third hour.
    x: float
    width: float
    notifications_y: float
    notifications_height: float
    failures_y: float
    failures_height: float
    label: str


@dataclasses.dataclass(frozen=True)
class HourlyChart:
    bars: list[HourBar]
    # Horizontal grid lines: (y in viewBox units, count they mark).
    ticks: list[tuple[float, int]]
    total_notifications: int
    total_failures: int
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    baseline: int = HEIGHT - BOTTOM


def _tick_step(value: int) -> int:
    """Return the smallest of 1, 2 or 5 times a power of ten whose four steps reach `value`."""
    needed = max(value, 1) / GRID_STEPS
    power = 10 ** max(0, math.floor(math.log10(needed)))
    for factor in (1, 2, 5, 10):
        if factor * power >= needed:
            return factor * power
    return 10 * power


async def load_hourly_chart(session: AsyncSession, now: dt.datetime) -> HourlyChart:
    """Count notifications created and jobs failed in each of the last 24 hours, this hour included."""
    current = now.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0, tzinfo=None)
    first = current - dt.timedelta(hours=HOURS - 1)
    notification_hour = hour_text(Notification.created_at)
    notifications: dict[str, int] = dict(
        (
            await session.execute(
                select(notification_hour, func.count())
                .where(Notification.created_at >= first.replace(tzinfo=dt.UTC))
                .group_by(notification_hour)
            )
        ).all()
    )
    failure_hour = hour_text(Job.updated_at)
    failures: dict[str, int] = dict(
        (
            await session.execute(
                select(failure_hour, func.count())
                .where(Job.status == "failed", Job.updated_at >= first.replace(tzinfo=dt.UTC))
                .group_by(failure_hour)
            )
        ).all()
    )
    hours = [first + dt.timedelta(hours=index) for index in range(HOURS)]
    keys = [hour.isoformat(" ")[:HOUR_PREFIX] for hour in hours]
    counts = [(int(notifications.get(key, 0)), int(failures.get(key, 0))) for key in keys]
    return _layout(hours, counts)


def _layout(hours: list[dt.datetime], counts: list[tuple[int, int]]) -> HourlyChart:
    step = _tick_step(max(max(pair) for pair in counts))
    top_value = step * GRID_STEPS
    plot_height = HEIGHT - TOP - BOTTOM
    baseline = HEIGHT - BOTTOM
    slot = (WIDTH - LEFT - RIGHT) / len(hours)
    bar_width = slot * 0.4

    def height_of(count: int) -> float:
        return round(plot_height * count / top_value, 2)

    bars = []
    for index, (hour, (notified, failed)) in enumerate(zip(hours, counts, strict=True)):
        x = round(LEFT + index * slot + slot * 0.1, 2)
        bars.append(
            HourBar(
                start=hour,
                notifications=notified,
                failures=failed,
                x=x,
                width=round(bar_width, 2),
                notifications_y=round(baseline - height_of(notified), 2),
                notifications_height=height_of(notified),
                failures_y=round(baseline - height_of(failed), 2),
                failures_height=height_of(failed),
                label=hour.strftime("%H:00") if index % 3 == 0 else "",
            )
        )
    ticks = [
        (round(baseline - plot_height * index / GRID_STEPS, 2), step * index)
        for index in range(GRID_STEPS + 1)
    ]
    return HourlyChart(
        bars=bars,
        ticks=ticks,
        total_notifications=sum(pair[0] for pair in counts),
        total_failures=sum(pair[1] for pair in counts),
    )
