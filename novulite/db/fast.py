"""Direct DBAPI access for the engine's hot paths on the SQLite job store.

SQLAlchemy Core added about 60 to 150 microseconds per statement to SQLite's own
5 to 40 on the development machine, and a notification takes some thirty
statements on its way to the inbox. bench/stages.py times the stages. The queue
consumers therefore run their SQL on plain sqlite3 connections (see Store.raw_write).
They store values in the formats SQLAlchemy uses, so ORM code reads the same rows.
Datetimes are naive UTC text `YYYY-MM-DD HH:MM:SS.ffffff`, JSON is `json.dumps`
text, and booleans are 0 and 1.

On PostgreSQL, novulite.db.postgres.RawConnection runs the same SQL; it returns timestamps as
datetimes and JSON as text, and the readers here take both forms. Booleans are written as
Python bools there, and SQL compares them with TRUE and FALSE, which SQLite reads as 1 and 0.
The fragments whose text differs between the two stores are in novulite.db.sql.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import json
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from types import SimpleNamespace
from typing import Any

from sqlalchemy import JSON, Boolean, Column, Table

from novulite.db.models import UTCDateTime


# A batch stamps many rows with the same instant, and formatting one took about 7 microseconds
# with strftime on the development machine, so recent results are kept.
@functools.lru_cache(maxsize=64)
def db_datetime(value: dt.datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(dt.UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


# Rows of one batch share their instants, and datetimes are immutable, so parsed values are shared.
@functools.lru_cache(maxsize=1024)
def _read_datetime(value: str | dt.datetime | None) -> dt.datetime | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value.replace(tzinfo=dt.UTC)
    return dt.datetime.fromisoformat(value).replace(tzinfo=dt.UTC)


def _read_json(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _write_json(value: Any) -> str | None:
    return None if value is None else json.dumps(value)


def _read_bool(value: int | None) -> bool | None:
    return None if value is None else bool(value)


def _write_bool(value: bool | None) -> bool | None:
    # sqlite3 stores True as 1; PostgreSQL's boolean columns refuse integers.
    return None if value is None else bool(value)


def _identity(value: Any) -> Any:
    return value


def _converters(table: Table, reading: bool) -> dict[str, Callable[[Any], Any]]:
    converters: dict[str, Callable[[Any], Any]] = {}
    for column in table.columns:
        if isinstance(column.type, UTCDateTime):
            converters[column.name] = _read_datetime if reading else db_datetime
        elif isinstance(column.type, JSON):
            converters[column.name] = _read_json if reading else _write_json
        elif isinstance(column.type, Boolean):
            converters[column.name] = _read_bool if reading else _write_bool
        else:
            converters[column.name] = _identity
    return converters


@functools.cache
def _readers(*tables: Table) -> dict[str, Callable[[Any], Any]]:
    readers: dict[str, Callable[[Any], Any]] = {}
    for table in tables:
        for name, reader in _converters(table, reading=True).items():
            readers.setdefault(name, reader)
    return readers


def _no_default() -> Any:
    return None


def _default_maker(column: Column[Any]) -> Callable[[], Any]:
    """Return a function giving the column's Python-side default, as the ORM would apply it."""
    default = column.default
    if default is None or not hasattr(default, "arg"):
        return _no_default
    arg = default.arg
    if callable(arg):
        # SQLAlchemy wraps a zero-argument default so that it takes an execution context.
        return functools.partial(arg, None)
    return functools.partial(_constant, arg)


def _constant(value: Any) -> Any:
    return value


@dataclasses.dataclass(frozen=True)
class _InsertPlan:
    sql: str
    names: tuple[str, ...]
    defaults: tuple[Callable[[], Any], ...]
    # (position, writer) of the columns whose values need converting; the others are stored as given.
    writers: tuple[tuple[int, Callable[[Any], Any]], ...]


@functools.cache
def _insert_sql(table: Table, suffix: str) -> _InsertPlan:
    names = tuple(column.name for column in table.columns)
    writers = _converters(table, reading=False)
    return _InsertPlan(
        sql=f"INSERT INTO {table.name} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))}) {suffix}",
        names=names,
        defaults=tuple(_default_maker(column) for column in table.columns),
        writers=tuple(
            (position, writers[name]) for position, name in enumerate(names) if writers[name] is not _identity
        ),
    )


