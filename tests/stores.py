"""Read and write a server's job store straight from a test, on SQLite or PostgreSQL.

`ServerProcess.database` is the SQLite file's path in the embedded mode and the
`--database-url` in the scale-out mode. SQL uses `?` placeholders in both, and is rewritten
for psycopg as the engine's own SQL is. PostgreSQL rows come back in the forms sqlite3
gives where tests depend on them: JSON columns as text, and timestamps as the text SQLAlchemy
stores in SQLite, `YYYY-MM-DD HH:MM:SS.ffffff`. Booleans come back as bool, which compares
equal to SQLite's 1 and 0.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import psycopg
from psycopg.adapt import Loader
from psycopg.types.string import TextLoader

from novulite.db.postgres import psycopg_url, translate

# The job store of a server: the SQLite file's path, or a PostgreSQL URL.
Database = Path | str


class Row(tuple[Any, ...]):
    """A result row readable by position and by column name, as sqlite3.Row is."""

    names: tuple[str, ...] = ()

    def __getitem__(self, key: Any) -> Any:  # type: ignore[override]
        if isinstance(key, str):
            return tuple.__getitem__(self, self.names.index(key))
        return tuple.__getitem__(self, key)

    def keys(self) -> list[str]:
        return list(self.names)


def _row(names: tuple[str, ...], values: Sequence[Any]) -> Row:
    row = Row(values)
    row.names = names
    return row


def _postgres_row_factory(cursor: Any) -> Any:
    names = tuple(column.name for column in cursor.description or ())
    return lambda values: _row(names, values)


def _sqlite_row_factory(cursor: sqlite3.Cursor, values: tuple[Any, ...]) -> Row:
    return _row(tuple(column[0] for column in cursor.description), values)


class SqliteTimestampLoader(Loader):
    """Load a PostgreSQL timestamp as the text SQLAlchemy writes for a datetime in SQLite."""

    def load(self, data: Any) -> str:
        instant = dt.datetime.fromisoformat(bytes(data).decode())
        return instant.strftime("%Y-%m-%d %H:%M:%S.%f")


@contextlib.contextmanager
def _postgres(url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(psycopg_url(url), autocommit=True, row_factory=_postgres_row_factory) as connection:
        for name in ("json", "jsonb"):
            connection.adapters.register_loader(name, TextLoader)
        connection.adapters.register_loader("timestamp", SqliteTimestampLoader)
        yield connection


def read_rows(database: Database, sql: str, params: Sequence[Any] = ()) -> list[Row]:
    """Run one SELECT on the job store and return its rows, which compare equal to tuples.

    The SQLite file is opened read-only, so the test cannot change it.
    """
    if isinstance(database, str):
        with _postgres(database) as connection:
            return connection.execute(translate(sql), tuple(params) or None).fetchall()
    connection = sqlite3.connect(f"{database.as_uri()}?mode=ro", uri=True)
    connection.row_factory = _sqlite_row_factory
    try:
        return connection.execute(sql, tuple(params)).fetchall()
    finally:
        connection.close()


def write_rows(database: Database, statements: Sequence[tuple[str, Sequence[Any]]]) -> None:
    """Run (sql, parameters) statements on the job store in one transaction."""
    if isinstance(database, str):
        with _postgres(database) as connection, connection.transaction():
            for sql, params in statements:
                connection.execute(translate(sql), tuple(params) or None)
        return
    with contextlib.closing(sqlite3.connect(database)) as connection, connection:
        for sql, params in statements:
            connection.execute(sql, tuple(params))
