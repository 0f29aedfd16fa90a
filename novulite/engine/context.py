"""Dependencies shared by every queue task: job store, clock, queues and realtime publisher."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from novulite.clock import Clock
from novulite.config import Settings
from novulite.db.store import Store
from novulite.queues import Queues

# publish(subscriber_pk, context_key, frames): deliver frames to that subscriber's matching sockets.
Publisher = Callable[[str, str, list[dict[str, Any]]], None]


@dataclasses.dataclass
class WorkerContext:
    store: Store
    clock: Clock
    queues: Queues
    settings: Settings
    publish: Publisher
