"""`novulite worker`: a process that runs queue consumers only, beside `serve` processes on other hosts."""

from __future__ import annotations

import logging
import signal
import threading
import time
from types import FrameType

from novulite import __version__
from novulite.app import build_worker_context, describe_mode
from novulite.clock import SystemClock
from novulite.config import Settings
from novulite.db.engine import create_sync_engine
from novulite.db.migrate import SchemaTooNewError
from novulite.db.store import Store
from novulite.limiter.connect import describe_limiter
from novulite.queues import QUEUE_NAMES
from novulite.realtime import Hub
from novulite.runtime import StartupTimedOut, WorkerRuntime, dependencies_of, wait_for

logger = logging.getLogger("novulite.lifecycle")


def _stop_on_signals(stop: threading.Event) -> None:
    """Set `stop` on SIGTERM or SIGINT; a second SIGINT ends the process at once, as Ctrl+C twice does."""

    def handle(signum: int, frame: FrameType | None) -> None:
        if stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        logger.info("received %s", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)


def _log_start(settings: Settings) -> None:
    queues = settings.consumed_queues
    logger.info(
        "novulite %s worker starting, data directory %s, queues %s with %d threads each, %s, %s",
        __version__,
        settings.data_dir,
        ", ".join(queues if queues is not None else QUEUE_NAMES),
        settings.queue_workers,
        describe_mode(settings),
        describe_limiter(settings.redis_url, settings.data_dir),
    )


def run_worker(settings: Settings) -> int:
    """Run consumers until SIGTERM or SIGINT, drain them, and return the exit status."""
    stop = threading.Event()
    _stop_on_signals(stop)
    _log_start(settings)
    engine = create_sync_engine(settings.database_target, writer=False)
    try:
        # Only serve migrates the job store, so a worker that starts first waits for the schema too.
        responded = wait_for(
            dependencies_of(settings, engine, check_schema=True), settings.startup_timeout_seconds, stop
        )
    except (StartupTimedOut, SchemaTooNewError) as exc:
        logger.error("start-up failed: %s", exc)
        return 1
    finally:
        engine.dispose()
    if not responded:
        logger.info("stopped before start-up finished")
        return 0

    store = Store(settings.database_target)
    ctx = build_worker_context(settings, SystemClock(), store, Hub())
    runtime = WorkerRuntime(ctx)
    runtime.start()
    # A timeout keeps the wait short, so the signal handler's set() is seen at once on every platform.
    while not stop.wait(1.0):
        pass

    logger.info(
        "shutting down: running jobs get up to %g s to finish (--shutdown-timeout)",
        settings.shutdown_timeout_seconds,
    )
    runtime.drain(time.monotonic() + settings.shutdown_timeout_seconds)
    ctx.queues.close()
    if ctx.limiter is not None:
        ctx.limiter.close()
    store.dispose()
    logger.info("stopped")
    return 0
