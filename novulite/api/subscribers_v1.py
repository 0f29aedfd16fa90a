"""Subscriber endpoints that novu-py still calls under /v1: bulk create, credentials, online status."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from litestar import Request, Response, Router, delete, patch, post, put
from litestar.di import Provide
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from novulite.api.auth import environment_from_api_key, services_of
from novulite.api.body import json_type, read_json_object
from novulite.api.subscriber_validation import check_provider_id, validate_channel_update
from novulite.api.subscribers import live_subscriber, path_subscriber_id, validate_create_body
from novulite.credentials import remove_provider, set_channel
from novulite.db.models import Subscriber
from novulite.directory import EnvironmentInfo
from novulite.errors import INVALID_FIELDS, ApiError, FieldError
from novulite.subscribers import to_response, upsert_subscriber

MAX_BULK_SUBSCRIBERS = 500


@post("/bulk", status_code=201)
async def create_subscribers(request: Request[Any, Any, Any], environment: EnvironmentInfo) -> Response[Any]:
    """Upsert up to 500 subscribers. An invalid item is reported in `failed`, and the others still apply."""
    services = services_of(request)
    items = _bulk_items(await read_json_object(request))
    specs: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        errors: list[FieldError] = []
        field = f"subscribers[{index}]"
        spec = validate_create_body(item, errors, f"{field}.") if isinstance(item, dict) else None
        if spec is None:
            failed.append({"message": f"{field} must be a subscriber object, got {json_type(item)}"})
        elif errors:
            entry = {"message": "; ".join(f"{error.field} {error.message}" for error in errors)}
            if spec["subscriberId"]:
                entry["subscriberId"] = spec["subscriberId"]
            elif isinstance(item.get("subscriberId"), str):
                entry["subscriberId"] = item["subscriberId"]
            failed.append(entry)
        else:
            specs.append(spec)
    now = services.clock.now()
    async with AsyncSession(services.writer, expire_on_commit=False) as session, session.begin():
        created, updated = await session.run_sync(_upsert_all, environment.id, specs, now)
    result = {
        "created": [{"subscriberId": subscriber_id} for subscriber_id in created],
        "updated": [{"subscriberId": subscriber_id} for subscriber_id in updated],
        "failed": failed,
    }
    return Response(content={"data": result}, status_code=201)


def _bulk_items(body: dict[str, Any]) -> list[Any]:
    items = body.get("subscribers")
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_BULK_SUBSCRIBERS:
        got = f"{len(items)} items" if isinstance(items, list) else json_type(items)
        raise ApiError(
            INVALID_FIELDS,
            errors=[
                FieldError(
                    "subscribers",
                    f"must be an array of 1 to {MAX_BULK_SUBSCRIBERS} subscribers, got {got}; "
                    "split larger imports into several requests",
                )
            ],
        )
    return items


def _upsert_all(
    session: Session, environment_id: str, specs: list[dict[str, Any]], now: dt.datetime
) -> tuple[list[str], list[str]]:
    """Upsert in request order and return the subscriberIds created and those updated.

    A deleted subscriber counts as created, and a repeated subscriberId as an update.
    """
    requested = list(dict.fromkeys(spec["subscriberId"] for spec in specs))
    known = {
        row.subscriber_id: row
        for row in session.scalars(
            select(Subscriber).where(
                Subscriber.environment_id == environment_id,
                Subscriber.subscriber_id.in_(requested),
            )
        )
    }
    created: list[str] = []
    updated: list[str] = []
    for spec in specs:
        subscriber_id = spec["subscriberId"]
        row = known.get(subscriber_id)
        (created if row is None or row.deleted else updated).append(subscriber_id)
        known[subscriber_id] = upsert_subscriber(session, environment_id, spec, now, known=row)
    return created, updated


async def _change_subscriber(
    request: Request[Any, Any, Any],
    environment: EnvironmentInfo,
    subscriber_id: str,
    change: Callable[[Subscriber, dt.datetime], None],
) -> dict[str, Any]:
    """Apply `change` to the live subscriber in one write transaction and return its new state."""
    services = services_of(request)
    subscriber_id = path_subscriber_id(subscriber_id)
    now = services.clock.now()

    def apply(session: Session) -> Subscriber:
        subscriber = live_subscriber(session, environment.id, subscriber_id)
        change(subscriber, now)
        subscriber.updated_at = now
        return subscriber

    async with AsyncSession(services.writer, expire_on_commit=False) as session, session.begin():
        subscriber = await session.run_sync(apply)
    return {"data": to_response(subscriber)}


async def _set_credentials(
    request: Request[Any, Any, Any], environment: EnvironmentInfo, subscriber_id: str, *, append: bool
) -> dict[str, Any]:
    errors: list[FieldError] = []
    update = validate_channel_update(await read_json_object(request), errors)
    if update is None or errors:
        raise ApiError(INVALID_FIELDS, errors=errors)

    def change(subscriber: Subscriber, now: dt.datetime) -> None:
        subscriber.channels = set_channel(subscriber.channels, update, append=append)

    return await _change_subscriber(request, environment, subscriber_id, change)


@put("/{subscriber_id:str}/credentials")
async def replace_credentials(
    request: Request[Any, Any, Any], environment: EnvironmentInfo, subscriber_id: str
) -> dict[str, Any]:
    """Replace the credentials stored for the provider, device tokens included."""
    return await _set_credentials(request, environment, subscriber_id, append=False)


@patch("/{subscriber_id:str}/credentials")
async def append_credentials(
    request: Request[Any, Any, Any], environment: EnvironmentInfo, subscriber_id: str
) -> dict[str, Any]:
    """Merge credential fields into the provider's and add device tokens not stored yet."""
    return await _set_credentials(request, environment, subscriber_id, append=True)


@delete("/{subscriber_id:str}/credentials/{provider_id:str}", status_code=204)
async def delete_credentials(
    request: Request[Any, Any, Any], environment: EnvironmentInfo, subscriber_id: str, provider_id: str
) -> None:
    errors: list[FieldError] = []
    if check_provider_id(provider_id, "providerId", errors) is None:
        raise ApiError(INVALID_FIELDS, errors=errors)

    def change(subscriber: Subscriber, now: dt.datetime) -> None:
        subscriber.channels = remove_provider(subscriber.channels, provider_id)

    await _change_subscriber(request, environment, subscriber_id, change)


@patch("/{subscriber_id:str}/online-status")
async def update_online_status(
    request: Request[Any, Any, Any], environment: EnvironmentInfo, subscriber_id: str
) -> dict[str, Any]:
    is_online = (await read_json_object(request)).get("isOnline")
    if not isinstance(is_online, bool):
        raise ApiError(
            INVALID_FIELDS,
            errors=[FieldError("isOnline", f"is required: true or false, got {json_type(is_online)}")],
        )

    def change(subscriber: Subscriber, now: dt.datetime) -> None:
        # lastOnlineAt is the last moment known online: now, whether the subscriber comes or goes.
        subscriber.is_online = is_online
        subscriber.last_online_at = now

    return await _change_subscriber(request, environment, subscriber_id, change)


subscribers_v1_router = Router(
    path="/v1/subscribers",
    route_handlers=[
        create_subscribers,
        replace_credentials,
        append_credentials,
        delete_credentials,
        update_online_status,
    ],
    dependencies={"environment": Provide(environment_from_api_key)},
)
