"""The limiter over Redis, one Lua script per operation so each runs atomically on the server."""

from __future__ import annotations

import math
from importlib import resources
from typing import Any

import redis

from novulite.limiter.base import (
    Limiter,
    Reservation,
    TokenResult,
    check_reserve_arguments,
    check_take_arguments,
)
from novulite.redis_keys import DEFAULT_PREFIX as _DEPLOYMENT_PREFIX
from novulite.redis_keys import limiter_prefix

DEFAULT_PREFIX = limiter_prefix(_DEPLOYMENT_PREFIX)


def _script_source(name: str) -> str:
    return resources.files("novulite.limiter").joinpath(name).read_text(encoding="utf-8")


RESERVE_SOURCE = _script_source("reserve.lua")
TAKE_SOURCE = _script_source("take.lua")


class RedisLimiter(Limiter):
    """Limits kept in Redis under `prefix`, shared by every process that uses the same server.

    The scripts are registered on `client` once, here. Each call sends EVALSHA and, when Redis replies
    NOSCRIPT (after a restart or SCRIPT FLUSH), loads the script and retries: redis-py's `Script` does
    that. Redis errors, including connection errors, propagate to the caller.
    """

    remote = True

    def __init__(self, client: redis.Redis, prefix: str = DEFAULT_PREFIX) -> None:
        self._client = client
        self._prefix = prefix
        self._reserve = client.register_script(RESERVE_SOURCE)
        self._take = client.register_script(TAKE_SOURCE)

    @property
    def script_hashes(self) -> tuple[str, str]:
        """The SHA1 digests of the reserve and take scripts, as EVALSHA uses them."""
        return (self._reserve.sha, self._take.sha)

    def reserve(self, key: str, limit: int, window_seconds: float, member: str) -> Reservation:
        check_reserve_arguments(key, limit, window_seconds, member)
        window_ms = max(1, math.ceil(window_seconds * 1000))
        reply: Any = self._reserve(keys=[self._prefix + "window:" + key], args=[limit, window_ms, member])
        granted, count, reset_ms = (int(value) for value in reply)
        return Reservation(granted=granted == 1, count=count, reset_seconds=reset_ms / 1000)

    def take(self, key: str, capacity: int, refill_per_second: float, cost: int) -> TokenResult:
        check_take_arguments(key, capacity, refill_per_second, cost)
        reply: Any = self._take(
            keys=[self._prefix + "bucket:" + key], args=take_arguments(capacity, refill_per_second, cost)
        )
        return token_result(reply)

    def close(self) -> None:
        """Leave the client open, because the caller created it and may share it."""


def take_arguments(capacity: int, refill_per_second: float, cost: int) -> list[Any]:
    """Return ARGV for take.lua, which counts the refill rate in tokens per millisecond."""
    return [capacity, repr(refill_per_second / 1000), cost]


def token_result(reply: Any) -> TokenResult:
    """Read take.lua's reply {allowed, remaining, ms until full, ms until the cost is available}."""
    allowed, remaining, reset_ms, retry_ms = (int(value) for value in reply)
    return TokenResult(
        allowed=allowed == 1,
        remaining=remaining,
        reset_seconds=reset_ms / 1000,
        retry_after_seconds=retry_ms / 1000,
    )
