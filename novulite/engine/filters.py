"""Novu's legacy step filters: field conditions on the payload, the subscriber and previous steps.

A step's `filters` is a list of groups
`{isNegated, type, value: "AND"|"OR", children: [condition, ...]}`. The step runs
when any group passes, as in Novu's message matcher; an empty list lets it run.
A group with no children passes, and a negated group passes when its children do not.

A field condition is `{on: "payload"|"subscriber", field, operator, value}`, where
`field` is a dotted path and `value` a string that is converted to the type of the
actual value before comparing (Novu's parseValue). LIKE is a case-insensitive
substring match. A previous-step condition is
`{on: "previousStep", step: <stepId>, stepType: "read"|"seen"|"unread"|"unseen"}` on
an earlier in-app step's message; it passes when that step sent no message.
"""

from __future__ import annotations

from typing import Any

from novulite.engine import jsonlogic

OPERATORS = (
    "EQUAL",
    "NOT_EQUAL",
    "LARGER",
    "SMALLER",
    "LARGER_EQUAL",
    "SMALLER_EQUAL",
    "IN",
    "NOT_IN",
    "IS_DEFINED",
    "NOT_DEFINED",
    "LIKE",
    "NOT_LIKE",
)
FIELD_SOURCES = ("payload", "subscriber")
PREVIOUS_STEP = "previousStep"
PREVIOUS_STEP_TYPES = ("read", "seen", "unread", "unseen")
GROUP_OPERATORS = ("AND", "OR")

_ABSENT: Any = object()


def check(filters: Any) -> list[tuple[str, str]]:
    """Return (path inside `filters`, problem) for every invalid part of a step's filters."""
    if not isinstance(filters, list):
        return [("", "must be an array of filter groups")]
    problems: list[tuple[str, str]] = []
    for index, group in enumerate(filters):
        path = f"[{index}]"
        if not isinstance(group, dict):
            problems.append((path, "must be an object {isNegated, type, value, children}"))
            continue
        if group.get("value", "AND") not in GROUP_OPERATORS:
            problems.append((f"{path}.value", "must be AND or OR"))
        if not isinstance(group.get("isNegated", False), bool):
            problems.append((f"{path}.isNegated", "must be true or false"))
        children = group.get("children", [])
        if not isinstance(children, list):
            problems.append((f"{path}.children", "must be an array of conditions"))
            continue
        for child_index, child in enumerate(children):
            problems.extend(_check_condition(child, f"{path}.children[{child_index}]"))
    return problems


def _check_condition(condition: Any, path: str) -> list[tuple[str, str]]:
    if not isinstance(condition, dict):
        return [(path, "must be an object {on, field, operator, value}")]
    on = condition.get("on")
    if on == PREVIOUS_STEP:
        problems = []
        if not isinstance(condition.get("step"), str) or not condition["step"]:
            problems.append((f"{path}.step", "is required: the stepId of an earlier step"))
        if condition.get("stepType") not in PREVIOUS_STEP_TYPES:
            problems.append((f"{path}.stepType", f"must be one of {', '.join(PREVIOUS_STEP_TYPES)}"))
        return problems
    if on not in FIELD_SOURCES:
        return [
            (
                f"{path}.on",
                f"must be one of {', '.join((*FIELD_SOURCES, PREVIOUS_STEP))}; "
                "webhook, tenant and online-status filters are not supported",
            )
        ]
    problems = []
    if not isinstance(condition.get("field"), str) or not condition["field"]:
        problems.append((f"{path}.field", "is required: a dotted path such as data.plan"))
    if condition.get("operator") not in OPERATORS:
        problems.append((f"{path}.operator", f"must be one of {', '.join(OPERATORS)}"))
    value = condition.get("value")
    if condition.get("operator") not in ("IS_DEFINED", "NOT_DEFINED") and not isinstance(
        value, str | int | float | bool
    ):
        problems.append((f"{path}.value", "is required: the value to compare with, as a string"))
    return problems


def passes(filters: list[Any], data: dict[str, Any]) -> bool:
    """Return whether a step with these filters runs; `data` has `payload`, `subscriber` and `steps`."""
    if not filters:
        return True
    return any(_group_passes(group, data) for group in filters)


def _group_passes(group: dict[str, Any], data: dict[str, Any]) -> bool:
    children = group.get("children") or []
    if not children:
        passed = True
    elif group.get("value", "AND") == "OR":
        passed = any(_condition_passes(child, data) for child in children)
    else:
        passed = all(_condition_passes(child, data) for child in children)
    return not passed if group.get("isNegated") else passed


def _condition_passes(condition: dict[str, Any], data: dict[str, Any]) -> bool:
    if condition.get("on") == PREVIOUS_STEP:
        return _previous_step_passes(condition, data)
    actual = jsonlogic.lookup(data, f"{condition['on']}.{condition['field']}", _ABSENT)
    operator = condition["operator"]
    if operator == "IS_DEFINED":
        return actual is not _ABSENT
    if operator == "NOT_DEFINED":
        return actual is _ABSENT
    if actual is _ABSENT:
        # An absent field fails every positive comparison, so only the negated operators pass.
        return operator in ("NOT_EQUAL", "NOT_IN", "NOT_LIKE")
    expected = _parse_value(actual, condition.get("value"))
    return _compare(operator, actual, expected)


def _compare(operator: str, actual: Any, expected: Any) -> bool:
    if operator == "EQUAL":
        return jsonlogic.strict_equal(actual, expected)
    if operator == "NOT_EQUAL":
        return not jsonlogic.strict_equal(actual, expected)
    if operator == "LARGER":
        return jsonlogic.less(expected, actual)
    if operator == "SMALLER":
        return jsonlogic.less(actual, expected)
    if operator == "LARGER_EQUAL":
        return jsonlogic.less(expected, actual, or_equal=True)
    if operator == "SMALLER_EQUAL":
        return jsonlogic.less(actual, expected, or_equal=True)
    if operator in ("IN", "NOT_IN"):
        # As in Novu: the actual value, an array or a string, includes the filter's value.
        found = _includes(actual, expected)
        return found if operator == "IN" else not found
    if operator in ("LIKE", "NOT_LIKE"):
        found = isinstance(actual, str) and jsonlogic.to_string(expected).lower() in actual.lower()
        return found if operator == "LIKE" else not found
    return False


def _includes(actual: Any, expected: Any) -> bool:
    if isinstance(actual, str):
        return jsonlogic.to_string(expected) in actual
    if isinstance(actual, list):
        return any(jsonlogic.loose_equal(item, expected) for item in actual)
    return False


def _parse_value(actual: Any, value: Any) -> Any:
    """Convert the filter's value to the actual value's type, as Novu's parseValue does."""
    if isinstance(actual, bool):
        return value is True or value == "true"
    if isinstance(actual, int | float):
        return jsonlogic.to_number(value)
    if isinstance(actual, str):
        return jsonlogic.to_string(value)
    return value


def _previous_step_passes(condition: dict[str, Any], data: dict[str, Any]) -> bool:
    output = (data.get("steps") or {}).get(condition["step"])
    if not isinstance(output, dict) or "read" not in output:
        return True
    step_type = condition["stepType"]
    flag = bool(output["seen"] if step_type in ("seen", "unseen") else output["read"])
    return not flag if step_type in ("unread", "unseen") else flag
