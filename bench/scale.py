"""Benchmark the embedded mode against Redis-plus-PostgreSQL mode with one and two server processes.

In one run it measures three set-ups on this machine:
- embedded: one `novulite serve` on its SQLite job store;
- scale-out 1+1: one `serve` and one `novulite worker` on a private PostgreSQL and Redis;
- scale-out 2+1: two `serve` and one `worker` on the same kind of store.

Each set-up gets TRIGGERS triggers of an in-app workflow from CONNECTIONS keep-alive
connections spread over its servers. It prints triggers/s (acknowledged 201s per second
of sending) and deliveries/s (in-app messages stored per second, from the first trigger
until the last message), and checks that every trigger was delivered exactly once.

Every process shares the machine's cores, the load generator's included, so on a
2-core machine more processes add contention rather than capacity. The figures say
what the extra processes cost there, not what they gain on more hosts.

Usage (from the repository root, in the project's virtualenv):
    python bench/scale.py [--triggers 3000] [--connections 32] [--modes embedded,1+1,2+1]
Needs redis-server and Debian's PostgreSQL server programs. All traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import platform
import shutil
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.trigger import _RawHttpConnection  # noqa: E402
from tests.postgres import PostgresProcess  # noqa: E402
from tests.servers import (  # noqa: E402
    API_KEY,
    RedisProcess,
    ServerProcess,
    WorkerProcess,
    free_port,
    server_command,
)

WORKFLOW = {
    "name": "Scale",
    "workflowId": "scale",
    "steps": [{"name": "Inbox", "type": "in_app", "controlValues": {"body": "Hello {{ payload.seq }}"}}],
}
# Recipients the triggers cycle through, so inbox reads and counts touch more than one subscriber.
SUBSCRIBERS = 200
POLL_SECONDS = 0.1
TIMEOUT_SECONDS = 600.0
MODES = ("embedded", "1+1", "2+1")
# A server or a worker: both start, stop and have a child process.
Process = ServerProcess | WorkerProcess


@dataclasses.dataclass
class Result:
    mode: str
    triggers_per_second: float
    deliveries_per_second: float
    delivered: int
    duplicates: int
    peak_rss_mb: float


@contextmanager
def started(processes: list[Process]) -> Iterator[list[Process]]:
    try:
        for process in processes:
            process.start()
        yield processes
    finally:
        for process in processes:
            process.stop()


def create_workflow(server: ServerProcess) -> None:
    response = httpx.post(
        f"{server.base_url}/v2/workflows", json=WORKFLOW, headers={"Authorization": f"ApiKey {API_KEY}"}
    )
    response.raise_for_status()


async def send_triggers(servers: list[ServerProcess], triggers: int, connections: int) -> float:
    """Send the triggers over connections spread across the servers; return the seconds it took."""
    pool = [await _RawHttpConnection.open(servers[index % len(servers)].port) for index in range(connections)]
    headers = f"Authorization: ApiKey {API_KEY}\r\n"
    queue: asyncio.Queue[int] = asyncio.Queue()
    for sequence in range(triggers):
        queue.put_nowait(sequence)

    async def drain(connection: _RawHttpConnection) -> None:
        while not queue.empty():
            sequence = queue.get_nowait()
            body = json.dumps(
                {"name": "scale", "to": f"scale-{sequence % SUBSCRIBERS}", "payload": {"seq": sequence}}
            ).encode()
            status = await connection.post("/v1/events/trigger", body, headers)
            if status != 201:
                raise RuntimeError(f"trigger {sequence} got HTTP {status}")

    started_at = time.perf_counter()
    await asyncio.gather(*(drain(connection) for connection in pool))
    elapsed = time.perf_counter() - started_at
    for connection in pool:
        connection.close()
    return elapsed


def wait_delivered(count_messages: Callable[[], tuple[int, int]], triggers: int, started_at: float) -> float:
    """Poll until `triggers` in-app messages exist; return seconds since `started_at`."""
    while True:
        total, _distinct = count_messages()
        if total >= triggers:
            return time.perf_counter() - started_at
        if time.perf_counter() - started_at > TIMEOUT_SECONDS:
            raise RuntimeError(f"only {total} of {triggers} messages arrived in {TIMEOUT_SECONDS:.0f} s")
        time.sleep(POLL_SECONDS)


COUNT_SQL = "SELECT count(*), count(DISTINCT content) FROM message WHERE channel = 'in_app'"


def sqlite_counter(database: Path) -> Callable[[], tuple[int, int]]:
    def count() -> tuple[int, int]:
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as connection:
            total, distinct = connection.execute(COUNT_SQL).fetchone()
        return int(total), int(distinct)

    return count


def postgres_counter(postgres: PostgresProcess, database: str) -> Callable[[], tuple[int, int]]:
    def count() -> tuple[int, int]:
        with postgres.connect(database) as connection:
            row = connection.execute(COUNT_SQL).fetchone()
        assert row is not None
        return int(row[0]), int(row[1])

    return count


def peak_rss(processes: list[Process]) -> float:
    total = 0
    for process in processes:
        assert process.process is not None
        total += psutil.Process(process.process.pid).memory_info().rss
    return total / 1e6


def measure(
    mode: str,
    processes: list[Process],
    counter: Callable[[], tuple[int, int]],
    triggers: int,
    connections: int,
) -> Result:
    servers = [process for process in processes if isinstance(process, ServerProcess)]
    with started(processes):
        create_workflow(servers[0])
        started_at = time.perf_counter()
        sending = asyncio.run(send_triggers(servers, triggers, connections))
        delivering = wait_delivered(counter, triggers, started_at)
        rss = peak_rss(processes)
        total, distinct = counter()
    return Result(mode, triggers / sending, triggers / delivering, distinct, total - distinct, rss)


def build_mode(
    mode: str, root: Path, redis: RedisProcess, postgres: PostgresProcess
) -> tuple[list[Process], Callable[[], tuple[int, int]]]:
    """Return the processes of a set-up and the function that counts its stored messages."""
    folder = root / mode.replace("+", "-")
    folder.mkdir()
    if mode == "embedded":
        server = ServerProcess(folder, free_port(), server_command(), folder / "server.log")
        return [server], sqlite_counter(folder / "novulite.db")
    database = f"scale_{mode.replace('+', '_')}"
    url = postgres.create_database(database)
    # Each set-up gets its own key prefix, so queue entries of an earlier one cannot leak in.
    env = {"NOVULITE_DATABASE_URL": url, "NOVULITE_REDIS_URL": redis.url, "NOVULITE_REDIS_PREFIX": database}
    serve_count = int(mode.split("+")[0])
    processes: list[Process] = []
    for index in range(serve_count):
        data_dir = folder / f"serve-{index}"
        data_dir.mkdir()
        processes.append(
            ServerProcess(data_dir, free_port(), server_command(), data_dir / "server.log", env=env)
        )
    worker_dir = folder / "worker"
    worker_dir.mkdir()
    processes.append(WorkerProcess(worker_dir, worker_dir / "worker.log", env=env))
    return processes, postgres_counter(postgres, database)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--triggers", type=int, default=3000, help="triggers per set-up")
    parser.add_argument("--connections", type=int, default=32, help="keep-alive connections of the load")
    parser.add_argument(
        "--modes", default=",".join(MODES), help=f"comma list of set-ups from {', '.join(MODES)}"
    )
    arguments = parser.parse_args()
    modes = [mode.strip() for mode in arguments.modes.split(",") if mode.strip()]
    unknown = sorted(set(modes) - set(MODES))
    if unknown:
        parser.error(f"unknown set-up {', '.join(unknown)}; choose from {', '.join(MODES)}")

    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    print(f"{arguments.triggers} triggers per set-up over {arguments.connections} connections\n")
    root = Path(tempfile.mkdtemp(prefix="novulite-scale-"))
    redis = RedisProcess(root).start()
    postgres = PostgresProcess().start()
    results = []
    try:
        for mode in modes:
            processes, counter = build_mode(mode, root, redis, postgres)
            results.append(measure(mode, processes, counter, arguments.triggers, arguments.connections))
            print(f"{mode}: done", flush=True)
    finally:
        redis.stop()
        postgres.remove()
        shutil.rmtree(root, ignore_errors=True)

    header = ("set-up", "triggers/s", "deliveries/s", "delivered", "repeats", "RSS MB")
    print("\n{:<10} {:>11} {:>13} {:>10} {:>8} {:>8}".format(*header))
    for result in results:
        print(
            f"{result.mode:<10} {result.triggers_per_second:>11.0f} {result.deliveries_per_second:>13.0f} "
            f"{result.delivered:>10} {result.duplicates:>8} {result.peak_rss_mb:>8.0f}"
        )
    if any(result.duplicates or result.delivered != arguments.triggers for result in results):
        sys.exit("some triggers were lost or delivered more than once")


if __name__ == "__main__":
    main()
