from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.servers import API_KEY, ServerProcess, free_port, server_command


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A fresh novulite server on a free loopback port with its own data directory."""
    process = ServerProcess(
        data_dir=tmp_path / "data",
        port=free_port(),
        command=server_command(),
        log_path=tmp_path / "server.log",
    ).start()
    yield process
    process.stop()


@pytest.fixture
def api(server: ServerProcess) -> Iterator[httpx.Client]:
    """An HTTP client for the server API, authenticated with the environment's secret key."""
    with httpx.Client(
        base_url=server.base_url, headers={"Authorization": f"ApiKey {API_KEY}"}, timeout=10
    ) as client:
        yield client
