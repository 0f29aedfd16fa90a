"""PostgreSQL job store: URLs, and a connection that runs the engine's SQLite-style SQL.

The engine's hot paths (novulite.db.fast and the engine modules) talk to a DBAPI connection
with `?` placeholders, explicit BEGIN and COMMIT, and values in the formats SQLAlchemy stores
in SQLite. `RawConnection` gives them the same surface on psycopg, so one SQL text serves both
stores wherever the two dialects agree. psycopg sends a Python str with an unknown type, which
PostgreSQL casts to the column's type, so instants written as text land in timestamp columns.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import urlsplit

import psycopg
from psycopg.types.string import TextLoader

logger = logging.getLogger("novulite.db")

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
def translate(sql: str, with_parameters: bool = True) -> str:
    """Rewrite SQLite-style SQL for psycopg: `?` placeholders become `%s`, a literal `%` becomes `%%`.

    Placeholders inside quoted strings are left alone. `BEGIN IMMEDIATE` becomes `BEGIN`:
    PostgreSQL has no database-wide write lock to take up front. psycopg reads `%` as a
    placeholder only when parameters are passed, so SQL without them is sent unchanged.
    """
    if sql.startswith("BEGIN IMMEDIATE"):
        return "BEGIN"
    if not with_parameters:
        return sql
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
        self._url = url
        self._connection = self._open()
        # Whether the caller began a transaction and has not ended it: a connection lost then
        # must fail the transaction, never carry its remaining statements on a new connection.
        self._in_transaction = False

    def _open(self) -> psycopg.Connection[Any]:
        connection = psycopg.connect(psycopg_url(self._url), autocommit=True)
        for name in ("json", "jsonb"):
            connection.adapters.register_loader(name, TextLoader)
        return connection

    def _live(self) -> psycopg.Connection[Any]:
        """Return the connection, opening a new one if the server dropped the old one.

        Worker threads keep their connections for the life of the process, so after a
        PostgreSQL restart the first statement meets a dead connection. A BEGIN or a
        SELECT outside a transaction is then sent again on a new connection (see
        execute). Any other statement fails, because it may have run, and the next
        statement outside a transaction reconnects.
        """
        if self._connection.broken or self._connection.closed:
            if self._in_transaction:
                raise psycopg.OperationalError("the PostgreSQL connection was lost during a transaction")
            logger.warning("the PostgreSQL connection was lost; reconnecting")
            self._connection = self._open()
        return self._connection

    def execute(self, sql: str, parameters: Sequence[Any] | dict[str, Any] = ()) -> psycopg.Cursor[Any]:
        translated = translate(sql, bool(parameters))
        try:
            cursor = self._live().execute(translated, parameters or None)
        except psycopg.OperationalError:
            repeatable = translated.startswith(("BEGIN", "SELECT")) and not self._in_transaction
            if not (repeatable and self._connection.broken):
                raise
            cursor = self._live().execute(translated, parameters or None)
        if translated.startswith("BEGIN"):
            self._in_transaction = True
        elif translated in ("COMMIT", "ROLLBACK"):
            self._in_transaction = False
        return cursor

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> psycopg.Cursor[Any]:
        cursor = self._live().cursor()
        cursor.executemany(translate(sql), rows)
        return cursor

    def getlimit(self, _category: int) -> int:
        return MAX_PARAMETERS

    def commit(self) -> None:
        self._in_transaction = False
        if self._connection.broken:
            raise psycopg.OperationalError("the PostgreSQL connection was lost before COMMIT")
        if self._connection.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            self._connection.execute("COMMIT")

    def rollback(self) -> None:
        self._in_transaction = False
        if self._connection.broken:
            return
        if self._connection.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            self._connection.execute("ROLLBACK")

    def close(self) -> None:
        self._connection.close()
