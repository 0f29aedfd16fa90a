"""Benchmark one digest under a burst: many concurrent triggers to one subscriber and one digest step.

It starts a server and creates a workflow of a digest step (a regular window) and an
in-app step. It then sends EVENTS triggers for one subscriber at once, with
asyncio.gather over plain keep-alive connections: httpx with 100 connections used
more CPU than the server on a 2-CPU machine. It prints how many digests the events
opened (exactly 1 while the burst fits in the window), how many jobs merged into it,
how long the burst took to be acknowledged and collected, and the time from the
window's end to the digest's in-app message, both read from the server's database.

Usage (from the repository root, in the project's virtualenv):
    python bench/timing_digest.py [--events 1000] [--window 5] [--connections 100]
All traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import platform
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.trigger import _RawHttpConnection as RawHttpConnection  # noqa: E402
from tests.servers import API_KEY, ServerProcess, free_port, server_command  # noqa: E402

WORKFLOW_ID = "burst-digest"
SUBSCRIBER_ID = "burst-subscriber"
POLL_SECONDS = 0.05
TIMEOUT_SECONDS = 300.0


def workflow(window_seconds: float) -> dict[str, Any]:
    text = "{{ step.total_count }} new events"
    return {
        "name": "Burst digest",
        "workflowId": WORKFLOW_ID,
        "steps": [
            {
                "name": "Collect",
                "stepId": "collect",
                "type": "digest",
                "controlValues": {"amount": window_seconds, "unit": "seconds"},
            },
            {"name": "Inbox", "stepId": "inbox", "type": "in_app", "controlValues": {"body": text}},
        ],
    }


async def send_burst(port: int, events: int, connections: int) -> None:
    """Send the triggers at once over `connections` keep-alive connections, each busy with one at a time."""
    pool = [await RawHttpConnection.open(port) for _ in range(connections)]
    headers = f"Authorization: ApiKey {API_KEY}\r\n"

    async def send(n: int) -> int:
        body = json.dumps({"name": WORKFLOW_ID, "to": SUBSCRIBER_ID, "payload": {"n": n}}).encode()
        return await pool[n % connections].post("/v1/events/trigger", body, headers)

    try:
        statuses = await asyncio.gather(*(send(n) for n in range(events)))
    finally:
        for connection in pool:
            connection.close()
    failed = [status for status in statuses if status != 201]
    if failed:
        raise RuntimeError(f"{len(failed)} triggers were not acknowledged, the first with HTTP {failed[0]}")


def read(database: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as connection:
        return connection.execute(sql).fetchall()


def digest_jobs(database: Path) -> dict[str, int]:
    """Count the digest step's jobs by status."""
    return dict(read(database, "SELECT status, count(*) FROM job WHERE step_id = 'collect' GROUP BY status"))


def wait_for(check: Any, description: str) -> None:
    deadline = time.monotonic() + TIMEOUT_SECONDS
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {TIMEOUT_SECONDS} s waiting for {description}")
        time.sleep(POLL_SECONDS)


def instant(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=1000, help="triggers in the burst")
    parser.add_argument("--window", type=float, default=5.0, help="the digest window, in seconds")
    parser.add_argument("--connections", type=int, default=100, help="HTTP connections the burst uses")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="novulite-digest-"))
    server = ServerProcess(
        data_dir=work / "data", port=free_port(), command=server_command(), log_path=work / "server.log"
    )
    server.start()
    database = server.data_dir / "novulite.db"
    try:
        with httpx.Client(
            base_url=server.base_url, headers={"Authorization": f"ApiKey {API_KEY}"}, timeout=60
        ) as api:
            response = api.post("/v2/workflows", json=workflow(args.window))
            assert response.status_code == 201, response.text

        started = time.monotonic()
        asyncio.run(send_burst(server.port, args.events, args.connections))
        acknowledged = time.monotonic() - started
        wait_for(lambda: sum(digest_jobs(database).values()) == args.events, "the digest jobs")
        wait_for(
            lambda: set(digest_jobs(database)) <= {"delayed", "merged", "completed"},
            "every event to open or join a digest",
        )
        collected = time.monotonic() - started
        wait_for(
            lambda: (
                not read(
                    database, "SELECT 1 FROM job WHERE status IN ('pending', 'queued', 'delayed', 'running')"
                )
            ),
            "the digests to be sent",
        )
        statuses = digest_jobs(database)
        digests = read(database, "SELECT id, status, created_at, due_at FROM digest ORDER BY created_at")
        messages = read(database, "SELECT created_at, content FROM message ORDER BY created_at")
        outputs = read(database, "SELECT output FROM job WHERE step_id = 'collect' AND status = 'completed'")
        event_counts = [json.loads(output)["eventCount"] for (output,) in outputs]
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)

    lines = [
        ("machine", f"{platform.machine()}, {psutil.cpu_count()} CPUs, Python {platform.python_version()}"),
        ("burst", f"{args.events:,} triggers on {args.connections} connections, window {args.window:g} s"),
        ("burst acknowledged in", f"{acknowledged:.2f} s"),
        ("all events collected in", f"{collected:.2f} s after the first request"),
        ("digests created", f"{len(digests)} ({', '.join(status for _, status, _, _ in digests)})"),
        ("jobs merged", f"{statuses.get('merged', 0):,}"),
        ("owners", f"{statuses.get('completed', 0)}, events per digest {event_counts}"),
        ("digest messages", f"{len(messages)}: {[content for _, content in messages]}"),
    ]
    if len(digests) == len(messages) == 1:
        late = instant(messages[0][0]) - instant(digests[0][3])
        lines.append(("window end to message", f"{late.total_seconds() * 1000:.0f} ms"))
    for label, value in lines:
        print(f"{label + ':':<26}{value}")
    if len(digests) != 1:
        sys.exit(f"expected exactly 1 digest, got {len(digests)}")


if __name__ == "__main__":
    main()
