"""Build the limiter a server uses: Redis when a URL is configured, otherwise SQLite in the data directory."""

from __future__ import annotations

import sqlite3
import urllib.parse
from pathlib import Path

import redis
import redis.asyncio
import redis.asyncio.retry
import redis.retry
from redis.backoff import NoBackoff

from novulite.limiter.base import Limiter
from novulite.limiter.redis import RedisLimiter
from novulite.limiter.sqlite import SqliteLimiter
from novulite.redis_keys import DEFAULT_PREFIX, limiter_prefix

# Seconds a Redis connection attempt or command may take. A throttle step waits for Redis on a
# worker thread, and an API request under rate limits waits for it too, so a hung Redis must fail fast.
REDIS_TIMEOUT_SECONDS = 3.0


class LimiterUnavailable(Exception):
    """The configured Redis could not be reached; the message names the URL without its password."""


def redact_url(url: str) -> str:
    """Return `url` with any password, in the user part or a `password` query parameter, replaced by ***."""
    try:
        parts = urllib.parse.urlsplit(url)
        if not parts.scheme:
            # Without a scheme the password cannot be located, so hide any text with a user part.
            return "<invalid URL>" if "@" in url else url
        netloc = parts.netloc
        if parts.password is not None:
            user = parts.username or ""
            host = netloc.rpartition("@")[2]
            netloc = f"{user}:***@{host}"
        query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
        redacted = [(name, "***" if name.lower() == "password" else value) for name, value in query]
        # Built by hand because urlunsplit drops the empty authority of unix:///path.
        query_text = f"?{urllib.parse.urlencode(redacted, safe='*')}" if redacted else ""
        return f"{parts.scheme}://{netloc}{parts.path}{query_text}"
    except ValueError:
        return "<unparsable URL>"


def redis_client(url: str) -> redis.Redis:
    """Return a client for `url` that fails within REDIS_TIMEOUT_SECONDS.

    A command on a pooled connection that Redis dropped, as after a restart, is retried once on a new
    connection. A timeout is not retried.
    """
    return redis.Redis.from_url(
        url,
        socket_timeout=REDIS_TIMEOUT_SECONDS,
        socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
        retry=redis.retry.Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)),
    )


def async_redis_client(url: str) -> redis.asyncio.Redis:
    """Return an asyncio client for `url` with the same timeouts as `redis_client`."""
    return redis.asyncio.Redis.from_url(
        url,
        socket_timeout=REDIS_TIMEOUT_SECONDS,
        socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
        retry=redis.asyncio.retry.Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)),
    )


def check_redis(url: str) -> None:
    """Send PING to the Redis at `url`; raise LimiterUnavailable when it does not respond in time."""
    try:
        client = redis.Redis.from_url(
            url,
            socket_timeout=REDIS_TIMEOUT_SECONDS,
            socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
            retry=redis.retry.Retry(NoBackoff(), 0),
        )
    except ValueError as exc:
        raise LimiterUnavailable(f"the Redis URL {redact_url(url)} is invalid: {exc}") from None
    try:
        client.ping()
    except redis.RedisError as exc:
        reason = str(exc).rstrip(". ") or type(exc).__name__
        raise LimiterUnavailable(
            f"cannot reach Redis at {redact_url(url)} (timeout {REDIS_TIMEOUT_SECONDS:g} s): {reason}"
        ) from None
    finally:
        client.close()


def open_limiter(redis_url: str | None, data_dir: Path, redis_prefix: str = DEFAULT_PREFIX) -> Limiter:
    if redis_url:
        return RedisLimiter(redis_client(redis_url), prefix=limiter_prefix(redis_prefix))
    return SqliteLimiter(data_dir / "limiter.db")


def describe_limiter(redis_url: str | None, data_dir: Path) -> str:
    """Name the limiter for the startup log line, with the Redis password redacted."""
    if redis_url:
        return f"Redis limiter at {redact_url(redis_url)}"
    return f"SQLite limiter in {data_dir / 'limiter.db'}"


# Exceptions a limiter raises when its store is unreachable or busy, as opposed to invalid arguments.
OUTAGE_ERRORS = (redis.RedisError, sqlite3.Error)
