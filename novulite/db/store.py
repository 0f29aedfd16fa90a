"""The job store as worker threads use it: reads on their own connections, writes one at a time.

SQLite allows one writer at a time. Letting threads race for its lock means the
loser sleeps in SQLite's busy handler (up to 100 ms per try), so under load most
time goes to sleeping. A process-wide lock queues writers in Python instead, and
each waiting writer starts the moment the previous one commits.

On PostgreSQL (a URL in place of the path) the raw connections are
novulite.db.postgres.RawConnection, which takes the same SQL. The lock stays, so one
process writes as it does on SQLite, but other processes write beside it: their
transactions interleave under READ COMMITTED, which is why claims and read-then-write
paths lock rows on PostgreSQL (see novulite.db.sql).
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from novulite.db.engine import Target, create_sync_engine, set_pragmas
from novulite.db.postgres import RawConnection


class Store:
    def __init__(self, path: Target) -> None:
        self.write_engine: Engine = create_sync_engine(path, writer=True)
        self.read_engine: Engine = create_sync_engine(path, writer=False)
        self._write_lock = threading.Lock()
        self._path = path
        # "sqlite" or "postgresql", for the few statements whose SQL differs between the two.
        self.dialect = "postgresql" if isinstance(path, str) else "sqlite"
        self._writer: sqlite3.Connection | None = None
        self._readers = threading.local()
        self._raw_connections: list[sqlite3.Connection] = []

    @contextlib.contextmanager
    def write(self) -> Iterator[Session]:
        """Open a write transaction that commits on exit, or rolls back on an exception."""
        with self._write_lock, Session(self.write_engine, expire_on_commit=False) as session, session.begin():
            yield session

    @contextlib.contextmanager
    def raw_write(self) -> Iterator[sqlite3.Connection]:
        """Open a write transaction on the sqlite3 writer connection, for the engine's hot paths.

        The write lock makes this one connection enough: only its holder may write.
        """
        with self._write_lock:
            connection = self._raw_writer()
            connection.execute("BEGIN IMMEDIATE")
            try:
                yield connection
            except BaseException:
                connection.rollback()
                raise
            connection.commit()

    def raw_read(self) -> sqlite3.Connection:
        """Return this thread's sqlite3 connection for reads outside a transaction."""
        connection: sqlite3.Connection | None = getattr(self._readers, "connection", None)
        if connection is None:
            connection = self._connect()
            self._readers.connection = connection
            self._raw_connections.append(connection)
        return connection

    def _raw_writer(self) -> sqlite3.Connection:
        if self._writer is None:
            self._writer = self._connect()
            self._raw_connections.append(self._writer)
        return self._writer

    def _connect(self) -> sqlite3.Connection:
        if isinstance(self._path, str):
            # The engine's code is written against sqlite3.Connection; RawConnection has its surface.
            return RawConnection(self._path)  # type: ignore[return-value]
        connection = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        set_pragmas(connection)
        return connection

    @contextlib.contextmanager
    def read(self) -> Iterator[Session]:
        with Session(self.read_engine) as session:
            yield session

    def dispose(self) -> None:
        for connection in self._raw_connections:
            connection.close()
        self._raw_connections.clear()
        self._writer = None
        self.write_engine.dispose()
        self.read_engine.dispose()
