"""Time each pipeline stage on its own, without HTTP, queues or threads.

Stores one trigger at a time through the intake and calls each queue task's
function directly, so the figures are the CPU cost of one single-trigger batch per
stage on this machine. Queue hand-offs are replaced by a list, so Huey's own cost
is not included.

Usage (from the repository root, in the project's virtualenv):
    python bench/stages.py [COUNT] [--profile] [--database-url postgresql://...]

With --database-url the job store is that PostgreSQL database, which must be empty.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import pstats
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import select

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from novulite.app import build_services  # noqa: E402
from novulite.bootstrap import prepare_database  # noqa: E402
from novulite.clock import SystemClock  # noqa: E402
from novulite.config import Settings  # noqa: E402
from novulite.db.models import Environment, Step, Workflow  # noqa: E402
from novulite.db.store import Store  # noqa: E402
from novulite.engine.expansion import expand_notifications  # noqa: E402
from novulite.engine.runner import run_jobs  # noqa: E402
from novulite.engine.socket_events import messages_created  # noqa: E402
from novulite.engine.triggers import handle_triggers  # noqa: E402
from novulite.ids import new_id  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("count", nargs="?", type=int, default=300, help="triggers to push through")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of the second half")
    parser.add_argument("--database-url", help="a PostgreSQL job store in place of a new SQLite file")
    args = parser.parse_args()

    data_dir = Path(tempfile.mkdtemp(prefix="novulite-stages-"))
    settings = Settings(data_dir=data_dir, database_url=args.database_url)
    store = Store(settings.database_target)
    prepare_database(store.write_engine, settings, SystemClock())
    store.dispose()
    services = build_services(settings, SystemClock())
    ctx = services.worker
    enqueued: list[tuple[str, tuple[Any, ...]]] = []
    ctx.queues.enqueue = lambda name, *task_args: enqueued.append((name, task_args))  # type: ignore[method-assign]
    ctx.publish = lambda *frames: None
    # Build every message's frames, as for a subscriber with a socket open.
    ctx.has_sockets = lambda subscriber_pk: True

    environment_id, workflow_pk = _seed(ctx.store)
    stages = {
        "handle_triggers": handle_triggers,
        "expand_notifications": expand_notifications,
        "run_jobs": run_jobs,
        "messages_created": messages_created,
    }
    totals = dict.fromkeys(["intake", *stages], 0.0)
    profile = cProfile.Profile()
    for index in range(args.count):
        if args.profile and index == args.count // 2:
            profile.enable()
        enqueued.clear()
        started = time.perf_counter()
        services.intake._write([(_trigger_row(environment_id, workflow_pk), None)], lambda results: None)
        totals["intake"] += time.perf_counter() - started
        for name, function in stages.items():
            ids = enqueued[-1][1][0]
            enqueued.clear()
            started = time.perf_counter()
            function(ctx, ids)
            totals[name] += time.perf_counter() - started
    profile.disable()
    for name, seconds in totals.items():
        print(f"{name + ':':<24}{seconds / args.count * 1000:.2f} ms per single-trigger batch")
    if args.profile:
        pstats.Stats(profile).sort_stats("tottime").print_stats(25)


def _seed(store: Store) -> tuple[str, str]:
    now = dt.datetime.now(dt.UTC)
    with store.write() as session:
        environment_id = session.scalar(select(Environment.id))
        assert environment_id is not None
        workflow = Workflow(id=new_id(), environment_id=environment_id, workflow_id="stages", name="stages")
        workflow.created_at = workflow.updated_at = now
        session.add(workflow)
        session.flush()
        control_values = {"body": "n={{ payload.seq }}"}
        session.add(
            Step(
                id=new_id(),
                workflow_pk=workflow.id,
                position=0,
                step_id="inbox",
                name="Inbox",
                type="in_app",
                control_values=control_values,
            )
        )
    return environment_id, workflow.id


def _trigger_row(environment_id: str, workflow_pk: str) -> dict[str, Any]:
    return {
        "id": new_id(),
        "environment_id": environment_id,
        "transaction_id": new_id(),
        "workflow_pk": workflow_pk,
        "recipients": [{"subscriberId": "stages-user"}],
        "payload": {"seq": 1},
        "overrides": {},
        "actor": None,
        "context": None,
        "status": "received",
        "attempts": 0,
        "created_at": dt.datetime.now(dt.UTC),
    }


if __name__ == "__main__":
    main()
