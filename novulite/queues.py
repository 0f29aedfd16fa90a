"""Huey queues, one instance per queue name, consumed by threads inside this process.

Embedded, each queue has its own SQLite file, because Huey locks a storage per
instance and four instances sharing one file would contend for SQLite's lock. With
a Redis URL every queue is a Redis list that all processes share (see
novulite.queue_redis). Tasks carry ids only, and the consumer reads everything else
from the job store. The reconciler can therefore recover a lost queue entry from
the job store's state.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import Any

import redis
from huey import RedisHuey, SqliteHuey
from huey.api import Task
from huey.consumer import Consumer, Worker
from huey.storage import SqliteStorage

from novulite.ids import new_transaction_id
from novulite.pacing import Pacer
from novulite.queue_redis import HeldEntries, OutageLog, PrefixedRedisStorage, connection_pool
from novulite.redis_keys import DEFAULT_PREFIX

logger = logging.getLogger("novulite.queues")

TRIGGER_HANDLER = "trigger-handler"
PROCESS_SUBSCRIBER = "process-subscriber"
STANDARD = "standard"
WS_SOCKET = "ws_socket_queue"
METRIC_ACTIVE_JOBS = "metric-active-jobs"
QUEUE_NAMES = (TRIGGER_HANDLER, PROCESS_SUBSCRIBER, STANDARD, WS_SOCKET, METRIC_ACTIVE_JOBS)

# Task names are stored in queue entries, so producers and consumers must agree on them.
HANDLE_TRIGGERS = "handle_triggers"  # on trigger-handler, args: [trigger ids]
EXPAND_NOTIFICATIONS = "expand_notifications"  # on process-subscriber, args: [notification ids]
RUN_JOBS = "run_jobs"  # on standard, args: [job ids]
MESSAGES_CREATED = "messages_created"  # on ws_socket_queue, args: [message ids]
RECORD_ACTIVE_JOBS = "record_active_jobs"  # on metric-active-jobs, no args
COUNTS_CHANGED = "counts_changed"  # on ws_socket_queue, args: subscriber pk, context key

# Idle polling starts at 5 ms and backs off to 1 s. Enqueues from this process wake
# the workers at once, so the back-off only delays work enqueued by other processes.
POLL_INITIAL_SECONDS = 0.005
POLL_MAX_SECONDS = 1.0


class _Storage(SqliteStorage):
    """Huey's SQLite storage with synchronous=NORMAL.

    Under WAL this keeps every commit safe from a process crash without an fsync per
    enqueue. A power loss may drop the newest entries, and the reconciler re-queues them.
    """

    def _create_connection(self) -> Any:
        conn = super()._create_connection()
        conn.execute("pragma synchronous=1")
        return conn


class _Huey(SqliteHuey):
    storage_class = _Storage


class _Task(Task):
    """A Huey task whose id comes from a seeded random generator instead of uuid4().

    uuid4() calls os.urandom, which releases the interpreter lock for its system call.
    Under load each enqueue then waited for the busy event loop to hand the lock back:
    py-spy found queue threads there in 8% of samples. Task ids only need to be unique,
    and 128 bits from a generator seeded once from os.urandom are unique enough.
    The trigger-to-socket p99 at 200 triggers/s went from 18-22 ms to 14-20 ms.
    """

    def create_id(self) -> str:
        return new_transaction_id()


class _WakeableWorker(Worker):
    wakeup: threading.Event
    pacer: Pacer
    # The consumer's stop flag, set when the process stops taking entries.
    stop_flag: Any

    def loop(self, now: Any = None) -> None:
        self.pacer.wait_turn()
        started = time.thread_time()
        super().loop(now)
        self.pacer.charge(time.thread_time() - started)

    def sleep(self) -> None:
        self.delay: float = min(self.delay, self.max_delay)
        if self.wakeup.wait(self.delay):
            self.wakeup.clear()
            self.delay = self.default_delay
        else:
            self.delay *= self.backoff


class _RedisWorker(_WakeableWorker):
    """A worker that blocks in BRPOP, and logs and backs off while Redis is unreachable.

    Huey's worker logs a traceback for every failed read. During an outage that is one
    per back-off step per thread, so failures go to the queues' OutageLog instead.
    """

    outage: OutageLog

    def loop(self, now: Any = None) -> None:
        self.pacer.wait_turn()
        started = time.thread_time()
        try:
            task = self.huey.dequeue()
        except redis.RedisError as exc:
            self.outage.failed(exc)
            self.sleep()
            return
        except Exception:
            # An entry that cannot be decoded must not end the worker thread.
            logger.exception("reading an entry from queue %s failed", self.huey.name)
            return
        self.outage.succeeded()
        # BRPOP already waited, so an empty read goes straight back to waiting, with no sleep.
        self.delay = self.default_delay
        if task is not None and self.stop_flag.is_set():
            # The process began draining while this thread waited in BRPOP. Running the entry now
            # would claim a job that the drain cannot wait for, so another process gets it instead.
            self._hand_back(task)
            return
        if task is not None:
            try:
                self.huey.execute(task, now)
            except Exception:
                logger.exception("task %s on queue %s failed", task.name, self.huey.name)
        self.pacer.charge(time.thread_time() - started)

    def _hand_back(self, task: Any) -> None:
        try:
            self.huey.enqueue(task)
        except redis.RedisError as exc:
            # The job store still has the work, and the reconciler of another process re-queues it.
            logger.warning(
                "could not hand entry %s of queue %s back to Redis: %s", task.id, self.huey.name, exc
            )


class _EmbeddedConsumer(Consumer):
    """A consumer that runs inside the server process and leaves signals to uvicorn."""

    worker_class = _WakeableWorker

    def __init__(self, huey: Any, wakeup: threading.Event, pacer: Pacer, **kwargs: Any) -> None:
        self._wakeup = wakeup
        self._pacer = pacer
        super().__init__(huey, **kwargs)

    def _create_worker(self) -> Worker:
        worker = super()._create_worker()
        worker.stop_flag = self.stop_flag
        worker.wakeup = self._wakeup
        worker.pacer = self._pacer
        if isinstance(worker, _RedisWorker):
            worker.outage = self.huey.storage.outage
        return worker

    def _set_signal_handlers(self) -> None:
        # Huey would replace the server's SIGINT and SIGTERM handlers; uvicorn owns them.
        pass


class _RedisConsumer(_EmbeddedConsumer):
    worker_class = _RedisWorker


# Back-off of a Redis consumer after a failed read: from 0.1 s, doubling, up to 2 s.
REDIS_RETRY_INITIAL_SECONDS = 0.1
REDIS_RETRY_MAX_SECONDS = 2.0


class Queues:
    """The four pipeline queues, their task registry and, once started, their consumers."""

    def __init__(
        self,
        directory: Path,
        workers: int = 1,
        pacer: Pacer | None = None,
        redis_url: str | None = None,
        redis_prefix: str = DEFAULT_PREFIX,
    ) -> None:
        """Open the queues: SQLite files in `directory`, or Redis lists under `redis_prefix`."""
        self._workers = workers
        self.pacer = pacer or Pacer()
        self._hueys: dict[str, Any]
        # Entries waiting for Redis to return; None in embedded mode, where enqueue errors propagate.
        self._held_entries: HeldEntries | None = None
        if redis_url:
            self._outage = OutageLog("the queues")
            pool = connection_pool(redis_url)
            self._hueys = {
                name: RedisHuey(
                    name,
                    results=False,
                    utc=True,
                    storage_class=PrefixedRedisStorage,
                    key_prefix=redis_prefix,
                    outage=self._outage,
                    connection_pool=pool,
                )
                for name in QUEUE_NAMES
            }
            self._held_entries = HeldEntries(self._send)
        else:
            self._hueys = {
                name: _Huey(name, filename=str(directory / f"{name}.db"), results=False, utc=True, timeout=15)
                for name in QUEUE_NAMES
            }
        self._wakeups = {name: threading.Event() for name in QUEUE_NAMES}
        self._tasks: dict[str, Any] = {}
        self._consumers: list[_EmbeddedConsumer] = []
        # Set once the process stops taking entries, so a running task folds no more into its batch.
        self._draining = False

    def register(self, queue: str, name: str, function: Callable[..., None]) -> None:
        """Register `function` as task `name` on `queue`; names must match across processes."""
        self._tasks[name] = self._hueys[queue].task(name=name, task_base=_Task)(function)

    @property
    def reachable(self) -> bool:
        """Whether the last call to the queues' storage succeeded; always true in embedded mode."""
        return self._held_entries is None or not self._outage.down

    def enqueue(self, name: str, *args: Any) -> None:
        """Enqueue task `name`; in Redis mode an entry Redis cannot take waits in memory until it returns."""
        task = self._tasks[name]
        if self._held_entries is None:
            task(*args)
            self._wakeups[task.huey.name].set()
            return
        try:
            task(*args)
        except redis.RedisError as exc:
            self._outage.failed(exc)
            self._held_entries.hold(name, args, None)

    def schedule(self, name: str, delay_seconds: float, *args: Any) -> None:
        """Enqueue task `name` to run after `delay_seconds`; Huey's scheduler thread releases it."""
        if self._held_entries is None:
            self._tasks[name].schedule(args=args, delay=delay_seconds)
            return
        try:
            self._tasks[name].schedule(args=args, delay=delay_seconds)
        except redis.RedisError as exc:
            self._outage.failed(exc)
            self._held_entries.hold(name, args, time.monotonic() + delay_seconds)

    def _send(self, name: str, args: tuple[Any, ...], delay_seconds: float | None) -> None:
        if delay_seconds:
            self._tasks[name].schedule(args=args, delay=delay_seconds)
        else:
            self._tasks[name](*args)
        self._outage.succeeded()

    def take_waiting(self, name: str) -> Iterator[Any]:
        """Dequeue waiting entries of task `name` one at a time, yielding the first argument of each.

        A task calls it to fold entries that piled up behind it into its own batch, so
        a backlog costs one transaction per batch instead of one per entry. It dequeues
        only as far as the caller iterates, and nothing once the process stops consuming.
        Entries of other tasks met on the way run here at once, as the consumer would run them.
        """
        huey = self._tasks[name].huey
        while not self._draining:
            waiting = self._dequeue_nowait(huey)
            if waiting is None:
                return
            if waiting.name == name:
                yield waiting.args[0]
            else:
                huey.execute(waiting)

    def _dequeue_nowait(self, huey: Any) -> Any:
        if self._held_entries is None:
            return huey.dequeue()
        # A blocking pop would hold the running task up to BLOCKING_READ_SECONDS on an empty queue.
        try:
            data = huey.storage.dequeue_nowait()
        except redis.RedisError as exc:
            # The task runs with the batch it has, and the consumer logs the outage once.
            self._outage.failed(exc)
            return None
        return None if data is None else huey.deserialize_task(data)

    def pending_counts(self) -> dict[str, int]:
        return {name: huey.pending_count() for name, huey in self._hueys.items()}

    def pending_counts_or_empty(self) -> dict[str, int]:
        """Return the pending counts, or an empty dict while the queues' Redis is unreachable.

        For pages and metrics scrapes, which show no queue depths during an outage instead of failing.
        """
        try:
            return self.pending_counts()
        except redis.RedisError:
            return {}

    def start(self, names: Collection[str] | None = None) -> None:
        """Start a consumer for each queue in `names`, or for every queue when `names` is None."""
        selected = QUEUE_NAMES if names is None else tuple(name for name in QUEUE_NAMES if name in names)
        self._draining = False
        for name in selected:
            consumer = self._consumer(name, self._hueys[name])
            consumer.start()
            self._consumers.append(consumer)
        if self._held_entries is not None:
            self._held_entries.start()
        logger.info(
            "started consumers of %s with %d threads each", ", ".join(selected) or "no queue", self._workers
        )

    def _consumer(self, name: str, huey: Any) -> _EmbeddedConsumer:
        if self._held_entries is None:
            return _EmbeddedConsumer(
                huey,
                self._wakeups[name],
                self.pacer,
                workers=self._workers,
                periodic=False,
                initial_delay=POLL_INITIAL_SECONDS,
                max_delay=POLL_MAX_SECONDS,
                check_worker_health=False,
                worker_type="thread",
            )
        return _RedisConsumer(
            huey,
            self._wakeups[name],
            self.pacer,
            workers=self._workers,
            periodic=False,
            initial_delay=REDIS_RETRY_INITIAL_SECONDS,
            backoff=2.0,
            max_delay=REDIS_RETRY_MAX_SECONDS,
            check_worker_health=False,
            worker_type="thread",
        )

    @property
    def running(self) -> bool:
        return bool(self._consumers) and not self._draining

    def stop_consuming(self) -> None:
        """Stop taking entries off the queues; tasks already running go on. Enqueueing still works."""
        self._draining = True
        for consumer in self._consumers:
            consumer.stop_flag.set()
        for event in self._wakeups.values():
            event.set()

    def drain(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds in all for running tasks to finish; return whether they all did.

        Call stop_consuming() first. A task still running at the deadline goes on in its daemon
        thread until the process exits; its job store transaction then rolls back.
        """
        self.stop_consuming()
        deadline = time.monotonic() + timeout
        finished = True
        for consumer in self._consumers:
            consumer.shutdown_timeout = max(deadline - time.monotonic(), 0.0)
            consumer.stop(graceful=True)
            finished = finished and not any(thread.is_alive() for _, thread in consumer.worker_threads)
        self._consumers.clear()
        if finished:
            logger.info("queue consumers stopped")
        else:
            logger.warning("queue consumers stopped with tasks still running at the shutdown deadline")
        return finished

    def close(self) -> None:
        """Close the queue storage; call it after the last enqueue of this process."""
        if self._held_entries is not None:
            self._held_entries.stop()
        for huey in self._hueys.values():
            huey.storage.close()

    def stop(self, timeout: float) -> None:
        """Stop consuming, wait up to `timeout` seconds in all for running tasks, then close the storage."""
        self.drain(timeout)
        self.close()
