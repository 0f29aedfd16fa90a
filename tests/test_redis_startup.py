"""Cold start: a process waits for Redis and the job store, bounded by --startup-timeout.

A process whose Redis never responds exits with status 1 and one line naming the URL
without its password. One whose Redis comes up late fails its health check with 503 meanwhile, then starts
its consumers and delivers.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from novulite.bootstrap import prepare_database
from novulite.clock import SystemClock
from novulite.config import Settings
from novulite.db.engine import create_sync_engine
from tests.helpers import create_workflow, inbox_messages, open_session, poll
from tests.servers import API_KEY, REDIS_PASSWORD, RedisProcess, ServerProcess, free_port, server_command

PASSWORD = "startup-secret-3b9a"
STARTUP_TIMEOUT = "2"
# The process waits 2 s for Redis; the rest is the interpreter's start.
EXIT_SECONDS = 30


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A loopback port that accepts connections and never sends a byte, like a hung Redis."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    stopped = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stopped.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stopped.set()
    thread.join()
    for connection in accepted:
        connection.close()
    listener.close()


def run_command(arguments: list[str], url: str) -> subprocess.CompletedProcess[str]:
    """Run a novulite command on the Redis at `url`; raise TimeoutExpired past EXIT_SECONDS."""
    return subprocess.run(
        arguments,
        capture_output=True,
        text=True,
        timeout=EXIT_SECONDS,
        env={**os.environ, "NOVULITE_REDIS_URL": url, "NOVULITE_STARTUP_TIMEOUT": STARTUP_TIMEOUT},
    )


def serve_arguments(tmp_path: Path) -> list[str]:
    return [*server_command(), "--data-dir", str(tmp_path / "data"), "--port", str(free_port())]


def prepared_data_dir(tmp_path: Path) -> Path:
    """Create and migrate a job store in a new data directory, as a first `serve` would."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    settings = Settings(data_dir=data_dir)
    engine = create_sync_engine(settings.database_path)
    try:
        prepare_database(engine, settings, SystemClock())
    finally:
        engine.dispose()
    return data_dir


def assert_one_failure_line(result: subprocess.CompletedProcess[str], expected: str) -> None:
    failures = [line for line in result.stderr.splitlines() if "start-up failed" in line]
    assert len(failures) == 1, result.stderr
    assert expected in failures[0]
    assert PASSWORD not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("kind", ["refused", "silent"])
def test_unreachable_redis_stops_serve(tmp_path: Path, request: pytest.FixtureRequest, kind: str) -> None:
    port = free_port() if kind == "refused" else request.getfixturevalue("silent_port")
    result = run_command(serve_arguments(tmp_path), f"redis://:{PASSWORD}@127.0.0.1:{port}/0")
    assert result.returncode == 1
    assert_one_failure_line(
        result,
        f"Redis at redis://:***@127.0.0.1:{port}/0 did not respond within 2 s (--startup-timeout)",
    )
    assert "start Redis or correct --redis-url" in result.stderr


def test_unreachable_redis_stops_worker(tmp_path: Path) -> None:
    data_dir = prepared_data_dir(tmp_path)
    port = free_port()
    command = [sys.executable, "-m", "novulite", "worker", "--data-dir", str(data_dir)]
    result = run_command(command, f"redis://:{PASSWORD}@127.0.0.1:{port}/0")
    assert result.returncode == 1
    assert_one_failure_line(
        result,
        f"Redis at redis://:***@127.0.0.1:{port}/0 did not respond within 2 s (--startup-timeout)",
    )


def test_worker_waits_for_migrated_store(tmp_path: Path, redis_server: RedisProcess) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    command = [sys.executable, "-m", "novulite", "worker", "--data-dir", str(data_dir)]
    result = run_command(command, redis_server.url)
    assert result.returncode == 1
    database = data_dir / "novulite.db"
    assert_one_failure_line(result, f"the job store at {database.resolve()} was not ready within 2 s")
    assert "start `novulite serve` of this version, which migrates the job store" in result.stderr


def test_invalid_redis_url_stops_start(tmp_path: Path) -> None:
    result = run_command(serve_arguments(tmp_path), f"http://user:{PASSWORD}@127.0.0.1/0")
    assert result.returncode == 1
    assert "the Redis URL http://user:***@127.0.0.1/0 is invalid" in result.stderr
    assert "correct --redis-url" in result.stderr
    assert PASSWORD not in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "data").exists()


def health(server: ServerProcess) -> httpx.Response | None:
    try:
        return httpx.get(f"{server.base_url}/v1/health-check", timeout=2)
    except httpx.TransportError:
        return None


def test_late_redis_then_delivers(tmp_path: Path) -> None:
    redis_server = RedisProcess(tmp_path)
    server = ServerProcess(
        data_dir=tmp_path / "data",
        port=free_port(),
        command=server_command(),
        log_path=tmp_path / "server.log",
        env={"NOVULITE_REDIS_URL": redis_server.url, "NOVULITE_STARTUP_TIMEOUT": "60"},
    ).launch()
    try:
        waiting = poll(
            lambda: health(server),
            lambda response: response is not None,
            "the health check of a server waiting for Redis",
            timeout=EXIT_SECONDS,
        )
        assert waiting is not None
        assert waiting.status_code == 503
        startup = waiting.json()["error"]["startup"]
        redacted = f"redis://:***@127.0.0.1:{redis_server.port}/0"
        assert startup["message"] == f"waiting for Redis at {redacted} to respond"
        # The queues live in the Redis that is down, so counting their entries fails first.
        assert waiting.json()["error"]["queues"]["status"] == "down"
        assert "Connection refused" in waiting.json()["error"]["queues"]["message"]

        redis_server.start()
        server.wait_healthy()
        with httpx.Client(
            base_url=server.base_url, headers={"Authorization": f"ApiKey {API_KEY}"}, timeout=10
        ) as api:
            create_workflow(api, "late-redis")
            response = api.post(
                "/v1/events/trigger", json={"name": "late-redis", "to": "alice", "payload": {"text": "hi"}}
            )
            assert response.status_code == 201, response.text
        token = open_session(server.base_url, "alice")["token"]
        delivered = poll(
            lambda: inbox_messages(server.base_url, token),
            lambda messages: len(messages) == 1,
            "the trigger's in-app message",
        )
        assert delivered[0]["body"] == "Hello : hi"
        assert f"Redis at {redacted} does not respond yet" in server.log()
        assert REDIS_PASSWORD not in server.log()
        assert server.terminate() < EXIT_SECONDS
        assert server.process is not None
        assert server.process.returncode == 0
    finally:
        server.stop()
        redis_server.stop()
