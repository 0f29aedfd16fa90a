"""Benchmark how late delayed jobs run: many due within a few seconds, and one due after idle queues.

It starts a server and creates a workflow of a dynamic delay (`payload.sendAt`) and
an in-app step. Then:

- lateness: 1,000 triggers (bulk requests of 100) to distinct subscribers, whose
  sendAt instants are spread evenly over SPREAD seconds starting LEAD seconds after
  the requests, so every delay job is waiting before the first comes due. Then the
  same with all 1,000 due at one instant;
- with --backlog N, N further delays wait a day meanwhile, each with a pending in-app
  job behind it, as a store full of scheduled reminders has;
- idle: one trigger at a time, due IDLE seconds later, so the queues and the timer
  have been idle for that long when the job comes due; repeated REPEAT times.

Lateness is read from the SQLite file: the completed delay job's updated_at (the
start of its second run) minus its run_at, and the in-app message's created_at
minus the same run_at. Targets: lateness p99 under 250 ms, idle under 100 ms.

Usage (from the repository root, in the project's virtualenv):
    python bench/timing_delay.py [--jobs 1000] [--spread 3] [--repeat 20] [--backlog 0] [--profile delay.svg]
All traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.profiler import start_profiler, stop_profiler  # noqa: E402
from bench.trigger import percentile  # noqa: E402
from tests.servers import API_KEY, ServerProcess, free_port, server_command  # noqa: E402

WORKFLOW = {
    "name": "Delay timing",
    "workflowId": "delay-timing",
    "steps": [
        {
            "name": "Wait",
            "type": "delay",
            "controlValues": {"type": "dynamic", "dynamicKey": "payload.sendAt"},
        },
        {"name": "Inbox", "type": "in_app", "controlValues": {"body": "Due at {{ payload.sendAt }}"}},
    ],
}
BATCH = 100
POLL_SECONDS = 0.05
TIMEOUT_SECONDS = 300.0


def iso(instant: dt.datetime) -> str:
    return instant.astimezone(dt.UTC).isoformat()


def db_time(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)


def trigger_all(api: httpx.Client, prefix: str, due: list[dt.datetime]) -> list[str]:
    """Trigger the workflow once per due instant, to subscribers `<prefix>-<n>`; return the transactionIds."""
    events = [
        {"name": "delay-timing", "to": f"{prefix}-{index:05d}", "payload": {"sendAt": iso(instant)}}
        for index, instant in enumerate(due)
    ]
    transaction_ids: list[str] = []
    for start in range(0, len(events), BATCH):
        response = api.post("/v1/events/trigger/bulk", json={"events": events[start : start + BATCH]})
        response.raise_for_status()
        results = response.json()["data"]
        assert {result["status"] for result in results} == {"processed"}, response.text
        transaction_ids.extend(result["transactionId"] for result in results)
    return transaction_ids


def lateness(database: Path, transaction_ids: list[str]) -> tuple[list[float], list[float], int]:
    """Return the second-run and message lateness in ms, and how many delay jobs had waited."""
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as connection:
        connection.execute("CREATE TEMP TABLE wanted (id TEXT PRIMARY KEY)")
        connection.executemany("INSERT INTO wanted VALUES (?)", [(item,) for item in transaction_ids])
        rows = connection.execute(
            "SELECT j.run_at, j.updated_at, m.created_at, "
            "EXISTS (SELECT 1 FROM execution_detail d "
            "WHERE d.job_id = j.id AND d.detail LIKE 'Delay until %') "
            "FROM job j JOIN wanted w ON w.id = j.transaction_id "
            "JOIN message m ON m.notification_id = j.notification_id "
            "WHERE j.type = 'delay' AND j.status = 'completed'"
        ).fetchall()
    runs = [(db_time(updated) - db_time(due)).total_seconds() * 1000 for due, updated, _, _ in rows]
    messages = [(db_time(created) - db_time(due)).total_seconds() * 1000 for due, _, created, _ in rows]
    return runs, messages, sum(1 for *_, waited in rows if waited)


def wait_delivered(database: Path, transaction_ids: list[str]) -> None:
    deadline = time.monotonic() + TIMEOUT_SECONDS
    while True:
        runs, _, _ = lateness(database, transaction_ids)
        if len(runs) == len(transaction_ids):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(runs)} of {len(transaction_ids)} delivered in {TIMEOUT_SECONDS} s")
        time.sleep(POLL_SECONDS)


def wait_idle(database: Path) -> None:
    """Wait until no trigger, notification or job is left to process, apart from jobs behind a delay."""
    deadline = time.monotonic() + TIMEOUT_SECONDS
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as connection:
        while connection.execute(
            "SELECT (SELECT count(*) FROM trigger_event WHERE status = 'received')"
            " + (SELECT count(*) FROM notification WHERE expansion = 'pending')"
            " + (SELECT count(*) FROM job WHERE status IN ('queued', 'running'))"
        ).fetchone()[0]:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server did not finish its work in {TIMEOUT_SECONDS} s")
            time.sleep(POLL_SECONDS)


def summary(values: list[float]) -> str:
    return (
        f"p50 {percentile(values, 0.5):.1f} ms, p99 {percentile(values, 0.99):.1f} ms, "
        f"max {max(values):.1f} ms over {len(values):,}"
    )


def measure_many(
    api: httpx.Client, database: Path, prefix: str, jobs: int, lead: float, spread: float
) -> list[str]:
    """Trigger `jobs` delays due over `spread` seconds from `lead` seconds on; return the figures as lines."""
    started = time.monotonic()
    first = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=lead)
    due = [first + dt.timedelta(seconds=spread * index / jobs) for index in range(jobs)]
    transaction_ids = trigger_all(api, prefix, due)
    sending = time.monotonic() - started
    wait_delivered(database, transaction_ids)
    runs, messages, waited = lateness(database, transaction_ids)
    return [
        f"{jobs:,} due over {spread:g} s from {lead:g} s after the first request "
        f"(requests took {sending:.2f} s)",
        f"  delay jobs that waited:  {waited:,} of {jobs:,}",
        f"  second run lateness:     {summary(runs)}",
        f"  message lateness:        {summary(messages)}",
    ]


def add_backlog(api: httpx.Client, database: Path, count: int) -> str:
    """Leave `count` delay jobs waiting a day, each with a pending in-app job behind it."""
    started = time.monotonic()
    due = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    transaction_ids = trigger_all(api, "backlog", [due] * count)
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as connection:
        while connection.execute("SELECT count(*) FROM job WHERE status = 'delayed'").fetchone()[0] < count:
            time.sleep(POLL_SECONDS)
    seconds = time.monotonic() - started
    return f"backlog: {len(transaction_ids):,} delays waiting a day, stored in {seconds:.1f} s"


def measure_idle(api: httpx.Client, database: Path, repeat: int, idle: float) -> list[str]:
    """Trigger one delay at a time, each due `idle` seconds later; return the figures as lines."""
    runs: list[float] = []
    messages: list[float] = []
    for index in range(repeat):
        due = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=idle)
        transaction_ids = trigger_all(api, f"idle-{index}", [due])
        wait_delivered(database, transaction_ids)
        run, message, _ = lateness(database, transaction_ids)
        runs.extend(run)
        messages.extend(message)
    return [
        f"one job due after {idle:g} s of idle queues, {repeat} times",
        f"  second run lateness:     {summary(runs)}",
        f"  message lateness:        {summary(messages)}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=1000, help="delayed jobs in the lateness runs")
    parser.add_argument("--spread", type=float, default=3.0, help="seconds over which their due times spread")
    parser.add_argument(
        "--lead", type=float, default=4.0, help="seconds from the requests to the first due time"
    )
    parser.add_argument(
        "--backlog", type=int, default=0, help="delays waiting a day in the store during the measurements"
    )
    parser.add_argument("--repeat", type=int, default=20, help="single jobs due after idle queues")
    parser.add_argument(
        "--idle", type=float, default=4.0, help="seconds the queues are idle before each of them"
    )
    parser.add_argument(
        "--profile",
        metavar="FILE",
        help="record the server with py-spy during the lateness runs: SVG flame graph, else collapsed stacks",
    )
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="novulite-delay-"))
    server = ServerProcess(
        data_dir=work / "data", port=free_port(), command=server_command(), log_path=work / "server.log"
    )
    server.start()
    database = server.data_dir / "novulite.db"
    profiler: subprocess.Popen[bytes] | None = None
    try:
        assert server.process is not None
        api = httpx.Client(
            base_url=server.base_url, headers={"Authorization": f"ApiKey {API_KEY}"}, timeout=60
        )
        assert api.post("/v2/workflows", json=WORKFLOW).status_code == 201
        if args.profile:
            profiler = start_profiler(server.process.pid, args.profile)
        report = []
        if args.backlog:
            report.append(add_backlog(api, database, args.backlog))
        report += measure_many(api, database, "spread", args.jobs, args.lead, args.spread)
        wait_idle(database)
        report += measure_many(api, database, "burst", args.jobs, args.lead, 0.0)
        if profiler is not None:
            stop_profiler(profiler)
            profiler = None
        wait_idle(database)
        report += measure_idle(api, database, args.repeat, args.idle)
    finally:
        if profiler is not None:
            stop_profiler(profiler)
        server.stop()
        shutil.rmtree(work, ignore_errors=True)

    print(f"machine: {platform.machine()}, {psutil.cpu_count()} CPUs, Python {platform.python_version()}")
    for line in report:
        print(line)


if __name__ == "__main__":
    main()
