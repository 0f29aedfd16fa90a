"""Topic subscriptions under /v2/topics/{topicKey}/subscriptions: add, list and remove members.

A subscriber's own subscriptions are listed under /v2/subscribers/{subscriberId}/subscriptions.

Adding is idempotent: a subscriber already subscribed under the same identifier
keeps its subscription and counts as a success. A subscriberId that names no
subscriber fails on its own, reported in `errors` and `meta.failed`, while the
rest of the request goes through, as in Novu.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from typing import Any

from litestar import Request, Response, Router, delete, get, post
from litestar.di import Provide
from sqlalchemy import ColumnElement, Select, String, literal, select
from sqlalchemy.ext.asyncio import AsyncSession

from novulite.api.auth import environment_from_api_key, services_of
from novulite.api.body import json_type, read_json_object
from novulite.api.cursor_pages import fetch_page, page_request
from novulite.api.subscribers import live_subscriber, path_subscriber_id
from novulite.api.topics import existing_topic, find_topic, new_topic, validate_key, validate_name
from novulite.clock import isoformat
from novulite.db.models import Subscriber, Topic, TopicSubscription
from novulite.directory import EnvironmentInfo
from novulite.errors import INVALID_FIELDS, SUBSCRIPTION_NOT_FOUND, ApiError, FieldError
from novulite.ids import new_id
from novulite.json_sql import canonical_json
from novulite.recipients import default_identifier

MAX_ITEMS = 100
MAX_IDENTIFIER_LENGTH = 600
MAX_ID_LENGTH = 255


@dataclasses.dataclass(frozen=True)
class SubscriptionItem:
    """One entry of a request's subscriberIds or subscriptions list."""

    subscriber_id: str | None
    identifier: str | None = None
    name: str | None = None


def _topic_ref(topic: Topic) -> dict[str, Any]:
    body: dict[str, Any] = {"_id": topic.id, "key": topic.key}
    if topic.name is not None:
        body["name"] = topic.name
    return body


def _subscriber_ref(subscriber: Subscriber | None) -> dict[str, Any] | None:
    if subscriber is None:
        return None
    return {
        "_id": subscriber.id,
        "subscriberId": subscriber.subscriber_id,
        "avatar": subscriber.avatar,
        "firstName": subscriber.first_name,
        "lastName": subscriber.last_name,
        "email": subscriber.email,
    }


def subscription_body(
    subscription: TopicSubscription, topic: Topic, subscriber: Subscriber | None
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "_id": subscription.id,
        "identifier": subscription.identifier,
        "topic": _topic_ref(topic),
        "subscriber": _subscriber_ref(subscriber),
        "contextKeys": list(subscription.context_keys or []),
        "createdAt": isoformat(subscription.created_at),
        "updatedAt": isoformat(subscription.updated_at),
    }
    if subscription.name is not None:
        body["name"] = subscription.name
    return body


def _item_error(subscriber_id: str, code: str, message: str) -> dict[str, Any]:
    return {"subscriberId": subscriber_id, "code": code, "message": message}


def _id_string(value: Any, field: str, errors: list[FieldError], maximum: int = MAX_ID_LENGTH) -> str | None:
    if not isinstance(value, str) or not value.strip():
        errors.append(FieldError(field, "must be a non-empty string", value))
        return None
    if len(value.strip()) > maximum:
        errors.append(FieldError(field, f"is longer than {maximum} characters", value))
        return None
    return value.strip()


def _items(body: dict[str, Any], *, adding: bool) -> list[SubscriptionItem]:
    """Read subscriberIds and subscriptions from a body; raise a 400 naming each bad entry."""
    errors: list[FieldError] = []
    items: list[SubscriptionItem] = []
    shape = "{subscriberId, identifier?, name?}" if adding else "{subscriberId?, identifier?}"
    if body.get("subscriberIds") is None and body.get("subscriptions") is None:
        errors.append(
            FieldError(
                "subscriptions",
                f"is required: an array of subscriberIds or {shape} objects; "
                "subscriberIds, an array of ids, is accepted too",
            )
        )
    for field in ("subscriberIds", "subscriptions"):
        entries = body.get(field)
        if entries is None:
            continue
        if not isinstance(entries, list) or not entries or len(entries) > MAX_ITEMS:
            errors.append(FieldError(field, f"must be an array of 1 to {MAX_ITEMS} entries", entries))
            continue
        for index, entry in enumerate(entries):
            item = _item(entry, f"{field}[{index}]", errors, objects=field == "subscriptions", adding=adding)
            if item is not None:
                items.append(item)
    for field in ("context", "preferences"):
        if body.get(field) is not None:
            errors.append(FieldError(field, "is not supported by this server; send subscriptions without it"))
    if errors:
        raise ApiError(INVALID_FIELDS, errors=errors)
    return items


