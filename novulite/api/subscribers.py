"""Subscribers under /v2/subscribers (create, read, update, delete, search), in the shapes novu-py parses."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

from litestar import Request, Response, Router, delete, get, patch, post
from litestar.di import Provide
from sqlalchemy import delete as sql_delete
from sqlalchemy import false, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from novulite.api import query
from novulite.api.auth import environment_from_api_key, services_of
from novulite.api.body import read_json_object
from novulite.api.subscriber_search import parse_search, search_page
from novulite.api.subscriber_validation import validate_profile, validate_subscriber_id
from novulite.db.models import Message, Preference, Subscriber, TopicSubscription
from novulite.directory import EnvironmentInfo
from novulite.errors import (
    INVALID_FIELDS,
    INVALID_QUERY,
    SUBSCRIBER_EXISTS,
    SUBSCRIBER_NOT_FOUND,
    ApiError,
    FieldError,
)
from novulite.queues import COUNTS_CHANGED
from novulite.services import Services
from novulite.subscribers import PROFILE_FIELDS, to_response, upsert_subscriber


def path_subscriber_id(value: str) -> str:
    """Return the trimmed subscriberId from a path, rejecting a blank one with a 400."""
    errors: list[FieldError] = []
    subscriber_id = validate_subscriber_id(value, "subscriberId", errors)
    if subscriber_id is None:
        raise ApiError(INVALID_FIELDS, errors=errors)
    return subscriber_id


def find_subscriber(session: Session, environment_id: str, subscriber_id: str) -> Subscriber | None:
    """Return the subscriber row, deleted or not."""
    return session.scalar(
        select(Subscriber).where(
            Subscriber.environment_id == environment_id,
            Subscriber.subscriber_id == subscriber_id,
        )
    )


def live_subscriber(session: Session, environment_id: str, subscriber_id: str) -> Subscriber:
    """Return the subscriber row, raising a 404 when it does not exist or was deleted."""
    subscriber = find_subscriber(session, environment_id, subscriber_id)
    if subscriber is None or subscriber.deleted:
        raise ApiError(SUBSCRIBER_NOT_FOUND, subscriber_id=subscriber_id)
    return subscriber


def validate_create_body(body: dict[str, Any], errors: list[FieldError], prefix: str = "") -> dict[str, Any]:
    """Return the upsert spec of a CreateSubscriberRequestDto, appending its problems to `errors`."""
    subscriber_id = validate_subscriber_id(body.get("subscriberId"), f"{prefix}subscriberId", errors)
    profile = validate_profile(body, prefix, errors)
    return {"subscriberId": subscriber_id or "", **profile}


@post("/", status_code=201)
async def create_subscriber(request: Request[Any, Any, Any], environment: EnvironmentInfo) -> Response[Any]:
    services = services_of(request)
    errors: list[FieldError] = []
    fail_if_exists = query.boolean(request.query_params, "failIfExists", errors)
    if errors:
        raise ApiError(INVALID_QUERY, errors=errors)
    spec = validate_create_body(await read_json_object(request), errors)
    if errors:
        raise ApiError(INVALID_FIELDS, errors=errors)
    now = services.clock.now()
    async with AsyncSession(services.writer, expire_on_commit=False) as session, session.begin():
        subscriber = await session.run_sync(_create, environment.id, spec, bool(fail_if_exists), now)
    return Response(content={"data": to_response(subscriber)}, status_code=201)


def _create(
    session: Session, environment_id: str, spec: dict[str, Any], fail_if_exists: bool, now: dt.datetime
) -> Subscriber:
    existing = find_subscriber(session, environment_id, spec["subscriberId"])
    if existing is not None and not existing.deleted and fail_if_exists:
        # novu-py parses this 409 body as the existing subscriber, so it carries the subscriber's fields.
        raise ApiError(SUBSCRIBER_EXISTS, subscriber_id=spec["subscriberId"], extra=to_response(existing))
    return upsert_subscriber(session, environment_id, spec, now, known=existing)


@get("/")
async def search_subscribers(request: Request[Any, Any, Any], environment: EnvironmentInfo) -> dict[str, Any]:
    services = services_of(request)
    search = parse_search(request.query_params)
    async with AsyncSession(services.reader) as session:
        return await session.run_sync(search_page, environment.id, search)


@get("/{subscriber_id:str}")
async def get_subscriber(
    request: Request[Any, Any, Any], environment: EnvironmentInfo, subscriber_id: str
) -> dict[str, Any]:
    services = services_of(request)
    subscriber_id = path_subscriber_id(subscriber_id)
    async with AsyncSession(services.reader) as session:
        subscriber = await session.run_sync(live_subscriber, environment.id, subscriber_id)
    return {"data": to_response(subscriber)}


@patch("/{subscriber_id:str}")
async def patch_subscriber(
    request: Request[Any, Any, Any], environment: EnvironmentInfo, subscriber_id: str
) -> dict[str, Any]:
    services = services_of(request)
    subscriber_id = path_subscriber_id(subscriber_id)
    errors: list[FieldError] = []
    # The path names the subscriber, so a subscriberId in the body is ignored, as Novu does.
    spec = {"subscriberId": subscriber_id, **validate_profile(await _optional_body(request), "", errors)}
    if errors:
        raise ApiError(INVALID_FIELDS, errors=errors)
    now = services.clock.now()
    async with AsyncSession(services.writer, expire_on_commit=False) as session, session.begin():
        subscriber = await session.run_sync(_patch, environment.id, spec, now)
    return {"data": to_response(subscriber)}


async def _optional_body(request: Request[Any, Any, Any]) -> dict[str, Any]:
    return await read_json_object(request, allow_empty=True)


def _patch(session: Session, environment_id: str, spec: dict[str, Any], now: dt.datetime) -> Subscriber:
    subscriber = live_subscriber(session, environment_id, spec["subscriberId"])
    return upsert_subscriber(session, environment_id, spec, now, known=subscriber)


@delete("/{subscriber_id:str}", status_code=200)
async def delete_subscriber(
    request: Request[Any, Any, Any], environment: EnvironmentInfo, subscriber_id: str
) -> dict[str, Any]:
    services = services_of(request)
    subscriber_id = path_subscriber_id(subscriber_id)
    now = services.clock.now()
    async with AsyncSession(services.writer, expire_on_commit=False) as session, session.begin():
        subscriber_pk, inboxes = await session.run_sync(
            mark_subscriber_deleted, environment.id, subscriber_id, now
        )
    await notify_counts_changed(services, subscriber_pk, inboxes)
    return {"data": {"acknowledged": True, "status": "deleted"}}


def mark_subscriber_deleted(
    session: Session, environment_id: str, subscriber_id: str, now: dt.datetime
) -> tuple[str, list[str]]:
    """Mark the subscriber deleted and remove its messages, preferences and topic subscriptions.

    Notifications and jobs keep referring to the row, so it stays, stripped of its
    profile, until a create or a trigger revives it. Returns the row's pk and the
    context keys of the inboxes whose counts changed.
    """
    subscriber = live_subscriber(session, environment_id, subscriber_id)
    # NOTE: jobs still queued for this subscriber run as usual, so a delivery already on its
    # way can create a message after the deletion.
    inboxes = list(
        session.scalars(
            select(Message.context_key)
            .where(
                Message.subscriber_pk == subscriber.id,
                Message.channel == "in_app",
                (Message.read.is_(false())) | (Message.seen.is_(false())),
            )
            .distinct()
        )
    )
    session.execute(sql_delete(Message).where(Message.subscriber_pk == subscriber.id))
    session.execute(sql_delete(Preference).where(Preference.subscriber_pk == subscriber.id))
    session.execute(sql_delete(TopicSubscription).where(TopicSubscription.subscriber_pk == subscriber.id))
    for attribute in PROFILE_FIELDS.values():
        setattr(subscriber, attribute, None)
    subscriber.data = None
    subscriber.channels = None
    subscriber.is_online = False
    subscriber.last_online_at = None
    subscriber.deleted = True
    subscriber.updated_at = now
    return subscriber.id, inboxes


async def notify_counts_changed(services: Services, subscriber_pk: str, contexts: list[str]) -> None:
    """Queue fresh unread and unseen counts for the subscriber's sockets in each inbox context."""
    for context in contexts:
        await asyncio.to_thread(services.queues.enqueue, COUNTS_CHANGED, subscriber_pk, context)


subscribers_router = Router(
    path="/v2/subscribers",
    route_handlers=[
        create_subscriber,
        search_subscribers,
        get_subscriber,
        patch_subscriber,
        delete_subscriber,
    ],
    dependencies={"environment": Provide(environment_from_api_key)},
)
