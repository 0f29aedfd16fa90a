"""SIGTERM with a job running: the job finishes within --shutdown-timeout, or its lease is released.

The job is an http_request step to a loopback stub that holds the request until the
test releases it, followed by an in-app step.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import websockets

from tests.held_calls import SUBSCRIBER_ID, create_held_workflow, held_server, jobs, message_count, trigger
from tests.helpers import inbox_messages, next_frame, open_session, poll, read_rows
from tests.http_stub import HttpStub, Reply
from tests.servers import RedisProcess, ServerProcess

# Seconds a test waits for a socket's close frame or a process's exit.
STOP_SECONDS = 15.0


@pytest.fixture
def stub() -> Iterator[HttpStub]:
    server = HttpStub().start()
    yield server
    server.stop()


async def _terminate_with_socket_open(server: ServerProcess) -> int:
    """SIGTERM the server while an inbox socket is open; return the socket's close code."""
    token = open_session(server.base_url, SUBSCRIBER_ID)["token"]
    async with websockets.connect(f"{server.ws_url}?token={token}") as socket:
        await next_frame(socket, "unread_count_changed")
        assert server.process is not None
        server.process.terminate()
        async with asyncio.timeout(STOP_SECONDS):
            try:
                while True:
                    await socket.recv()
            except websockets.ConnectionClosed as closed:
                assert closed.rcvd is not None, "the socket was dropped without a close frame"
                return closed.rcvd.code


def test_sigterm_lets_running_job_finish(tmp_path: Path, stub: HttpStub) -> None:
    release = threading.Event()
    stub.route("/held", Reply(body={"reply": "late"}, hold=release))
    server = held_server(tmp_path, "server").start()
    try:
        create_held_workflow(server, stub.url("/held"))
        transaction_id = trigger(server)
        stub.wait_for("/held", 1)

        close_code = asyncio.run(_terminate_with_socket_open(server))
        assert close_code == 1001
        assert server.process is not None
        assert server.process.poll() is None, "the server exited before its running job finished"
        assert jobs(server, transaction_id)[0] == ("call", "running", 1)

        release.set()
        server.process.wait(timeout=STOP_SECONDS)
        assert server.process.returncode == 0
        log = server.log()
        assert "closed 1 inbox sockets with 1001 (going away)" in log
        assert "released the leases" not in log
        assert "Traceback" not in log
        # The call finished in this process; the in-app step after it waits in the queue.
        assert jobs(server, transaction_id)[0] == ("call", "completed", 1)

        server.start()
        token = open_session(server.base_url, SUBSCRIBER_ID)["token"]
        poll(
            lambda: inbox_messages(server.base_url, token),
            lambda messages: len(messages) == 1,
            "the in-app step after the restart",
        )
        assert jobs(server, transaction_id) == [("call", "completed", 1), ("inbox", "completed", 1)]
        assert message_count(server, transaction_id) == 1
        assert len(stub.received("/held")) == 1
    finally:
        release.set()
        server.stop()


def test_drain_deadline_releases_lease(tmp_path: Path, stub: HttpStub, redis_server: RedisProcess) -> None:
    release = threading.Event()
    stub.route("/held", Reply(body={"reply": "first"}, hold=release), Reply(body={"reply": "second"}))
    redis_env = {"NOVULITE_REDIS_URL": redis_server.url}
    leaving = held_server(tmp_path, "leaving", ["--shutdown-timeout", "1"], redis_env)
    staying = held_server(tmp_path, "staying", [], redis_env)
    try:
        leaving.start()
        create_held_workflow(leaving, stub.url("/held"))
        transaction_id = trigger(leaving)
        stub.wait_for("/held", 1)
        # Started after the claim, so the job runs in `leaving`.
        staying.start()

        duration = leaving.terminate(timeout=STOP_SECONDS)
        assert leaving.process is not None
        assert leaving.process.returncode == 0
        assert duration < 6, f"stopping took {duration:.1f} s with --shutdown-timeout 1"
        log = leaving.log()
        assert "released the leases of 1 jobs still running at the shutdown deadline" in log
        assert "Traceback" not in log

        # The lease lasts 60 s, so only the release lets `staying` take the job over this soon.
        requests = stub.wait_for("/held", 2, timeout=15)
        assert requests[0].headers["idempotency-key"] == requests[1].headers["idempotency-key"]
        finished = poll(
            lambda: jobs(staying, transaction_id),
            lambda rows: all(row[1] == "completed" for row in rows),
            "the job to finish in the other process",
            timeout=15,
        )
        assert finished == [("call", "completed", 2), ("inbox", "completed", 1)]
        assert message_count(staying, transaction_id) == 1
        assert "Worker lost; retried as attempt 2" in [
            row[0]
            for row in read_rows(
                staying.data_dir / "novulite.db",
                "SELECT d.detail FROM execution_detail d JOIN job j ON j.id = d.job_id "
                "WHERE j.transaction_id = ? AND j.step_id = 'call'",
                (transaction_id,),
            )
        ]
    finally:
        release.set()
        leaving.stop()
        staying.stop()
