"""The job store as worker threads use it: reads on their own connections, writes one at a time.

SQLite allows one writer at a time. Letting threads race for its lock means the
loser sleeps in SQLite's busy handler (up to 100 ms per try), so under load most
time goes to sleeping. A process-wide lock queues writers in Python instead, and
each waiting writer starts the moment the previous one commits.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from novulite.db.engine import create_sync_engine


class Store:
    def __init__(self, path: Path) -> None:
        self.write_engine: Engine = create_sync_engine(path, writer=True)
        self.read_engine: Engine = create_sync_engine(path, writer=False)
        self._write_lock = threading.Lock()

    @contextlib.contextmanager
    def write(self) -> Iterator[Session]:
        """Open a write transaction that commits on exit, or rolls back on an exception."""
        with self._write_lock, Session(self.write_engine, expire_on_commit=False) as session, session.begin():
            yield session

    @contextlib.contextmanager
    def read(self) -> Iterator[Session]:
        with Session(self.read_engine) as session:
            yield session

    def dispose(self) -> None:
        self.write_engine.dispose()
        self.read_engine.dispose()
