"""Threads that run steps' external calls, so that a slow remote does not hold up the standard queue.

The standard queue's worker claims a job and hands its call over here, then goes
on with the next batch. In-app delivery therefore keeps its latency while
http_request steps wait on the network.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

logger = logging.getLogger("novulite.worker")

# Each thread mostly waits on the network, so this many remotes can be slow at once before calls queue up.
CALL_THREADS = 8


class CallPool:
    """A fixed set of daemon threads that run submitted functions in order.

    Daemon threads do not keep the process alive at exit. A call cut off that way
    leaves its job running under a lease, and the next start retries it.
    """

    def __init__(self, threads: int = CALL_THREADS) -> None:
        self.threads = threads
        self._queue: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self._workers = [
            threading.Thread(target=self._work, name=f"novulite-calls-{index}", daemon=True)
            for index in range(threads)
        ]
        self._started = False

    def start(self) -> None:
        self._started = True
        for worker in self._workers:
            worker.start()

    def submit(self, function: Callable[[], None]) -> None:
        self._queue.put(function)

    def backlog(self) -> int:
        """Return how many submitted calls have not started yet."""
        return self._queue.qsize()

    def stop(self, timeout: float) -> None:
        """Let running calls finish for up to `timeout` seconds in all; calls not started are dropped."""
        if not self._started:
            return
        dropped = 0
        while True:
            try:
                if self._queue.get_nowait() is not None:
                    dropped += 1
            except queue.Empty:
                break
        if dropped:
            logger.info(
                "%d external calls had not started; their jobs run again when their leases expire", dropped
            )
        for _ in self._workers:
            self._queue.put(None)
        deadline = time.monotonic() + timeout
        for worker in self._workers:
            worker.join(max(deadline - time.monotonic(), 0.0))

    def _work(self) -> None:
        while True:
            function = self._queue.get()
            if function is None:
                return
            try:
                function()
            except Exception:
                logger.exception("an external call failed unexpectedly")
