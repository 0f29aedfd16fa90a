"""One contract suite for both limiters: the SQLite one with a controlled clock, the Redis one against the
private redis-server that the `redis_server` fixture (tests/conftest.py) starts on a free loopback port.

The `Harness.pass_time` step is where the two differ: the SQLite harness moves its clock and checks the
condition once, while the Redis harness waits on Redis's own clock until the condition holds.
"""

from __future__ import annotations

import dataclasses
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from novulite.limiter import Limiter, RedisLimiter, SqliteLimiter
from tests.servers import RedisProcess

# Extra time the Redis harness allows past the expected moment, for scheduling delays.
REDIS_TIME_MARGIN = 2.0
# Slow enough that the milliseconds between calls refill no measurable fraction of a token.
SLOW_REFILL = 0.001


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclasses.dataclass
class Harness:
    limiter: Limiter
    # Largest difference allowed between a reported duration and the expected one.
    tolerance: float
    # Let the given seconds pass, then require the condition. The Redis harness polls it until a deadline.
    pass_time: Callable[[float, Callable[[], bool]], None]
    # Let the given seconds pass when no observable condition marks their end.
    idle: Callable[[float], None]


@pytest.fixture
def redis_client(redis_server: RedisProcess) -> Iterator[redis.Redis]:
    client = redis_server.client()
    yield client
    client.close()


def _sqlite_harness(path: Path) -> Harness:
    clock = FakeClock()

    def pass_time(seconds: float, condition: Callable[[], bool]) -> None:
        clock.now += seconds
        assert condition(), f"condition still false {seconds} s later"

    def idle(seconds: float) -> None:
        clock.now += seconds

    return Harness(SqliteLimiter(path, clock=clock), tolerance=1e-9, pass_time=pass_time, idle=idle)


def _redis_harness(client: redis.Redis) -> Harness:
    def pass_time(seconds: float, condition: Callable[[], bool]) -> None:
        deadline = time.monotonic() + seconds + REDIS_TIME_MARGIN
        while not condition():
            assert time.monotonic() < deadline, f"condition still false {seconds + REDIS_TIME_MARGIN} s later"
            time.sleep(0.01)

    # A new prefix per test keeps tests apart on the shared server.
    prefix = f"test:{uuid.uuid4().hex}:"
    # The tokens refill on Redis's clock, which nothing outside the server can move.
    return Harness(RedisLimiter(client, prefix=prefix), tolerance=0.05, pass_time=pass_time, idle=time.sleep)


@pytest.fixture(params=["sqlite", "redis"])
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    if request.param == "sqlite":
        built = _sqlite_harness(tmp_path / "limits.db")
    else:
        built = _redis_harness(request.getfixturevalue("redis_client"))
    yield built
    built.limiter.close()


# reserve


def test_reserve_grants_up_to_limit(harness: Harness) -> None:
    limiter = harness.limiter
    for number in range(1, 4):
        reservation = limiter.reserve("digest", limit=3, window_seconds=60, member=f"job-{number}")
        assert reservation.granted
        assert reservation.count == number
        assert 0 < reservation.reset_seconds <= 60

    refused = limiter.reserve("digest", limit=3, window_seconds=60, member="job-4")
    assert not refused.granted
    assert refused.count == 3
    assert 0 < refused.reset_seconds <= 60


def test_reserve_window_starts_at_first_member(harness: Harness) -> None:
    first = harness.limiter.reserve("k", limit=2, window_seconds=30, member="a")
    assert first.reset_seconds == pytest.approx(30, abs=harness.tolerance)


def test_reserve_same_member_takes_one_slot(harness: Harness) -> None:
    limiter = harness.limiter
    assert limiter.reserve("k", limit=2, window_seconds=60, member="job-1").granted
    again = limiter.reserve("k", limit=2, window_seconds=60, member="job-1")
    assert again.granted
    assert again.count == 1

    assert limiter.reserve("k", limit=2, window_seconds=60, member="job-2").granted
    # The window is full, but a member that already has a slot is still granted.
    retried = limiter.reserve("k", limit=2, window_seconds=60, member="job-1")
    assert retried.granted
    assert retried.count == 2
    assert not limiter.reserve("k", limit=2, window_seconds=60, member="job-3").granted


