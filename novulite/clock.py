"""The time source, injectable so tests can move time without sleeping."""

from __future__ import annotations

import datetime as dt
import functools
from typing import Protocol


class Clock(Protocol):
    def now(self) -> dt.datetime:
        """Return the current instant as an aware UTC datetime."""
        ...


class SystemClock:
    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC)


# Messages of one batch share their instants, so a realtime burst formats the same few values.
@functools.lru_cache(maxsize=1024)
def isoformat(value: dt.datetime | None) -> str | None:
    """Format an instant the way Novu's API does: UTC with milliseconds and a Z suffix."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    value = value.astimezone(dt.UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"
