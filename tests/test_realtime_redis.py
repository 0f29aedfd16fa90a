"""Tests of the Redis realtime listener, run in process against a private redis-server."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest

from novulite.engine.context import WorkerContext
from novulite.realtime import Hub
from novulite.realtime_redis import RedisFanout
from tests.helpers import poll
from tests.servers import RedisProcess

CHANNEL = "listenertest:realtime"


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisProcess]:
    process = RedisProcess(tmp_path).start()
    yield process
    process.stop()


def test_listener_survives_callback_error(
    private_redis: RedisProcess, caplog: pytest.LogCaptureFixture
) -> None:
    revokes: list[int] = []
    lock = threading.Lock()

    def on_revoke() -> None:
        with lock:
            revokes.append(len(revokes))
            if len(revokes) == 1:
                raise RuntimeError("the first revoke callback fails")

    listener = RedisFanout(private_redis.url, CHANNEL, Hub(), on_revoke=on_revoke)
    sender = RedisFanout(private_redis.url, CHANNEL, Hub())
    # The listener handles revoke events alone, which never read the job store.
    listener.start(cast(WorkerContext, None))
    try:
        # Pub/sub drops events sent while no client is subscribed, so send until two arrive.
        def revokes_after_send() -> int:
            sender.publish_revoke("env-1", "key rotated")
            with lock:
                return len(revokes)

        poll(revokes_after_send, lambda count: count >= 2, "a revoke after the failed callback")
    finally:
        listener.stop()
        sender.stop()

    failures = [record for record in caplog.records if "realtime listener failed" in record.getMessage()]
    assert len(failures) == 1
    assert failures[0].exc_info is not None
