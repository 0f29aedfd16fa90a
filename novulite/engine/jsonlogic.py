"""JSONLogic (jsonlogic.com), the expression language of a step's `skip` condition.

The semantics follow json-logic-js, the reference implementation from jsonlogic.com.
Values have JavaScript truthiness (an empty array is false), `==` is loose with type
coercion, and comparisons and arithmetic coerce to numbers. `and`/`or` return one of
their operands, and dividing by zero gives infinity or NaN. One deliberate
difference: arrays and objects compare by value, where JavaScript compares them by
identity, so that `==` on two equal arrays is true here.

An expression is checked once, when its workflow is saved (`check`), and then
evaluated against each run's data (`evaluate`). Evaluation reads only its data
and never runs code; a step budget bounds the work one evaluation may do.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

# Nesting and size limits for an expression, checked when a workflow is saved.
MAX_DEPTH = 64
MAX_NODES = 5_000
# Operations one evaluation may perform; array operations over a large payload count each item.
MAX_STEPS = 100_000


class JsonLogicError(ValueError):
    """An invalid expression, or an evaluation that went over its step budget."""


def is_operation(value: Any) -> bool:
    """Return whether `value` is an operation: an object with exactly one key, as JSONLogic defines it."""
    return isinstance(value, dict) and len(value) == 1


# --- JavaScript value semantics -------------------------------------------------------------


def truthy(value: Any) -> bool:
    """Return JSONLogic truthiness: JavaScript's, except that an empty array is false."""
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value != 0 and not math.isnan(value)
    if isinstance(value, str | list):
        return len(value) > 0
    return True


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def to_string(value: Any) -> str:
    """Convert like JavaScript's String(): null is "null", 3.0 is "3", arrays join with commas."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        if value.is_integer() and abs(value) < 1e21:
            return str(int(value))
        return repr(value)
    if isinstance(value, list):
        return ",".join("" if item is None else to_string(item) for item in value)
    if isinstance(value, dict):
        return "[object Object]"
    return str(value)


def to_number(value: Any) -> float:
    """Convert like JavaScript's Number(): null is 0, "" is 0, "12px" is NaN."""
    if value is None:
        return 0.0
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if _is_number(value):
        return float(value)
    if isinstance(value, list):
        return to_number(to_string(value))
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return 0.0
        if text in ("Infinity", "+Infinity", "-Infinity"):
            return -math.inf if text.startswith("-") else math.inf
        if _RADIX_LITERAL.match(text):
            return float(int(text, 0))
        # Python's float() also takes "nan", "inf" and "1_000", which JavaScript rejects.
        return float(text) if _DECIMAL_LITERAL.match(text) else math.nan
    return math.nan


def _to_int(value: Any) -> int:
    number = to_number(value)
    return 0 if math.isnan(number) or math.isinf(number) else int(number)


_DECIMAL_LITERAL = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?\Z")
_RADIX_LITERAL = re.compile(r"0(?:[xX][0-9a-fA-F]+|[oO][0-7]+|[bB][01]+)\Z")
_FLOAT_PREFIX = re.compile(r"\s*([+-]?(?:Infinity|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?))")


def parse_float(value: Any) -> float:
    """Convert like JavaScript's parseFloat(): the longest numeric prefix, so "12px" is 12 and "" is NaN."""
    if _is_number(value):
        return float(value)
    match = _FLOAT_PREFIX.match(to_string(value))
    if match is None:
        return math.nan
    text = match.group(1)
    if text.endswith("Infinity"):
        return -math.inf if text.startswith("-") else math.inf
    return float(text)


def strict_equal(left: Any, right: Any) -> bool:
    """Return JavaScript's `===`, with arrays and objects compared by value."""
    if _is_number(left) and _is_number(right):
        return bool(left == right)
    if type(left) is not type(right):
        return False
    return bool(left == right)


