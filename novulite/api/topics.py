"""Topics under /v2/topics, in the shapes novu-py parses; subscriptions are in topic_subscriptions."""

from __future__ import annotations

import datetime as dt
import logging
import re
from typing import Any

from litestar import Request, Response, Router, delete, get, patch, post
from litestar.di import Provide
from sqlalchemy import delete as delete_rows
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from novulite.api.auth import environment_from_api_key, services_of
from novulite.api.body import read_json_object
from novulite.api.cursor_pages import fetch_page, page_request
from novulite.clock import isoformat
from novulite.db.models import Topic, TopicSubscription
from novulite.directory import EnvironmentInfo
from novulite.errors import (
    INVALID_FIELDS,
    INVALID_QUERY,
    TOPIC_EXISTS,
    TOPIC_NOT_FOUND,
    ApiError,
    FieldError,
    error_body,
)
from novulite.ids import new_id

logger = logging.getLogger("novulite.api")

# Novu's rule for topic keys: letters, digits, '-', '_' and ':', or an email address; 1 to 100 characters.
KEY_PATTERN = re.compile(r"^(?:[A-Za-z0-9_:-]+|[^@\s]+@[^@\s]+\.[^@\s]+)$")
MAX_KEY_LENGTH = 100
MAX_NAME_LENGTH = 100


def topic_body(topic: Topic) -> dict[str, Any]:
    body: dict[str, Any] = {"_id": topic.id, "key": topic.key}
    if topic.name is not None:
        body["name"] = topic.name
    body["createdAt"] = isoformat(topic.created_at)
    body["updatedAt"] = isoformat(topic.updated_at)
    return body


def validate_key(value: Any, field: str, errors: list[FieldError]) -> str:
    if not isinstance(value, str) or not value.strip():
        errors.append(FieldError(field, "is required: the topic's key, a non-empty string", value))
        return ""
    key = value.strip()
    if len(key) > MAX_KEY_LENGTH or not KEY_PATTERN.match(key):
        errors.append(
            FieldError(
                field,
                f"must be 1 to {MAX_KEY_LENGTH} letters, digits, '-', '_' or ':', or an email address",
                value,
            )
        )
    return key


def validate_name(value: Any, field: str, errors: list[FieldError]) -> str | None:
    """Check an optional topic name; None means that no name was given."""
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_NAME_LENGTH:
        errors.append(FieldError(field, f"must be a string of at most {MAX_NAME_LENGTH} characters", value))
        return None
    return value


async def find_topic(session: AsyncSession, environment_id: str, key: str) -> Topic | None:
    return await session.scalar(select(Topic).where(Topic.environment_id == environment_id, Topic.key == key))


async def existing_topic(session: AsyncSession, environment_id: str, key: str) -> Topic:
    """Return the topic with this key, or raise a 404."""
    topic = await find_topic(session, environment_id, key)
    if topic is None:
        raise ApiError(TOPIC_NOT_FOUND, key=key)
    return topic


def new_topic(environment_id: str, key: str, name: str | None, now: dt.datetime) -> Topic:
    return Topic(
        id=new_id(), environment_id=environment_id, key=key, name=name, created_at=now, updated_at=now
    )


def _fail_if_exists(request: Request[Any, Any, Any]) -> bool:
    raw = request.query_params.get("failIfExists", "false").lower()
    if raw not in ("true", "false"):
        raise ApiError(INVALID_QUERY, errors=[FieldError("failIfExists", "must be true or false", raw)])
    return raw == "true"


@post("/", status_code=201)
async def upsert_topic(request: Request[Any, Any, Any], environment: EnvironmentInfo) -> Response[Any]:
    """Create a topic, or rename an existing one: 201 when created, 200 when it existed."""
    services = services_of(request)
    fail_if_exists = _fail_if_exists(request)
    body = await read_json_object(request)
    errors: list[FieldError] = []
    key = validate_key(body.get("key"), "key", errors)
    name = validate_name(body.get("name"), "name", errors)
    if errors:
        raise ApiError(INVALID_FIELDS, errors=errors)

    now = services.clock.now()
    async with AsyncSession(services.writer, expire_on_commit=False) as session, session.begin():
        topic = await find_topic(session, environment.id, key)
        created = topic is None
        if topic is None:
            topic = new_topic(environment.id, key, name, now)
            session.add(topic)
        elif not fail_if_exists and name is not None and name != topic.name:
            topic.name = name
            topic.updated_at = now

    if not created and fail_if_exists:
        # novu-py reads a 409 here as the existing topic, so the body carries its fields too.
        message = TOPIC_EXISTS.with_message(key=key)
        logger.debug("POST %s -> 409: %s", request.url.path, message)
        content = error_body(409, request.url.path, message, code=TOPIC_EXISTS.code, extra=topic_body(topic))
        return Response(content=content, status_code=409)
    return Response(content={"data": topic_body(topic)}, status_code=201 if created else 200)


@get("/")
async def list_topics(request: Request[Any, Any, Any], environment: EnvironmentInfo) -> dict[str, Any]:
    services = services_of(request)
    page = page_request(request)
    statement = select(Topic).where(Topic.environment_id == environment.id)
    key = request.query_params.get("key")
    if key:
        statement = statement.where(Topic.key == key)
    name = request.query_params.get("name")
    if name:
        statement = statement.where(func.lower(Topic.name).contains(name.lower(), autoescape=True))
    async with AsyncSession(services.reader) as session:
        result = await fetch_page(session, statement, Topic.id, page)
    return result.body([topic_body(row[0]) for row in result.rows])


@get("/{topic_key:str}")
async def get_topic(
    request: Request[Any, Any, Any], environment: EnvironmentInfo, topic_key: str
) -> dict[str, Any]:
    async with AsyncSession(services_of(request).reader) as session:
        topic = await existing_topic(session, environment.id, topic_key)
    return {"data": topic_body(topic)}


@patch("/{topic_key:str}")
async def rename_topic(
    request: Request[Any, Any, Any], environment: EnvironmentInfo, topic_key: str
) -> dict[str, Any]:
    services = services_of(request)
    name = (await read_json_object(request)).get("name")
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME_LENGTH:
        raise ApiError(
            INVALID_FIELDS,
            errors=[
                FieldError(
                    "name",
                    f"is required: the topic's new display name, 1 to {MAX_NAME_LENGTH} characters",
                    name,
                )
            ],
        )

    async with AsyncSession(services.writer, expire_on_commit=False) as session, session.begin():
        topic = await existing_topic(session, environment.id, topic_key)
        if topic.name != name:
            topic.name = name
            topic.updated_at = services.clock.now()
    return {"data": topic_body(topic)}


@delete("/{topic_key:str}", status_code=200)
async def delete_topic(
    request: Request[Any, Any, Any], environment: EnvironmentInfo, topic_key: str
) -> dict[str, Any]:
    """Delete a topic and its subscriptions; a trigger already fanning out to it stops at its next page."""
    services = services_of(request)
    async with AsyncSession(services.writer) as session, session.begin():
        topic = await existing_topic(session, environment.id, topic_key)
        await session.execute(delete_rows(TopicSubscription).where(TopicSubscription.topic_pk == topic.id))
        await session.delete(topic)
    return {"data": {"acknowledged": True}}


topics_router = Router(
    path="/v2/topics",
    route_handlers=[
        upsert_topic,
        list_topics,
        get_topic,
        rename_topic,
        delete_topic,
    ],
    dependencies={"environment": Provide(environment_from_api_key)},
)
