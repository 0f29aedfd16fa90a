"""The contract between the job runner and a step type."""

from __future__ import annotations

import dataclasses
import datetime as dt
import sqlite3
from typing import Any

from novulite.subscribers import template_variables


class PermanentStepError(Exception):
    """A failure that a retry cannot fix, such as an unsupported step or invalid controls."""


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

    @property
    def controls(self) -> dict[str, Any]:
        return dict(self.job.step.get("controlValues") or {})

    def template_variables(self) -> dict[str, Any]:
        """Return the variables a Liquid template can use, by namespace."""
        return {
            "payload": self.trigger.payload or {},
            "subscriber": template_variables(self.subscriber),
            "workflow": {
                "identifier": self.workflow.workflow_id,
                "name": self.workflow.name,
                "description": self.workflow.description,
                "tags": self.workflow.tags or [],
                "severity": self.workflow.severity,
            },
            "context": self.trigger.context or {},
            "actor": self.trigger.actor,
            "steps": {},
        }


@dataclasses.dataclass
class StepResult:
    """A completed step: its output, execution details to log and tasks to enqueue after commit.

    Each event is (task name, ids); the runner merges the ids of a batch into one task.
    """

    output: dict[str, Any] | None = None
    details: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    events: list[tuple[str, tuple[Any, ...]]] = dataclasses.field(default_factory=list)
    # Message rows for the runner to insert with the batch's outcomes.
    messages: list[dict[str, Any]] = dataclasses.field(default_factory=list)