def loose_equal(left: Any, right: Any) -> bool:
    """Return JavaScript's `==`: null equals only null, other mixed types compare as numbers or strings."""
    if left is None or right is None:
        return left is None and right is None
    if strict_equal(left, right):
        return True
    if isinstance(left, list | dict) and isinstance(right, list | dict):
        return False
    if isinstance(left, bool):
        return loose_equal(to_number(left), right)
    if isinstance(right, bool):
        return loose_equal(left, to_number(right))
    if isinstance(left, list | dict):
        return loose_equal(to_string(left), right)
    if isinstance(right, list | dict):
        return loose_equal(left, to_string(right))
    if isinstance(left, str) and _is_number(right):
        return to_number(left) == right
    if _is_number(left) and isinstance(right, str):
        return bool(left == to_number(right))
    return False


def less(left: Any, right: Any, or_equal: bool = False) -> bool:
    """Return JavaScript's `<` or `<=`: strings compare as text, anything else as numbers."""
    if isinstance(left, list | dict):
        left = to_string(left)
    if isinstance(right, list | dict):
        right = to_string(right)
    if isinstance(left, str) and isinstance(right, str):
        return left <= right if or_equal else left < right
    a, b = to_number(left), to_number(right)
    return a <= b if or_equal else a < b


# --- operations on evaluated arguments ------------------------------------------------------


def _op_less(*args: Any) -> bool:
    if len(args) >= 3:
        return less(args[0], args[1], False) and less(args[1], args[2], False)
    return less(_arg(args, 0), _arg(args, 1), False)


def _op_less_equal(*args: Any) -> bool:
    if len(args) >= 3:
        return less(args[0], args[1], True) and less(args[1], args[2], True)
    return less(_arg(args, 0), _arg(args, 1), True)


def _op_greater(*args: Any) -> bool:
    return less(_arg(args, 1), _arg(args, 0), False)


def _op_greater_equal(*args: Any) -> bool:
    return less(_arg(args, 1), _arg(args, 0), True)


def _op_in(*args: Any) -> bool:
    needle, haystack = _arg(args, 0), _arg(args, 1)
    if isinstance(haystack, str):
        return to_string(needle) in haystack
    if isinstance(haystack, list):
        return any(strict_equal(needle, item) for item in haystack)
    return False


def _op_add(*args: Any) -> float:
    return sum((parse_float(arg) for arg in args), 0.0)


def _op_multiply(*args: Any) -> float:
    result = 1.0
    for arg in args:
        result *= parse_float(arg)
    return result


def _op_subtract(*args: Any) -> float:
    if len(args) == 1:
        return -to_number(args[0])
    return to_number(_arg(args, 0)) - to_number(_arg(args, 1))


def _op_divide(*args: Any) -> float:
    dividend, divisor = to_number(_arg(args, 0)), to_number(_arg(args, 1))
    if divisor == 0:
        if dividend == 0 or math.isnan(dividend):
            return math.nan
        return math.copysign(math.inf, dividend) * math.copysign(1.0, divisor)
    return dividend / divisor


def _op_modulo(*args: Any) -> float:
    dividend, divisor = to_number(_arg(args, 0)), to_number(_arg(args, 1))
    if divisor == 0 or math.isinf(dividend):
        return math.nan
    return math.fmod(dividend, divisor)


def _op_min(*args: Any) -> float:
    numbers = [to_number(arg) for arg in args]
    if any(math.isnan(number) for number in numbers):
        return math.nan
    return min(numbers, default=math.inf)


def _op_max(*args: Any) -> float:
    numbers = [to_number(arg) for arg in args]
    if any(math.isnan(number) for number in numbers):
        return math.nan
    return max(numbers, default=-math.inf)


def _op_cat(*args: Any) -> str:
    return "".join(to_string(arg) for arg in args)


def _op_substr(*args: Any) -> str:
    text = to_string(_arg(args, 0))
    start = _to_int(_arg(args, 1))
    if len(args) < 3:
        return text[start:]
    length = _to_int(args[2])
    begin = start if start >= 0 else max(len(text) + start, 0)
    end = begin + length if length >= 0 else len(text) + length
    return text[begin:end]