def test_reserve_keys_are_independent(harness: Harness) -> None:
    limiter = harness.limiter
    assert limiter.reserve("a", limit=1, window_seconds=60, member="m").granted
    assert not limiter.reserve("a", limit=1, window_seconds=60, member="n").granted
    other = limiter.reserve("b", limit=1, window_seconds=60, member="n")
    assert other.granted
    assert other.count == 1


def test_reserve_window_end_reopens(harness: Harness) -> None:
    limiter = harness.limiter
    window = 0.5
    assert limiter.reserve("k", limit=1, window_seconds=window, member="first").granted
    assert not limiter.reserve("k", limit=1, window_seconds=window, member="second").granted

    harness.pass_time(
        window, lambda: limiter.reserve("k", limit=1, window_seconds=window, member="second").granted
    )
    # The new window holds only the member that opened it, so the first member needs a new slot.
    assert not limiter.reserve("k", limit=1, window_seconds=window, member="first").granted


def test_reserve_refusal_does_not_extend_window(harness: Harness) -> None:
    limiter = harness.limiter
    window = 0.5
    assert limiter.reserve("k", limit=1, window_seconds=window, member="first").granted
    refused = limiter.reserve("k", limit=1, window_seconds=window * 100, member="second")
    assert not refused.granted
    assert refused.reset_seconds <= window

    harness.pass_time(
        window, lambda: limiter.reserve("k", limit=1, window_seconds=window, member="second").granted
    )


@pytest.mark.parametrize(
    ("limit", "window_seconds", "member", "field"),
    [
        (0, 60.0, "m", "limit"),
        (1, 0.0, "m", "window_seconds"),
        (1, -1.0, "m", "window_seconds"),
        (1, float("inf"), "m", "window_seconds"),
        (1, 60.0, "", "member"),
    ],
)
def test_reserve_invalid_arguments(
    harness: Harness, limit: int, window_seconds: float, member: str, field: str
) -> None:
    with pytest.raises(ValueError, match=field):
        harness.limiter.reserve("k", limit=limit, window_seconds=window_seconds, member=member)


