"""The contract between the job runner and a step type."""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import sqlite3
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from novulite.engine.preferences import Resolution
from novulite.engine.variables import (
    actor_variables,
    context_variables,
    digest_variables,
    workflow_variables,
)
from novulite.limiter import Limiter
from novulite.subscribers import template_variables

if TYPE_CHECKING:
    from novulite.engine.context import WorkerContext


class StepError(Exception):
    """A failed step; `info` adds fields such as an HTTP status to the job's recorded error."""

    def __init__(self, message: str, **info: Any) -> None:
        super().__init__(message)
        self.info = info


class PermanentStepError(StepError):
    """A failure that a retry cannot fix, such as an unsupported step or invalid controls."""


class TransientStepError(StepError):
    """A failure that a later attempt may not meet, such as a refused connection or an HTTP 503."""


@dataclasses.dataclass
class StepContext:
    """Rows a step reads, as Core rows with one attribute per column.

    `connection` is inside the transaction that records the job's outcome.
    """

    connection: sqlite3.Connection
    job: Any
    notification: Any
    # The trigger's payload, overrides, context and actor.
    trigger: Any
    subscriber: Any
    workflow: Any
    now: dt.datetime
    # What later steps see of the notification's completed steps, by stepId.
    steps: dict[str, Any] = dataclasses.field(default_factory=dict)
    # The actor's stored subscriber row, when the trigger named an actor that exists.
    actor: Any = None
    # The subscriber's effective channel preferences for this workflow.
    preferences: Resolution | None = None
    # Throttle windows shared by every worker (WorkerContext.limiter).
    limiter: Limiter | None = None

    @property
    def controls(self) -> dict[str, Any]:
        return dict(self.job.step.get("controlValues") or {})

    @functools.cached_property
    def variables(self) -> dict[str, Any]:
        """The data a Liquid template or a step condition can use, by namespace."""
        return {
            "payload": self.trigger.payload or {},
            "subscriber": template_variables(self.subscriber),
            "workflow": workflow_variables(self.workflow),
            "steps": self.steps,
            "step": digest_variables(self.steps),
            "context": context_variables(self.trigger.context),
            "actor": actor_variables(self.trigger.actor, self.actor),
        }


@dataclasses.dataclass
class StepResult:
    """A finished step: its status, output, execution details to log and tasks to enqueue after commit.

    Each detail is (text, status, raw or None). Each event is (task name, ids); the
    runner merges the ids of a batch into one task.
    """

    output: dict[str, Any] | None = None
    details: list[tuple[str, str, dict[str, Any] | None]] = dataclasses.field(default_factory=list)
    events: list[tuple[str, tuple[Any, ...]]] = dataclasses.field(default_factory=list)
    # Message rows for the runner to insert with the batch's outcomes.
    messages: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    # "completed", "skipped" for a step that did not run, or "merged" for a digest event that
    # joined another job's digest. The chain goes on after completed and skipped, unless `halt` is set.
    status: str = "completed"
    # When set, the job waits: it becomes `delayed` until this instant, keeps `output`, and runs
    # again then. The handler recognises its second run by the output it left.
    wait_until: dt.datetime | None = None
    # When set, the pending jobs after this one take this status instead of running.
    halt: str | None = None


@dataclasses.dataclass
class ExternalCall:
    """Work that a step does outside the job store's transaction, such as a network request.

    A handler returns it instead of a StepResult. The runner commits the job's claim,
    calls `perform` with no transaction open while it renews the job's lease, and
    records the StepResult, or the StepError raised, only if the job still belongs
    to this attempt. `perform` must not use the StepContext's connection.
    """

    perform: Callable[[WorkerContext], StepResult]
    # The longest `perform` may take, in seconds; the lease is not renewed beyond it.
    max_seconds: float
    # The message row to keep with status error, and the job's error, when the job fails for good.
    failure_row: dict[str, Any] | None = None
