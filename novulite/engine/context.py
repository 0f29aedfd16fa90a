"""Dependencies shared by every queue task: job store, clock, queues and realtime publisher."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from novulite.clock import Clock
from novulite.config import Settings
from novulite.db.store import Store
from novulite.engine.calls import CallPool
from novulite.engine.leases import LeaseKeeper
from novulite.limiter import Limiter
from novulite.metrics import Metrics
from novulite.queues import Queues

# publish({(subscriber_pk, context_key): frames}): deliver frames to each subscriber's matching sockets.
Publisher = Callable[[dict[tuple[str, str], list[dict[str, Any]]]], None]


def _assume_sockets(subscriber_pk: str) -> bool:
    return True


@dataclasses.dataclass
class WorkerContext:
    store: Store
    clock: Clock
    queues: Queues
    settings: Settings
    publish: Publisher
    # Whether a subscriber may have an open socket; frames for others are not built at all.
    has_sockets: Callable[[str], bool] = _assume_sockets
    # Throttle windows shared by every worker; None where no limiter is configured.
    limiter: Limiter | None = None
    # The DueJobTimer that releases delayed jobs, notified of each new due time. None in tools without one.
    timer: Any = None
    # Renews the leases of jobs whose step runs outside a transaction. None in tools without one.
    leases: LeaseKeeper | None = None
    # Runs external calls off the queue's worker threads. None runs them inline, in the worker.
    calls: CallPool | None = None
    # Counts deliveries and failures for GET /metrics. None where metrics are off.
    metrics: Metrics | None = None
    # In Redis mode, publishes realtime events to every process (a realtime_redis.RedisFanout), and
    # the ws_socket_queue tasks publish instead of building frames. None delivers in this process.
    fanout: Any = None
