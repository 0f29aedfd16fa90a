"""Benchmark one trigger to a large topic: how fast its in-app messages are stored.

It starts a server, creates MEMBERS subscribers (through bulk triggers of 100
events of 100 recipients each, whose own messages are drained before the
measurement), subscribes them all to one topic in requests of 100, then triggers
the topic once. It prints how long the trigger's acknowledgement took, the time
until every member's in-app message was stored, messages stored per second, and
the server's RSS when idle and at its peak during the fan-out.

Usage (from the repository root, in the project's virtualenv):
    python bench/fanout.py [--members 10000] [--profile fanout.svg]
All traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import platform
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.profiler import start_profiler, stop_profiler  # noqa: E402
from bench.trigger import RssSampler, wait_drained  # noqa: E402
from tests.servers import API_KEY, ServerProcess, free_port, server_command  # noqa: E402

TOPIC = "bench-everyone"
WORKFLOW = {
    "name": "Fan-out",
    "workflowId": "fanout",
    "steps": [
        {"name": "Inbox", "type": "in_app", "controlValues": {"body": "Hello {{ subscriber.subscriberId }}"}}
    ],
}
BATCH = 100
POLL_SECONDS = 0.05
TIMEOUT_SECONDS = 600.0


def subscriber_id(index: int) -> str:
    return f"member-{index:06d}"


def create_subscribers(api: httpx.Client, members: int) -> None:
    """Create the subscribers by triggering the workflow to them, 100 events of 100 recipients a request."""
    ids = [subscriber_id(index) for index in range(members)]
    events = [
        {"name": "fanout", "to": ids[start : start + BATCH], "payload": {}}
        for start in range(0, members, BATCH)
    ]
    for start in range(0, len(events), BATCH):
        response = api.post("/v1/events/trigger/bulk", json={"events": events[start : start + BATCH]})
        response.raise_for_status()
        statuses = {result["status"] for result in response.json()["data"]}
        assert statuses == {"processed"}, response.text


def subscribe_all(api: httpx.Client, members: int) -> None:
    for start in range(0, members, BATCH):
        ids = [subscriber_id(index) for index in range(start, min(start + BATCH, members))]
        response = api.post(f"/v2/topics/{TOPIC}/subscriptions", json={"subscriptions": ids})
        assert response.status_code == 201, response.text
        assert response.json()["meta"]["successful"] == len(ids), response.text


def stored_messages(database: Path, transaction_id: str) -> tuple[int, int]:
    """Count the trigger's messages and the distinct subscribers they went to."""
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as connection:
        row = connection.execute(
            "SELECT count(*), count(DISTINCT subscriber_pk) FROM message WHERE transaction_id = ?",
            (transaction_id,),
        ).fetchone()
    return int(row[0]), int(row[1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--members", type=int, default=10_000, help="subscribers in the topic")
    parser.add_argument(
        "--profile",
        metavar="FILE",
        help="record the server with py-spy during the fan-out: an SVG flame graph, else collapsed stacks",
    )
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="novulite-fanout-"))
    server = ServerProcess(
        data_dir=work / "data", port=free_port(), command=server_command(), log_path=work / "server.log"
    )
    server.start()
    database = server.data_dir / "novulite.db"
    profiler = None
    try:
        assert server.process is not None
        rss = RssSampler(server.process.pid)
        api = httpx.Client(
            base_url=server.base_url, headers={"Authorization": f"ApiKey {API_KEY}"}, timeout=60
        )
        assert api.post("/v2/workflows", json=WORKFLOW).status_code == 201

        started = time.monotonic()
        create_subscribers(api, args.members)
        wait_drained(database)
        subscribe_all(api, args.members)
        setup_seconds = time.monotonic() - started
        idle_rss = rss.current()

        if args.profile:
            profiler = start_profiler(server.process.pid, args.profile)
        rss.start()
        sent = time.monotonic()
        response = api.post(
            "/v1/events/trigger",
            json={"name": "fanout", "to": {"type": "Topic", "topicKey": TOPIC}, "payload": {}},
        )
        acknowledged = time.monotonic() - sent
        assert response.status_code == 201, response.text
        assert response.json()["data"]["status"] == "processed", response.text
        transaction_id = response.json()["data"]["transactionId"]

        count = distinct = 0
        while count < args.members:
            if time.monotonic() - sent > TIMEOUT_SECONDS:
                raise RuntimeError(f"only {count} of {args.members} messages after {TIMEOUT_SECONDS} s")
            time.sleep(POLL_SECONDS)
            count, distinct = stored_messages(database, transaction_id)
        elapsed = time.monotonic() - sent
        rss.stop()
        time.sleep(0.5)
        count, distinct = stored_messages(database, transaction_id)
    finally:
        if profiler is not None:
            stop_profiler(profiler)
        server.stop()
        shutil.rmtree(work, ignore_errors=True)

    lines = [
        ("machine", f"{platform.machine()}, {psutil.cpu_count()} CPUs, Python {platform.python_version()}"),
        ("setup", f"{args.members:,} subscribers created and subscribed in {setup_seconds:.1f} s"),
        ("trigger acknowledged in", f"{acknowledged * 1000:.1f} ms"),
        ("all messages stored in", f"{elapsed:.2f} s"),
        ("messages stored", f"{count:,} for {distinct:,} distinct subscribers"),
        ("throughput", f"{count / elapsed:,.0f} in-app messages/s"),
        (
            "server RSS",
            f"idle {idle_rss / 2**20:.0f} MiB, peak {rss.peak / 2**20:.0f} MiB during the fan-out",
        ),
    ]
    for label, value in lines:
        print(f"{label + ':':<26}{value}")


if __name__ == "__main__":
    main()
