"""Start and stop the threads that run jobs, and wait at start for the services they need.

A process that runs jobs consumes queues and runs the due-job timer, the lease
keeper, the call pool and the reconciler. It starts them only once the job store
and, when configured, Redis respond. At shutdown it stops taking queue entries,
lets running jobs finish until a deadline, and then releases the leases of the
jobs it still holds, so that another process takes them over at once.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import threading
import time
from collections.abc import Callable

import redis
import sqlalchemy.exc
from redis.backoff import NoBackoff
from redis.retry import Retry
from sqlalchemy import Engine, text, update

from novulite.config import Settings
from novulite.db.dialect import rowcount
from novulite.db.models import Job
from novulite.engine.context import WorkerContext
from novulite.engine.reconciler import Reconciler, reconcile, release_leases
from novulite.limiter.connect import redact_url
from novulite.queues import RUN_JOBS

logger = logging.getLogger("novulite.lifecycle")

# Seconds between attempts to reach a dependency at start: doubling from the first to the max.
RETRY_FIRST_SECONDS = 0.1
RETRY_MAX_SECONDS = 1.0
# Seconds one connection attempt may take, so a silent port cannot use up the whole startup timeout.
ATTEMPT_MAX_SECONDS = 3.0
ENQUEUE_CHUNK = 100


class DependencyNotReady(Exception):
    """A dependency responded but cannot be used yet, such as a job store whose schema is behind."""


# Errors that mean "not responding yet": a refused or timed-out connection, a locked or missing database.
NOT_READY_ERRORS = (DependencyNotReady, OSError, redis.RedisError, sqlalchemy.exc.DBAPIError)


class StartupTimedOut(Exception):
    """A dependency did not respond within the startup timeout; the message names it and its address."""


@dataclasses.dataclass(frozen=True)
class Dependency:
    """A service that must respond before this process starts its work."""

    name: str
    # Its address, with any password redacted.
    address: str
    # Raises one of NOT_READY_ERRORS unless the service responds within the given seconds.
    check: Callable[[float], None]
    # The operator's next step when it never responds.
    hint: str


def store_dependency(engine: Engine, address: str, check_schema: bool = False) -> Dependency:
    """Return the job store as a dependency; with `check_schema`, it must also be migrated to this version."""

    def check(timeout: float) -> None:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        if check_schema:
            _check_schema(engine)

    if engine.dialect.name == "postgresql":
        hint = "check that PostgreSQL runs there, that the database exists and that the user may connect"
    else:
        hint = "check the data directory, its permissions and free space"
    if check_schema:
        hint += ", and start `novulite serve` of this version, which migrates the job store"
    return Dependency("the job store", address, check, hint)


def _check_schema(engine: Engine) -> None:
    # Imported here because Alembic's import takes a noticeable part of the start-up time.
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    from novulite.db.migrate import SchemaTooNewError, alembic_config

    script = ScriptDirectory.from_config(alembic_config(engine))
    with engine.connect() as connection:
        current = MigrationContext.configure(connection).get_current_revision()
    head = script.get_current_head()
    if current == head:
        return
    if current is not None and current not in {revision.revision for revision in script.walk_revisions()}:
        raise SchemaTooNewError(
            f"the job store is at schema revision {current}, which this novulite does not know "
            f"(newest known: {head}); run a newer novulite"
        )
    raise DependencyNotReady(f"its schema is at revision {current or 'none'}, and this novulite needs {head}")


def redis_dependency(url: str) -> Dependency:
    def check(timeout: float) -> None:
        client = redis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 0)
        )
        try:
            client.ping()
        finally:
            client.close()

    return Dependency("Redis", redact_url(url), check, "start Redis or correct --redis-url")


def redis_url_problem(url: str) -> str | None:
    """Return why `url` is not a usable Redis URL, without connecting, or None when it is."""
    try:
        redis.Redis.from_url(url).close()
    except ValueError as exc:
        return f"the Redis URL {redact_url(url)} is invalid: {exc}"
    return None


def dependencies_of(settings: Settings, engine: Engine, check_schema: bool = False) -> list[Dependency]:
    """Return what a process with these settings needs before it starts: the job store, then Redis."""
    found = [store_dependency(engine, settings.database_label, check_schema)]
    if settings.redis_url:
        found.append(redis_dependency(settings.redis_url))
    return found


@dataclasses.dataclass
class StartupState:
    """The progress of a starting process, read by the health check from other threads."""

    # The dependency being waited for, as "Redis at redis://..."; None once all responded.
    waiting_for: str | None = None
    # The reason start-up failed; None unless it did.
    failure: str | None = None


def wait_for(
    dependencies: list[Dependency],
    timeout: float,
    stop: threading.Event,
    state: StartupState | None = None,
) -> bool:
    """Wait until each dependency responds, in order; return False if `stop` was set meanwhile.

    Raises StartupTimedOut when one does not respond within `timeout` seconds in all.
    """
    deadline = time.monotonic() + timeout
    for dependency in dependencies:
        if state is not None:
            state.waiting_for = f"{dependency.name} at {dependency.address}"
        if not _wait_for_one(dependency, deadline, timeout, stop):
            return False
    if state is not None:
        state.waiting_for = None
    return True


def _wait_for_one(dependency: Dependency, deadline: float, timeout: float, stop: threading.Event) -> bool:
    delay = RETRY_FIRST_SECONDS
    warned = False
    while True:
        attempt_seconds = min(ATTEMPT_MAX_SECONDS, max(deadline - time.monotonic(), 0.1))
        try:
            dependency.check(attempt_seconds)
            if warned:
                logger.info("%s at %s responds", dependency.name, dependency.address)
            return True
        except NOT_READY_ERRORS as exc:
            reason = str(exc).strip().rstrip(".") or type(exc).__name__
            responded = isinstance(exc, DependencyNotReady)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            outcome = "was not ready" if responded else "did not respond"
            raise StartupTimedOut(
                f"{dependency.name} at {dependency.address} {outcome} within {timeout:g} s "
                f"(--startup-timeout): {reason}; {dependency.hint}"
            )
        if not warned:
            warned = True
            logger.warning(
                "%s at %s does not respond yet (%s); waiting up to %.0f s more",
                dependency.name,
                dependency.address,
                reason,
                remaining,
            )
        if stop.wait(min(delay, remaining)):
            return False
        delay = min(delay * 2, RETRY_MAX_SECONDS)


class WorkerRuntime:
    """The threads that run jobs in one process: queue consumers, timer, lease keeper, calls, reconciler."""

    def __init__(self, ctx: WorkerContext) -> None:
        self._ctx = ctx
        settings = ctx.settings
        self._reconciler = Reconciler(
            ctx, settings.reconcile_interval_seconds, settings.reconcile_grace_seconds
        )
        self._lock = threading.Lock()
        self._started = False
        self._stopping = False

    def start(self) -> None:
        """Re-queue work left behind, then start the threads; does nothing once stopping has begun."""
        with self._lock:
            if self._stopping:
                return
            self._requeue_left_work()
            ctx = self._ctx
            ctx.queues.start(ctx.settings.consumed_queues)
            if ctx.timer is not None:
                ctx.timer.start()
            if ctx.leases is not None:
                ctx.leases.start()
            if ctx.calls is not None:
                ctx.calls.start()
            self._reconciler.start()
            self._started = True

    def _requeue_left_work(self) -> None:
        ctx = self._ctx
        if ctx.settings.redis_url:
            # Another live process may hold the leases of running jobs, and the entries it just
            # queued in the shared queues may not have been taken yet. So leases stay, and only
            # work older than the reconciler's grace is queued again; the reconciler picks up
            # expired leases.
            reconcile(ctx, dt.timedelta(seconds=ctx.settings.reconcile_grace_seconds))
            return
        if ctx.settings.shared_store:
            # PostgreSQL without Redis: other processes may run jobs under their leases, so those
            # stay. This process's queues are its own files, so work whose entry was lost with the
            # last run is queued again at once. A repeated entry is harmless because claims are
            # conditional.
            reconcile(ctx, dt.timedelta(0))
            return
        # Embedded mode: this process is the only one running jobs on this store, so no running
        # job is live, and the queue entries of the last run may have been lost with it.
        release_leases(ctx)
        reconcile(ctx, dt.timedelta(0))

    def stop_taking_work(self) -> None:
        """Stop taking queue entries and releasing due jobs; running jobs go on."""
        with self._lock:
            self._stopping = True
            if not self._started:
                return
        self._ctx.queues.stop_consuming()
        self._reconciler.stop()
        if self._ctx.timer is not None:
            self._ctx.timer.stop()

    def drain(self, deadline: float) -> list[str]:
        """Let running jobs finish until `deadline` (a time.monotonic() value), then release the rest.

        Returns the ids of the jobs whose leases were released and which were queued again, so
        another process runs them at once. Their external calls may still be running here
        until the process exits; a takeover makes the late outcome a no-op.
        """
        self.stop_taking_work()
        if not self._started:
            return []
        ctx = self._ctx
        ctx.queues.drain(max(deadline - time.monotonic(), 0.0))
        if ctx.calls is not None:
            ctx.calls.stop(max(deadline - time.monotonic(), 0.0))
        if ctx.leases is None:
            return []
        ctx.leases.stop()
        released = release_held_leases(ctx, ctx.leases.held())
        for start in range(0, len(released), ENQUEUE_CHUNK):
            ctx.queues.enqueue(RUN_JOBS, released[start : start + ENQUEUE_CHUNK])
        return released


def release_held_leases(ctx: WorkerContext, leases: list[tuple[str, int]]) -> list[str]:
    """Expire the leases of these (job id, attempt) pairs where the job still runs under that attempt.

    Returns the ids of the jobs released. The UPDATE is fenced by attempt like every
    outcome, so a job that finished or was taken over meanwhile is left alone.
    """
    if not leases:
        return []
    expired = ctx.clock.now() - dt.timedelta(microseconds=1)
    released: list[str] = []
    with ctx.store.write() as session:
        for job_id, attempt in leases:
            result = session.execute(
                update(Job)
                .where(Job.id == job_id, Job.status == "running", Job.attempt == attempt)
                .values(lease_until=expired)
                .execution_options(synchronize_session=False)
            )
            if rowcount(result):
                released.append(job_id)
    if released:
        logger.warning(
            "released the leases of %d jobs still running at the shutdown deadline, for another "
            "process to take over: %s",
            len(released),
            ", ".join(released[:20]) + (" ..." if len(released) > 20 else ""),
        )
    return released
