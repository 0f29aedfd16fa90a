"""A private PostgreSQL cluster for tests: initdb and pg_ctl in a temporary folder, on a loopback port.

The machine may run a shared PostgreSQL on 5432; tests never touch it. initdb refuses to run as
root, so under root the cluster belongs to the `postgres` system user, which Debian's package
creates, and its folder lives outside pytest's root-only temporary directory.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg

from tests.servers import STARTUP_SECONDS, free_port

DATABASE = "novulite"


def postgres_bin() -> Path:
    """Return the folder of Debian's PostgreSQL server programs (initdb, pg_ctl)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if not found:
        raise RuntimeError("PostgreSQL's server programs are missing; install Debian's package postgresql")
    return Path(found[-1]).parent


def _run_as() -> list[str]:
    """Return the command prefix that runs a program as the cluster's owner."""
    if os.geteuid() != 0:
        return []
    return ["runuser", "-u", "postgres", "--"]


@dataclasses.dataclass
class PostgresProcess:
    """A PostgreSQL server owned by this test run, with trust authentication on 127.0.0.1 only."""

    port: int = dataclasses.field(default_factory=free_port)
    root: Path = dataclasses.field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="novulite-pg-")))

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log_path(self) -> Path:
        return self.root / "postgres.log"

    def url(self, database: str = DATABASE) -> str:
        """Return the URL novulite takes in --database-url."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def connect(self, database: str = DATABASE) -> psycopg.Connection:
        return psycopg.connect(
            host="127.0.0.1", port=self.port, user="postgres", dbname=database, autocommit=True
        )

    def _run(self, *args: str) -> None:
        result = subprocess.run([*_run_as(), *args], capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:1])} failed:\n{result.stdout}\n{result.stderr}")

    def start(self) -> PostgresProcess:
        """Create the cluster on first use, start it and create the database; return once it accepts."""
        binaries = postgres_bin()
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(self.root, owner.pw_uid, owner.pw_gid)
        if not self.data_dir.exists():
            self._run(
                str(binaries / "initdb"),
                *("-D", str(self.data_dir), "-U", "postgres", "--auth=trust"),
                *("--encoding=UTF8", "--locale=C.UTF-8", "--no-sync"),
            )
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            str(binaries / "pg_ctl"),
            *("-D", str(self.data_dir), "-l", str(self.log_path), "-o", options, "-w", "start"),
        )
        self._wait_ready()
        with self.connect("postgres") as connection:
            exists = connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DATABASE]).fetchone()
            if exists is None:
                connection.execute(f'CREATE DATABASE "{DATABASE}"')
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            try:
                with self.connect("postgres"):
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"PostgreSQL did not start:\n{self.log_path.read_text()}") from None
                time.sleep(0.05)

    def create_database(self, name: str) -> str:
        """Create an empty database `name` and return its URL."""
        with self.connect("postgres") as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self, mode: str = "fast") -> None:
        """Stop the server; `immediate` stops it as a crash would."""
        if not (self.data_dir / "postmaster.pid").exists():
            return
        self._run(str(postgres_bin() / "pg_ctl"), "-D", str(self.data_dir), "-m", mode, "-w", "stop")

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
