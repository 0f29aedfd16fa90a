"""Start-up and shutdown of a `novulite serve` process, around uvicorn's own.

uvicorn serves HTTP at once, and the health check returns 503 until the job store
and Redis respond and the queue consumers run. On SIGTERM uvicorn stops listening
and calls `begin_shutdown` (see cli._GracefulServer) before it waits for open
requests: inbox sockets close with 1001 so clients reconnect to another process,
and the queue consumers stop taking entries. The drain of running jobs then runs
beside uvicorn's wait for requests, both bounded by one deadline, and
`finish_shutdown` in the lifespan waits for it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time

from novulite.db.engine import create_sync_engine
from novulite.realtime import WS_CLOSE_GOING_AWAY
from novulite.runtime import StartupState, StartupTimedOut, WorkerRuntime, dependencies_of, wait_for
from novulite.services import Services

logger = logging.getLogger("novulite.lifecycle")

# Seconds that inbox sockets get to send their close frames before uvicorn closes the connections.
SOCKET_CLOSE_SECONDS = 1.0


class ServeLifecycle:
    """One serve process from start to exit, shared by the lifespan, the server and the health check."""

    def __init__(self, services: Services) -> None:
        self._services = services
        self.startup = StartupState(waiting_for="the job store")
        self.runtime = WorkerRuntime(services.worker) if services.settings.runs_jobs else None
        self._stop = threading.Event()
        self._starting: asyncio.Task[None] | None = None
        self._draining: asyncio.Task[list[str]] | None = None
        self._deadline: float | None = None
        self.ready = False

    @property
    def failed(self) -> bool:
        return self.startup.failure is not None

    def start(self) -> None:
        """Wait for the job store and Redis in the background, and start the consumers once they respond."""
        self._starting = asyncio.create_task(self._start_when_ready(), name="novulite-startup")

    async def _start_when_ready(self) -> None:
        settings = self._services.settings
        engine = create_sync_engine(settings.database_target, writer=False)
        try:
            responded = await asyncio.to_thread(
                wait_for,
                dependencies_of(settings, engine),
                settings.startup_timeout_seconds,
                self._stop,
                self.startup,
            )
        except StartupTimedOut as exc:
            self.startup.failure = str(exc)
            logger.error("start-up failed: %s", exc)
            return
        finally:
            engine.dispose()
        if not responded:
            return
        if self.runtime is not None:
            try:
                await asyncio.to_thread(self.runtime.start)
            except Exception as exc:
                # Without consumers the process would serve 503s for good, so it exits instead.
                self.startup.failure = f"starting the queue consumers failed: {exc!r}"
                logger.exception("start-up failed: starting the queue consumers failed")
                return
        self.ready = True

    async def begin_shutdown(self) -> None:
        """Close the inbox sockets with 1001, stop taking queue entries and start draining running jobs."""
        if self._deadline is not None:
            return
        settings = self._services.settings
        self._deadline = time.monotonic() + settings.shutdown_timeout_seconds
        self._stop.set()
        logger.info(
            "shutting down: running jobs get up to %g s to finish (--shutdown-timeout)",
            settings.shutdown_timeout_seconds,
        )
        await self._close_sockets()
        if self._starting is not None:
            await self._starting
        if self.runtime is not None:
            self._draining = asyncio.create_task(asyncio.to_thread(self.runtime.drain, self._deadline))

    def seconds_left(self) -> float:
        """Return the seconds left before the shutdown deadline, or the whole timeout before shutdown."""
        if self._deadline is None:
            return self._services.settings.shutdown_timeout_seconds
        return max(self._deadline - time.monotonic(), 0.0)

    async def _close_sockets(self) -> None:
        hub = self._services.hub
        if hub.connection_count == 0:
            return
        closing = hub.connection_count
        hub.finish_all(WS_CLOSE_GOING_AWAY)
        deadline = time.monotonic() + SOCKET_CLOSE_SECONDS
        while hub.connection_count and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        logger.info("closed %d inbox sockets with 1001 (going away)", closing - hub.connection_count)

    async def finish_shutdown(self) -> None:
        """Wait for the drain that begin_shutdown started, starting it first if it has not."""
        await self.begin_shutdown()
        if self._draining is not None:
            await self._draining
