"""The Redis side of the queues: Huey's Redis storage under novulite's key prefix, and outage handling.

Consumers block in BRPOP, so an entry pushed by any process starts at once without
polling. While Redis is unreachable, consumers log once, back off and retry, and
entries that could not be enqueued wait in memory (`HeldEntries`) until Redis
returns. The job store stays the source of truth: if this process dies with held
entries, the reconciler of any process re-queues the work after its grace period.
"""

from __future__ import annotations

import calendar
import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import redis
import redis.retry
from huey.storage import RedisStorage
from redis.backoff import NoBackoff

from novulite.redis_keys import queue_key

logger = logging.getLogger("novulite.queues")

# Seconds a consumer's BRPOP waits before it returns empty and checks for shutdown.
BLOCKING_READ_SECONDS = 1.0
# Seconds a connection attempt or a non-blocking command may take; more than BLOCKING_READ_SECONDS.
REDIS_TIMEOUT_SECONDS = 3.0
# Maximum delayed entries one scheduler pass moves to the queue, so each script call stays short.
# Further due entries move on the next pass, a second later.
MOVE_DUE_LIMIT = 1000
# Queue entries held in memory while Redis is unreachable; the reconciler re-queues what does not fit.
MAX_HELD = 50_000
# Seconds between attempts to enqueue held entries.
HELD_RETRY_SECONDS = 0.5

# Move the due entries of a schedule to the tail of the queue in one step. Huey's own scheduler
# removes them from the schedule, then enqueues them with separate commands, so an outage between
# the two loses them. Both keys carry one hash tag, as a script's keys must under Redis Cluster.
MOVE_DUE_LUA = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, data in ipairs(due) do
  redis.call('ZREM', KEYS[1], data)
  redis.call('LPUSH', KEYS[2], data)
