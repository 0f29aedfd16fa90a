"""The limiter interface, its result types and the checks both implementations share."""

from __future__ import annotations

import abc
import dataclasses
import math

# Slack for floating-point refill arithmetic, so 2.9999999999 tokens count as 3. The Lua script uses
# the same value.
TOKEN_EPSILON = 1e-9


@dataclasses.dataclass(frozen=True)
class Reservation:
    """The outcome of `Limiter.reserve`."""

    granted: bool
    count: int  # members in the window after this call
    reset_seconds: float  # time until the window ends, or 0 when no window is open


@dataclasses.dataclass(frozen=True)
class TokenResult:
    """The outcome of `Limiter.take`."""

    allowed: bool
    remaining: int  # whole tokens left in the bucket after this call
    reset_seconds: float  # time until the bucket is full again
    retry_after_seconds: float  # time until `cost` tokens are available; 0 when allowed


class Limiter(abc.ABC):
    """Rate limits whose state outlives a single request or job."""

    # Whether a call crosses the network, so callers keep it out of database transactions.
    remote = False

    @abc.abstractmethod
    def reserve(self, key: str, limit: int, window_seconds: float, member: str) -> Reservation:
        """Reserve a slot for `member` in the fixed window at `key`.

        The first member added starts a window of `window_seconds`. A member already in the window is
        granted again without taking a second slot. Other members are refused once `limit` members
        hold slots, until the window ends.
        """

    @abc.abstractmethod
    def take(self, key: str, capacity: int, refill_per_second: float, cost: int) -> TokenResult:
        """Take `cost` tokens from the token bucket at `key`, or nothing if it contains fewer.

        A new bucket starts full. Raises ValueError when `cost` exceeds `capacity`, because such a
        request could never be allowed.
        """

    def close(self) -> None:  # noqa: B027 - implementations without resources need no close
        """Release connections held by this limiter."""


def check_reserve_arguments(key: str, limit: int, window_seconds: float, member: str) -> None:
    if not key:
        raise ValueError("key must be a non-empty string")
    if not member:
        raise ValueError("member must be a non-empty string")
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    if not (window_seconds > 0 and math.isfinite(window_seconds)):
        raise ValueError(f"window_seconds must be a positive number, got {window_seconds}")


def check_take_arguments(key: str, capacity: int, refill_per_second: float, cost: int) -> None:
    if not key:
        raise ValueError("key must be a non-empty string")
    if capacity < 1:
        raise ValueError(f"capacity must be at least 1, got {capacity}")
    if not (refill_per_second > 0 and math.isfinite(refill_per_second)):
        raise ValueError(f"refill_per_second must be a positive number, got {refill_per_second}")
    if cost < 1:
        raise ValueError(f"cost must be at least 1, got {cost}")
    if cost > capacity:
        raise ValueError(f"cost {cost} exceeds the bucket capacity {capacity}, so it can never be allowed")
