"""A server whose Redis does not respond exits at start, naming the URL without its password."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers import free_port, server_command

PASSWORD = "startup-secret-3b9a"
# The server waits 3 s for Redis; the rest is the interpreter's start.
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


def start_with_redis(tmp_path: Path, url: str) -> subprocess.CompletedProcess[str]:
    """Start a server on the Redis at `url`; raise TimeoutExpired if it still runs after EXIT_SECONDS."""
    return subprocess.run(
        [*server_command(), "--data-dir", str(tmp_path / "data"), "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=EXIT_SECONDS,
        env={**os.environ, "NOVULITE_REDIS_URL": url},
    )


@pytest.mark.parametrize("kind", ["refused", "silent"])
def test_unreachable_redis_stops_start(tmp_path: Path, request: pytest.FixtureRequest, kind: str) -> None:
    port = free_port() if kind == "refused" else request.getfixturevalue("silent_port")
    result = start_with_redis(tmp_path, f"redis://:{PASSWORD}@127.0.0.1:{port}/0")
    assert result.returncode == 1
    assert f"cannot reach Redis at redis://:***@127.0.0.1:{port}/0 (timeout 3 s)" in result.stderr
    assert "start Redis or correct --redis-url" in result.stderr
    assert PASSWORD not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "data").exists()


def test_invalid_redis_url_stops_start(tmp_path: Path) -> None:
    result = start_with_redis(tmp_path, f"http://user:{PASSWORD}@127.0.0.1/0")
    assert result.returncode == 1
    assert "the Redis URL http://user:***@127.0.0.1/0 is invalid" in result.stderr
    assert PASSWORD not in result.stderr
    assert "Traceback" not in result.stderr
