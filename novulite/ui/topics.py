"""Admin pages for topics: list and create topics, add and remove members."""

from __future__ import annotations

import logging
from typing import Annotated, Any
from urllib.parse import quote

from litestar import Request, Response, Router, get, post
from litestar.di import Provide
from litestar.enums import RequestEncodingType
from litestar.params import Body
from litestar.response import Template
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from novulite.api.auth import services_of
from novulite.api.topic_subscriptions import (
    MAX_ITEMS,
    add_subscriptions,
    remove_subscriptions,
    subscriber_id_items,
)
from novulite.api.topics import find_topic, new_topic, validate_key, validate_name
from novulite.db.models import Subscriber, Topic, TopicSubscription
from novulite.errors import FieldError
from novulite.ui.common import PAGE_SIZE, current_admin, flash_redirect, page_number, render
from novulite.ui.subscribers import admin_environment_id, field_message

logger = logging.getLogger("novulite.ui")


def topic_path(key: str) -> str:
    return f"/admin/topics/{quote(key, safe='')}"


async def _list_context(request: Request[Any, Any, Any], page: int) -> dict[str, Any]:
    environment_id = await admin_environment_id(request)
    async with AsyncSession(services_of(request).reader) as session:
        total = await session.scalar(select(func.count()).where(Topic.environment_id == environment_id)) or 0
        rows = (
            await session.execute(
                select(Topic, func.count(TopicSubscription.id))
                .outerjoin(TopicSubscription, TopicSubscription.topic_pk == Topic.id)
                .where(Topic.environment_id == environment_id)
                .group_by(Topic.id)
                .order_by(Topic.created_at.desc(), Topic.id.desc())
                .limit(PAGE_SIZE)
                .offset((page - 1) * PAGE_SIZE)
            )
        ).all()
    return {
        "topics": [(row[0], row[1]) for row in rows],
        "page": page,
        "has_next": page * PAGE_SIZE < total,
        "total": total,
        "form": {"key": "", "name": ""},
        "form_error": None,
    }


@get("/topics", dependencies={"admin": Provide(current_admin)})
async def topics_page(request: Request[Any, Any, Any], admin: str, page: int | None = None) -> Template:
    context = await _list_context(request, page_number(page))
    return render(request, "admin/topics/list.html", admin, context)


@post("/topics", dependencies={"admin": Provide(current_admin)})
async def create_topic(
    request: Request[Any, Any, Any],
    admin: str,
    data: Annotated[dict[str, str], Body(media_type=RequestEncodingType.URL_ENCODED)],
) -> Response[Any]:
    """Create a topic from the form's key and optional name, as POST /v2/topics validates them."""
    errors: list[FieldError] = []
    key = validate_key(data.get("key", ""), "key", errors)
    raw_name = (data.get("name") or "").strip()
    name = validate_name(raw_name or None, "name", errors)
    if errors:
        context = await _list_context(request, 1)
        context["form"] = {"key": data.get("key", ""), "name": data.get("name", "")}
        context["form_error"] = field_message(errors)
        context["invalid_fields"] = [error.field for error in errors]
        logger.info("admin %s: invalid topic form: %s", admin, context["form_error"])
        return render(request, "admin/topics/list.html", admin, context, status_code=400)

    services = services_of(request)
    environment_id = await admin_environment_id(request)
    async with AsyncSession(services.writer, expire_on_commit=False) as session, session.begin():
        topic = await find_topic(session, environment_id, key)
        created = topic is None
        if topic is None:
            session.add(new_topic(environment_id, key, name, services.clock.now()))
    if not created:
        return flash_redirect(
            request, topic_path(key), f"Topic {key} already exists; nothing was changed.", "info"
        )
    logger.info("admin %s created topic %s", admin, key)
    return flash_redirect(request, topic_path(key), f"Created topic {key}.")


async def _topic_context(request: Request[Any, Any, Any], key: str, page: int) -> dict[str, Any] | None:
    """Read the topic page's topic and one page of members, or return None when the key is unknown."""
    environment_id = await admin_environment_id(request)
    async with AsyncSession(services_of(request).reader) as session:
        topic = await find_topic(session, environment_id, key)
        if topic is None:
            return None
        total = await session.scalar(select(func.count()).where(TopicSubscription.topic_pk == topic.id)) or 0
        rows = (
            await session.execute(
                select(TopicSubscription, Subscriber)
                .join(Subscriber, Subscriber.id == TopicSubscription.subscriber_pk)
                .where(TopicSubscription.topic_pk == topic.id)
                .order_by(TopicSubscription.created_at.desc(), TopicSubscription.id.desc())
                .limit(PAGE_SIZE)
                .offset((page - 1) * PAGE_SIZE)
            )
        ).all()
    return {
        "topic": topic,
        "members": [(row[0], row[1]) for row in rows],
        "page": page,
        "has_next": page * PAGE_SIZE < total,
        "total": total,
        "path": topic_path(topic.key),
        "subscriber_ids": "",
        "form_error": None,
    }


