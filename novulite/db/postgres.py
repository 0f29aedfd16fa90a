"""PostgreSQL job store: URLs, and a connection that runs the engine's SQLite-style SQL.

The engine's hot paths (novulite.db.fast and the engine modules) talk to a DBAPI connection
with `?` placeholders, explicit BEGIN and COMMIT, and values in the formats SQLAlchemy stores
in SQLite. `RawConnection` gives them the same surface on psycopg, so one SQL text serves both
stores wherever the two dialects agree. psycopg sends a Python str with an unknown type, which
PostgreSQL casts to the column's type, so instants written as text land in timestamp columns.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import urlsplit

import psycopg
from psycopg.types.string import TextLoader

# URL schemes that `--database-url` accepts; novulite chooses the driver itself.
SCHEMES = ("postgresql", "postgres", "postgresql+psycopg")
SQLALCHEMY_SCHEME = "postgresql+psycopg"
# PostgreSQL's limit on bound parameters per statement is 65535.
MAX_PARAMETERS = 32_000
# Held while migrating and seeding, so processes that start together do not both create the schema.
MIGRATION_LOCK_ID = 0x6E6F76756C697465  # "novulite" in ASCII


class DatabaseUrlError(ValueError):
    """The --database-url value is not a PostgreSQL URL novulite can use."""


def sqlalchemy_url(url: str) -> str:
    """Return `url` with the scheme SQLAlchemy needs to pick psycopg; raise DatabaseUrlError when unusable."""
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES:
        raise DatabaseUrlError(
            f"unsupported scheme {parts.scheme!r}; give postgresql://user:password@host:port/database, "
            "or leave --database-url out to use the embedded SQLite file"
        )
    if not parts.hostname or not parts.path.strip("/"):
        raise DatabaseUrlError(
            "the URL needs a host and a database name, as in postgresql://user@host:5432/novulite"
        )
    return SQLALCHEMY_SCHEME + url[len(parts.scheme) :]


def psycopg_url(url: str) -> str:
    """Return the libpq form of a --database-url value."""
    return "postgresql" + sqlalchemy_url(url)[len(SQLALCHEMY_SCHEME) :]


@functools.lru_cache(maxsize=1024)
def translate(sql: str) -> str:
    """Rewrite SQLite-style SQL for psycopg: `?` placeholders become `%s`, a literal `%` becomes `%%`.

    Placeholders inside quoted strings are left alone. `BEGIN IMMEDIATE` becomes `BEGIN`:
    PostgreSQL has no database-wide write lock to take up front.
    """
    if sql.startswith("BEGIN IMMEDIATE"):
        return "BEGIN"
    out = []
    for index, part in enumerate(re.split(r"('(?:[^']|'')*')", sql)):
        if index % 2:
            out.append(part.replace("%", "%%"))
        else:
            out.append(part.replace("%", "%%").replace("?", "%s"))
    return "".join(out)


class RawConnection:
    """A psycopg connection with the subset of sqlite3.Connection the engine uses.

    It runs in autocommit mode, as the engine's sqlite3 connections do (isolation_level=None):
    transactions are the explicit BEGIN and COMMIT statements of the caller. JSON columns come
    back as text, the form novulite.db.fast decodes.
    """

    dialect = "postgresql"

    def __init__(self, url: str) -> None:
        self._connection = psycopg.connect(psycopg_url(url), autocommit=True)
        for name in ("json", "jsonb"):
            self._connection.adapters.register_loader(name, TextLoader)

    def execute(self, sql: str, parameters: Sequence[Any] | dict[str, Any] = ()) -> psycopg.Cursor[Any]:
        return self._connection.execute(translate(sql), parameters or None)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> psycopg.Cursor[Any]:
        cursor = self._connection.cursor()
        cursor.executemany(translate(sql), rows)
        return cursor

    def getlimit(self, _category: int) -> int:
        return MAX_PARAMETERS

    def commit(self) -> None:
        if self._connection.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            self._connection.execute("COMMIT")

    def rollback(self) -> None:
        if self._connection.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            self._connection.execute("ROLLBACK")

    def close(self) -> None:
        self._connection.close()
