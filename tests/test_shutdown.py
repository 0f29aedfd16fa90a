"""Graceful stop: SIGTERM and SIGINT end a busy server quickly and cleanly."""

from __future__ import annotations

import asyncio
import signal
import time

import httpx
import websockets

from tests.helpers import create_workflow, next_frame, open_session
from tests.servers import API_KEY, ServerProcess

AUTHORIZED = {"Authorization": f"ApiKey {API_KEY}"}
STOP_SECONDS = 5.0
BURST_SIZE = 50
STARTUP_LINE = "novulite 0.1.0 starting on"
# Close codes a server may send when it goes away on purpose: normal, going away, service restart.
GRACEFUL_CLOSE_CODES = {1000, 1001, 1012}


async def _burst_then_terminate(server: ServerProcess) -> tuple[float, websockets.ConnectionClosed]:
    """Open a socket, send a burst of triggers, SIGTERM the server and return its stop time and close."""
    token = open_session(server.base_url, "alice")["token"]
    async with websockets.connect(f"{server.ws_url}?token={token}") as socket:
        await next_frame(socket, "unread_count_changed")

        async with httpx.AsyncClient(base_url=server.base_url, headers=AUTHORIZED, timeout=10) as client:
            responses = await asyncio.gather(
                *(
                    client.post(
                        "/v1/events/trigger",
                        json={"name": "shutdown", "to": "alice", "payload": {"text": str(index)}},
                    )
                    for index in range(BURST_SIZE)
                )
            )
        assert [response.status_code for response in responses] == [201] * BURST_SIZE

        stopping = asyncio.create_task(asyncio.to_thread(server.terminate))
        async with asyncio.timeout(STOP_SECONDS):
            while True:
                try:
                    await socket.recv()
                except websockets.ConnectionClosed as closed:
                    close = closed
                    break
        duration = await stopping
    return duration, close


def test_sigterm_stops_busy_server(server: ServerProcess, api: httpx.Client) -> None:
    create_workflow(api, "shutdown")

    duration, close = asyncio.run(_burst_then_terminate(server))

    assert duration < STOP_SECONDS
    assert close.rcvd is not None, "the socket was dropped without a close frame"
    assert close.rcvd.code in GRACEFUL_CLOSE_CODES

    log = server.log()
    assert log.count(STARTUP_LINE) == 1
    assert f"{STARTUP_LINE} http://127.0.0.1:{server.port}" in log
    assert f"data directory {server.data_dir.resolve()}" in log
    assert "Traceback" not in log

    assert server.process is not None
    assert server.process.returncode == 0, f"exit status {server.process.returncode}"


def test_sigint_stops_server(server: ServerProcess) -> None:
    assert server.process is not None

    started = time.monotonic()
    server.process.send_signal(signal.SIGINT)
    server.process.wait(timeout=STOP_SECONDS * 2)
    duration = time.monotonic() - started

    assert duration < STOP_SECONDS
    assert server.process.returncode == 0
    assert "Traceback" not in server.log()
