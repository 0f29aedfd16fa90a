"""Benchmark POST /v1/events/trigger against a bare Litestar app, both under uvicorn on this machine.

It prints acknowledged triggers/s with p50 and p99 latency under wrk load, and the
same for the bare app's POST /echo in the same run, with their ratio. It also prints
how long the queued triggers take to reach the inbox, the trigger-to-WebSocket
latency at a steady rate, and the server's RSS when idle and at its peak.

Usage (from the repository root, in the project's virtualenv):
    python bench/trigger.py [--duration 10] [--runs 3] [--connections 32] [--rate 200]
Needs wrk (Debian package `wrk`). All traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import websockets

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.helpers import subscriber_hash  # noqa: E402
from tests.servers import API_KEY, APP_ID, ServerProcess, free_port, server_command  # noqa: E402

TRIGGER_BODY = {"name": "bench", "to": "bench-user", "payload": {"seq": 0}}
ECHO_BODY = TRIGGER_BODY


def start_echo(port: int) -> subprocess.Popen[bytes]:
    command = [
        sys.executable, "-m", "uvicorn", "bench.echo_app:app",
        "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", "--no-access-log",
    ]  # fmt: skip
    process = subprocess.Popen(command, cwd=REPO)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if httpx.post(f"http://127.0.0.1:{port}/echo", json={}, timeout=1).status_code == 201:
                return process
        except httpx.HTTPError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError("the echo app did not start")


def run_wrk(url: str, body: dict[str, Any], auth: str, duration: int, connections: int) -> dict[str, float]:
    env = dict(os.environ, BODY=json.dumps(body), AUTH=auth)
    script = str(REPO / "bench" / "post.lua")
    command = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "-s", script, url]
    output = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
    return parse_wrk(output)


def _milliseconds(value: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", value)
    if match is None:
        raise ValueError(f"cannot read the wrk duration {value!r}")
    number, unit = match.groups()
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}[unit]


def parse_wrk(output: str) -> dict[str, float]:
    requests = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    p50 = _milliseconds(re.search(r"^\s+50%\s+(\S+)", output, re.MULTILINE).group(1))  # type: ignore[union-attr]
    p99 = _milliseconds(re.search(r"^\s+99%\s+(\S+)", output, re.MULTILINE).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return {
        "rps": requests,
        "p50": p50,
        "p99": p99,
        "total": total,
        "errors": int(non_2xx.group(1)) if non_2xx else 0,
    }


def backlog(database: Path) -> int:
    """Count triggers, notifications and jobs not yet finished."""
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as connection:
        triggers = connection.execute(
            "select count(*) from trigger_event where status = 'received'"
        ).fetchone()[0]
        notifications = connection.execute(
            "select count(*) from notification where expansion = 'pending'"
        ).fetchone()[0]
        jobs = connection.execute(
            "select count(*) from job where status in ('pending', 'queued', 'running')"
        ).fetchone()[0]
    return int(triggers + notifications + jobs)


def wait_drained(database: Path, timeout: float = 600.0) -> float:
    started = time.monotonic()
    while backlog(database) > 0:
        if time.monotonic() - started > timeout:
            raise RuntimeError("the server did not finish its backlog in time")
        time.sleep(0.2)
    return time.monotonic() - started


class RssSampler:
    def __init__(self, pid: int) -> None:
        self._process = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def current(self) -> int:
        return int(self._process.memory_info().rss)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            self.peak = max(self.peak, self.current())


class _RawHttpConnection:
    """A keep-alive HTTP/1.1 connection that sends prepared POSTs.

    httpx cost about a millisecond of CPU per request on the development machine. On
    2 cores that CPU comes from the server under test, and this client needs far less.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.lock = asyncio.Lock()

    @classmethod
    async def open(cls, port: int) -> _RawHttpConnection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def post(self, path: str, body: bytes, headers: str) -> int:
        request = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        async with self.lock:
            self.writer.write(request)
            status_line = await self.reader.readline()
            length = 0
            while (line := await self.reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode().partition(":")
                if name.lower() == "content-length":
                    length = int(value)
            await self.reader.readexactly(length)
        return int(status_line.split()[1])

    def close(self) -> None:
        self.writer.close()


async def websocket_latency(server: ServerProcess, rate: int, seconds: int) -> list[float]:
    """Send triggers at `rate` per second and time each until its frame arrives on the inbox socket."""
    subscriber = "latency-user"
    session = httpx.post(
        f"{server.base_url}/v1/inbox/session",
        json={
            "applicationIdentifier": APP_ID,
            "subscriberId": subscriber,
            "subscriberHash": subscriber_hash(subscriber),
        },
    ).json()["data"]
    sent: dict[str, float] = {}
    latencies: list[float] = []
    count = rate * seconds
    connections = [await _RawHttpConnection.open(server.port) for _ in range(16)]
    headers = f"Authorization: ApiKey {API_KEY}\r\n"
    async with websockets.connect(f"{server.ws_url}?token={session['token']}", max_queue=None) as socket:

        async def receive() -> None:
            while len(latencies) < count:
                frame = json.loads(await socket.recv())
                if frame["event"] == "notification_received":
                    arrived = time.perf_counter()
                    latencies.append((arrived - sent[frame["data"]["message"]["content"]]) * 1000)

        async def trigger(sequence: int) -> int:
            body = json.dumps({"name": "bench", "to": subscriber, "payload": {"seq": sequence}}).encode()
            sent[f"n={sequence}"] = time.perf_counter()
            return await connections[sequence % len(connections)].post("/v1/events/trigger", body, headers)

        receiver = asyncio.create_task(receive())
        started = time.perf_counter()
        pending = []
        for sequence in range(count):
            await asyncio.sleep(max(0.0, started + sequence / rate - time.perf_counter()))
            pending.append(asyncio.create_task(trigger(sequence)))
        statuses = await asyncio.gather(*pending)
        assert all(status == 201 for status in statuses), "some triggers were not acknowledged"
        await asyncio.wait_for(receiver, timeout=120)
    for connection in connections:
        connection.close()
    return latencies


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=int, default=10, help="seconds of wrk load per run")
    parser.add_argument("--runs", type=int, default=3, help="interleaved runs of each app")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections")
    parser.add_argument(
        "--rate", type=int, default=200, help="triggers per second for the WebSocket latency test"
    )
    parser.add_argument("--latency-only", action="store_true", help="skip the wrk runs")
    parser.add_argument(
        "--latency-seconds", type=int, default=10, help="length of the WebSocket latency test"
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is missing; install Debian's package: apt-get install wrk")

    work = Path(tempfile.mkdtemp(prefix="novulite-bench-"))
    server = ServerProcess(
        data_dir=work / "data", port=free_port(), command=server_command(), log_path=work / "server.log"
    )
    echo_port = free_port()
    echo = start_echo(echo_port)
    server.start()
    try:
        assert server.process is not None
        rss = RssSampler(server.process.pid)
        headers = {"Authorization": f"ApiKey {API_KEY}"}
        workflow = {
            "name": "Bench",
            "workflowId": "bench",
            "steps": [{"name": "Inbox", "type": "in_app", "controlValues": {"body": "n={{ payload.seq }}"}}],
        }
        assert (
            httpx.post(f"{server.base_url}/v2/workflows", json=workflow, headers=headers).status_code == 201
        )
        # No event marks the end of start-up work (reconciler pass, first polls), so wait it out.
        time.sleep(2)
        idle_rss = rss.current()
        rss.start()

        latencies = asyncio.run(websocket_latency(server, args.rate, args.latency_seconds))
        wait_drained(server.data_dir / "novulite.db")
        if args.latency_only:
            rss.stop()
            print(
                f"trigger -> socket at {args.rate}/s: p50 {percentile(latencies, 0.5):.1f} ms, "
                f"p99 {percentile(latencies, 0.99):.1f} ms; RSS idle {idle_rss / 2**20:.0f} MiB"
            )
            return

        echo_runs, trigger_runs, drains = [], [], []
        for _ in range(args.runs):
            echo_runs.append(
                run_wrk(f"http://127.0.0.1:{echo_port}/echo", ECHO_BODY, "", args.duration, args.connections)
            )
            trigger_runs.append(
                run_wrk(
                    f"{server.base_url}/v1/events/trigger",
                    TRIGGER_BODY,
                    f"ApiKey {API_KEY}",
                    args.duration,
                    args.connections,
                )
            )
            drains.append(wait_drained(server.data_dir / "novulite.db"))
        rss.stop()
        report(args, echo_runs, trigger_runs, drains, latencies, idle_rss, rss.peak)
    finally:
        server.stop()
        echo.terminate()
        echo.wait()
        shutil.rmtree(work, ignore_errors=True)


def report(
    args: argparse.Namespace,
    echo_runs: list[dict[str, float]],
    trigger_runs: list[dict[str, float]],
    drains: list[float],
    latencies: list[float],
    idle_rss: int,
    peak_rss: int,
) -> None:
    def median(runs: list[dict[str, float]], key: str) -> float:
        return statistics.median(run[key] for run in runs)

    def spread(runs: list[dict[str, float]], key: str) -> str:
        values = [run[key] for run in runs]
        return f"{min(values):,.0f}-{max(values):,.0f}"

    echo_rps = median(echo_runs, "rps")
    trigger_rps = median(trigger_runs, "rps")
    delivered = [
        run["total"] / (args.duration + drain) for run, drain in zip(trigger_runs, drains, strict=True)
    ]
    errors = sum(run["errors"] for run in trigger_runs + echo_runs)
    wrk = f"wrk -t1 -c{args.connections} -d{args.duration}s, {args.runs} interleaved runs per app"
    lines = [
        ("machine", f"{platform.machine()}, {psutil.cpu_count()} CPUs, Python {platform.python_version()}"),
        ("load", f"{wrk}, medians (min-max)"),
        ("bare POST /echo", _http_figures(echo_runs, median, spread)),
        ("POST /v1/events/trigger", _http_figures(trigger_runs, median, spread)),
        ("ratio trigger / echo", f"{trigger_rps / echo_rps:.0%}"),
        ("non-2xx responses", str(errors)),
        (
            "delivered to the inbox",
            f"{statistics.median(delivered):,.0f} notifications/s over load plus drain "
            f"(drain {statistics.median(drains):.1f} s after the load stopped)",
        ),
        (
            f"trigger -> socket at {args.rate}/s",
            f"p50 {percentile(latencies, 0.5):.1f} ms, p99 {percentile(latencies, 0.99):.1f} ms, "
            f"max {max(latencies):.1f} ms over {len(latencies)} frames",
        ),
        ("server RSS", f"idle {idle_rss / 2**20:.0f} MiB, peak {peak_rss / 2**20:.0f} MiB"),
    ]
    for label, value in lines:
        print(f"{label + ':':<28}{value}")


def _http_figures(runs: list[dict[str, float]], median: Any, spread: Any) -> str:
    return (
        f"{median(runs, 'rps'):,.0f} req/s ({spread(runs, 'rps')}), "
        f"p50 {median(runs, 'p50'):.2f} ms, p99 {median(runs, 'p99'):.2f} ms"
    )


if __name__ == "__main__":
    main()
