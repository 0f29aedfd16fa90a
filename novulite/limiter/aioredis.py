"""Token buckets over redis.asyncio, for request handlers that must not block the event loop on Redis."""

from __future__ import annotations

from typing import Any

import redis.asyncio

from novulite.limiter.base import TokenResult, check_take_arguments
from novulite.limiter.redis import DEFAULT_PREFIX, TAKE_SOURCE, take_arguments, token_result


class AsyncRedisLimiter:
    """`Limiter.take` as a coroutine, on the same take.lua script and keys as RedisLimiter.

    A RedisLimiter and an AsyncRedisLimiter with the same prefix on the same Redis share their buckets.
    """

    def __init__(self, client: redis.asyncio.Redis, prefix: str = DEFAULT_PREFIX) -> None:
        self._client = client
        self._prefix = prefix
        self._take = client.register_script(TAKE_SOURCE)

    async def take(self, key: str, capacity: int, refill_per_second: float, cost: int) -> TokenResult:
        check_take_arguments(key, capacity, refill_per_second, cost)
        reply: Any = await self._take(
            keys=[self._prefix + "bucket:" + key], args=take_arguments(capacity, refill_per_second, cost)
        )
        return token_result(reply)

    async def close(self) -> None:
        await self._client.aclose()