def _values(plan: _InsertPlan, row: dict[str, Any]) -> list[Any]:
    columns = zip(plan.names, plan.defaults, strict=True)
    values = [row[name] if name in row else default() for name, default in columns]
    for position, write in plan.writers:
        values[position] = write(values[position])
    return values


# Rows per multi-row INSERT, at most; SQLite's limit on bound parameters may allow fewer.
MAX_ROWS_PER_INSERT = 500


def insert_rows(
    raw: sqlite3.Connection, table: Table, rows: Iterable[dict[str, Any]], suffix: str = ""
) -> None:
    """Insert dict rows; a column missing from a row gets the model's default, or NULL without one.

    The rows go in multi-row INSERT statements. The sqlite3 module releases the
    interpreter lock for every step of a statement, so executemany gave the lock away
    once per row. Under a burst another thread then took it each time, and the writer,
    which holds the job store's write lock, waited for it to come back once per row.
    """
    plan = _insert_sql(table, suffix)
    values = [_values(plan, row) for row in rows]
    if not values:
        return
    per_statement = min(
        MAX_ROWS_PER_INSERT, raw.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // len(plan.names)
    )
    for start in range(0, len(values), per_statement):
        chunk = values[start : start + per_statement]
        raw.execute(_multi_row_sql(plan, len(chunk)), [value for row in chunk for value in row])


@functools.lru_cache(maxsize=256)
def _multi_row_sql(plan: _InsertPlan, count: int) -> str:
    """Return the plan's INSERT with `count` rows of placeholders in its VALUES clause."""
    row_sql = f"({', '.join('?' * len(plan.names))})"
    return plan.sql.replace(f"VALUES {row_sql}", "VALUES " + ", ".join([row_sql] * count), 1)


def insert_returning(raw: sqlite3.Connection, table: Table, row: dict[str, Any], suffix: str) -> Any:
    """Insert one row with `suffix` (such as an ON CONFLICT clause plus RETURNING); return the first value."""
    plan = _insert_sql(table, suffix)
    result = raw.execute(plan.sql, _values(plan, row))
    found = result.fetchone()
    return None if found is None else found[0]


def insert_many_returning(
    raw: sqlite3.Connection, table: Table, rows: list[dict[str, Any]], suffix: str
) -> list[Any]:
    """Insert rows in one statement with `suffix` (an ON CONFLICT clause plus RETURNING one column).

    Returns the returned column of each inserted row. One statement per batch costs
    less than one per row, which matters on the trigger intake's hot path.
    """
    if not rows:
        return []
    plan = _insert_sql(table, "")
    sql = _multi_row_sql(plan, len(rows)) + suffix
    parameters = [value for row in rows for value in _values(plan, row)]
    return [found[0] for found in raw.execute(sql, parameters).fetchall()]


def write_value(table: Table, column: str, value: Any) -> Any:
    return _converters_for_write(table)[column](value)


@functools.cache
def _converters_for_write(table: Table) -> dict[str, Callable[[Any], Any]]:
    return _converters(table, reading=False)


def fetch(
    raw: sqlite3.Connection, sql: str, parameters: Sequence[Any], *tables: Table
) -> list[SimpleNamespace]:
    """Run a query; return rows with one attribute per result column, decoded by `tables`' types."""
    cursor = raw.execute(sql, tuple(parameters))
    names = tuple(description[0] for description in cursor.description)
    converted = _converted_columns(names, tables)
    rows = []
    for row in cursor.fetchall():
        values = dict(zip(names, row, strict=True))
        for position, name, convert in converted:
            values[name] = convert(row[position])
        rows.append(SimpleNamespace(**values))
    return rows


@functools.cache
def _converted_columns(
    names: tuple[str, ...], tables: tuple[Table, ...]
) -> tuple[tuple[int, str, Callable[[Any], Any]], ...]:
    """Return (position, name, reader) of the result columns whose stored values need decoding."""
    readers = _readers(*tables)
    return tuple(
        (position, name, readers[name])
        for position, name in enumerate(names)
        if readers.get(name, _identity) is not _identity
    )


def placeholders(count: int) -> str:
    """Return `?, ?, ...` for an IN list of `count` values."""
    return ", ".join("?" * count)
