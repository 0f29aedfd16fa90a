"""Subscriber profiles: the fields a request may set and the upsert shared by every entry point."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from novulite.clock import isoformat
from novulite.db.models import Subscriber
from novulite.ids import new_id

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


def template_variables(subscriber: Subscriber) -> dict[str, Any]:
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


def to_inbox_recipient(subscriber: Subscriber) -> dict[str, Any]:
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


def to_raw(subscriber: Subscriber) -> dict[str, Any]:
    """Return the subscriber as Novu's raw entity, embedded in realtime message frames."""
    return dict(
        to_inbox_recipient(subscriber),
        _id=subscriber.id,
        _environmentId=subscriber.environment_id,
        createdAt=isoformat(subscriber.created_at),
        updatedAt=isoformat(subscriber.updated_at),
    )
