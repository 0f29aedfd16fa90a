"""Query-string parameters as Novu's SDKs send them.

novu-py sends parameters typed as numbers in float form (`limit=10.0`), booleans as
`true`/`false`, and arrays as repeated keys (`severity=high&severity=low`). Browsers
and other clients may use the bracket form (`severity[]=high`), which is accepted too.
"""

from __future__ import annotations

import math
from typing import Any

from novulite.errors import FieldError

MAX_LIMIT = 100


def whole_number(params: Any, name: str, default: int, minimum: int, errors: list[FieldError]) -> int:
    """Return the parameter as an int of at least `minimum`, reading `10.0` as 10."""
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    try:
        number = float(raw)
    except ValueError:
        errors.append(FieldError(name, "must be a number", raw))
        return default
    if not math.isfinite(number) or not number.is_integer():
        errors.append(FieldError(name, "must be a whole number", raw))
        return default
    if number < minimum:
        errors.append(FieldError(name, f"must be at least {minimum}", raw))
        return default
    return int(number)


def page_limit(params: Any, errors: list[FieldError], default: int = 10) -> int:
    """Return `limit`: at least 1, and lowered to MAX_LIMIT when larger."""
    return min(whole_number(params, "limit", default, 1, errors), MAX_LIMIT)


def page_number(params: Any, errors: list[FieldError]) -> tuple[int, int]:
    """Return the zero-based `page` and the `limit` of an offset-paged list, as Novu's v1 lists take them."""
    return whole_number(params, "page", 0, 0, errors), page_limit(params, errors)


def boolean(params: Any, name: str, errors: list[FieldError]) -> bool | None:
    """Return the parameter as a bool, or None when it is absent."""
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    if raw in ("true", "false"):
        return bool(raw == "true")
    errors.append(FieldError(name, "must be true or false", raw))
    return None


def values(params: Any, name: str) -> list[str]:
    """Return every non-empty value of a repeated parameter, in either the plain or the bracket form."""
    found = [*params.getall(name, []), *params.getall(f"{name}[]", [])]
    return [value for value in found if value != ""]


def one_of(
    params: Any, name: str, allowed: tuple[str, ...], errors: list[FieldError], *, many: bool = False
) -> list[str]:
    """Return the parameter's values that are in `allowed`, and report the others in `errors`.

    Only the first value counts unless `many` is set.
    """
    if many:
        found = values(params, name)
    else:
        first = params.get(name)
        found = [first] if first else []
    for value in found:
        if value not in allowed:
            errors.append(FieldError(name, f"must be one of {', '.join(allowed)}", value))
    return [value for value in found if value in allowed]