def _not_found(request: Request[Any, Any, Any], admin: str, key: str) -> Template:
    return render(request, "admin/topics/not_found.html", admin, {"key": key}, status_code=404)


@get("/topics/{key:str}", dependencies={"admin": Provide(current_admin)})
async def topic_page(
    request: Request[Any, Any, Any], admin: str, key: str, page: int | None = None
) -> Template:
    context = await _topic_context(request, key, page_number(page))
    if context is None:
        return _not_found(request, admin, key)
    return render(request, "admin/topics/topic.html", admin, context)


def _split_ids(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


@post("/topics/{key:str}/members", dependencies={"admin": Provide(current_admin)})
async def add_members(
    request: Request[Any, Any, Any],
    admin: str,
    key: str,
    data: Annotated[dict[str, str], Body(media_type=RequestEncodingType.URL_ENCODED)],
) -> Response[Any]:
    """Subscribe the comma-separated subscriber ids, as POST /v2/topics/{key}/subscriptions does."""
    raw = data.get("subscriber_ids", "")
    ids = _split_ids(raw)
    errors: list[FieldError] = []
    if not ids:
        errors.append(
            FieldError("subscriber_ids", "is required: one or more subscriber ids separated by commas")
        )
    elif len(ids) > MAX_ITEMS:
        errors.append(
            FieldError("subscriber_ids", f"lists {len(ids)} ids; add at most {MAX_ITEMS} at a time")
        )
    items = subscriber_id_items(ids, "subscriber_ids", errors) if not errors else []
    if errors:
        context = await _topic_context(request, key, 1)
        if context is None:
            return _not_found(request, admin, key)
        context["subscriber_ids"] = raw
        context["form_error"] = field_message(errors)
        logger.info("admin %s: invalid members form for topic %s: %s", admin, key, context["form_error"])
        return render(request, "admin/topics/topic.html", admin, context, status_code=400)

    services = services_of(request)
    environment_id = await admin_environment_id(request)
    async with AsyncSession(services.writer, expire_on_commit=False) as session, session.begin():
        topic = await find_topic(session, environment_id, key)
        if topic is None:
            return _not_found(request, admin, key)
        added, failures = await add_subscriptions(session, environment_id, topic, items, services.clock.now())
    logger.info("admin %s added %d subscribers to topic %s, %d failed", admin, len(added), key, len(failures))
    message = f"Added {_count(len(added))} to {key}."
    if failures:
        message += " Not added: " + " ".join(f"{failure['message']}." for failure in failures)
    return flash_redirect(request, topic_path(key), message, "error" if failures else "success")


@post("/topics/{key:str}/members/remove", dependencies={"admin": Provide(current_admin)})
async def remove_member(
    request: Request[Any, Any, Any],
    admin: str,
    key: str,
    data: Annotated[dict[str, str], Body(media_type=RequestEncodingType.URL_ENCODED)],
) -> Response[Any]:
    """Unsubscribe one subscriber from the topic, as DELETE /v2/topics/{key}/subscriptions does."""
    errors: list[FieldError] = []
    items = subscriber_id_items([data.get("subscriber_id", "")], "subscriber_id", errors)
    if errors:
        return flash_redirect(request, topic_path(key), field_message(errors), "error")
    services = services_of(request)
    environment_id = await admin_environment_id(request)
    async with AsyncSession(services.writer, expire_on_commit=False) as session, session.begin():
        topic = await find_topic(session, environment_id, key)
        if topic is None:
            return _not_found(request, admin, key)
        _, failures = await remove_subscriptions(session, topic, items)
    subscriber_id = items[0].subscriber_id
    if failures:
        logger.info(
            "admin %s: removing %s from topic %s failed: %s",
            admin,
            subscriber_id,
            key,
            failures[0]["message"],
        )
        return flash_redirect(request, topic_path(key), f"{failures[0]['message']}.", "error")
    logger.info("admin %s removed subscriber %s from topic %s", admin, subscriber_id, key)
    return flash_redirect(request, topic_path(key), f"Removed {subscriber_id} from {key}.")


def _count(number: int) -> str:
    return "1 subscriber" if number == 1 else f"{number} subscribers"


topics_router = Router(
    path="/admin",
    route_handlers=[topics_page, create_topic, topic_page, add_members, remove_member],
    include_in_schema=False,
)