def _op_merge(*args: Any) -> list[Any]:
    merged: list[Any] = []
    for arg in args:
        merged.extend(arg if isinstance(arg, list) else [arg])
    return merged


def _arg(args: tuple[Any, ...], index: int) -> Any:
    return args[index] if index < len(args) else None


_PLAIN_OPERATIONS: dict[str, Callable[..., Any]] = {
    "==": lambda *a: loose_equal(_arg(a, 0), _arg(a, 1)),
    "===": lambda *a: strict_equal(_arg(a, 0), _arg(a, 1)),
    "!=": lambda *a: not loose_equal(_arg(a, 0), _arg(a, 1)),
    "!==": lambda *a: not strict_equal(_arg(a, 0), _arg(a, 1)),
    "!": lambda *a: not truthy(_arg(a, 0)),
    "!!": lambda *a: truthy(_arg(a, 0)),
    "<": _op_less,
    "<=": _op_less_equal,
    ">": _op_greater,
    ">=": _op_greater_equal,
    "in": _op_in,
    "+": _op_add,
    "-": _op_subtract,
    "*": _op_multiply,
    "/": _op_divide,
    "%": _op_modulo,
    "min": _op_min,
    "max": _op_max,
    "cat": _op_cat,
    "substr": _op_substr,
    "merge": _op_merge,
}


# --- checking -------------------------------------------------------------------------------


def check(logic: Any) -> None:
    """Raise JsonLogicError naming the place of the first unknown operator or over-deep nesting."""
    nodes = 0

    def visit(node: Any, path: str, depth: int) -> None:
        nonlocal nodes
        nodes += 1
        if nodes > MAX_NODES:
            raise JsonLogicError(f"has more than {MAX_NODES} nodes; simplify the expression")
        if depth > MAX_DEPTH:
            raise JsonLogicError(f"nests deeper than {MAX_DEPTH} levels at {path or 'the top'}")
        if isinstance(node, list):
            for index, item in enumerate(node):
                visit(item, f"{path}[{index}]", depth + 1)
            return
        if not is_operation(node):
            return
        operator, args = next(iter(node.items()))
        where = f"{path}.{operator}" if path else operator
        if operator not in OPERATORS:
            raise JsonLogicError(
                f"uses the unknown operator {operator!r} at {path or 'the top'}; "
                f"supported operators: {', '.join(sorted(OPERATORS))}"
            )
        for index, item in enumerate(args if isinstance(args, list) else [args]):
            visit(item, f"{where}[{index}]", depth + 1)

    visit(logic, "", 0)


# --- evaluation -----------------------------------------------------------------------------