end
return #due
"""


def connection_pool(url: str) -> redis.ConnectionPool:
    """Return a pool for the queues whose commands fail within REDIS_TIMEOUT_SECONDS.

    A command on a pooled connection that Redis dropped, as after a restart, is retried once on a new
    connection.
    """
    return redis.ConnectionPool.from_url(
        url,
        socket_timeout=REDIS_TIMEOUT_SECONDS,
        socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
        retry=redis.retry.Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)),
    )


class OutageLog:
    """Logs the first Redis failure of an outage and its end, and counts the failures between them."""

    def __init__(self, component: str) -> None:
        self._component = component
        self._lock = threading.Lock()
        self._since: float | None = None
        self._failures = 0

    def failed(self, exc: BaseException) -> None:
        with self._lock:
            self._failures += 1
            if self._since is not None:
                return
            self._since = time.monotonic()
        logger.warning(
            "Redis is unreachable for %s, retrying with back-off: %s", self._component, _describe(exc)
        )

    def succeeded(self) -> None:
        if self._since is None:
            return
        with self._lock:
            if self._since is None:
                return
            seconds, failures = time.monotonic() - self._since, self._failures
            self._since, self._failures = None, 0
        logger.info(
            "Redis is reachable again for %s after %.1f s and %d failed calls",
            self._component,
            seconds,
            failures,
        )

    @property
    def down(self) -> bool:
        return self._since is not None


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class PrefixedRedisStorage(RedisStorage):
    """Huey's Redis storage with novulite's key names, a blocking pop and an atomic schedule read."""

    def __init__(self, name: str, key_prefix: str, outage: OutageLog, **kwargs: Any) -> None:
        super().__init__(name, clean_name=False, blocking=True, read_timeout=BLOCKING_READ_SECONDS, **kwargs)
        self.queue_key = queue_key(key_prefix, name, "queue")
        self.schedule_key = queue_key(key_prefix, name, "schedule")
        # Results and counters are off (results=False), but Huey names them, so they share the prefix too.
        self.result_key = queue_key(key_prefix, name, "results")
        self.counter_key = queue_key(key_prefix, name, "counters")
        self.notify_prefix = queue_key(key_prefix, name, "notify") + ":"
        self.outage = outage
        self._move_due = self.conn.register_script(MOVE_DUE_LUA)

    def convert_ts(self, ts: dt.datetime) -> float:
        # Huey's own version reads the naive UTC time (utc=True) as local time, so hosts in
        # different time zones would disagree on when a delayed entry is due.
        return calendar.timegm(ts.timetuple()) + ts.microsecond * 1e-6

    def read_schedule(self, ts: dt.datetime) -> list[bytes]:
        """Move the due delayed entries to the queue and return none, so Huey's scheduler enqueues nothing.

        The script runs atomically, so with several processes each due entry moves exactly once.
        """
        try:
            self._move_due(
                keys=[self.schedule_key, self.queue_key], args=[self.convert_ts(ts), MOVE_DUE_LIMIT]
            )
        except redis.RedisError as exc:
            self.outage.failed(exc)
            return []
        self.outage.succeeded()
        return []

    # novulite keeps no results (results=False), never revokes a task and takes no Huey lock, so
    # the result hash stays empty. Huey still reads it before every task (the revocation check)
    # and deletes from it after: two round trips per task, and a task lost when either fails
    # during an outage. NOTE: Huey's revoke() and lock_task() do not work on this storage.
    def peek_many(self, keys: list[str]) -> dict[str, bytes]:
        return {}

    def delete_data(self, key: str) -> bool:
        return False

    def dequeue_nowait(self) -> bytes | None:
        """Pop the oldest entry without waiting; None when the queue is empty."""
        data: bytes | None = self.conn.rpop(self.queue_key)
        return data

    def close(self) -> None:
        self.pool.disconnect()


class HeldEntries:
    """Queue entries that could not be enqueued while Redis was unreachable, retried until it returns.

    Entries are keyed by task name and arguments, so a reconciler pass that re-queues the same ids
    during an outage keeps one copy. A thread retries them every HELD_RETRY_SECONDS, oldest first.
    """

    def __init__(self, send: Callable[[str, tuple[Any, ...], float | None], None]) -> None:
        self._send = send
        self._lock = threading.Lock()
        # (task name, repr of the arguments) -> (arguments, monotonic due time or None for now)
        self._entries: dict[tuple[str, str], tuple[tuple[Any, ...], float | None]] = {}
        self._dropped = 0
        self._wakeup = threading.Event()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def __len__(self) -> int:
        return len(self._entries)

    def hold(self, name: str, args: tuple[Any, ...], due: float | None) -> None:
        with self._lock:
            key = (name, repr(args))
            if key not in self._entries and len(self._entries) >= MAX_HELD:
                self._dropped += 1
                if self._dropped == 1:
                    logger.error(
                        "more than %d queue entries wait for Redis; dropping new ones until it returns, "
                        "and the reconciler re-queues their work from the job store",
                        MAX_HELD,
                    )
                return
            self._entries[key] = (args, due)
            # An API-only process never starts consumers, so its first held entry starts the retry thread.
            if self._thread is None and not self._stopped.is_set():
                self._start_thread()
        self._wakeup.set()

    def start(self) -> None:
        with self._lock:
            self._stopped.clear()
            if self._thread is None:
                self._start_thread()

    def _start_thread(self) -> None:
        self._thread = threading.Thread(target=self._run, name="novulite-held-entries", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        self._wakeup.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._entries:
            logger.warning(
                "stopping with %d queue entries that never reached Redis; the reconciler re-queues "
                "their work from the job store",
                len(self._entries),
            )

    def _run(self) -> None:
        while not self._stopped.is_set():
            self._wakeup.wait()
            self._wakeup.clear()
            while self._entries and not self._stopped.wait(HELD_RETRY_SECONDS):
                if self.flush():
                    break

    def flush(self) -> bool:
        """Enqueue held entries in order until one fails; return whether all were enqueued."""
        with self._lock:
            pending = list(self._entries.items())
        sent = 0
        for key, (args, due) in pending:
            try:
                self._send(key[0], args, None if due is None else max(0.0, due - time.monotonic()))
            except redis.RedisError:
                break
            with self._lock:
                self._entries.pop(key, None)
            sent += 1
        if sent:
            with self._lock:
                dropped, self._dropped = self._dropped, 0
            logger.info("enqueued %d queue entries held while Redis was unreachable", sent)
            if dropped:
                logger.warning("%d queue entries were dropped while Redis was unreachable", dropped)
        return not self._entries
