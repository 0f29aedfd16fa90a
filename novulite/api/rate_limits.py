"""API rate limits: an ASGI middleware that charges each API-key request to its category's token bucket.

Only requests that authenticate with the secret API key are limited, as in Novu: inbox
calls (session tokens), unauthenticated calls and calls with an invalid key pass
through untouched to the route, which returns their response. Each limited response carries
RateLimit-Limit, RateLimit-Remaining, RateLimit-Reset and RateLimit-Policy; a refused
request gets 429 with Retry-After.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any, Protocol

import msgspec

from novulite.api.auth import authenticate_api_key
from novulite.api.idempotency import replaying, send_error
from novulite.config import Settings
from novulite.errors import BODY_TOO_LARGE, RATE_LIMIT_COST_TOO_HIGH, RATE_LIMITED, ApiError
from novulite.limiter.aioredis import AsyncRedisLimiter
from novulite.limiter.base import Limiter, TokenResult
from novulite.limiter.connect import OUTAGE_ERRORS, async_redis_client
from novulite.rate_limits import Bucket, RateLimits
from novulite.redis_keys import limiter_prefix
from novulite.services import Services

logger = logging.getLogger("novulite.api")

# ASGI messages are plain dicts here, as in novulite.api.idempotency.
Scope = Any
Receive = Any
Send = Any

TRIGGER_PATHS = {
    "/v1/events/trigger": "single",
    "/v1/events/trigger/bulk": "bulk",
    "/v1/events/trigger/broadcast": "single",
}
BULK_TRIGGER_PATH = "/v1/events/trigger/bulk"
CONFIGURATION_RESOURCES = (
    "/v1/workflows",
    "/v2/workflows",
    "/v1/subscribers",
    "/v2/subscribers",
    "/v1/topics",
    "/v2/topics",
)
MUTATING_METHODS = ("POST", "PUT", "PATCH", "DELETE")
EXCLUDED_PATHS = ("/v1/inbox", "/v1/health-check")
# Novu's self-hosted API reports this service level.
SERVICE_LEVEL = "unlimited"
# Seconds between warnings while the limiter fails, so an outage does not flood the log.
WARNING_INTERVAL_SECONDS = 60.0


class TokenTaker(Protocol):
    async def take(self, key: str, capacity: int, refill_per_second: float, cost: int) -> TokenResult: ...

    async def close(self) -> None: ...


class InlineTaker:
    """Calls a synchronous limiter's `take` on the event loop.

    On the SQLite limiter one call costs tens of microseconds, less than handing it to
    a thread and back (bench/timing_limiter.py).
    """

    def __init__(self, limiter: Limiter) -> None:
        self._limiter = limiter

    async def take(self, key: str, capacity: int, refill_per_second: float, cost: int) -> TokenResult:
        return self._limiter.take(key, capacity, refill_per_second, cost)

    async def close(self) -> None:
        """Leave the limiter open, because the workers own it."""


def token_taker(settings: Settings, limiter: Limiter) -> TokenTaker:
    """Return what the API charges requests to: asyncio Redis when configured, else `limiter` inline."""
    if settings.redis_url:
        return AsyncRedisLimiter(
            async_redis_client(settings.redis_url), prefix=limiter_prefix(settings.redis_prefix)
        )
    return InlineTaker(limiter)


def category_of(method: str, path: str) -> tuple[str, str]:
    """Return the rate limit category of a request and how it is charged, "single" or "bulk"."""
    trimmed = path.rstrip("/")
    if method == "POST" and trimmed in TRIGGER_PATHS:
        return "trigger", TRIGGER_PATHS[trimmed]
    if method in MUTATING_METHODS and any(
        trimmed == resource or trimmed.startswith(resource + "/") for resource in CONFIGURATION_RESOURCES
    ):
        return "configuration", "single"
    return "global", "single"


def is_limited_path(path: str) -> bool:
    if not path.startswith(("/v1/", "/v2/")):
        return False
    return not any(path == excluded or path.startswith(excluded + "/") for excluded in EXCLUDED_PATHS)


def policy_header(bucket: Bucket, category: str, charge: str) -> str:
    """Return RateLimit-Policy in Novu's format: limit per window, window, burst and labels."""
    return (
        f'{bucket.window_limit};w={bucket.policy_window};burst={bucket.capacity};comment="token bucket";'
        f'category="{category}";cost="{charge}";serviceLevel="{SERVICE_LEVEL}"'
    )