def _item(
    entry: Any, field: str, errors: list[FieldError], *, objects: bool, adding: bool
) -> SubscriptionItem | None:
    if isinstance(entry, str):
        subscriber_id = _id_string(entry, field, errors)
        return None if subscriber_id is None else SubscriptionItem(subscriber_id)
    if not objects or not isinstance(entry, dict):
        kinds = "a subscriberId string or an object" if objects else "a subscriberId string"
        errors.append(FieldError(field, f"must be {kinds}, got {json_type(entry)}"))
        return None
    found = len(errors)
    raw_id, raw_identifier = entry.get("subscriberId"), entry.get("identifier")
    if not adding and raw_id is None and raw_identifier is None:
        errors.append(FieldError(field, "must name a subscriberId, an identifier or both"))
    subscriber_id = identifier = name = None
    if adding or raw_id is not None:
        subscriber_id = _id_string(raw_id, f"{field}.subscriberId", errors)
    if raw_identifier is not None:
        identifier = _id_string(raw_identifier, f"{field}.identifier", errors, MAX_IDENTIFIER_LENGTH)
    if adding:
        name = validate_name(entry.get("name"), f"{field}.name", errors)
    if len(errors) > found:
        return None
    return SubscriptionItem(subscriber_id, identifier, name)


def subscriber_id_items(ids: list[str], field: str, errors: list[FieldError]) -> list[SubscriptionItem]:
    """Return one item per subscriberId, appending a FieldError for each blank or too long id."""
    items = []
    for index, entry in enumerate(ids):
        item = _item(entry, f"{field}[{index}]", errors, objects=False, adding=True)
        if item is not None:
            items.append(item)
    return items


def _describe(item: SubscriptionItem) -> str:
    parts = []
    if item.identifier is not None:
        parts.append(f"identifier {item.identifier!r}")
    if item.subscriber_id is not None:
        parts.append(f"subscriber {item.subscriber_id!r}")
    return " and ".join(parts)


async def _subscribers(
    session: AsyncSession, environment_id: str, items: list[SubscriptionItem]
) -> dict[str, Subscriber]:
    """Return the live subscribers these items name, by subscriberId."""
    ids = list({item.subscriber_id for item in items if item.subscriber_id is not None})
    rows = await session.scalars(
        select(Subscriber).where(
            Subscriber.environment_id == environment_id,
            Subscriber.subscriber_id.in_(ids),
            Subscriber.deleted.is_(False),
        )
    )
    return {subscriber.subscriber_id: subscriber for subscriber in rows}


