"""The JSONLogic evaluator behind step conditions: operators, coercion, checks and limits."""

from __future__ import annotations

import math
from typing import Any

import pytest

from novulite.engine.jsonlogic import MAX_DEPTH, JsonLogicError, check, evaluate, truthy

DATA = {
    "payload": {"count": 3, "name": "Ada", "tags": ["vip", "beta"], "empty": "", "none": None},
    "subscriber": {"email": "ada@example.com", "data": {"plan": "pro"}},
    "steps": {"inbox": {"read": False, "seen": True}},
    "list": [{"n": 1}, {"n": 2}, {"n": 3}],
}

CASES: list[tuple[Any, Any]] = [
    # var: dotted paths, array indexes, defaults and the whole data
    ({"var": "payload.name"}, "Ada"),
    ({"var": ["payload.missing", "fallback"]}, "fallback"),
    ({"var": "payload.tags.1"}, "beta"),
    ({"var": "payload.none"}, None),
    ({"var": ["payload.none.deeper", 7]}, 7),
    ({"var": "subscriber.data.plan"}, "pro"),
    ({"var": "steps.inbox.seen"}, True),
    ({"var": ""}, DATA),
    ({"var": {"cat": ["payload.", "count"]}}, 3),
    # equality, loose and strict
    ({"==": [1, "1"]}, True),
    ({"==": [0, False]}, True),
    ({"==": [None, None]}, True),
    ({"==": [None, 0]}, False),
    ({"==": ["", 0]}, True),
    ({"===": [1, "1"]}, False),
    ({"===": [1, 1.0]}, True),
    ({"!=": [1, "2"]}, True),
    ({"!==": [1, "1"]}, True),
    ({"==": [[1, 2], [1, 2]]}, True),
    # negation and truthiness: an empty array is false, "0" is true
    ({"!": [[]]}, True),
    ({"!": ["0"]}, False),
    ({"!!": [[0]]}, True),
    ({"!!": ""}, False),
    # and/or return an operand and stop early
    ({"and": [True, "a", 3]}, 3),
    ({"and": [True, "", {"var": "payload.missing.x"}]}, ""),
    ({"or": [False, 0, "x"]}, "x"),
    ({"or": [False, None]}, None),
    # if and ?: with else-if chains
    ({"if": [False, "a", True, "b", "c"]}, "b"),
    ({"if": [False, "a", False, "b", "c"]}, "c"),
    ({"if": [False, "a"]}, None),
    ({"?:": [{"var": "payload.count"}, "yes", "no"]}, "yes"),
    # comparisons, including between and JavaScript coercion
    ({"<": [1, 2]}, True),
    ({"<": [1, 2, 3]}, True),
    ({"<": [1, 3, 3]}, False),
    ({"<=": [1, 3, 3]}, True),
    ({">": ["10", 9]}, True),
    ({">": ["10", "9"]}, False),
    ({">=": [{"var": "payload.count"}, 3]}, True),
    ({"<": ["abc", 1]}, False),
    ({"<": [None, 1]}, True),
    # in: substring or array membership
    ({"in": ["vip", {"var": "payload.tags"}]}, True),
    ({"in": ["example", {"var": "subscriber.email"}]}, True),
    ({"in": ["x", None]}, False),
    # arithmetic
    ({"+": [1, "2", 3.5]}, 6.5),
    ({"+": ["3px"]}, 3),
    ({"-": [10, 4]}, 6),
    ({"-": [2]}, -2),
    ({"*": [2, "3"]}, 6),
    ({"/": [7, 2]}, 3.5),
    ({"/": [1, 0]}, math.inf),
    ({"%": [7, 3]}, 1),
    ({"%": [-7, 3]}, -1),
    ({"min": [3, 1, "2"]}, 1),
    ({"max": [3, 1, "7"]}, 7),
    # strings
    ({"cat": ["a", 1, 2.0, None, True]}, "a12nulltrue"),
    ({"substr": ["jsonlogic", 4]}, "logic"),
    ({"substr": ["jsonlogic", -5, 2]}, "lo"),
    ({"substr": ["jsonlogic", 1, -3]}, "sonlo"),
    # missing and missing_some
    ({"missing": ["payload.name", "payload.empty", "payload.absent"]}, ["payload.empty", "payload.absent"]),
    ({"missing": {"merge": ["payload.name", "payload.absent"]}}, ["payload.absent"]),
    ({"missing_some": [1, ["payload.name", "payload.absent"]]}, []),
    ({"missing_some": [2, ["payload.name", "payload.absent"]]}, ["payload.absent"]),
    # array operations work on each item as the data
    ({"map": [{"var": "list"}, {"*": [{"var": "n"}, 2]}]}, [2, 4, 6]),
    ({"filter": [{"var": "list"}, {">": [{"var": "n"}, 1]}]}, [{"n": 2}, {"n": 3}]),
    ({"reduce": [{"var": "list"}, {"+": [{"var": "current.n"}, {"var": "accumulator"}]}, 0]}, 6),
    ({"all": [{"var": "list"}, {">": [{"var": "n"}, 0]}]}, True),
    ({"all": [[], True]}, False),
    ({"some": [{"var": "list"}, {"==": [{"var": "n"}, 2]}]}, True),
    ({"none": [{"var": "list"}, {"==": [{"var": "n"}, 5]}]}, True),
    # literals and objects that are not operations
    ("text", "text"),
    ([1, {"var": "payload.count"}], [1, 3]),
    ({"a": 1, "b": 2}, {"a": 1, "b": 2}),
]


@pytest.mark.parametrize(("logic", "expected"), CASES, ids=[str(case[0])[:60] for case in CASES])
def test_evaluate(logic: Any, expected: Any) -> None:
    assert evaluate(logic, DATA) == expected


def test_nan_results_are_falsy() -> None:
    result = evaluate({"-": ["abc", 1]}, DATA)
    assert math.isnan(result)
    assert truthy(result) is False


def test_check_accepts_every_operator_in_cases() -> None:
    for logic, _ in CASES:
        check(logic)


@pytest.mark.parametrize(
    ("logic", "place"),
    [
        ({"regex": ["a", "b"]}, "the top"),
        ({"and": [True, {"startsWith": ["a", "b"]}]}, "and[1]"),
        ({"if": [{"==": [1, 1]}, {"nope": []}, 3]}, "if[1]"),
    ],
)
def test_check_names_unknown_operator(logic: Any, place: str) -> None:
    with pytest.raises(JsonLogicError) as raised:
        check(logic)
    assert "unknown operator" in str(raised.value)
    assert f"at {place};" in str(raised.value)


def test_check_rejects_deep_nesting() -> None:
    logic: Any = True
    for _ in range(MAX_DEPTH + 1):
        logic = {"!": [logic]}
    with pytest.raises(JsonLogicError, match="nests deeper"):
        check(logic)


def test_evaluation_stops_at_step_budget() -> None:
    data = {"rows": [[0] * 1000] * 200}
    logic = {"map": [{"var": "rows"}, {"map": [{"var": ""}, {"+": [1, 1]}]}]}
    with pytest.raises(JsonLogicError, match="steps"):
        evaluate(logic, data)
