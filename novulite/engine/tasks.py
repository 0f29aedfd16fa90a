"""Bind the engine's functions to their queues as Huey tasks."""

from __future__ import annotations

import functools
from collections.abc import Callable

from novulite.engine.context import WorkerContext
from novulite.engine.expansion import expand_notifications
from novulite.engine.runner import run_jobs
from novulite.engine.socket_events import counts_changed, messages_created
from novulite.engine.triggers import handle_triggers
from novulite.queues import (
    COUNTS_CHANGED,
    EXPAND_NOTIFICATIONS,
    HANDLE_TRIGGERS,
    MESSAGES_CREATED,
    PROCESS_SUBSCRIBER,
    RUN_JOBS,
    STANDARD,
    TRIGGER_HANDLER,
    WS_SOCKET,
)


def register_tasks(ctx: WorkerContext) -> None:
    registry: list[tuple[str, str, Callable[..., None]]] = [
        (TRIGGER_HANDLER, HANDLE_TRIGGERS, handle_triggers),
        (PROCESS_SUBSCRIBER, EXPAND_NOTIFICATIONS, expand_notifications),
        (STANDARD, RUN_JOBS, run_jobs),
        (WS_SOCKET, MESSAGES_CREATED, messages_created),
        (WS_SOCKET, COUNTS_CHANGED, counts_changed),
    ]
    for queue, name, function in registry:
        bound = functools.partial(function, ctx)
        functools.update_wrapper(bound, function)
        ctx.queues.register(queue, name, bound)
