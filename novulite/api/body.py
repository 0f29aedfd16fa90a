"""Reading and checking JSON request bodies."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request

from novulite.errors import INVALID_FIELDS, INVALID_JSON, ApiError, FieldError


async def read_json_object(request: Request[Any, Any, Any], *, allow_empty: bool = False) -> dict[str, Any]:
    """Return the body as a dict; reject malformed JSON and non-object bodies with a 400."""
    return decode_json_object(await request.body(), allow_empty=allow_empty)


def decode_json_object(raw: bytes, *, allow_empty: bool = False) -> dict[str, Any]:
    """Decode a request body that must be a JSON object, raising a 400 ApiError otherwise."""
    if not raw.strip():
        if allow_empty:
            return {}
        raise ApiError(INVALID_JSON, detail="the body is empty", errors=[FieldError("body", "is empty")])
    try:
        value = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise ApiError(INVALID_JSON, detail=str(exc), errors=[FieldError("body", str(exc))]) from None
    except RecursionError:
        # msgspec decodes nested values recursively; about a thousand levels exhaust the stack.
        problem = "is nested too deeply; keep objects and arrays within a few hundred levels"
        raise ApiError(
            INVALID_JSON, detail=f"the body {problem}", errors=[FieldError("body", problem)]
        ) from None
    if not isinstance(value, dict):
        raise ApiError(
            INVALID_FIELDS,
            errors=[FieldError("body", f"must be a JSON object, got {json_type(value)}")],
        )
    return value


def json_type(value: Any) -> str:
    """Name a decoded JSON value's type as JSON calls it, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"