def test_reserve_concurrent_grants_exactly_limit(harness: Harness) -> None:
    limiter = harness.limiter
    limit = 7
    workers = 50
    # Each thread walks the same keys in order, so every key gets 50 concurrent calls with distinct
    # members. Several rounds make an interleaving that overruns the limit likely to occur at least once.
    keys = [f"burst-{round_number}" for round_number in range(20)]
    start = threading.Barrier(workers)
    granted: dict[str, list[bool]] = {key: [] for key in keys}
    errors: list[BaseException] = []
    lock = threading.Lock()

    def reserve(number: int) -> None:
        try:
            start.wait()
            for key in keys:
                result = limiter.reserve(key, limit=limit, window_seconds=60, member=f"job-{number}")
                with lock:
                    granted[key].append(result.granted)
        except BaseException as error:
            with lock:
                errors.append(error)

    threads = [threading.Thread(target=reserve, args=(number,)) for number in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert not errors
    for key in keys:
        assert len(granted[key]) == workers, key
        assert granted[key].count(True) == limit, key
        final = limiter.reserve(key, limit=limit, window_seconds=60, member="late")
        assert final.count == limit, key


# take


def test_take_new_bucket_starts_full(harness: Harness) -> None:
    result = harness.limiter.take("api", capacity=10, refill_per_second=SLOW_REFILL, cost=3)
    assert result.allowed
    assert result.remaining == 7
    assert result.retry_after_seconds == 0
    assert result.reset_seconds == pytest.approx(3 / SLOW_REFILL, abs=harness.tolerance)


def test_take_refusal_deducts_nothing(harness: Harness) -> None:
    limiter = harness.limiter
    assert limiter.take("api", capacity=5, refill_per_second=SLOW_REFILL, cost=4).allowed

    for _ in range(3):
        refused = limiter.take("api", capacity=5, refill_per_second=SLOW_REFILL, cost=2)
        assert not refused.allowed
        assert refused.remaining == 1
        assert refused.retry_after_seconds == pytest.approx(1 / SLOW_REFILL, abs=harness.tolerance)

    last = limiter.take("api", capacity=5, refill_per_second=SLOW_REFILL, cost=1)
    assert last.allowed
    assert last.remaining == 0


def test_take_refills_over_time(harness: Harness) -> None:
    limiter = harness.limiter
    rate = 10.0
    assert limiter.take("api", capacity=4, refill_per_second=rate, cost=4).allowed

    refused = limiter.take("api", capacity=4, refill_per_second=rate, cost=2)
    assert not refused.allowed
    assert 0 < refused.retry_after_seconds <= 2 / rate
    assert refused.retry_after_seconds <= refused.reset_seconds <= 4 / rate

    harness.pass_time(
        refused.retry_after_seconds,
        lambda: limiter.take("api", capacity=4, refill_per_second=rate, cost=2).allowed,
    )


def test_take_refill_stops_at_capacity(harness: Harness) -> None:
    limiter = harness.limiter
    rate = 20.0
    assert limiter.take("api", capacity=3, refill_per_second=rate, cost=3).allowed
    # Idle long enough to refill 10 tokens, which must not bank beyond the capacity of 3.
    harness.idle(0.5)
    assert limiter.take("api", capacity=3, refill_per_second=rate, cost=3).allowed
    refused = limiter.take("api", capacity=3, refill_per_second=rate, cost=1)
    assert not refused.allowed
    assert refused.remaining == 0


def test_take_retry_after_and_reset(harness: Harness) -> None:
    limiter = harness.limiter
    assert limiter.take("api", capacity=10, refill_per_second=SLOW_REFILL, cost=10).allowed
    refused = limiter.take("api", capacity=10, refill_per_second=SLOW_REFILL, cost=4)
    assert not refused.allowed
    assert refused.remaining == 0
    assert refused.retry_after_seconds == pytest.approx(4 / SLOW_REFILL, abs=harness.tolerance)
    assert refused.reset_seconds == pytest.approx(10 / SLOW_REFILL, abs=harness.tolerance)


def test_take_cost_above_capacity_raises(harness: Harness) -> None:
    with pytest.raises(ValueError, match="exceeds the bucket capacity"):
        harness.limiter.take("api", capacity=5, refill_per_second=1.0, cost=6)
    # Raising touched no bucket, so the full capacity is still there.
    assert harness.limiter.take("api", capacity=5, refill_per_second=SLOW_REFILL, cost=5).allowed


@pytest.mark.parametrize(
    ("capacity", "refill_per_second", "cost", "field"),
    [
        (0, 1.0, 1, "capacity"),
        (5, 0.0, 1, "refill_per_second"),
        (5, float("nan"), 1, "refill_per_second"),
        (5, 1.0, 0, "cost"),
    ],
)
def test_take_invalid_arguments(
    harness: Harness, capacity: int, refill_per_second: float, cost: int, field: str
) -> None:
    with pytest.raises(ValueError, match=field):
        harness.limiter.take("api", capacity=capacity, refill_per_second=refill_per_second, cost=cost)


# Redis only


def test_redis_scripts_reload_after_flush(redis_client: redis.Redis) -> None:
    limiter = RedisLimiter(redis_client, prefix=f"test:{uuid.uuid4().hex}:")
    assert limiter.reserve("k", limit=2, window_seconds=60, member="a").granted
    assert limiter.take("api", capacity=5, refill_per_second=SLOW_REFILL, cost=1).allowed

    redis_client.script_flush()
    assert redis_client.script_exists(*limiter.script_hashes) == [False, False]

    # Both calls first get NOSCRIPT from EVALSHA, then load the script and run it.
    again = limiter.reserve("k", limit=2, window_seconds=60, member="b")
    assert again.granted
    assert again.count == 2
    taken = limiter.take("api", capacity=5, refill_per_second=SLOW_REFILL, cost=1)
    assert taken.allowed
    assert taken.remaining == 3
    assert redis_client.script_exists(*limiter.script_hashes) == [True, True]


def test_redis_keys_carry_ttl(redis_client: redis.Redis) -> None:
    prefix = f"test:{uuid.uuid4().hex}:"
    limiter = RedisLimiter(redis_client, prefix=prefix)
    limiter.reserve("k", limit=2, window_seconds=60, member="a")
    limiter.take("api", capacity=5, refill_per_second=1.0, cost=2)

    window_ttl = redis_client.pttl(prefix + "window:k")
    assert 59_000 < window_ttl <= 60_000
    bucket_ttl = redis_client.pttl(prefix + "bucket:api")
    assert 1_900 < bucket_ttl <= 2_000


# SQLite only


def test_sqlite_idle_rows_deleted(tmp_path: Path) -> None:
    clock = FakeClock()
    path = tmp_path / "limits.db"
    limiter = SqliteLimiter(path, clock=clock)
    limiter.reserve("old", limit=2, window_seconds=10, member="a")
    limiter.take("old", capacity=5, refill_per_second=1.0, cost=5)

    clock.now += 10
    limiter.reserve("new", limit=2, window_seconds=10, member="a")
    limiter.take("new", capacity=5, refill_per_second=1.0, cost=1)
    limiter.close()

    with sqlite3.connect(path) as connection:
        windows = connection.execute("SELECT key FROM limiter_window").fetchall()
        members = connection.execute("SELECT key FROM limiter_window_member").fetchall()
        buckets = connection.execute("SELECT key FROM limiter_bucket").fetchall()
        journal_mode = connection.execute("PRAGMA journal_mode").fetchone()[0]
    connection.close()
    assert windows == [("new",)]
    assert members == [("new",)]
    assert buckets == [("new",)]
    assert journal_mode == "wal"


def test_sqlite_state_survives_reopen(tmp_path: Path) -> None:
    clock = FakeClock()
    path = tmp_path / "limits.db"
    first = SqliteLimiter(path, clock=clock)
    assert first.reserve("k", limit=1, window_seconds=60, member="a").granted
    first.close()

    second = SqliteLimiter(path, clock=clock)
    assert not second.reserve("k", limit=1, window_seconds=60, member="b").granted
    second.close()


# Each worker process reserves slots for its own members on the same keys and prints its grant count.
# The workers start together at a given wall-clock time, so their calls overlap.
SQLITE_WORKER = """
import sys
import time
from novulite.limiter import SqliteLimiter

path, limit, members, keys, worker, start_at = sys.argv[1:]
limiter = SqliteLimiter(path)
time.sleep(max(0.0, float(start_at) - time.time()))
granted = 0
for member in range(int(members)):
    for key in range(int(keys)):
        reservation = limiter.reserve(f"key-{key}", limit=int(limit), window_seconds=600,
                                      member=f"{worker}-{member}")
        granted += reservation.granted
limiter.close()
print(granted)
"""


def test_sqlite_processes_share_limit(tmp_path: Path) -> None:
    path = tmp_path / "limits.db"
    SqliteLimiter(path).close()
    limit = 30
    members = 25
    keys = 10
    start_at = time.time() + 1.0
    processes = [
        subprocess.Popen(
            [
                *(sys.executable, "-c", SQLITE_WORKER, str(path)),
                *(str(limit), str(members), str(keys), f"worker-{number}", str(start_at)),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for number in range(4)
    ]
    grants = 0
    for process in processes:
        stdout, stderr = process.communicate(timeout=60)
        assert process.returncode == 0, stderr
        grants += int(stdout)

    assert grants == limit * keys