def limit_headers(bucket: Bucket, category: str, charge: str, result: TokenResult | None) -> dict[str, str]:
    """Return the RateLimit-* headers; Remaining and Reset only when the bucket was consulted."""
    headers = {
        "RateLimit-Limit": str(bucket.window_limit),
        "RateLimit-Policy": policy_header(bucket, category, charge),
    }
    if result is not None:
        headers["RateLimit-Remaining"] = str(result.remaining)
        headers["RateLimit-Reset"] = str(math.ceil(result.reset_seconds))
    return headers


class RateLimitMiddleware:
    """ASGI middleware that applies the API rate limits in front of the whole application."""

    def __init__(self, app: Any, services: Services, limits: RateLimits, taker: TokenTaker) -> None:
        self.app = app
        self.services = services
        self.limits = limits
        self.taker = taker
        self._last_warning = -math.inf

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_limited_path(scope["path"]):
            await self.app(scope, receive, send)
            return
        authorization = next((value for name, value in scope["headers"] if name == b"authorization"), b"")
        if authorization[:7].lower() == b"bearer ":
            await self.app(scope, receive, send)
            return
        try:
            environment = await authenticate_api_key(self.services, authorization.decode("latin-1"))
        except ApiError:
            # Unauthenticated requests are not limited. The route returns its 401 for them.
            await self.app(scope, receive, send)
            return

        category, charge = category_of(scope["method"], scope["path"])
        cost = 1
        if charge == "bulk" and self.limits.bulk_cost is not None:
            cost = self.limits.bulk_cost
        elif charge == "bulk":
            body, complete = await self._read_body(receive)
            if not complete:
                await send_error(send, scope["path"], ApiError(BODY_TOO_LARGE, limit=self._body_limit))
                return
            receive = replaying(body)
            cost = _event_count(body)
        await self._charge(scope, receive, send, f"api:{environment.id}:{category}", category, charge, cost)

    async def _charge(
        self, scope: Scope, receive: Receive, send: Send, key: str, category: str, charge: str, cost: int
    ) -> None:
        bucket = self.limits.buckets[category]
        if cost > bucket.capacity:
            error = ApiError(
                RATE_LIMIT_COST_TOO_HIGH,
                cost=cost,
                category=category,
                capacity=bucket.capacity,
                headers=limit_headers(bucket, category, charge, None),
            )
            await send_error(send, scope["path"], error)
            return
        try:
            result = await self.taker.take(key, bucket.capacity, bucket.refill_per_second, cost)
        except OUTAGE_ERRORS as exc:
            # A limiter outage must not take the API down with it, so the request goes through unlimited.
            self._warn(exc)
            await self.app(scope, receive, send)
            return
        headers = limit_headers(bucket, category, charge, result)
        if not result.allowed:
            retry_after = max(1, math.ceil(result.retry_after_seconds))
            error = ApiError(
                RATE_LIMITED,
                headers={**headers, "Retry-After": str(retry_after)},
                category=category,
                cost=f"{cost} token" if cost == 1 else f"{cost} tokens",
                remaining=result.remaining,
                capacity=bucket.capacity,
                refill=f"{bucket.refill_per_second:g}",
                retry_after=retry_after,
            )
            logger.debug("rate limited %s %s: %s", scope["method"], scope["path"], error.message)
            await send_error(send, scope["path"], error)
            return

        encoded = [(name.lower().encode(), value.encode()) for name, value in headers.items()]

        async def send_with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *encoded]}
            await send(message)

        await self.app(scope, receive, send_with_headers)

    @property
    def _body_limit(self) -> int:
        return self.services.settings.max_body_bytes

    async def _read_body(self, receive: Receive) -> tuple[bytes, bool]:
        """Read the request body; the flag is False when it is larger than the server accepts."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return b"".join(chunks), True
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > self._body_limit:
                return b"", False
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks), True

    def _warn(self, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._last_warning >= WARNING_INTERVAL_SECONDS:
            self._last_warning = now
            logger.warning(
                "the rate limiter failed, so API requests go through unlimited until it works again: %s: %s",
                type(exc).__name__,
                exc,
            )


def _event_count(body: bytes) -> int:
    """Return the number of events in a bulk trigger body, or 1 when the route will reject it as invalid."""
    try:
        events = msgspec.json.decode(body).get("events")
    except (msgspec.DecodeError, AttributeError, RecursionError):
        return 1
    return len(events) if isinstance(events, list) and events else 1
