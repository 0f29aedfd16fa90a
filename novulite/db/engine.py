"""Engines for the job store: the embedded SQLite file, or PostgreSQL given by --database-url.

Writers begin with BEGIN IMMEDIATE, so they take the write lock up front and wait
on the busy timeout. A deferred transaction that reads first and writes later would
instead fail at once with "database is locked" when another writer got there first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from novulite.db.postgres import sqlalchemy_url

# Location of the job store: the SQLite file's path, or a PostgreSQL URL.
Target = Path | str

BUSY_TIMEOUT_MS = 15_000


def set_pragmas(dbapi_connection: Any, _record: Any = None) -> None:
    """Apply the job store's connection settings: WAL, synchronous=NORMAL, busy timeout, foreign keys."""
    # Turn off the driver's own transaction handling so the "begin" hook decides.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _configure(engine: Engine, begin_sql: str) -> None:
    event.listen(engine, "connect", set_pragmas)

    def _begin(conn: Any) -> None:
        conn.exec_driver_sql(begin_sql)

    event.listen(engine, "begin", _begin)


def sqlite_url(path: Path, driver: str) -> str:
    return f"sqlite+{driver}:///{path}"


def create_sync_engine(path: Target, *, writer: bool = True) -> Engine:
    """Return an engine for threads; a writer's transactions take SQLite's write lock at BEGIN."""
    if isinstance(path, str):
        return create_engine(sqlalchemy_url(path), pool_size=8, max_overflow=8, pool_pre_ping=True)
    engine = create_engine(sqlite_url(path, "pysqlite"), pool_size=8, max_overflow=8)
    _configure(engine, "BEGIN IMMEDIATE" if writer else "BEGIN")
    return engine


def create_async_engines(path: Target) -> tuple[AsyncEngine, AsyncEngine]:
    """Return (reader, writer) engines for request handlers.

    On SQLite the writer has one connection, so request writes queue in the process
    rather than contend for SQLite's lock. PostgreSQL takes concurrent writers.
    """
    if isinstance(path, str):
        url = sqlalchemy_url(path)
        reader = create_async_engine(url, pool_size=4, max_overflow=4, pool_pre_ping=True)
        writer = create_async_engine(url, pool_size=4, max_overflow=4, pool_pre_ping=True)
        return reader, writer
    reader = create_async_engine(sqlite_url(path, "aiosqlite"), pool_size=4, max_overflow=4)
    _configure(reader.sync_engine, "BEGIN")
    writer = create_async_engine(sqlite_url(path, "aiosqlite"), pool_size=1, max_overflow=0)
    _configure(writer.sync_engine, "BEGIN IMMEDIATE")
    return reader, writer
