"""Rate limits shared by every worker: throttle windows and token buckets.

The throttle step calls `Limiter.reserve` with the job's id as the member, so a
retried job keeps the slot it already holds, and API rate limits call `take` per
request and turn the `TokenResult` into `RateLimit-*` and `Retry-After` headers.
`SqliteLimiter` serves a single host; `RedisLimiter` lets several processes or
hosts share one set of limits, and `AsyncRedisLimiter` takes tokens from the same
buckets without blocking an event loop.
"""

from __future__ import annotations

from novulite.limiter.base import Limiter, Reservation, TokenResult
from novulite.limiter.redis import RedisLimiter
from novulite.limiter.sqlite import SqliteLimiter

__all__ = ["Limiter", "RedisLimiter", "Reservation", "SqliteLimiter", "TokenResult"]
