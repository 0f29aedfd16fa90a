"""Time the limiters: operations per second, the cost of one call, and rate limits on the trigger route.

It prints, for the SQLite limiter and for the Redis limiter on a private redis-server
that it starts on a free loopback port:
- reserve and take operations per second from 1 and from 4 threads sharing one limiter,
- the microseconds one take costs the event loop when called inline, through
  asyncio.to_thread, and, for Redis, through redis.asyncio,
- with --http-runs N: acknowledged triggers per second on POST /v1/events/trigger with rate
  limits off and on (buckets too large to refuse anything), under wrk, N interleaved runs each.

Usage (from the repository root, in the project's virtualenv):
    python bench/timing_limiter.py [--seconds 2] [--threads 4] [--http-runs 3] [--duration 10]
The HTTP part needs wrk (Debian package `wrk`). All traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.trigger import TRIGGER_BODY, run_wrk, wait_drained  # noqa: E402
from novulite.limiter import Limiter, RedisLimiter, SqliteLimiter  # noqa: E402
from novulite.limiter.aioredis import AsyncRedisLimiter  # noqa: E402
from novulite.limiter.connect import async_redis_client, redis_client  # noqa: E402
from tests.servers import API_KEY, RedisProcess, ServerProcess, free_port, server_command  # noqa: E402

# Large enough that no call is refused, so every call does the full work of a grant.
HUGE = 10**9
# Rate limits for the HTTP runs: buckets that never run dry during a run.
NEVER_REFUSING = f"trigger={HUGE}:{HUGE},configuration={HUGE}:{HUGE},global={HUGE}:{HUGE}"
SEQUENTIAL_CALLS = 3000


def operations_per_second(call: Callable[[int, int], object], threads: int, seconds: float) -> float:
    """Run `call(thread, n)` in a loop on `threads` threads for `seconds`; return total calls per second."""
    counts = [0] * threads
    start = threading.Barrier(threads + 1)
    stop = threading.Event()

    def work(thread: int) -> None:
        start.wait()
        for n in itertools.count():
            if stop.is_set():
                counts[thread] = n
                return
            call(thread, n)

    workers = [threading.Thread(target=work, args=(thread,)) for thread in range(threads)]
    for worker in workers:
        worker.start()
    start.wait()
    began = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for worker in workers:
        worker.join()
    return sum(counts) / (time.perf_counter() - began)


def limiter_rates(name: str, limiter: Limiter, threads: int, seconds: float) -> None:
    def reserve(thread: int, n: int) -> None:
        # 100 keys per thread with members that never repeat: every call adds a member.
        limiter.reserve(f"bench:{thread}:{n % 100}", HUGE, 600, f"{thread}:{n}")

    def take(thread: int, n: int) -> None:
        limiter.take(f"bench:{thread}:{n % 100}", HUGE, HUGE, 1)

    for operation, call in (("reserve", reserve), ("take", take)):
        single = operations_per_second(call, 1, seconds)
        several = operations_per_second(call, threads, seconds)
        print(
            f"{name + ' ' + operation + ':':<22}{single:>9,.0f}/s on 1 thread, "
            f"{several:>9,.0f}/s on {threads} threads"
        )


async def microseconds(call: Callable[[], object]) -> float:
    """Return the mean microseconds of SEQUENTIAL_CALLS awaited one after another."""
    await _maybe_await(call())
    began = time.perf_counter()
    for _ in range(SEQUENTIAL_CALLS):
        await _maybe_await(call())
    return (time.perf_counter() - began) / SEQUENTIAL_CALLS * 1e6


async def _maybe_await(value: object) -> None:
    if asyncio.iscoroutine(value) or isinstance(value, asyncio.Future):
        await value


async def call_costs(sqlite: SqliteLimiter, redis_limiter: RedisLimiter, redis_url: str) -> None:
    asynchronous = AsyncRedisLimiter(async_redis_client(redis_url), prefix="bench-async:")
    costs = [
        ("SQLite take inline", lambda: sqlite.take("cost", HUGE, HUGE, 1)),
        ("SQLite take to_thread", lambda: asyncio.to_thread(sqlite.take, "cost", HUGE, HUGE, 1)),
        ("Redis take inline", lambda: redis_limiter.take("cost", HUGE, HUGE, 1)),
        ("Redis take asyncio", lambda: asynchronous.take("cost", HUGE, HUGE, 1)),
    ]
    for label, call in costs:
        print(f"{label + ':':<26}{await microseconds(call):7.1f} us per call, one at a time")
    await asynchronous.close()


@contextmanager
def trigger_server(work: Path, name: str, args: list[str], env: dict[str, str]) -> Iterator[ServerProcess]:
    root = work / name
    root.mkdir()
    server = ServerProcess(
        data_dir=root / "data",
        port=free_port(),
        command=server_command(),
        log_path=root / "server.log",
        args=args,
        env=env,
    ).start()
    try:
        workflow = {
            "name": "Bench",
            "workflowId": "bench",
            "steps": [{"name": "Inbox", "type": "in_app", "controlValues": {"body": "n={{ payload.seq }}"}}],
        }
        headers = {"Authorization": f"ApiKey {API_KEY}"}
        response = httpx.post(f"{server.base_url}/v2/workflows", json=workflow, headers=headers)
        assert response.status_code == 201, response.text
        yield server
    finally:
        server.stop()


def http_rates(work: Path, redis_url: str, runs: int, duration: int, connections: int) -> None:
    setups = {
        "rate limits off": ([], {}),
        "SQLite rate limits": (["--rate-limits", NEVER_REFUSING], {}),
        "Redis rate limits": (["--rate-limits", NEVER_REFUSING], {"NOVULITE_REDIS_URL": redis_url}),
    }
    results: dict[str, list[float]] = {name: [] for name in setups}
    for run in range(runs):
        for name, (args, env) in setups.items():
            with trigger_server(work, f"{name.replace(' ', '-')}-{run}", args, env) as server:
                figures = run_wrk(
                    f"{server.base_url}/v1/events/trigger",
                    TRIGGER_BODY,
                    f"ApiKey {API_KEY}",
                    duration,
                    connections,
                )
                assert figures["errors"] == 0, f"{name}: {figures['errors']} non-2xx responses"
                results[name].append(figures["rps"])
                wait_drained(server.data_dir / "novulite.db")
    baseline = statistics.median(results["rate limits off"])
    load = f"wrk -t1 -c{connections} -d{duration}s, {runs} interleaved runs"
    print(f"POST /v1/events/trigger, {load}, medians:")
    for name, rates in results.items():
        median = statistics.median(rates)
        spread = f"{min(rates):,.0f}-{max(rates):,.0f}"
        cost = (1 / median - 1 / baseline) * 1e6
        print(
            f"  {name + ':':<22}{median:>7,.0f} req/s ({spread}), {median / baseline:.0%} of off, "
            f"{cost:+.0f} us per request"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=2.0, help="seconds per operations-per-second figure")
    parser.add_argument("--threads", type=int, default=4, help="threads for the concurrent figures")
    parser.add_argument("--http-runs", type=int, default=0, help="interleaved wrk runs per setup; 0 skips")
    parser.add_argument("--duration", type=int, default=10, help="seconds of wrk load per run")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="novulite-limiter-bench-"))
    redis_process = RedisProcess(work).start()
    sqlite = SqliteLimiter(work / "limiter.db")
    client = redis_client(redis_process.url)
    redis_limiter = RedisLimiter(client, prefix="bench:")
    try:
        limiter_rates("SQLite", sqlite, args.threads, args.seconds)
        limiter_rates("Redis", redis_limiter, args.threads, args.seconds)
        asyncio.run(call_costs(sqlite, redis_limiter, redis_process.url))
        if args.http_runs:
            http_rates(work, redis_process.url, args.http_runs, args.duration, args.connections)
    finally:
        client.close()
        sqlite.close()
        redis_process.stop()


if __name__ == "__main__":
    main()
