"""Apply Alembic migrations at start and refuse a database newer than this code."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, text

from novulite.db.postgres import MIGRATION_LOCK_ID

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


class SchemaTooNewError(RuntimeError):
    """The database was migrated by a newer novulite than the one running."""


def alembic_config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["engine"] = engine
    return config


@contextlib.contextmanager
def exclusive(engine: Engine) -> Iterator[None]:
    """Hold a lock that processes starting together take in turns while they migrate and seed.

    SQLite's migrations already run under its write lock; PostgreSQL needs an advisory lock,
    or two processes that start at once both create the schema.
    """
    if engine.dialect.name != "postgresql":
        yield
        return
    with engine.connect() as connection:
        connection.execute(text("SELECT pg_advisory_lock(:id)"), {"id": MIGRATION_LOCK_ID})
        connection.commit()
        try:
            yield
        finally:
            connection.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": MIGRATION_LOCK_ID})
            connection.commit()


def upgrade(engine: Engine) -> None:
    """Migrate the database to the newest revision this code ships."""
    config = alembic_config(engine)
    script = ScriptDirectory.from_config(config)
    with engine.connect() as connection:
        current = MigrationContext.configure(connection).get_current_revision()
    known = {revision.revision for revision in script.walk_revisions()}
    if current is not None and current not in known:
        raise SchemaTooNewError(
            f"the database is at schema revision {current}, which this novulite "
            f"does not know (newest known: {script.get_current_head()}); "
            "run a newer novulite or restore a backup"
        )
    command.upgrade(config, "head")
