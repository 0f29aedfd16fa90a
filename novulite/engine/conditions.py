"""Step conditions: the `skip` JSONLogic control value and Novu's legacy `filters`.

Both are checked when a workflow is saved and evaluated before the step runs, on
the same data that templates see: payload, subscriber, steps, workflow, context, actor.
"""

from __future__ import annotations

from typing import Any

from novulite.engine import filters, jsonlogic

SKIPPED_BY_CONDITION = "skipped by condition"


class ConditionError(Exception):
    """A condition that could not be evaluated; the job fails with this message."""


def check(controls: dict[str, Any]) -> list[tuple[str, str]]:
    """Return (control name or path, problem) for each invalid condition among a step's control values."""
    problems: list[tuple[str, str]] = []
    skip = controls.get("skip")
    if skip is not None:
        if not isinstance(skip, dict):
            problems.append(("skip", 'must be a JSONLogic object, such as {"==": [{"var": "payload.x"}, 1]}'))
        else:
            try:
                jsonlogic.check(skip)
            except jsonlogic.JsonLogicError as exc:
                problems.append(("skip", str(exc)))
    if "filters" in controls and controls["filters"] is not None:
        problems.extend((f"filters{path}", problem) for path, problem in filters.check(controls["filters"]))
    return problems


def skip_reason(controls: dict[str, Any], data: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """Return (reason, details) when the step's conditions skip it, or None when it runs."""
    skip = controls.get("skip")
    # An empty object is the "no condition" a cleared condition editor leaves behind.
    if isinstance(skip, dict) and skip:
        try:
            result = jsonlogic.evaluate(skip, data)
        except jsonlogic.JsonLogicError as exc:
            raise ConditionError(f"the skip condition could not be evaluated: {exc}") from exc
        if jsonlogic.truthy(result):
            return SKIPPED_BY_CONDITION, {"reason": "condition", "skip": skip}
    step_filters = controls.get("filters")
    if step_filters:
        # Checked again here because a workflow saved before filters were checked may hold any value.
        problems = filters.check(step_filters)
        if problems:
            path, problem = problems[0]
            raise ConditionError(f"the step's filters are invalid: filters{path} {problem}")
        if not filters.passes(step_filters, data):
            return SKIPPED_BY_CONDITION, {"reason": "condition", "filters": step_filters}
    return None
