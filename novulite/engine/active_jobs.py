"""metric-active-jobs: record job counts by status and queue depths for /metrics.

A pass counts the job table once and reads each queue's length, then stores the figures
as one row in server_setting. Every process's /metrics reads that row, so a scrape costs
one primary-key read however large the job table grows, and all processes of a
scale-out deployment report the same figures. The reconciler enqueues a pass every
interval, on every process that runs it; extra passes only refresh the row again.
"""

from __future__ import annotations

import json

from novulite.engine.context import WorkerContext
from novulite.metrics import SNAPSHOT_KEY

_UPSERT = (
    "INSERT INTO server_setting (key, value) VALUES (?, ?) "
    "ON CONFLICT (key) DO UPDATE SET value = excluded.value"
)


def record_active_jobs(ctx: WorkerContext) -> None:
    """Count jobs by status and read the queue depths, and store them for every process to serve."""
    rows = ctx.store.raw_read().execute("SELECT status, count(*) FROM job GROUP BY status").fetchall()
    value = json.dumps(
        {
            "recordedAt": ctx.clock.now().isoformat(),
            "jobs": {status: int(count) for status, count in rows},
            "queues": ctx.queues.pending_counts_or_empty(),
        }
    )
    with ctx.store.raw_write() as raw:
        raw.execute(_UPSERT, (SNAPSHOT_KEY, value))
