"""Subscriber profiles: the fields a request may set and the upsert shared by every entry point."""

from __future__ import annotations

import datetime as dt
import sqlite3
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from novulite.clock import isoformat
from novulite.credentials import to_channel_settings
from novulite.db.fast import fetch, insert_many_returning, placeholders, write_value
from novulite.db.models import Subscriber, table
from novulite.ids import ORGANIZATION_ID, new_id

# Request field name -> model attribute, for profile fields that are strings or null.
PROFILE_FIELDS = {
    "firstName": "first_name",
    "lastName": "last_name",
    "email": "email",
    "phone": "phone",
    "avatar": "avatar",
    "locale": "locale",
    "timezone": "timezone",
}


def upsert_subscriber(
    session: Session,
    environment_id: str,
    spec: dict[str, Any],
    now: dt.datetime,
    known: Subscriber | None = None,
) -> Subscriber:
    """Create the subscriber named in `spec`, or update it with the fields `spec` carries.

    `spec` is a validated recipient: `subscriberId` plus any profile fields and `data`.
    Fields absent from `spec` keep their stored values. `known` is the row when the
    caller already loaded it in this session.
    """
    subscriber = known or session.scalar(
        select(Subscriber).where(
            Subscriber.environment_id == environment_id,
            Subscriber.subscriber_id == spec["subscriberId"],
        )
    )
    if subscriber is None:
        subscriber = Subscriber(
            id=new_id(),
            environment_id=environment_id,
            subscriber_id=spec["subscriberId"],
            created_at=now,
            updated_at=now,
        )
        session.add(subscriber)
    changed = False
    for field, attribute in PROFILE_FIELDS.items():
        if field in spec and getattr(subscriber, attribute) != spec[field]:
            setattr(subscriber, attribute, spec[field])
            changed = True
    if "data" in spec and subscriber.data != spec["data"]:
        subscriber.data = spec["data"]
        changed = True
    if subscriber.deleted:
        subscriber.deleted = False
        changed = True
    if changed:
        subscriber.updated_at = now
    return subscriber


_subscribers = table(Subscriber)
_PROFILE_COLUMNS = [*PROFILE_FIELDS.values(), "data", "deleted", "updated_at"]


def upsert_subscribers(
    raw: sqlite3.Connection, environment_id: str, specs: list[dict[str, Any]], now: dt.datetime
) -> dict[str, str]:
    """Create or update the subscribers in `specs` inside the caller's transaction; return subscriberId -> pk.

    Later specs for the same subscriberId win, as if applied one after another.
    """
    requested_ids = list(dict.fromkeys(spec["subscriberId"] for spec in specs))
    stored = _stored_rows(raw, environment_id, requested_ids)
    created: dict[str, dict[str, Any]] = {}
    changed: dict[str, dict[str, Any]] = {}
    for spec in specs:
        subscriber_id = spec["subscriberId"]
        row = stored.get(subscriber_id) or created.get(subscriber_id)
        if row is None:
            row = _new_row(environment_id, subscriber_id, now)
            created[subscriber_id] = row
        if _apply(row, spec, now) and subscriber_id in stored:
            changed[subscriber_id] = row
    raced = _insert_new(raw, created)
    if raced:
        # Another process created these subscribers after the read above, which happens on
        # PostgreSQL only. The specs update the rows it stored instead.
        for subscriber_id, row in _stored_rows(raw, environment_id, raced).items():
            del created[subscriber_id]
            stored[subscriber_id] = row
            for spec in specs:
                if spec["subscriberId"] == subscriber_id and _apply(row, spec, now):
                    changed[subscriber_id] = row
    assignments = ", ".join(f"{column} = ?" for column in _PROFILE_COLUMNS)
    for row in changed.values():
        values = [write_value(_subscribers, column, row[column]) for column in _PROFILE_COLUMNS]
        raw.execute(f"UPDATE subscriber SET {assignments} WHERE id = ?", [*values, row["id"]])
    return {subscriber_id: row["id"] for subscriber_id, row in {**stored, **created}.items()}


