"""The long-lived parts of one server process, shared by request handlers and tasks."""

from __future__ import annotations

import dataclasses
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from novulite.clock import Clock
from novulite.config import Settings
from novulite.db.store import Store
from novulite.directory import Directory
from novulite.engine.context import WorkerContext
from novulite.intake import TriggerIntake
from novulite.queues import Queues
from novulite.realtime import Hub
from novulite.security import TokenSigner


@dataclasses.dataclass
class Services:
    settings: Settings
    clock: Clock
    store: Store
    reader: AsyncEngine
    writer: AsyncEngine
    queues: Queues
    hub: Hub
    intake: TriggerIntake
    directory: Directory
    inbox_tokens: TokenSigner
    admin_sessions: TokenSigner
    csrf_secret: str
    worker: WorkerContext
    accepting: bool = True
    # Where API rate limits keep their buckets (an api.rate_limits.TokenTaker); None while they are off.
    rate_limiter: Any = None
    # Start-up and shutdown of the process (a lifecycle.ServeLifecycle), set once the app is built.
    lifecycle: Any = None
