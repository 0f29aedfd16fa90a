"""The queues on Redis, in process: several consumers on one Redis, blocking pops, delays and outages.

Each Queues instance stands for one server process; instances with the same key prefix share
the queues as processes do.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from novulite.queues import COUNTS_CHANGED, RUN_JOBS, STANDARD, WS_SOCKET, Queues
from novulite.redis_keys import check_prefix, limiter_prefix, queue_key, realtime_channel
from tests.conftest import unique_prefix
from tests.helpers import poll
from tests.servers import RedisProcess


class Recorder:
    """Records each run of a task: its first argument and when it started."""

    def __init__(self) -> None:
        self.runs: collections.Counter[str] = collections.Counter()
        self.started: dict[str, float] = {}
        self._lock = threading.Lock()

    def run_jobs(self, ids: list[str]) -> None:
        self._record(ids[0])

    def counts_changed(self, subscriber_pk: str, context: str) -> None:
        self._record(subscriber_pk)

    def _record(self, key: str) -> None:
        with self._lock:
            self.runs[key] += 1
            self.started.setdefault(key, time.monotonic())

    @property
    def total(self) -> int:
        with self._lock:
            return sum(self.runs.values())


def open_queues(tmp_path: Path, url: str, prefix: str, recorder: Recorder, workers: int = 1) -> Queues:
    queues = Queues(tmp_path, workers=workers, redis_url=url, redis_prefix=prefix)
    queues.register(STANDARD, RUN_JOBS, recorder.run_jobs)
    queues.register(WS_SOCKET, COUNTS_CHANGED, recorder.counts_changed)
    return queues


@pytest.fixture
def opened() -> Iterator[list[Queues]]:
    """Queues a test opens, stopped at its end."""
    instances: list[Queues] = []
    yield instances
    for queues in instances:
        if queues.running:
            queues.stop(2)


def test_delayed_entries_run_once(tmp_path: Path, redis_server: RedisProcess, opened: list[Queues]) -> None:
    recorder = Recorder()
    prefix = unique_prefix()
    opened.extend(open_queues(tmp_path, redis_server.url, prefix, recorder, workers=2) for _ in range(3))
    for queues in opened:
        queues.start()

    for number in range(150):
        opened[number % 3].schedule(COUNTS_CHANGED, 1.0, f"s{number}", "")
    poll(lambda: recorder.total, lambda total: total >= 150, "150 delayed entries to run", timeout=15)
    # Long enough for any scheduler to move an entry a second time, if the move were not atomic.
    time.sleep(2.5)

    assert recorder.total == 150
    assert set(recorder.runs.values()) == {1}
    client = redis_server.client()
    assert client.zcard(queue_key(prefix, WS_SOCKET, "schedule")) == 0


def test_enqueue_starts_without_polling(
    tmp_path: Path, redis_server: RedisProcess, opened: list[Queues]
) -> None:
    recorder = Recorder()
    prefix = unique_prefix()
    consumer = open_queues(tmp_path, redis_server.url, prefix, recorder)
    producer = open_queues(tmp_path, redis_server.url, prefix, recorder)
    opened.extend([consumer, producer])
    consumer.start()

    delays = []
    for number in range(3):
        # Idle past the blocking read's timeout, after which a polling consumer would have backed off.
        time.sleep(1.5)
        enqueued = time.monotonic()
        producer.enqueue(RUN_JOBS, [f"j{number}"])
        poll(lambda number=number: recorder.runs[f"j{number}"], bool, f"entry j{number} to start")
        delays.append(recorder.started[f"j{number}"] - enqueued)

    # Embedded queues poll another process's entries at up to 1 s; a blocking pop starts them at once.
    assert max(delays) < 0.25, delays


def test_take_waiting_and_pending_counts(tmp_path: Path, redis_server: RedisProcess) -> None:
    prefix = unique_prefix()
    queues = open_queues(tmp_path, redis_server.url, prefix, Recorder())
    for number in range(5):
        queues.enqueue(RUN_JOBS, [f"w{number}"])

    assert queues.pending_counts()[STANDARD] == 5
    started = time.monotonic()
    dequeued = list(queues.take_waiting(RUN_JOBS))
    elapsed = time.monotonic() - started

    assert dequeued == [[f"w{number}"] for number in range(5)]
    assert queues.pending_counts()[STANDARD] == 0
    # An empty queue ends the iteration at once instead of blocking for the consumer's read timeout.
    assert elapsed < 0.5
    queues.stop(1)


def test_outage_holds_entries(tmp_path: Path, opened: list[Queues]) -> None:
    redis_process = RedisProcess(tmp_path).start()
    try:
        recorder = Recorder()
        queues = open_queues(tmp_path, redis_process.url, unique_prefix(), recorder)
        opened.append(queues)
        queues.start()
        queues.enqueue(RUN_JOBS, ["before"])
        poll(lambda: recorder.runs["before"], bool, "the entry enqueued before the outage")

        redis_process.stop()
        for number in range(3):
            queues.enqueue(RUN_JOBS, [f"held{number}"])
        # The same entry twice, as two reconciler passes during an outage would enqueue it.
        queues.enqueue(RUN_JOBS, ["held0"])
        queues.schedule(COUNTS_CHANGED, 0.5, "delayed", "")
        time.sleep(1.0)
        assert recorder.total == 1

        redis_process.start()
        poll(lambda: recorder.total, lambda total: total >= 5, "held entries to run after Redis returned")
        time.sleep(0.5)
        assert recorder.runs == {"before": 1, "held0": 1, "held1": 1, "held2": 1, "delayed": 1}
    finally:
        redis_process.stop()


def test_keys_share_hash_tag() -> None:
    def hash_tag(key: str) -> str:
        return key[key.index("{") + 1 : key.index("}")]

    queue, schedule = queue_key("acme", STANDARD, "queue"), queue_key("acme", STANDARD, "schedule")
    assert queue.startswith("acme:")
    assert schedule.startswith("acme:")
    assert hash_tag(queue) == hash_tag(schedule) == "acme:standard"
    assert hash_tag(queue_key("other", STANDARD, "queue")) != hash_tag(queue)
    assert limiter_prefix("acme").startswith("acme:")
    assert realtime_channel("acme").startswith("acme:")


@pytest.mark.parametrize("prefix", ["", "a{b}", "has space", ":leading", "x" * 65])
def test_invalid_prefix_rejected(prefix: str) -> None:
    with pytest.raises(ValueError, match=r"the Redis key prefix .* is invalid"):
        check_prefix(prefix)


def test_valid_prefix_accepted() -> None:
    value: Any = check_prefix("prod-eu.1:novulite_a")
    assert value == "prod-eu.1:novulite_a"
