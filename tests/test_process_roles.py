"""Process roles: `serve --no-workers` serves the API only, and `novulite worker` runs its jobs."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.held_calls import create_held_workflow, held_server, jobs, message_count, trigger
from tests.helpers import create_workflow, inbox_messages, open_session, poll, read_rows
from tests.http_stub import HttpStub, Reply
from tests.servers import (
    API_KEY,
    RedisProcess,
    ServerProcess,
    WorkerProcess,
    free_port,
    server_command,
    worker_command,
)

REDIS_REQUIRED = "needs --redis-url (or NOVULITE_REDIS_URL)"


@pytest.mark.parametrize(
    "arguments",
    [[*worker_command()], [*server_command(), "--no-workers"]],
    ids=["worker", "no-workers"],
)
def test_roles_require_redis_url(tmp_path: Path, arguments: list[str]) -> None:
    result = subprocess.run(
        [*arguments, "--data-dir", str(tmp_path / "data")],
        capture_output=True,
        text=True,
        timeout=60,
        env={name: value for name, value in os.environ.items() if not name.startswith("NOVULITE_")},
    )
    assert result.returncode == 2
    assert REDIS_REQUIRED in result.stderr
    assert "share its queues and limiter through Redis" in result.stderr
    assert not (tmp_path / "data").exists()


def test_worker_rejects_unknown_queue(tmp_path: Path) -> None:
    result = subprocess.run(
        [*worker_command(), "--redis-url", "redis://127.0.0.1:1/0", "--queues", "standard,emails"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "unknown queue 'emails'" in result.stderr
    assert "valid queues are trigger-handler, process-subscriber, standard, ws_socket_queue" in result.stderr


def test_workers_run_api_only_jobs(tmp_path: Path, redis_server: RedisProcess) -> None:
    redis_env = {"NOVULITE_REDIS_URL": redis_server.url}
    api_server = ServerProcess(
        data_dir=tmp_path / "data",
        port=free_port(),
        command=server_command(),
        log_path=tmp_path / "server.log",
        args=["--no-workers"],
        env=redis_env,
    )
    workers = [
        WorkerProcess(
            tmp_path / "data",
            tmp_path / f"worker-{index}.log",
            args=["--queues", queues, "--threads", "2"],
            env=redis_env,
        )
        for index, queues in enumerate(["trigger-handler,process-subscriber", "standard,ws_socket_queue"])
    ]
    try:
        api_server.start()
        health = httpx.get(f"{api_server.base_url}/v1/health-check", timeout=5).json()
        assert health["info"]["queues"]["consumers"] == "none in this process"
        assert "role API only" in api_server.log()
        with httpx.Client(
            base_url=api_server.base_url, headers={"Authorization": f"ApiKey {API_KEY}"}, timeout=10
        ) as api:
            create_workflow(api, "split")
            response = api.post("/v1/events/trigger", json={"name": "split", "to": "bob"})
            assert response.status_code == 201, response.text
            transaction_id = response.json()["data"]["transactionId"]

        # No process consumes the queues yet, so the trigger waits in the job store.
        database = api_server.data_dir / "novulite.db"
        statuses = read_rows(
            database, "SELECT status FROM trigger_event WHERE transaction_id = ?", (transaction_id,)
        )
        assert statuses == [("received",)]

        for worker in workers:
            worker.start()
        token = open_session(api_server.base_url, "bob")["token"]
        delivered = poll(
            lambda: inbox_messages(api_server.base_url, token),
            lambda messages: len(messages) == 1,
            "the in-app message delivered by the workers",
            timeout=20,
        )
        assert delivered[0]["transactionId"] == transaction_id

        first_log = workers[0].log()
        assert "novulite 0.1.0 worker starting, data directory" in first_log
        assert "queues trigger-handler, process-subscriber with 2 threads each" in first_log
        assert "redis://:***@127.0.0.1" in first_log
        assert "started consumers of standard, ws_socket_queue with 2 threads each" in workers[1].log()
        for worker in workers:
            worker.terminate()
            assert worker.process is not None
            assert worker.process.returncode == 0
            assert worker.log().rstrip().endswith("stopped")
            assert "Traceback" not in worker.log()
    finally:
        for worker in workers:
            worker.stop()
        api_server.stop()


@pytest.fixture
def stub() -> Iterator[HttpStub]:
    server = HttpStub().start()
    yield server
    server.stop()


def test_worker_drain_releases_lease(tmp_path: Path, stub: HttpStub, redis_server: RedisProcess) -> None:
    release = threading.Event()
    stub.route("/held", Reply(body={"reply": "first"}, hold=release), Reply(body={"reply": "second"}))
    env = {"NOVULITE_REDIS_URL": redis_server.url, "NOVULITE_OUTBOUND_ALLOW": "127.0.0.1"}
    api_server = held_server(tmp_path, "server", ["--no-workers"], env)
    leaving = WorkerProcess(tmp_path / "data", tmp_path / "leaving.log", ["--shutdown-timeout", "1"], env)
    taking_over = WorkerProcess(tmp_path / "data", tmp_path / "taking-over.log", [], env)
    try:
        api_server.start()
        create_held_workflow(api_server, stub.url("/held"))
        leaving.start()
        transaction_id = trigger(api_server)
        stub.wait_for("/held", 1)

        assert leaving.terminate(timeout=15) < 6
        assert leaving.process is not None
        assert leaving.process.returncode == 0
        assert "received SIGTERM" in leaving.log()
        assert "released the leases of 1 jobs still running at the shutdown deadline" in leaving.log()

        # The lease lasts 60 s, so only the release lets the next worker take the job over this soon.
        taking_over.start()
        stub.wait_for("/held", 2, timeout=15)
        finished = poll(
            lambda: jobs(api_server, transaction_id),
            lambda rows: all(row[1] == "completed" for row in rows),
            "the job to finish in the second worker",
            timeout=15,
        )
        assert finished == [("call", "completed", 2), ("inbox", "completed", 1)]
        assert message_count(api_server, transaction_id) == 1

        assert taking_over.process is not None
        taking_over.process.send_signal(signal.SIGINT)
        assert taking_over.process.wait(timeout=15) == 0
        assert "received SIGINT" in taking_over.log()
        for worker in (leaving, taking_over):
            assert "Traceback" not in worker.log()
    finally:
        release.set()
        leaving.stop()
        taking_over.stop()
        api_server.stop()