class _Evaluator:
    def __init__(self) -> None:
        self.steps = 0
        # Operations that evaluate their own arguments, lazily or against other data.
        self.controls: dict[str, Callable[[list[Any], Any], Any]] = {
            "var": self._var,
            "missing": self._missing,
            "missing_some": self._missing_some,
            "and": self._and,
            "or": self._or,
            "if": self._if,
            "?:": self._if,
            "map": self._map,
            "filter": self._filter,
            "reduce": self._reduce,
            "all": self._all,
            "none": self._none,
            "some": self._some,
        }

    def apply(self, logic: Any, data: Any) -> Any:
        self.steps += 1
        if self.steps > MAX_STEPS:
            raise JsonLogicError(f"evaluation took more than {MAX_STEPS} steps")
        if isinstance(logic, list):
            return [self.apply(item, data) for item in logic]
        if not is_operation(logic):
            return logic
        operator, raw_args = next(iter(logic.items()))
        args = raw_args if isinstance(raw_args, list) else [raw_args]
        control = self.controls.get(operator)
        if control is not None:
            return control(args, data)
        operation = _PLAIN_OPERATIONS.get(operator)
        if operation is None:
            raise JsonLogicError(f"unknown operator {operator!r}")
        return operation(*(self.apply(arg, data) for arg in args))

    def _var(self, args: list[Any], data: Any) -> Any:
        values = [self.apply(arg, data) for arg in args]
        path, default = _arg(tuple(values), 0), _arg(tuple(values), 1)
        return lookup(data, path, default)

    def _missing(self, args: list[Any], data: Any) -> list[Any]:
        values = [self.apply(arg, data) for arg in args]
        keys = values[0] if values and isinstance(values[0], list) else values
        return [key for key in keys if lookup(data, key, None) in (None, "")]

    def _missing_some(self, args: list[Any], data: Any) -> list[Any]:
        need = to_number(self.apply(_arg(tuple(args), 0), data))
        options = self.apply(_arg(tuple(args), 1), data)
        if not isinstance(options, list):
            options = []
        missing = [key for key in options if lookup(data, key, None) in (None, "")]
        return [] if len(options) - len(missing) >= need else missing

    def _and(self, args: list[Any], data: Any) -> Any:
        current = None
        for arg in args:
            current = self.apply(arg, data)
            if not truthy(current):
                return current
        return current

    def _or(self, args: list[Any], data: Any) -> Any:
        current = None
        for arg in args:
            current = self.apply(arg, data)
            if truthy(current):
                return current
        return current

    def _if(self, args: list[Any], data: Any) -> Any:
        index = 0
        while index < len(args) - 1:
            if truthy(self.apply(args[index], data)):
                return self.apply(args[index + 1], data)
            index += 2
        if index == len(args) - 1:
            return self.apply(args[index], data)
        return None

    def _items(self, args: list[Any], data: Any) -> list[Any]:
        items = self.apply(_arg(tuple(args), 0), data)
        return items if isinstance(items, list) else []

    def _map(self, args: list[Any], data: Any) -> list[Any]:
        scoped = _arg(tuple(args), 1)
        return [self.apply(scoped, item) for item in self._items(args, data)]

    def _filter(self, args: list[Any], data: Any) -> list[Any]:
        scoped = _arg(tuple(args), 1)
        return [item for item in self._items(args, data) if truthy(self.apply(scoped, item))]

    def _reduce(self, args: list[Any], data: Any) -> Any:
        scoped = _arg(tuple(args), 1)
        accumulator = self.apply(_arg(tuple(args), 2), data)
        for item in self._items(args, data):
            accumulator = self.apply(scoped, {"current": item, "accumulator": accumulator})
        return accumulator

    def _all(self, args: list[Any], data: Any) -> bool:
        items = self._items(args, data)
        scoped = _arg(tuple(args), 1)
        # As in json-logic-js, `all` of an empty array is false.
        return bool(items) and all(truthy(self.apply(scoped, item)) for item in items)

    def _none(self, args: list[Any], data: Any) -> bool:
        scoped = _arg(tuple(args), 1)
        return not any(truthy(self.apply(scoped, item)) for item in self._items(args, data))

    def _some(self, args: list[Any], data: Any) -> bool:
        scoped = _arg(tuple(args), 1)
        return any(truthy(self.apply(scoped, item)) for item in self._items(args, data))


OPERATORS = frozenset(_PLAIN_OPERATIONS) | frozenset(_Evaluator().controls)


def lookup(data: Any, path: Any, default: Any = None) -> Any:
    """Return the value at a dotted `path` such as "payload.items.0.name", or `default` when it is absent.

    An empty or null path returns the data itself. A present null value is returned as null.
    """
    if path is None or path == "" or (isinstance(path, list) and not path):
        return data
    current = data
    for segment in to_string(path).split("."):
        if isinstance(current, dict):
            if segment not in current:
                return default
            current = current[segment]
        elif isinstance(current, list) and segment.isdigit() and int(segment) < len(current):
            current = current[int(segment)]
        else:
            # A null part way along the path counts as absent, as in json-logic-js.
            return default
    return current


def evaluate(logic: Any, data: Any) -> Any:
    """Evaluate an expression against `data`.

    Raises JsonLogicError for an unknown operator, or when evaluation goes over its step budget.
    """
    return _Evaluator().apply(logic, data)
