"""Bind the engine's functions to their queues as Huey tasks."""

from __future__ import annotations

from collections.abc import Callable

from novulite.engine.active_jobs import record_active_jobs
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
    METRIC_ACTIVE_JOBS,
    PROCESS_SUBSCRIBER,
    RECORD_ACTIVE_JOBS,
    RUN_JOBS,
    STANDARD,
    TRIGGER_HANDLER,
    WS_SOCKET,
)

# Ids one task run handles at most, its own plus those folded in from waiting entries.
MAX_BATCH = 100

BatchFunction = Callable[[WorkerContext, list[str]], None]


def _folding(ctx: WorkerContext, name: str, function: BatchFunction) -> Callable[[list[str]], None]:
    """Wrap a batch function so that each run also takes the ids of entries waiting behind it."""

    def run(ids: list[str]) -> None:
        batch = list(ids)
        if len(batch) < MAX_BATCH:
            for waiting in ctx.queues.take_waiting(name):
                batch.extend(waiting)
                if len(batch) >= MAX_BATCH:
                    break
        function(ctx, batch)

    run.__name__ = name
    return run


def _publish_messages(ctx: WorkerContext, message_ids: list[str]) -> None:
    """Send new message ids to every process, each of which frames them for its own sockets."""
    ctx.fanout.publish_messages(message_ids)


def register_tasks(ctx: WorkerContext) -> None:
    batched: list[tuple[str, str, BatchFunction]] = [
        (TRIGGER_HANDLER, HANDLE_TRIGGERS, handle_triggers),
        (PROCESS_SUBSCRIBER, EXPAND_NOTIFICATIONS, expand_notifications),
        (STANDARD, RUN_JOBS, run_jobs),
        (WS_SOCKET, MESSAGES_CREATED, messages_created if ctx.fanout is None else _publish_messages),
    ]
    for queue, name, function in batched:
        ctx.queues.register(queue, name, _folding(ctx, name, function))

    def on_counts_changed(subscriber_pk: str, context: str) -> None:
        if ctx.fanout is None:
            counts_changed(ctx, subscriber_pk, context)
        else:
            ctx.fanout.publish_counts(subscriber_pk, context)

    ctx.queues.register(WS_SOCKET, COUNTS_CHANGED, on_counts_changed)

    def on_record_active_jobs() -> None:
        record_active_jobs(ctx)

    ctx.queues.register(METRIC_ACTIVE_JOBS, RECORD_ACTIVE_JOBS, on_record_active_jobs)
