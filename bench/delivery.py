"""Benchmark delivery through the whole pipeline: trigger over HTTP, job, then an email, chat or webhook.

It starts the server with --outbound-allow 127.0.0.1, an aiosmtpd server and an HTTP
stub, each in its own process, an smtp integration pointing at the SMTP server and a
slack integration whose webhookUrl is the stub. For each part it sends TRIGGERS
triggers of a one-step workflow: an email step (part "email"), a chat step through
the slack provider (part "chat"), or an http_request step that POSTs JSON to the
stub (part "webhook"). The triggers go out over keep-alive
connections, all at once by default, or paced with --rate. Each receiver prints the
trigger's sequence number and its arrival time for every message it receives.

It prints, per part, the wall time from the first trigger to the last receipt, the
delivery rate over that time, and the latency from each trigger's send to its
receipt (p50, p99, max). With all triggers sent at once the latency is mostly time
spent queued, so use --rate for the latency of a steady load.

Usage (from the repository root, in the project's virtualenv):
    python bench/delivery.py [--triggers 2000] [--connections 32] [--rate 0] [--only email,chat,webhook]
All traffic stays on 127.0.0.1.
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
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.trigger import _RawHttpConnection as RawHttpConnection  # noqa: E402
from tests.servers import API_KEY, ServerProcess, free_port, server_command  # noqa: E402

SUBSCRIBER = {"subscriberId": "delivery-bench", "email": "bench@example.com"}
TIMEOUT_SECONDS = 600.0
_SUBJECT = re.compile(rb"^Subject: bench (\d+)\r?$", re.MULTILINE)
# Every chat and webhook body carries "bench <seq>".
_SEQUENCE = re.compile(rb"bench (\d+)")
PARTS = {
    "email": ("delivery-email", "emails"),
    "chat": ("delivery-chat", "chat messages"),
    "webhook": ("delivery-webhook", "webhooks"),
}


# The receivers run as `python bench/delivery.py --serve smtp|http PORT` and print "seq time" lines.


def serve_smtp(port: int) -> None:
    from aiosmtpd.controller import Controller

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            arrived = time.time()
            match = _SUBJECT.search(envelope.content)
            sequence = match.group(1).decode() if match else "-1"
            sys.stdout.write(f"{sequence} {arrived:.6f}\n")
            sys.stdout.flush()
            return "250 2.0.0 Message accepted"

    controller = Controller(Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    print("ready", flush=True)
    threading.Event().wait()


def serve_http(port: int) -> None:
    reply = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{"ok":true}'

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                request_line = await reader.readline()
                if not request_line:
                    break
                length = 0
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                body = await reader.readexactly(length) if length else b""
                arrived = time.time()
                match = _SEQUENCE.search(body)
                sequence = match.group(1).decode() if match else "-1"
                sys.stdout.write(f"{sequence} {arrived:.6f}\n")
                sys.stdout.flush()
                writer.write(reply)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", port)
        print("ready", flush=True)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


class Receiver:
    """A receiver process, and a thread that collects the arrival time of each sequence number it prints."""

    def __init__(self, kind: str) -> None:
        self.port = free_port()
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--serve", kind, str(self.port)], stdout=subprocess.PIPE, text=True
        )
        assert self.process.stdout is not None
        if self.process.stdout.readline().strip() != "ready":
            raise RuntimeError(f"the {kind} receiver did not start")
        self.arrivals: dict[int, float] = {}
        self.changed = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            sequence, arrived = line.split()
            with self.changed:
                self.arrivals[int(sequence)] = float(arrived)
                self.changed.notify_all()

    def wait_for(self, count: int, timeout: float) -> None:
        with self.changed:
            if not self.changed.wait_for(lambda: len(self.arrivals) >= count, timeout):
                raise RuntimeError(f"only {len(self.arrivals)} of {count} deliveries arrived in {timeout} s")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def workflows(smtp_identifier: str, slack_identifier: str, stub_port: int) -> list[dict[str, Any]]:
    email = {
        "name": "Delivery email",
        "workflowId": "delivery-email",
        "steps": [
            {
                "name": "Mail",
                "stepId": "mail",
                "type": "email",
                "controlValues": {
                    "subject": "bench {{ payload.seq }}",
                    "body": "<p>Order {{ payload.seq }} has shipped.</p>",
                    "integrationIdentifier": smtp_identifier,
                },
            }
        ],
    }
    chat = {
        "name": "Delivery chat",
        "workflowId": "delivery-chat",
        "steps": [
            {
                "name": "Chat",
                "stepId": "chat",
                "type": "chat",
                "controlValues": {
                    "body": "bench {{ payload.seq }}: order shipped",
                    "integrationIdentifier": slack_identifier,
                },
            }
        ],
    }
    webhook = {
        "name": "Delivery webhook",
        "workflowId": "delivery-webhook",
        "steps": [
            {
                "name": "Hook",
                "stepId": "hook",
                "type": "http_request",
                "controlValues": {
                    "method": "POST",
                    "url": f"http://127.0.0.1:{stub_port}/hook",
                    "body": {"text": "bench {{ payload.seq }}: order shipped"},
                },
            }
        ],
    }
    return [email, chat, webhook]


async def send_triggers(
    port: int, workflow_id: str, count: int, connections: int, rate: float
) -> list[float]:
    """Send `count` triggers, at once or at `rate` per second, and return the time.time() each was sent."""
    pool = [await RawHttpConnection.open(port) for _ in range(connections)]
    headers = f"Authorization: ApiKey {API_KEY}\r\n"
    sent = [0.0] * count
    start = time.monotonic()

    async def send_share(index: int) -> list[int]:
        # Each connection sends every connections-th trigger, one at a time, so a send time is exact.
        statuses = []
        for sequence in range(index, count, connections):
            if rate > 0:
                await asyncio.sleep(max(0.0, start + sequence / rate - time.monotonic()))
            body = json.dumps({"name": workflow_id, "to": SUBSCRIBER, "payload": {"seq": sequence}}).encode()
            sent[sequence] = time.time()
            statuses.append(await pool[index].post("/v1/events/trigger", body, headers))
        return statuses

    try:
        shares = await asyncio.gather(*(send_share(index) for index in range(connections)))
    finally:
        for connection in pool:
            connection.close()
    statuses = [status for share in shares for status in share]
    failed = [status for status in statuses if status != 201]
    if failed:
        raise RuntimeError(f"{len(failed)} triggers were not acknowledged, the first with HTTP {failed[0]}")
    return sent


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def failed_jobs(server: ServerProcess) -> list[str]:
    connection = sqlite3.connect(f"{(server.data_dir / 'novulite.db').as_uri()}?mode=ro", uri=True)
    try:
        rows = connection.execute("SELECT error FROM job WHERE status = 'failed' LIMIT 3").fetchall()
    finally:
        connection.close()
    return [str(row[0]) for row in rows]


def run_part(name: str, server: ServerProcess, receiver: Receiver, args: argparse.Namespace) -> None:
    workflow_id, unit = PARTS[name]
    sent = asyncio.run(send_triggers(server.port, workflow_id, args.triggers, args.connections, args.rate))
    acknowledged = time.time()
    try:
        receiver.wait_for(args.triggers, TIMEOUT_SECONDS)
    except RuntimeError:
        print(f"failed jobs: {failed_jobs(server)}", file=sys.stderr)
        raise
    arrivals = receiver.arrivals
    latencies = [(arrivals[sequence] - sent[sequence]) * 1000 for sequence in range(args.triggers)]
    first, last = min(sent), max(arrivals.values())
    wall = last - first
    print(f"{name}:")
    print(f"  triggers acknowledged:  {args.triggers} in {acknowledged - first:.2f} s")
    print(f"  delivered:              {len(arrivals)} in {wall:.2f} s: {args.triggers / wall:,.0f} {unit}/s")
    print(
        f"  trigger -> receipt:     p50 {percentile(latencies, 0.5):.1f} ms, "
        f"p99 {percentile(latencies, 0.99):.1f} ms, max {max(latencies):.1f} ms"
    )
    with receiver.changed:
        receiver.arrivals = {}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--triggers", type=int, default=2000, help="triggers per part")
    parser.add_argument("--connections", type=int, default=32, help="keep-alive connections for the triggers")
    parser.add_argument(
        "--rate", type=float, default=0.0, help="triggers per second; 0 sends them all at once"
    )
    parser.add_argument("--only", default=",".join(PARTS), help=f"comma-separated parts: {', '.join(PARTS)}")
    parser.add_argument("--serve", nargs=2, metavar=("KIND", "PORT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        kind, port = args.serve
        (serve_smtp if kind == "smtp" else serve_http)(int(port))
        return 0
    parts = [part.strip() for part in args.only.split(",") if part.strip()]
    if unknown := [part for part in parts if part not in PARTS]:
        parser.error(f"unknown part {', '.join(unknown)}; choose from {', '.join(PARTS)}")

    print(f"machine:  {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    mode = f"at {args.rate:g}/s" if args.rate > 0 else "all at once"
    print(f"load:     {args.triggers} triggers per part, {mode}, over {args.connections} connections")
    root = Path(tempfile.mkdtemp(prefix="novulite-delivery-"))
    smtp_receiver = Receiver("smtp")
    http_receiver = Receiver("http")
    server = ServerProcess(
        data_dir=root / "data",
        port=free_port(),
        command=server_command(),
        log_path=root / "server.log",
        args=["--outbound-allow", "127.0.0.1"],
    ).start()
    try:
        with httpx.Client(
            base_url=server.base_url, headers={"Authorization": f"ApiKey {API_KEY}"}, timeout=30
        ) as api:
            integrations = [
                {
                    "providerId": "smtp",
                    "channel": "email",
                    "name": "Bench SMTP",
                    "identifier": "bench-smtp",
                    "active": True,
                    "credentials": {
                        "host": "127.0.0.1",
                        "port": str(smtp_receiver.port),
                        "from": "shop@example.com",
                    },
                },
                {
                    "providerId": "slack",
                    "channel": "chat",
                    "name": "Bench Slack",
                    "identifier": "bench-slack",
                    "active": True,
                    "credentials": {"webhookUrl": f"http://127.0.0.1:{http_receiver.port}/slack"},
                },
            ]
            for integration in integrations:
                api.post("/v1/integrations", json=integration).raise_for_status()
            for workflow in workflows("bench-smtp", "bench-slack", http_receiver.port):
                api.post("/v2/workflows", json=workflow).raise_for_status()
        for part in parts:
            run_part(part, server, smtp_receiver if part == "email" else http_receiver, args)
    finally:
        server.stop()
        smtp_receiver.stop()
        http_receiver.stop()
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
