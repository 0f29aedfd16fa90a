"""SQL expressions on JSON columns that compile for both job stores, SQLite and PostgreSQL.

SQLAlchemy's JSON type stores `json` on PostgreSQL, which has no equality operator, so
comparisons cast to `jsonb`. On SQLite the same expressions use the JSON1 functions.
Each construct is compiled per dialect when a statement runs, so callers build conditions
without knowing which store serves the request.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Boolean, ColumnElement, String, cast, exists, func, literal, or_, select
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.types import JSON


class json_text_items(FunctionElement[Any]):
    """The items of a JSON array as text, in a table with the column `value`.

    Use as `json_text_items(column).table_valued("value")`.
    """

    name = "json_text_items"
    inherit_cache = True


@compiles(json_text_items, "sqlite")
def _json_text_items_sqlite(element: json_text_items, compiler: SQLCompiler, **kw: Any) -> str:
    return f"json_each({compiler.process(element.clauses, **kw)})"


@compiles(json_text_items, "postgresql")
def _json_text_items_postgresql(element: json_text_items, compiler: SQLCompiler, **kw: Any) -> str:
    return f"json_array_elements_text(CAST({compiler.process(element.clauses, **kw)} AS json))"


class canonical_json(FunctionElement[Any]):
    """A JSON value in a form that compares equal when the values are equal, whatever the spacing."""

    name = "canonical_json"
    inherit_cache = True


@compiles(canonical_json, "sqlite")
def _canonical_json_sqlite(element: canonical_json, compiler: SQLCompiler, **kw: Any) -> str:
    return f"json({compiler.process(element.clauses, **kw)})"


@compiles(canonical_json, "postgresql")
def _canonical_json_postgresql(element: canonical_json, compiler: SQLCompiler, **kw: Any) -> str:
    return f"CAST({compiler.process(element.clauses, **kw)} AS jsonb)"


class json_merge(FunctionElement[Any]):
    """The first JSON object with the members of the second added or replaced, one level deep.

    SQLite's json_patch also merges nested objects and removes members set to null. The
    callers merge flat objects of booleans, so both forms give the same result.
    """

    name = "json_merge"
    type = JSON()
    inherit_cache = True


@compiles(json_merge, "sqlite")
def _json_merge_sqlite(element: json_merge, compiler: SQLCompiler, **kw: Any) -> str:
    return f"json_patch({compiler.process(element.clauses, **kw)})"


@compiles(json_merge, "postgresql")
def _json_merge_postgresql(element: json_merge, compiler: SQLCompiler, **kw: Any) -> str:
    first, second = (compiler.process(clause, **kw) for clause in element.clauses)
    return f"CAST(CAST({first} AS jsonb) || CAST({second} AS jsonb) AS json)"


class hour_text(FunctionElement[str]):
    """A stored instant's UTC hour as text, `YYYY-MM-DD HH`, the first 13 characters of its ISO form."""

    name = "hour_text"
    type = String()
    inherit_cache = True


@compiles(hour_text, "sqlite")
def _hour_text_sqlite(element: hour_text, compiler: SQLCompiler, **kw: Any) -> str:
    # SQLAlchemy stores a datetime on SQLite as text, `YYYY-MM-DD HH:MM:SS.ffffff`.
    return f"substr({compiler.process(element.clauses, **kw)}, 1, 13)"


@compiles(hour_text, "postgresql")
def _hour_text_postgresql(element: hour_text, compiler: SQLCompiler, **kw: Any) -> str:
    return f"to_char({compiler.process(element.clauses, **kw)}, 'YYYY-MM-DD HH24')"


class JsonHasAny(ColumnElement[bool]):
    """True when a JSON value equals an item of `values`, or is an array holding one.

    Equality is JavaScript's `===`: the JSON types must match, so the string "1" never
    equals the number 1, and true never equals 1. `path` names object members to descend
    into first; a value that is an object, or a path that is missing, never matches.
    """

    type = Boolean()
    # The values are bound parameters, so the statement is compiled again on every use.
    inherit_cache = False

    def __init__(self, column: Any, path: Sequence[str], values: Sequence[Any]) -> None:
        self.column = column
        self.path = tuple(path)
        self.values = list(values)

    @property
    def _from_objects(self) -> list[Any]:
        return self.column._from_objects


def _sqlite_item_matches(items: Any, value: Any) -> ColumnElement[bool]:
    """Return whether a json_each row equals `value` in value and JSON type."""
    if value is None:
        return items.c.type == "null"
    if isinstance(value, bool):
        return items.c.type == ("true" if value else "false")
    if isinstance(value, str):
        return (items.c.type == "text") & (items.c.value == literal(value))
    return items.c.type.in_(("integer", "real")) & (items.c.value == literal(value))


def _sqlite_has_any(element: JsonHasAny) -> ColumnElement[bool]:
    json_path = "$" + "".join(f'."{key}"' for key in element.path)
    items = func.json_each(element.column, json_path).table_valued("value", "type")
    matches = or_(*(_sqlite_item_matches(items, value) for value in element.values))
    found = exists(select(1).select_from(items).where(matches))
    # json_each walks an object's members, so a stored object must not match a scalar.
    return (func.json_type(element.column, json_path) != "object") & found


def _postgresql_has_any(element: JsonHasAny) -> ColumnElement[bool]:
    stored: Any = cast(element.column, JSONB)
    if element.path:
        stored = stored[element.path]
    # jsonb containment compares type and value, and an array contains a scalar that is one
    # of its top-level items. An object never contains a scalar, and NULL contains nothing.
    return or_(*(stored.contains(cast(literal(json.dumps(value)), JSONB)) for value in element.values))


@compiles(JsonHasAny, "sqlite")
def _json_has_any_sqlite(element: JsonHasAny, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(_sqlite_has_any(element).self_group(), **kw)


@compiles(JsonHasAny, "postgresql")
def _json_has_any_postgresql(element: JsonHasAny, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(_postgresql_has_any(element).self_group(), **kw)
