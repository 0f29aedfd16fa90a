"""Idempotency-Key: a POST or PATCH repeated with the same key gets the first response again.

Records are kept per environment for 24 hours in `idempotency_record`. A repeat
with the same key and the same method, path and body gets the stored status and
body back with `Idempotency-Replay: true`. The same key with a different request
is rejected with 422. A repeat that arrives while the first request still runs
gets 409 with `Retry-After: 1`: Novu's SDKs retry 409, and by then the response is
stored. A request without the header, which is the ordinary first request, never
gets a 409 from here. Responses with a status of 500 or more are not stored, so a
retry runs the request again.

POST /v1/events/trigger stores its record in the intake's transaction, together
with the trigger row, so a crash cannot keep one without the other, and a
concurrent repeat of a trigger gets the replay instead of a 409. Every other
route stores a pending record before its handler runs and the response after it
(novulite.api.idempotency).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import sqlite3
from collections.abc import Iterable
from typing import Any

from novulite.db.fast import db_datetime
from novulite.errors import (
    IDEMPOTENCY_KEY_INVALID,
    IDEMPOTENCY_KEY_REUSED,
    IDEMPOTENCY_REQUEST_RUNNING,
    ApiError,
    FieldError,
)
from novulite.ids import new_id

HEADER = b"idempotency-key"
REPLAY_HEADER = b"idempotency-replay"
MAX_KEY_LENGTH = 255
RECORD_LIFETIME = dt.timedelta(hours=24)


@dataclasses.dataclass(frozen=True)
class IdempotencyKey:
    key: str
    # SHA-256 of method, path and body: a reused key must come with the same request.
    request_hash: str


@dataclasses.dataclass(frozen=True)
class StoredResponse:
    request_hash: str
    # None while the first request still runs.
    status_code: int | None
    body: Any


def read_key(
    headers: Iterable[tuple[bytes, bytes]], method: str, path: str, body: bytes
) -> IdempotencyKey | None:
    """Return the request's Idempotency-Key with its request hash, or None without the header."""
    raw = next((value for name, value in headers if name == HEADER), None)
    if raw is None:
        return None
    key = raw.decode("latin-1").strip()
    if not key or len(key) > MAX_KEY_LENGTH:
        raise ApiError(IDEMPOTENCY_KEY_INVALID, limit=MAX_KEY_LENGTH)
    digest = hashlib.sha256(f"{method} {path}\n".encode() + body).hexdigest()
    return IdempotencyKey(key, digest)


def find(raw: sqlite3.Connection, environment_id: str, key: str, now: dt.datetime) -> StoredResponse | None:
    """Return the live record stored under `key`, if any."""
    row = raw.execute(
        "SELECT request_hash, status_code, response FROM idempotency_record "
        "WHERE environment_id = ? AND key = ? AND expires_at > ?",
        (environment_id, key, db_datetime(now)),
    ).fetchone()
    if row is None:
        return None
    return StoredResponse(row[0], row[1], None if row[2] is None else json.loads(row[2]))


def check_repeat(stored: StoredResponse, key: IdempotencyKey) -> tuple[int, Any]:
    """Return the status and body to replay for a repeated key, or raise the error for a misuse."""
    if stored.request_hash != key.request_hash:
        raise ApiError(
            IDEMPOTENCY_KEY_REUSED,
            errors=[FieldError("Idempotency-Key", "was already used with another request", key.key)],
        )
    if stored.status_code is None:
        raise ApiError(IDEMPOTENCY_REQUEST_RUNNING, headers={"Retry-After": "1"})
    return stored.status_code, stored.body


def store(
    raw: sqlite3.Connection,
    environment_id: str,
    key: IdempotencyKey,
    now: dt.datetime,
    status_code: int | None,
    body: Any,
) -> StoredResponse | None:
    """Store a record for `key` in the caller's write transaction.

    Returns None when it was stored, or the live record that already contains the key.
    On PostgreSQL another process may store the same key at the same moment: the
    INSERT then waits for that transaction, skips the row, and the record it committed
    is returned.
    """
    existing = find(raw, environment_id, key.key, now)
    if existing is not None:
        return existing
    # Only an expired record is deleted. A live one committed since the read above stays and wins.
    raw.execute(
        "DELETE FROM idempotency_record WHERE environment_id = ? AND key = ? AND expires_at <= ?",
        (environment_id, key.key, db_datetime(now)),
    )
    inserted = raw.execute(
        "INSERT INTO idempotency_record "
        "(id, environment_id, key, request_hash, status_code, response, created_at, expires_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (environment_id, key) DO NOTHING RETURNING id",
        (
            new_id(),
            environment_id,
            key.key,
            key.request_hash,
            status_code,
            None if body is None else json.dumps(body),
            db_datetime(now),
            db_datetime(now + RECORD_LIFETIME),
        ),
    ).fetchone()
    if inserted is None:
        return find(raw, environment_id, key.key, now)
    return None


def complete(raw: sqlite3.Connection, environment_id: str, key: str, status_code: int, body: Any) -> None:
    """Record the response of the request that stored `key`, for repeats to replay."""
    raw.execute(
        "UPDATE idempotency_record SET status_code = ?, response = ? WHERE environment_id = ? AND key = ?",
        (status_code, None if body is None else json.dumps(body), environment_id, key),
    )


def purge_expired(raw: sqlite3.Connection, now: dt.datetime) -> int:
    """Delete records past their lifetime; return how many."""
    return raw.execute("DELETE FROM idempotency_record WHERE expires_at <= ?", (db_datetime(now),)).rowcount
