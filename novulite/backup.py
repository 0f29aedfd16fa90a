"""Copy the SQLite job store while a server writes to it, with SQLite's online backup API."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sqlite3
import tempfile
from pathlib import Path

from novulite.limiter.connect import redact_url

# Pages copied per backup step, and seconds slept between steps. In WAL mode a reader does not
# block writers, and the sleep leaves the disk to the server between steps.
PAGES_PER_STEP = 1024
SLEEP_BETWEEN_STEPS = 0.005

# Tables whose row counts the report prints.
COUNTED_TABLES = (
    "subscriber",
    "workflow",
    "trigger_event",
    "notification",
    "job",
    "message",
    "execution_detail",
)


class BackupError(Exception):
    """A backup that could not be written or failed its integrity check."""


@dataclasses.dataclass(frozen=True)
class BackupReport:
    path: Path
    size_bytes: int
    row_counts: dict[str, int]


def postgresql_backup_message(database_url: str) -> str:
    """Return the message that sends the operator of a PostgreSQL job store to pg_dump."""
    return (
        f"the job store is PostgreSQL ({redact_url(database_url)}), which this command cannot copy; "
        "back it up with PostgreSQL's own tools, for example "
        "`pg_dump --format=custom --file=novulite.dump DATABASE_URL`, and restore with pg_restore"
    )


def back_up(source: Path, target: Path, *, force: bool = False) -> BackupReport:
    """Write a consistent copy of `source` to `target` through a temporary file and an atomic rename.

    Raises BackupError when `source` is missing, `target` is `source` or one of its WAL
    files, `target` exists without `force`, the target's folder is not writable, or the
    copy fails PRAGMA integrity_check.
    """
    if not source.is_file():
        raise BackupError(f"no database at {source}; pass the --data-dir the server uses")
    live_files = {
        source.resolve(),
        *(source.with_name(source.name + suffix).resolve() for suffix in ("-wal", "-shm")),
    }
    if target.resolve() in live_files:
        raise BackupError(f"{target} is the server's own database file; give a path outside it")
    if target.exists() and not force:
        raise BackupError(f"{target} already exists; pass --force to replace it")
    if target.is_dir():
        raise BackupError(f"{target} is a directory; give a file path")
    try:
        handle, temporary_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise BackupError(f"cannot write in {target.parent}: {exc.strerror}") from exc
    os.close(handle)
    temporary = Path(temporary_name)
    try:
        _copy(source, temporary)
        row_counts = _check(temporary)
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return BackupReport(target, target.stat().st_size, row_counts)


def _copy(source: Path, temporary: Path) -> None:
    # Read-only on the source, so the backup cannot write to the server's database.
    with (
        contextlib.closing(sqlite3.connect(f"{source.as_uri()}?mode=ro", uri=True)) as reader,
        contextlib.closing(sqlite3.connect(temporary)) as copy,
    ):
        reader.execute("PRAGMA busy_timeout=15000")
        try:
            # A read transaction held across all steps pins one WAL snapshot. Without it, each step
            # would see the server's newer commits, and SQLite restarts a backup whose source changed
            # between steps, so under a steady stream of writes it might never finish.
            reader.execute("BEGIN")
            reader.execute("SELECT count(*) FROM sqlite_master").fetchone()
            reader.backup(copy, pages=PAGES_PER_STEP, sleep=SLEEP_BETWEEN_STEPS)
            reader.execute("COMMIT")
        except sqlite3.Error as exc:
            raise BackupError(f"copying {source} failed: {exc}") from exc
        # The copy inherits WAL mode from the source; a single file without -wal is easier to move.
        copy.execute("PRAGMA journal_mode=DELETE")


def _check(path: Path) -> dict[str, int]:
    with contextlib.closing(sqlite3.connect(path)) as copy:
        problems = [row[0] for row in copy.execute("PRAGMA integrity_check")]
        if problems != ["ok"]:
            raise BackupError(f"the copy failed PRAGMA integrity_check: {'; '.join(problems[:5])}")
        tables = {row[0] for row in copy.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        return {
            name: int(copy.execute(f"SELECT count(*) FROM {name}").fetchone()[0])
            for name in COUNTED_TABLES
            if name in tables
        }