async def add_subscriptions(
    session: AsyncSession, environment_id: str, topic: Topic, items: list[SubscriptionItem], now: dt.datetime
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Subscribe the items' subscribers to `topic`.

    Returns the subscriptions' bodies and one error per item that could not be subscribed.
    """
    data: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    topic_key = topic.key
    subscribers = await _subscribers(session, environment_id, items)
    identifiers = [
        item.identifier or default_identifier(topic_key, str(item.subscriber_id)) for item in items
    ]
    existing = {
        subscription.identifier: subscription
        for subscription in await session.scalars(
            select(TopicSubscription).where(
                TopicSubscription.topic_pk == topic.id, TopicSubscription.identifier.in_(identifiers)
            )
        )
    }
    for item, identifier in zip(items, identifiers, strict=True):
        subscriber_id = str(item.subscriber_id)
        subscriber = subscribers.get(subscriber_id)
        if subscriber is None:
            failures.append(
                _item_error(
                    subscriber_id,
                    "SUBSCRIBER_NOT_FOUND",
                    f"subscriber {subscriber_id!r} was not found; create the subscriber first",
                )
            )
            continue
        subscription = existing.get(identifier)
        if subscription is not None and subscription.subscriber_pk != subscriber.id:
            failures.append(
                _item_error(
                    subscriber_id,
                    "IDENTIFIER_IN_USE",
                    f"identifier {identifier!r} already names another subscriber's subscription "
                    "to this topic; choose another identifier",
                )
            )
            continue
        if subscription is None:
            subscription = TopicSubscription(
                id=new_id(),
                environment_id=environment_id,
                topic_pk=topic.id,
                subscriber_pk=subscriber.id,
                identifier=identifier,
                name=item.name,
                context_keys=[],
                created_at=now,
                updated_at=now,
            )
            session.add(subscription)
            existing[identifier] = subscription
        elif item.name is not None and item.name != subscription.name:
            subscription.name = item.name
            subscription.updated_at = now
        data.append(subscription_body(subscription, topic, subscriber))
    return data, failures


@post("/", status_code=201)
async def create_subscriptions(
    request: Request[Any, Any, Any], environment: EnvironmentInfo, topic_key: str
) -> Response[Any]:
    """Subscribe subscribers to a topic, creating the topic when it does not exist yet.

    The body's `name` names a topic created here; an existing topic keeps its name.
    """
    services = services_of(request)
    body = await read_json_object(request)
    errors: list[FieldError] = []
    # A missing topic is created, so its key must be one a topic may have.
    validate_key(topic_key, "topicKey", errors)
    topic_name = validate_name(body.get("name"), "name", errors)
    if errors:
        raise ApiError(INVALID_FIELDS, errors=errors)
    items = _items(body, adding=True)

    now = services.clock.now()
    async with AsyncSession(services.writer, expire_on_commit=False) as session, session.begin():
        topic = await find_topic(session, environment.id, topic_key)
        if topic is None:
            topic = new_topic(environment.id, topic_key, topic_name, now)
            session.add(topic)
        data, failures = await add_subscriptions(session, environment.id, topic, items, now)

    content: dict[str, Any] = {
        "data": data,
        "meta": {"totalCount": len(items), "successful": len(data), "failed": len(failures)},
    }
    if failures:
        content["errors"] = failures
    return Response(content=content, status_code=201)


def _filter_context_keys(
    statement: Select[*tuple[Any, ...]], request: Request[Any, Any, Any]
) -> Select[*tuple[Any, ...]]:
    context_keys = request.query_params.getall("contextKeys", [])
    if not context_keys:
        return statement
    # Novu matches the exact set of context keys in any order, so the requested keys are sorted
    # and deduplicated.
    # NOTE: subscriptions are stored with no context keys, so a non-empty filter matches none.
    canonical = json.dumps(sorted(set(context_keys)))
    return statement.where(
        canonical_json(TopicSubscription.context_keys) == canonical_json(literal(canonical, String))
    )


async def _subscription_page(
    session: AsyncSession, request: Request[Any, Any, Any], *conditions: ColumnElement[bool]
) -> dict[str, Any]:
    """Return one cursor page of the subscriptions that match `conditions` and the contextKeys query."""
    page = page_request(request)
    statement = (
        select(TopicSubscription, Subscriber, Topic)
        .join(Subscriber, Subscriber.id == TopicSubscription.subscriber_pk)
        .join(Topic, Topic.id == TopicSubscription.topic_pk)
        .where(*conditions)
    )
    result = await fetch_page(session, _filter_context_keys(statement, request), TopicSubscription.id, page)
    return result.body([subscription_body(row[0], row[2], row[1]) for row in result.rows])


@get("/")
async def list_subscriptions(
    request: Request[Any, Any, Any], environment: EnvironmentInfo, topic_key: str
) -> dict[str, Any]:
    async with AsyncSession(services_of(request).reader) as session:
        topic = await existing_topic(session, environment.id, topic_key)
        conditions = [TopicSubscription.topic_pk == topic.id]
        subscriber_id = request.query_params.get("subscriberId")
        if subscriber_id:
            conditions.append(Subscriber.subscriber_id == subscriber_id)
        return await _subscription_page(session, request, *conditions)


@get("/{identifier:str}")
async def get_subscription(
    request: Request[Any, Any, Any], environment: EnvironmentInfo, topic_key: str, identifier: str
) -> dict[str, Any]:
    async with AsyncSession(services_of(request).reader) as session:
        topic = await existing_topic(session, environment.id, topic_key)
        subscription = await session.scalar(
            select(TopicSubscription).where(
                TopicSubscription.topic_pk == topic.id, TopicSubscription.identifier == identifier
            )
        )
    if subscription is None:
        raise ApiError(SUBSCRIPTION_NOT_FOUND, key=topic_key, identifier=identifier)
    data: dict[str, Any] = {
        "id": subscription.id,
        "identifier": subscription.identifier,
        "contextKeys": list(subscription.context_keys or []),
    }
    if subscription.name is not None:
        data["name"] = subscription.name
    return {"data": data}


async def remove_subscriptions(
    session: AsyncSession, topic: Topic, items: list[SubscriptionItem]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Delete the subscriptions of `topic` that the items name.

    Returns the deleted subscriptions' bodies and one error per item that matched none.
    """
    data: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    rows = await session.execute(
        select(TopicSubscription, Subscriber)
        .join(Subscriber, Subscriber.id == TopicSubscription.subscriber_pk)
        .where(TopicSubscription.topic_pk == topic.id)
        .where(
            TopicSubscription.identifier.in_([item.identifier for item in items if item.identifier])
            | Subscriber.subscriber_id.in_([item.subscriber_id for item in items if item.subscriber_id])
        )
    )
    candidates = list(rows.all())
    removed: set[str] = set()
    for item in items:
        matches = [
            (subscription, subscriber)
            for subscription, subscriber in candidates
            if (item.identifier is None or subscription.identifier == item.identifier)
            and (item.subscriber_id is None or subscriber.subscriber_id == item.subscriber_id)
        ]
        if not matches:
            failures.append(
                _item_error(
                    item.subscriber_id or str(item.identifier),
                    "SUBSCRIPTION_NOT_FOUND",
                    f"no subscription of topic {topic.key!r} matches {_describe(item)}",
                )
            )
            continue
        for subscription, subscriber in matches:
            if subscription.id in removed:
                continue
            removed.add(subscription.id)
            data.append(subscription_body(subscription, topic, subscriber))
            await session.delete(subscription)
    return data, failures


@delete("/", status_code=200)
async def delete_subscriptions(
    request: Request[Any, Any, Any], environment: EnvironmentInfo, topic_key: str
) -> dict[str, Any]:
    """Unsubscribe by subscriberId (every subscription of that subscriber) or by identifier."""
    services = services_of(request)
    items = _items(await read_json_object(request), adding=False)
    async with AsyncSession(services.writer, expire_on_commit=False) as session, session.begin():
        topic = await existing_topic(session, environment.id, topic_key)
        data, failures = await remove_subscriptions(session, topic, items)
    content: dict[str, Any] = {
        "data": data,
        "meta": {"totalCount": len(items), "successful": len(items) - len(failures), "failed": len(failures)},
    }
    if failures:
        content["errors"] = failures
    return content


subscriptions_router = Router(
    path="/v2/topics/{topic_key:str}/subscriptions",
    route_handlers=[create_subscriptions, list_subscriptions, get_subscription, delete_subscriptions],
    dependencies={"environment": Provide(environment_from_api_key)},
)


@get("/")
async def list_subscriber_subscriptions(
    request: Request[Any, Any, Any], environment: EnvironmentInfo, subscriber_id: str
) -> dict[str, Any]:
    """List one subscriber's topic subscriptions, optionally only those of the topic `key`."""
    subscriber_id = path_subscriber_id(subscriber_id)
    async with AsyncSession(services_of(request).reader) as session:
        subscriber = await session.run_sync(live_subscriber, environment.id, subscriber_id)
        conditions = [TopicSubscription.subscriber_pk == subscriber.id]
        key = request.query_params.get("key")
        if key:
            conditions.append(Topic.key == key)
        return await _subscription_page(session, request, *conditions)


subscriber_subscriptions_router = Router(
    path="/v2/subscribers/{subscriber_id:str}/subscriptions",
    route_handlers=[list_subscriber_subscriptions],
    dependencies={"environment": Provide(environment_from_api_key)},
)
