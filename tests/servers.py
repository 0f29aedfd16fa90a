"""Start and stop real novulite server processes for tests."""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import redis

API_KEY = "test-secret-key-0123456789abcdef"
APP_ID = "test-app-identifier"
ADMIN_PASSWORD = "test-admin-password"
STARTUP_SECONDS = 30.0
REDIS_PASSWORD = "test-redis-password-7c1e94"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ChildProcess:
    """Base of the novulite child processes: stop with SIGTERM, and SIGKILL if that times out."""

    process: subprocess.Popen[bytes] | None

    def terminate(self, timeout: float = 10.0) -> float:
        """Send SIGTERM, wait for the exit and return how long it took in seconds."""
        assert self.process is not None
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=timeout)
        return time.monotonic() - started

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            try:
                self.terminate()
            except subprocess.TimeoutExpired:
                self.kill()


@dataclasses.dataclass
class ServerProcess(ChildProcess):
    """A `novulite serve` child process on a loopback port."""

    data_dir: Path
    port: int
    command: list[str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    # Options added after the data directory and port, and environment variables set for the server.
    args: list[str] = dataclasses.field(default_factory=list)
    env: dict[str, str] = dataclasses.field(default_factory=dict)
    # How long the server may take to pass its health check after it starts.
    startup_seconds: float = STARTUP_SECONDS
    # The PostgreSQL job store given in --database-url, or None for the SQLite file in the data directory.
    database_url: str | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def database(self) -> Path | str:
        """Return the job store tests read: the PostgreSQL URL, or the path of the SQLite file."""
        return self.database_url or self.data_dir / "novulite.db"

    def start(self) -> ServerProcess:
        """Launch the server and wait until its health check returns 200."""
        self.launch()
        self.wait_healthy()
        return self

    def launch(self) -> ServerProcess:
        """Launch the server without waiting for it."""
        env = dict(
            os.environ,
            NOVULITE_API_KEY=API_KEY,
            NOVULITE_APP_ID=APP_ID,
            NOVULITE_ADMIN_PASSWORD=ADMIN_PASSWORD,
            NOVULITE_LOG_LEVEL="info",
            **self.env,
        )
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [*self.command, "--data-dir", str(self.data_dir), "--port", str(self.port), *self.args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        log.close()
        return self

    def wait_healthy(self) -> None:
        deadline = time.monotonic() + self.startup_seconds
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log()}")
            try:
                if httpx.get(f"{self.base_url}/v1/health-check", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"server did not become healthy within {self.startup_seconds} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def server_command() -> list[str]:
    return [sys.executable, "-m", "novulite", "serve"]


def sharing_servers(
    root: Path, env: dict[str, str], names: tuple[str, ...] = ("a", "b")
) -> list[ServerProcess]:
    """Build, without starting, one server per name on the data directory `root / "data"`.

    Start them one at a time, so the first alone creates and migrates the database.
    """
    return [
        ServerProcess(
            data_dir=root / "data",
            port=free_port(),
            command=server_command(),
            log_path=root / f"server-{name}.log",
            env=env,
        )
        for name in names
    ]


@dataclasses.dataclass
class RedisProcess:
    """A private redis-server on a loopback port, without persistence, that requires REDIS_PASSWORD."""

    workdir: Path
    port: int = dataclasses.field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://:{REDIS_PASSWORD}@127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, password=REDIS_PASSWORD, socket_timeout=5)

    def start(self) -> RedisProcess:
        """Start redis-server on `port`, again after `stop` too, and wait until it replies to PING."""
        executable = shutil.which("redis-server")
        if executable is None:
            raise RuntimeError("redis-server is not on PATH; install Debian's package redis-server")
        log = (self.workdir / "redis.log").open("ab")
        self.process = subprocess.Popen(
            [
                *(executable, "--port", str(self.port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no", "--requirepass", REDIS_PASSWORD),
            ],
            cwd=self.workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        client = self.client()
        deadline = time.monotonic() + STARTUP_SECONDS
        try:
            while True:
                try:
                    client.ping()
                    return self
                except redis.ConnectionError:
                    if self.process.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(
                            f"redis-server did not answer PING on port {self.port}:\n"
                            + (self.workdir / "redis.log").read_text(errors="replace")
                        ) from None
                    time.sleep(0.02)
        finally:
            client.close()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


def worker_command() -> list[str]:
    return [sys.executable, "-m", "novulite", "worker"]


@dataclasses.dataclass
class WorkerProcess(ChildProcess):
    """A `novulite worker` child process; it has no HTTP port, so its log shows when it runs."""

    data_dir: Path
    log_path: Path
    args: list[str] = dataclasses.field(default_factory=list)
    env: dict[str, str] = dataclasses.field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        """Launch the worker and wait until its log shows that its consumers started."""
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [*worker_command(), "--data-dir", str(self.data_dir), *self.args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(os.environ, NOVULITE_LOG_LEVEL="info", **self.env),
        )
        log.close()
        deadline = time.monotonic() + STARTUP_SECONDS
        while "started consumers of" not in self.log():
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited with {self.process.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"worker did not start within {STARTUP_SECONDS} s:\n{self.log()}")
            time.sleep(0.05)
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
