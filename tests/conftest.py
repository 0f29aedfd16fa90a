from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
import pytest
from novu_py import Novu
from playwright.sync_api import Browser, sync_playwright

from tests.helpers import create_workflow
from tests.servers import API_KEY, RedisProcess, ServerProcess, free_port, server_command


def start_server(root: Path, args: Sequence[str] = (), env: dict[str, str] | None = None) -> ServerProcess:
    """Start a server with its data directory and log under `root`, given extra options and variables."""
    return ServerProcess(
        data_dir=root / "data",
        port=free_port(),
        command=server_command(),
        log_path=root / "server.log",
        args=list(args),
        env=dict(env or {}),
    ).start()


# Debian's Chromium, which Playwright drives; its own browser download cannot work here.
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One headless Chromium for a module's browser tests."""
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        yield launched
        launched.close()


LIMITER_MODES = ("sqlite", "redis")


def limiter_env(request: pytest.FixtureRequest, mode: str) -> dict[str, str]:
    """Return the variables that start a server on the given limiter: SQLite, or the private Redis.

    In Redis mode the queues move to Redis too, so each server gets its own key prefix: servers
    with different data directories must not consume each other's queue entries.
    """
    if mode == "redis":
        redis_server: RedisProcess = request.getfixturevalue("redis_server")
        return {"NOVULITE_REDIS_URL": redis_server.url, "NOVULITE_REDIS_PREFIX": unique_prefix()}
    return {}


def unique_prefix() -> str:
    """Return a Redis key prefix that no other server of this run uses."""
    return f"test-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    """A private redis-server for the whole run; tests keep apart by key prefix or by environment."""
    process = RedisProcess(tmp_path_factory.mktemp("redis")).start()
    yield process
    process.stop()


def api_client(process: ServerProcess) -> httpx.Client:
    """Return an HTTP client for the server API, authenticated with the environment's secret key."""
    return httpx.Client(base_url=process.base_url, headers={"Authorization": f"ApiKey {API_KEY}"}, timeout=10)


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server for a whole module of table-driven tests, with the workflow `welcome`.

    A server start takes a few seconds, so tables whose requests store nothing share one.
    """
    process = start_server(tmp_path_factory.mktemp("shared"))
    with api_client(process) as api:
        create_workflow(api, "welcome")
    yield process
    process.stop()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A fresh novulite server on a free loopback port with its own data directory."""
    process = start_server(tmp_path)
    yield process
    process.stop()


@pytest.fixture
def api(server: ServerProcess) -> Iterator[httpx.Client]:
    """An HTTP client for the server API, authenticated with the environment's secret key."""
    with api_client(server) as client:
        yield client


@pytest.fixture(scope="module")
def shared_api(shared_server: ServerProcess) -> Iterator[httpx.Client]:
    """An HTTP client for the module's shared server, authenticated with the secret key."""
    with httpx.Client(
        base_url=shared_server.base_url, headers={"Authorization": f"ApiKey {API_KEY}"}, timeout=10
    ) as client:
        yield client


@pytest.fixture(scope="module")
def shared_novu(shared_server: ServerProcess) -> Novu:
    """The official novu-py SDK pointed at the module's shared server."""
    return Novu(secret_key=API_KEY, server_url=shared_server.base_url)
