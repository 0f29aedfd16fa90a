from __future__ import annotations

import dataclasses
import itertools
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
import pytest
from novu_py import Novu
from playwright.sync_api import Browser, sync_playwright

from tests.helpers import create_workflow
from tests.postgres import PostgresProcess, postgres_bin
from tests.servers import API_KEY, RedisProcess, ServerProcess, free_port, server_command

# How a test server is deployed. "embedded" keeps everything in the data directory, and
# "scale-out" puts the job store on a private PostgreSQL database of its own and the queues,
# realtime fan-out and limiter in the run's private Redis, under a key prefix of its own.
SERVER_MODES = ("embedded", "scale-out")
_database_numbers = itertools.count(1)


@dataclasses.dataclass(frozen=True)
class ServerMode:
    """One deployment mode for test servers, with the private services it needs."""

    name: str = "embedded"
    postgres: PostgresProcess | None = None
    redis: RedisProcess | None = None

    def server_options(self) -> tuple[list[str], str | None]:
        """Return the command-line options of a new server in this mode, and its --database-url.

        Every call in the scale-out mode creates an empty database and a new Redis key prefix, so
        servers never share a job store or queues.
        """
        if self.postgres is None:
            return [], None
        url = self.postgres.create_database(f"server_{next(_database_numbers)}")
        options = ["--database-url", url]
        if self.redis is not None:
            options += ["--redis-url", self.redis.url, "--redis-prefix", unique_prefix()]
        return options, url


EMBEDDED = ServerMode()


def start_server(
    root: Path,
    args: Sequence[str] = (),
    env: dict[str, str] | None = None,
    mode: ServerMode = EMBEDDED,
) -> ServerProcess:
    """Start a server in `mode`: data directory and log under `root`, extra options and variables."""
    options, database_url = mode.server_options()
    return ServerProcess(
        data_dir=root / "data",
        port=free_port(),
        command=server_command(),
        log_path=root / "server.log",
        args=[*options, *args],
        env=dict(env or {}),
        database_url=database_url,
    ).start()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--server-mode",
        choices=("both", *SERVER_MODES),
        default="both",
        help="run modules marked both_modes in both server modes (default), or only in the one named",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "both_modes: start the module's servers once embedded and once in the scale-out mode "
        "(PostgreSQL and Redis)",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run each test of a both_modes module that starts a server once per server mode."""
    if (
        "server_mode" not in metafunc.fixturenames
        or metafunc.definition.get_closest_marker("both_modes") is None
    ):
        return
    chosen = metafunc.config.getoption("server_mode")
    modes = SERVER_MODES if chosen == "both" else (chosen,)
    metafunc.parametrize("server_mode", modes, indirect=True, scope="module")


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresProcess]:
    """A private PostgreSQL cluster for the whole run of one worker; each server gets a database in it."""
    try:
        postgres_bin()
    except RuntimeError as error:
        pytest.skip(str(error))
    cluster = PostgresProcess().start()
    yield cluster
    cluster.remove()


@pytest.fixture(scope="module")
def server_mode(request: pytest.FixtureRequest) -> ServerMode:
    """The mode the module's servers start in: embedded, unless the module is marked both_modes."""
    name = getattr(request, "param", "embedded")
    if name == "scale-out":
        return ServerMode(
            name,
            postgres=request.getfixturevalue("postgres_cluster"),
            redis=request.getfixturevalue("redis_server"),
        )
    return EMBEDDED


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
def shared_server(
    tmp_path_factory: pytest.TempPathFactory, server_mode: ServerMode
) -> Iterator[ServerProcess]:
    """One server for a whole module of table-driven tests, with the workflow `welcome`.

    A server start takes a few seconds, so tables whose requests store nothing share one.
    """
    process = start_server(tmp_path_factory.mktemp("shared"), mode=server_mode)
    with api_client(process) as api:
        create_workflow(api, "welcome")
    yield process
    process.stop()


@pytest.fixture
def server(tmp_path: Path, server_mode: ServerMode) -> Iterator[ServerProcess]:
    """A fresh novulite server on a free loopback port with its own data directory and job store."""
    process = start_server(tmp_path, mode=server_mode)
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
