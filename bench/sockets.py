"""Benchmark 2,000 idle inbox sockets: one notification to each, and a bare broadcast beside it.

Part one starts a novulite server, creates SOCKETS subscribers in a topic, opens an
inbox session and a `/ws` socket for each, waits until every socket has its opening
counts, and triggers the topic once. It prints the time from the trigger's request
until every socket got its notification_received frame, and the server's RSS with
the sessions open, with the sockets open too, and at its peak.

Part two starts a bare Litestar app under uvicorn, with the WebSocket settings of
`novulite serve`, and the same number of sockets (bench/broadcast_app.py). It
times one POST that sends one frame to every socket until all of them have it.
It is the floor: the time Litestar, uvicorn and this client need to move one frame
to each socket, with no job store and no queue.

The client runs in this process, on the same cores as the servers.

Usage (from the repository root, in the project's virtualenv):
    python bench/sockets.py [--sockets 2000]
All traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import websockets

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.profiler import start_profiler, stop_profiler  # noqa: E402
from bench.trigger import RssSampler, wait_drained  # noqa: E402
from novulite.security import subscriber_hash  # noqa: E402
from tests.servers import API_KEY, APP_ID, ServerProcess, free_port, server_command  # noqa: E402

TOPIC = "bench-sockets"
WORKFLOW = {
    "name": "Sockets",
    "workflowId": "sockets",
    "steps": [
        {"name": "Inbox", "type": "in_app", "controlValues": {"body": "Hi {{ subscriber.subscriberId }}"}}
    ],
}
BATCH = 100
# Sockets opened at once; more makes the accept queue overflow on a small machine.
CONNECT_CONCURRENCY = 100
TIMEOUT_SECONDS = 120.0


def subscriber_id(index: int) -> str:
    return f"socket-{index:05d}"


def mib(size: int) -> str:
    return f"{size / 2**20:.0f} MiB"


def raise_open_files_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(needed, hard), hard))


def create_subscribers(api: httpx.Client, count: int) -> None:
    """Create the subscribers and subscribe them all to TOPIC, in requests of 100."""
    for start in range(0, count, BATCH):
        ids = [subscriber_id(index) for index in range(start, min(start + BATCH, count))]
        response = api.post("/v1/subscribers/bulk", json={"subscribers": [{"subscriberId": i} for i in ids]})
        assert response.status_code == 201, response.text
        response = api.post(f"/v2/topics/{TOPIC}/subscriptions", json={"subscriptions": ids})
        assert response.status_code == 201, response.text


async def open_tokens(base_url: str, count: int) -> list[str]:
    """Open an inbox session per subscriber, as the Inbox client does; return the tokens in order."""
    tokens: list[str] = [""] * count
    limit = asyncio.Semaphore(32)
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:

        async def one(index: int) -> None:
            body = {
                "applicationIdentifier": APP_ID,
                "subscriber": {"subscriberId": subscriber_id(index)},
                "subscriberHash": subscriber_hash(API_KEY, subscriber_id(index)),
            }
            async with limit:
                response = await client.post("/v1/inbox/session", json=body)
            assert response.status_code == 201, response.text
            tokens[index] = response.json()["data"]["token"]

        await asyncio.gather(*(one(index) for index in range(count)))
    return tokens


async def connect_all(urls: list[str]) -> list[Any]:
    limit = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def one(url: str) -> Any:
        async with limit:
            return await websockets.connect(url, max_queue=None, ping_interval=None, open_timeout=60)

    return list(await asyncio.gather(*(one(url) for url in urls)))


async def wait_for_frame(socket: Any, event: str, arrivals: list[float]) -> None:
    """Read frames until one whose event is `event` arrives; "*" takes any frame."""
    async for text in socket:
        if event == "*" or json.loads(text).get("event") == event:
            arrivals.append(time.monotonic())
            return


async def novulite_part(count: int, profile: str | None) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="novulite-sockets-"))
    server = ServerProcess(
        data_dir=work / "data", port=free_port(), command=server_command(), log_path=work / "server.log"
    )
    server.start()
    try:
        assert server.process is not None
        rss = RssSampler(server.process.pid)
        idle_rss = rss.current()
        api = httpx.Client(
            base_url=server.base_url, headers={"Authorization": f"ApiKey {API_KEY}"}, timeout=60
        )
        assert api.post("/v2/workflows", json=WORKFLOW).status_code == 201
        create_subscribers(api, count)
        tokens = await open_tokens(server.base_url, count)
        sessions_rss = rss.current()

        started = time.monotonic()
        sockets = await connect_all([f"{server.ws_url}?token={token}" for token in tokens])
        # The counts are the last frames a socket opens with. Once every socket has them, the
        # server has no setup work left, so the trigger meets idle sockets.
        settled: list[float] = []
        await asyncio.gather(*(wait_for_frame(socket, "unseen_count_changed", settled) for socket in sockets))
        connect_seconds = time.monotonic() - started
        open_rss = rss.current()

        arrivals: list[float] = []
        waiters = [
            asyncio.create_task(wait_for_frame(socket, "notification_received", arrivals))
            for socket in sockets
        ]
        profiler = start_profiler(server.process.pid, profile) if profile else None
        rss.start()
        sent = time.monotonic()
        response = await asyncio.to_thread(
            api.post,
            "/v1/events/trigger",
            json={"name": "sockets", "to": {"type": "Topic", "topicKey": TOPIC}},
        )
        assert response.status_code == 201, response.text
        _, pending = await asyncio.wait(waiters, timeout=TIMEOUT_SECONDS)
        rss.stop()
        if profiler is not None:
            stop_profiler(profiler)
        for task in pending:
            task.cancel()
        received = len(arrivals)
        elapsed = (max(arrivals) - sent) if arrivals else float("nan")
        await asyncio.gather(*(socket.close() for socket in sockets), return_exceptions=True)
        wait_drained(server.data_dir / "novulite.db")
        return {
            "connect_seconds": connect_seconds,
            "received": received,
            "elapsed": elapsed,
            "idle_rss": idle_rss,
            "sessions_rss": sessions_rss,
            "open_rss": open_rss,
            "peak_rss": max(rss.peak, open_rss),
        }
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


async def bare_part(count: int) -> dict[str, Any]:
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "bench.broadcast_app:app",
            "--port",
            str(port),
            "--host",
            "127.0.0.1",
            "--log-level",
            "warning",
            "--backlog",
            "4096",
            # The WebSocket settings of `novulite serve`, so both servers move frames the same way.
            "--ws",
            "websockets-sansio",
            "--ws-per-message-deflate",
            "false",
        ],
        cwd=REPO,
    )
    try:
        base_url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base_url}/count", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the bare app did not start"
            await asyncio.sleep(0.1)
        idle_rss = psutil.Process(process.pid).memory_info().rss
        sockets = await connect_all([f"ws://127.0.0.1:{port}/ws"] * count)
        while httpx.get(f"{base_url}/count", timeout=5).json()["sockets"] < count:
            await asyncio.sleep(0.05)
        rss = psutil.Process(process.pid).memory_info().rss

        arrivals: list[float] = []
        waiters = [asyncio.create_task(wait_for_frame(socket, "*", arrivals)) for socket in sockets]
        sent = time.monotonic()
        async with httpx.AsyncClient(timeout=30) as client:
            response = await client.post(f"{base_url}/broadcast")
        assert response.status_code == 201, response.text
        await asyncio.wait(waiters, timeout=TIMEOUT_SECONDS)
        elapsed = (max(arrivals) - sent) if arrivals else float("nan")
        await asyncio.gather(*(socket.close() for socket in sockets), return_exceptions=True)
        return {"received": len(arrivals), "elapsed": elapsed, "idle_rss": idle_rss, "rss": rss}
    finally:
        process.terminate()
        process.wait(timeout=10)


async def run(count: int, profile: str | None) -> None:
    raise_open_files_limit(count * 2 + 1000)
    novulite = await novulite_part(count, profile)
    bare = await bare_part(count)
    ratio = novulite["elapsed"] / bare["elapsed"]
    lines = [
        ("machine", f"{platform.machine()}, {psutil.cpu_count()} CPUs, Python {platform.python_version()}"),
        ("sockets", f"{count:,} open, idle; {novulite['connect_seconds']:.1f} s to open them"),
        (
            "novulite",
            f"{novulite['received']:,} of {count:,} notifications arrived, the last "
            f"{novulite['elapsed'] * 1000:.0f} ms after the trigger",
        ),
        (
            "novulite RSS",
            f"idle {mib(novulite['idle_rss'])}, {mib(novulite['sessions_rss'])} with the sessions open, "
            f"{mib(novulite['open_rss'])} with the sockets open too, peak {mib(novulite['peak_rss'])} "
            f"({novulite['peak_rss'] / 1e6:.0f} MB)",
        ),
        (
            "RSS per socket",
            f"{(novulite['open_rss'] - novulite['sessions_rss']) / count / 1024:.1f} KiB "
            "(with the sockets open minus with the sessions open)",
        ),
        (
            "bare Litestar",
            f"{bare['received']:,} of {count:,} frames arrived, the last "
            f"{bare['elapsed'] * 1000:.0f} ms after the broadcast request "
            f"(RSS idle {mib(bare['idle_rss'])}, {mib(bare['rss'])} with the sockets open: "
            f"{(bare['rss'] - bare['idle_rss']) / count / 1024:.1f} KiB per socket)",
        ),
        ("ratio novulite / bare", f"{ratio:.1f}x"),
    ]
    for label, value in lines:
        print(f"{label + ':':<24}{value}")
    print(f"{'load average:':<24}{', '.join(f'{load:.2f}' for load in os.getloadavg())}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sockets", type=int, default=2000, help="idle inbox sockets to hold open")
    parser.add_argument(
        "--profile",
        metavar="FILE",
        help="record the server with py-spy from the trigger until the last frame: an SVG flame graph, "
        "else collapsed stacks",
    )
    args = parser.parse_args()
    asyncio.run(run(args.sockets, args.profile))


if __name__ == "__main__":
    main()
