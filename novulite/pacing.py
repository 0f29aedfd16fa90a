"""Give the HTTP API the interpreter first while it takes a burst of triggers.

The API and the queue consumers are threads of one process and share one
interpreter lock, which has no notion of priority. Under a burst, consumers that
run flat out would take most of the lock and slow every acknowledgement, although
a trigger is safe on disk from the moment it is acknowledged. The pacer caps the
consumers' combined CPU time at a share of wall time while the intake reports
bursts, so acknowledgements stay fast and deliveries catch up once the burst ends.
At a steady, moderate rate the intake reports no bursts and the pacer does nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

logger = logging.getLogger("novulite.pacing")

# The intake's writer commits one batch at a time. When the API is saturated, new
# triggers arrive while every commit runs, so the next batch is already waiting when
# a commit ends. A running average of how often that happens marks a burst.
BACKLOG_WEIGHT = 0.2
BURST_BACKLOG = 0.8
# How long the average must stay at BURST_BACKLOG or above before the pacer starts.
# A pause of the event loop (a garbage collection, a WAL checkpoint) backs up a few
# commits in a row at any rate, but only a burst keeps backing them up.
BURST_CONFIRM_SECONDS = 0.1
# How long one burst report keeps the pacer on, so a short lull does not switch it off.
BURST_HOLD_SECONDS = 0.25
# The consumers' combined share of wall time while a burst lasts.
BACKGROUND_SHARE = 0.10
# Maximum single wait, so a consumer keeps checking for shutdown.
MAX_WAIT_SECONDS = 0.1


class Pacer:
    def __init__(
        self,
        background_share: float = BACKGROUND_SHARE,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not 0 < background_share <= 1:
            raise ValueError("background_share must be in (0, 1]")
        self._debt_factor = (1 - background_share) / background_share
        self._monotonic = monotonic
        self._sleep = sleep
        self._lock = threading.Lock()
        self._burst_until = 0.0
        self._next_start = 0.0
        self._backlog = 0.0
        self._above_since: float | None = None

    def note_commit(self, backlogged: bool) -> None:
        """Called by the intake at each commit, with whether triggers were already waiting for it."""
        self._backlog += BACKLOG_WEIGHT * (float(backlogged) - self._backlog)
        if self._backlog < BURST_BACKLOG:
            self._above_since = None
            return
        now = self._monotonic()
        if now < self._burst_until:
            # An ongoing burst is extended without waiting for a new confirmation.
            self._burst_until = now + BURST_HOLD_SECONDS
            return
        if self._above_since is None:
            self._above_since = now
        if now - self._above_since >= BURST_CONFIRM_SECONDS:
            self._burst_until = now + BURST_HOLD_SECONDS

    @property
    def in_burst(self) -> bool:
        return self._monotonic() < self._burst_until

    def wait_turn(self) -> None:
        """Block a consumer until the background share allows it to run again."""
        while True:
            now = self._monotonic()
            with self._lock:
                wait = min(self._next_start, self._burst_until) - now
            if wait <= 0:
                return
            self._sleep(min(wait, MAX_WAIT_SECONDS))

    def charge(self, cpu_seconds: float) -> None:
        """Record CPU time a consumer just used; during a burst it pushes back the next turn."""
        if cpu_seconds <= 0:
            return
        now = self._monotonic()
        if now >= self._burst_until:
            return
        with self._lock:
            self._next_start = max(self._next_start, now) + cpu_seconds * self._debt_factor