def _stored_rows(raw: sqlite3.Connection, environment_id: str, subscriber_ids: list[str]) -> dict[str, Any]:
    rows = fetch(
        raw,
        "SELECT * FROM subscriber WHERE environment_id = ? "
        f"AND subscriber_id IN ({placeholders(len(subscriber_ids))})",
        [environment_id, *subscriber_ids],
        _subscribers,
    )
    return {row.subscriber_id: vars(row) for row in rows}


# Rows per INSERT of new subscribers, well within both databases' limits on bound parameters.
_INSERT_CHUNK = 200
_SKIP_EXISTING = " ON CONFLICT (environment_id, subscriber_id) DO NOTHING RETURNING subscriber_id"


def _insert_new(raw: sqlite3.Connection, created: dict[str, dict[str, Any]]) -> list[str]:
    """Insert the new rows, skipping subscriberIds stored meanwhile; return those skipped."""
    rows = list(created.values())
    inserted: set[str] = set()
    for start in range(0, len(rows), _INSERT_CHUNK):
        chunk = rows[start : start + _INSERT_CHUNK]
        inserted.update(insert_many_returning(raw, _subscribers, chunk, _SKIP_EXISTING))
    return [subscriber_id for subscriber_id in created if subscriber_id not in inserted]


def _new_row(environment_id: str, subscriber_id: str, now: dt.datetime) -> dict[str, Any]:
    row: dict[str, Any] = {column.name: None for column in _subscribers.columns}
    row.update(
        id=new_id(),
        environment_id=environment_id,
        subscriber_id=subscriber_id,
        is_online=False,
        deleted=False,
        created_at=now,
        updated_at=now,
    )
    return row


def _apply(row: dict[str, Any], spec: dict[str, Any], now: dt.datetime) -> bool:
    """Copy the profile fields `spec` carries into `row`; return whether anything changed."""
    changed = False
    for field, attribute in [*PROFILE_FIELDS.items(), ("data", "data")]:
        if field in spec and row[attribute] != spec[field]:
            row[attribute] = spec[field]
            changed = True
    if row["deleted"]:
        row["deleted"] = False
        changed = True
    if changed:
        row["updated_at"] = now
    return changed


def template_variables(subscriber: Any) -> dict[str, Any]:
    """Return the `subscriber` namespace that message templates see."""
    return {
        "subscriberId": subscriber.subscriber_id,
        "firstName": subscriber.first_name,
        "lastName": subscriber.last_name,
        "email": subscriber.email,
        "phone": subscriber.phone,
        "avatar": subscriber.avatar,
        "locale": subscriber.locale,
        "timezone": subscriber.timezone,
        "data": subscriber.data or {},
    }


def to_inbox_recipient(subscriber: Any) -> dict[str, Any]:
    """Return the `to` object of an inbox notification."""
    return {
        "id": subscriber.id,
        "subscriberId": subscriber.subscriber_id,
        "firstName": subscriber.first_name,
        "lastName": subscriber.last_name,
        "avatar": subscriber.avatar,
        "email": subscriber.email,
        "phone": subscriber.phone,
        "locale": subscriber.locale,
        "data": subscriber.data,
        "timezone": subscriber.timezone,
    }


def to_raw(subscriber: Any) -> dict[str, Any]:
    """Return the subscriber as Novu's raw entity, embedded in realtime message frames."""
    return dict(
        to_inbox_recipient(subscriber),
        _id=subscriber.id,
        _environmentId=subscriber.environment_id,
        createdAt=isoformat(subscriber.created_at),
        updatedAt=isoformat(subscriber.updated_at),
    )


def to_response(subscriber: Any) -> dict[str, Any]:
    """Return Novu's SubscriberResponseDto of a subscriber row (an ORM object or a Core row)."""
    return dict(
        to_raw(subscriber),
        channels=to_channel_settings(subscriber.environment_id, subscriber.channels),
        isOnline=bool(subscriber.is_online),
        lastOnlineAt=isoformat(subscriber.last_online_at),
        deleted=bool(subscriber.deleted),
        _organizationId=ORGANIZATION_ID,
    )
