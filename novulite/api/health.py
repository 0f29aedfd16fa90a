"""GET /v1/health-check: whether the process has started, and whether the database, queues and Redis work."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import redis
import redis.asyncio
from litestar import Request, Response, get
from sqlalchemy import text

from novulite import __version__
from novulite.api.auth import services_of
from novulite.limiter.connect import redact_url

if TYPE_CHECKING:
    from novulite.services import Services

logger = logging.getLogger(__name__)

# Seconds the Redis PING may take. Shorter than the limiter's 3 s timeout, so that a probe with a
# short timeout of its own receives the 503 instead of timing out.
REDIS_PING_TIMEOUT_SECONDS = 1.0
# Seconds the pending counts of the queues may take, for the same reason.
QUEUE_COUNT_TIMEOUT_SECONDS = 1.0


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


async def _check_database(services: Services) -> dict[str, Any]:
    try:
        async with services.reader.connect() as connection:
            await connection.execute(text("SELECT 1"))
    except Exception as exc:
        return {"status": "down", "message": _describe(exc)}
    return {"status": "up"}


async def _check_queues(services: Services) -> dict[str, Any]:
    try:
        # In Redis mode the counts come from Redis, so a hung Redis must not hold up the response.
        pending = await asyncio.wait_for(
            asyncio.to_thread(services.queues.pending_counts), QUEUE_COUNT_TIMEOUT_SECONDS
        )
    except TimeoutError:
        return {
            "status": "down",
            "message": f"counting queue entries took over {QUEUE_COUNT_TIMEOUT_SECONDS:g} s",
        }
    except Exception as exc:
        return {"status": "down", "message": _describe(exc)}
    if not services.settings.runs_jobs:
        # An API-only process enqueues, and worker processes consume.
        return {"status": "up", "pending": pending, "consumers": "none in this process"}
    if not services.queues.running:
        return {"status": "down", "message": "the queue consumers are not running", "pending": pending}
    return {"status": "up", "pending": pending}


def _check_startup(services: Services) -> dict[str, Any] | None:
    """Return the startup part while the process waits for its dependencies or failed to start."""
    lifecycle = services.lifecycle
    if lifecycle is None or lifecycle.ready:
        return None
    if lifecycle.startup.failure is not None:
        return {"status": "down", "message": lifecycle.startup.failure}
    waiting_for = lifecycle.startup.waiting_for
    if waiting_for is None:
        return {"status": "down", "message": "starting the queue consumers"}
    return {"status": "down", "message": f"waiting for {waiting_for} to respond"}


async def _check_redis(url: str) -> dict[str, Any]:
    """Send PING to the limiter's Redis on a new connection, so a dead pooled one cannot hide an outage."""
    client = redis.asyncio.Redis.from_url(
        url,
        socket_timeout=REDIS_PING_TIMEOUT_SECONDS,
        socket_connect_timeout=REDIS_PING_TIMEOUT_SECONDS,
    )
    try:
        await client.ping()
    except redis.RedisError as exc:
        # Reported without the URL's password, because the health check needs no authentication.
        return {"status": "down", "url": redact_url(url), "message": _describe(exc)}
    finally:
        await client.aclose()
    return {"status": "up", "url": redact_url(url)}


# Parts that the last health check of this process found down. Probes come every few seconds,
# so a part is logged when it goes down and when it comes back, not on every probe.
_down: set[str] = set()


def _log_changes(error: dict[str, dict[str, Any]]) -> None:
    for name, check in error.items():
        if name not in _down:
            logger.warning("health check: %s is down: %s", name, check.get("message"))
    for name in _down - set(error):
        logger.info("health check: %s is up again", name)
    _down.clear()
    _down.update(error)


@get("/v1/health-check")
async def health_check(request: Request[Any, Any, Any]) -> Response[Any]:
    services = services_of(request)
    checks: dict[str, dict[str, Any]] = {
        "db": await _check_database(services),
        "queues": await _check_queues(services),
    }
    startup = _check_startup(services)
    if startup is not None:
        checks["startup"] = startup
    if services.settings.redis_url:
        checks["redis"] = await _check_redis(services.settings.redis_url)
    # Only a count, because the health check needs no authentication and must not name subscribers.
    checks["sockets"] = {"status": "up", "open": services.hub.connection_count}
    info = {name: check for name, check in checks.items() if check["status"] == "up"}
    error = {name: check for name, check in checks.items() if check["status"] != "up"}
    healthy = not error
    _log_changes(error)
    body = {
        "status": "ok" if healthy else "error",
        "info": info,
        "error": error,
        "details": checks,
        "version": __version__,
    }
    return Response(content=body, status_code=200 if healthy else 503)
