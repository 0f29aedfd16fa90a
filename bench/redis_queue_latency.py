"""Time enqueue-to-start on the Redis queues, from one Queues instance to another that consumes.

Two Queues instances with one key prefix stand for two server processes: one enqueues,
the other's consumer starts the task. Every 50th enqueue follows an idle pause longer
than the consumer's blocking read, which is where a polling consumer would have backed off.
A private redis-server runs on a free loopback port; all traffic stays on 127.0.0.1.

Usage (from the repository root, in the project's virtualenv):
    python bench/redis_queue_latency.py [--samples 300]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from novulite.queues import RUN_JOBS, STANDARD, Queues
from tests.servers import RedisProcess

IDLE_EVERY = 50
IDLE_SECONDS = 2.5


def measure(url: str, samples: int) -> list[float]:
    """Return the enqueue-to-start delay of each sample, in milliseconds."""
    started: dict[str, float] = {}
    ran = threading.Event()

    def run(ids: list[str]) -> None:
        started[ids[0]] = time.perf_counter()
        ran.set()

    consumer = Queues(Path(tempfile.mkdtemp()), redis_url=url, redis_prefix="bench")
    producer = Queues(Path(tempfile.mkdtemp()), redis_url=url, redis_prefix="bench")
    for queues in (consumer, producer):
        queues.register(STANDARD, RUN_JOBS, run)
    consumer.start()
    delays = []
    try:
        for number in range(samples):
            ran.clear()
            enqueued = time.perf_counter()
            producer.enqueue(RUN_JOBS, [str(number)])
            if not ran.wait(5):
                raise RuntimeError(f"entry {number} did not start within 5 s")
            delays.append((started[str(number)] - enqueued) * 1000)
            time.sleep(IDLE_SECONDS if number % IDLE_EVERY == IDLE_EVERY - 1 else 0.003)
    finally:
        consumer.stop(2)
        producer.stop(2)
    return delays


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=300)
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        redis_process = RedisProcess(Path(workdir)).start()
        try:
            delays = sorted(measure(redis_process.url, arguments.samples))
        finally:
            redis_process.stop()
    p50 = delays[len(delays) // 2]
    p99 = delays[min(len(delays) - 1, round(len(delays) * 0.99))]
    print(f"enqueue-to-start over {len(delays)} samples:", end=" ")
    print(f"p50 {p50:.2f} ms, p99 {p99:.2f} ms, max {delays[-1]:.2f} ms")


if __name__ == "__main__":
    main()
