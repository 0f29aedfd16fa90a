"""The digest table: open or join a digest window, send it, and hand it over when its owner is canceled.

Every function here runs inside a write transaction that the caller has open (the job
runner's batch or a cancel), so each decision and the writes that follow it are one
atomic step. Opening a digest is an INSERT ... ON CONFLICT DO NOTHING on the partial
unique index over open digests: of any number of concurrent first events, one inserts
the row and becomes the owner, and every other one finds that row and joins it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import sqlite3
from typing import Any

from novulite.clock import isoformat
from novulite.db.fast import db_datetime, fetch, insert_returning, insert_rows
from novulite.db.models import Digest, ExecutionDetail, Job, TriggerEvent, table
from novulite.db.sql import for_update, is_postgresql
from novulite.engine.details import detail_row
from novulite.ids import new_id

_digests = table(Digest)
_details = table(ExecutionDetail)
# Statuses of an owner job that will still send its digest.
LIVE_OWNER_STATUSES = ("queued", "delayed", "running")
_OPEN_CONFLICT = (
    "ON CONFLICT (workflow_pk, subscriber_pk, step_id, key_value) WHERE status = 'open' "
    "DO NOTHING RETURNING id"
)


@dataclasses.dataclass(frozen=True)
class Scope:
    """The grouping of one digest: workflow, subscriber, digest step and digestKey value."""

    environment_id: str
    workflow_pk: str
    subscriber_pk: str
    step_id: str
    key_value: str

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.workflow_pk, self.subscriber_pk, self.step_id, self.key_value)


@dataclasses.dataclass(frozen=True)
class Membership:
    """The digest a job opened or joined: its id, owner job and due time."""

    digest_id: str
    owner_job_id: str
    due_at: dt.datetime | None

    def owned_by(self, job_id: str) -> bool:
        return self.owner_job_id == job_id


def lock_scope(raw: sqlite3.Connection, scope: Scope) -> None:
    """Make concurrent events of one scope decide in turn, until the caller's transaction ends.

    Without it, two processes on PostgreSQL could both find no recent event in the
    look-back window and both send at once. SQLite's single writer needs no lock.
    """
    if is_postgresql(raw):
        raw.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended(?, 0))", ["digest\n" + "\n".join(scope.key)]
        )


def open_or_join(
    raw: sqlite3.Connection, scope: Scope, job: Any, due_at: dt.datetime, now: dt.datetime
) -> Membership:
    """Open a digest owned by `job`, or join the one already open for the scope; link the job to it."""
    # A digest whose owner is gone is handed over or closed, and the next pass joins or opens one.
    for _ in range(3):
        inserted = insert_returning(raw, _digests, _row(scope, job.id, "open", due_at, now), _OPEN_CONFLICT)
        if inserted is not None:
            _link(raw, job.id, inserted)
            return Membership(inserted, job.id, due_at)
        found = _open_digest(raw, scope)
        if found is None:
            # The conflicting row was not an open digest; the unique index covers open ones only.
            raise RuntimeError(f"digest insert conflicted but no open digest exists for {scope}")
        if found.owner_status not in LIVE_OWNER_STATUSES:
            # Its owner failed without sending: give the digest to its oldest follower, or close it.
            hand_over(raw, found.id, now, f"its owner job {found.owner_job_id} is {found.owner_status}")
            continue
        joined = raw.execute(
            "UPDATE digest SET last_event_at = ?, updated_at = ? WHERE id = ? AND status = 'open'",
            [db_datetime(now), db_datetime(now), found.id],
        ).rowcount
        if not joined:
            # On PostgreSQL the owner's process sent or handed over the digest since it was read.
            continue
        _link(raw, job.id, found.id)
        return Membership(found.id, found.owner_job_id, found.due_at)
    raise RuntimeError(f"could neither open nor join a digest for {scope}")


def is_active_since(raw: sqlite3.Connection, scope: Scope, since: dt.datetime) -> bool:
    """Return True when the scope has an open digest, or a sent event that arrived at or after `since`."""
    row = raw.execute(
        "SELECT 1 FROM digest WHERE workflow_pk = ? AND subscriber_pk = ? AND step_id = ? AND key_value = ? "
        "AND (status = 'open' OR (status <> 'canceled' AND last_event_at >= ?)) LIMIT 1",
        [*scope.key, db_datetime(since)],
    ).fetchone()
    return row is not None


def record_sent_at_once(raw: sqlite3.Connection, scope: Scope, job: Any, now: dt.datetime) -> str:
    """Record an event sent without waiting, so the look-back window of the next event finds it."""
    row = _row(scope, job.id, "sent_at_once", None, now)
    insert_rows(raw, _digests, [row])
    _link(raw, job.id, row["id"])
    return str(row["id"])


def find(raw: sqlite3.Connection, digest_id: str, lock: bool = False) -> Any | None:
    """Return the digest row; with `lock`, keep it locked until the transaction ends, to act on its status."""
    sql = "SELECT * FROM digest WHERE id = ?" + (for_update(raw) if lock else "")
    rows = fetch(raw, sql, [digest_id], _digests)
    return rows[0] if rows else None


def close_and_collect(raw: sqlite3.Connection, digest_id: str, now: dt.datetime) -> list[dict[str, Any]]:
    """Mark the digest sent and return its events, oldest first: the owner's and every follower's.

    A canceled job's event is left out. Each event is {id: the job's id, time: when its
    trigger was accepted, payload: the trigger's payload}.
    """
    raw.execute(
        "UPDATE digest SET status = 'sent', updated_at = ? WHERE id = ? AND status = 'open'",
        [db_datetime(now), digest_id],
    )
    return collect(raw, digest_id)


def collect(raw: sqlite3.Connection, digest_id: str) -> list[dict[str, Any]]:
    rows = fetch(
        raw,
        "SELECT j.id AS id, t.created_at AS created_at, t.payload AS payload FROM job j "
        "JOIN notification n ON n.id = j.notification_id JOIN trigger_event t ON t.id = n.trigger_id "
        "WHERE j.digest_id = ? AND j.status <> 'canceled' ORDER BY t.created_at, j.created_at, j.id",
        [digest_id],
        table(TriggerEvent),
    )
    return [{"id": row.id, "time": isoformat(row.created_at), "payload": row.payload or {}} for row in rows]


def hand_over(raw: sqlite3.Connection, digest_id: str, now: dt.datetime, reason: str) -> str | None:
    """Make the oldest follower of an open digest its owner; close the digest when none is left.

    The new owner waits until the digest's due time, and the steps after it, which
    were merged, become pending so they run after it. Returns the new owner's id.
    """
    at = db_datetime(now)
    digest = find(raw, digest_id, lock=True)
    if digest is None or digest.status != "open":
        return None
    followers = fetch(
        raw,
        "SELECT j.id AS id, j.notification_id AS notification_id, j.position AS position FROM job j "
        "JOIN notification n ON n.id = j.notification_id JOIN trigger_event t ON t.id = n.trigger_id "
        "WHERE j.digest_id = ? AND j.status = 'merged' ORDER BY t.created_at, j.created_at, j.id LIMIT 1",
        [digest_id],
        table(Job),
    )
    if not followers:
        raw.execute("UPDATE digest SET status = 'canceled', updated_at = ? WHERE id = ?", [at, digest_id])
        return None
    follower = followers[0]
    raw.execute(
        "UPDATE job SET status = 'delayed', run_at = ?, updated_at = ? WHERE id = ?",
        [db_datetime(digest.due_at), at, follower.id],
    )
    raw.execute(
        "UPDATE job SET status = 'pending', updated_at = ? "
        "WHERE notification_id = ? AND position > ? AND status = 'merged'",
        [at, follower.notification_id, follower.position],
    )
    raw.execute(
        "UPDATE digest SET owner_job_id = ?, updated_at = ? WHERE id = ?", [follower.id, at, digest_id]
    )
    text = f"Took over the digest because {reason}"
    insert_rows(raw, _details, [detail_row(follower, text, "Success", now, {"digestId": digest_id})])
    return str(follower.id)


@dataclasses.dataclass(frozen=True)
class _OpenDigest:
    id: str
    owner_job_id: str
    owner_status: str | None
    due_at: dt.datetime | None


def _open_digest(raw: sqlite3.Connection, scope: Scope) -> _OpenDigest | None:
    rows = fetch(
        raw,
        "SELECT d.id AS id, d.owner_job_id AS owner_job_id, d.due_at AS due_at, j.status AS owner_status "
        "FROM digest d LEFT JOIN job j ON j.id = d.owner_job_id "
        "WHERE d.workflow_pk = ? AND d.subscriber_pk = ? AND d.step_id = ? AND d.key_value = ? "
        "AND d.status = 'open'",
        list(scope.key),
        _digests,
    )
    if not rows:
        return None
    row = rows[0]
    return _OpenDigest(row.id, row.owner_job_id, row.owner_status, row.due_at)


def _row(
    scope: Scope, owner_job_id: str, status: str, due_at: dt.datetime | None, now: dt.datetime
) -> dict[str, Any]:
    return {
        "id": new_id(),
        "environment_id": scope.environment_id,
        "workflow_pk": scope.workflow_pk,
        "subscriber_pk": scope.subscriber_pk,
        "step_id": scope.step_id,
        "key_value": scope.key_value,
        "status": status,
        "owner_job_id": owner_job_id,
        "due_at": due_at,
        "last_event_at": now,
        "created_at": now,
        "updated_at": now,
    }


def _link(raw: sqlite3.Connection, job_id: str, digest_id: str) -> None:
    raw.execute("UPDATE job SET digest_id = ? WHERE id = ?", [digest_id, job_id])
