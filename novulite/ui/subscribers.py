"""Admin pages for subscribers: search, profile, preferences, inbox messages, topics, deletion."""

from __future__ import annotations

import dataclasses
import logging
from typing import Annotated, Any
from urllib.parse import quote

from litestar import Request, Response, Router, get, post
from litestar.datastructures import MultiDict
from litestar.di import Provide
from litestar.enums import RequestEncodingType
from litestar.params import Body
from litestar.response import Template
from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from novulite.api.auth import services_of
from novulite.api.preference_input import PreferenceUpdate
from novulite.api.preferences import apply_updates, read_listing
from novulite.api.subscriber_search import SearchRequest, parse_search, search_page
from novulite.api.subscriber_validation import validate_subscriber_id
from novulite.api.subscribers import mark_subscriber_deleted, notify_counts_changed
from novulite.db.models import Environment, Message, Topic, TopicSubscription, Workflow
from novulite.errors import ApiError, FieldError
from novulite.ui.common import PAGE_SIZE, current_admin, flash_redirect, page_number, render

logger = logging.getLogger("novulite.ui")

SEARCH_PAGE_SIZE = 25
# A credential value shows its last characters only when it is at least this long,
# so that the visible part is a small fraction of the secret.
MIN_LENGTH_FOR_SUFFIX = 16
SUFFIX_LENGTH = 4
TOPICS_SHOWN = 100


async def admin_environment_id(request: Request[Any, Any, Any]) -> str:
    """Return the id of the environment the admin pages show: the first one created."""
    # NOTE: the server creates one environment (Development) on first start and has no API to
    # add more, so the admin pages show that one and offer no environment switch.
    async with AsyncSession(services_of(request).reader) as session:
        environment_id = await session.scalar(
            select(Environment.id).order_by(Environment.created_at, Environment.id).limit(1)
        )
    if environment_id is None:
        raise RuntimeError("the database has no environment. Start the server once to create one.")
    return environment_id


def subscriber_path(subscriber_id: str) -> str:
    return f"/admin/subscribers/{quote(subscriber_id, safe='')}"


def field_message(errors: list[FieldError]) -> str:
    """Return one sentence per invalid field, each starting with the field's name."""
    return " ".join(f"{error.field} {error.message}." for error in errors)


def _search_request(request: Request[Any, Any, Any], text: str) -> SearchRequest:
    """Parse a search for `text` as a subscriberId, an email or a name, any of them matching."""
    params = MultiDict(
        [(key, value) for key, value in request.query_params.multi_items() if key in ("after", "before")]
    )
    params.add("limit", str(SEARCH_PAGE_SIZE))
    for name in ("subscriberId", "email", "name"):
        if text:
            params.add(name, text)
    search = parse_search(params)
    if not search.conditions:
        return search
    return dataclasses.replace(search, conditions=[or_(*search.conditions)])


@get("/subscribers", dependencies={"admin": Provide(current_admin)})
async def subscribers_page(request: Request[Any, Any, Any], admin: str, q: str | None = None) -> Template:
    text = (q or "").strip()
    context: dict[str, Any] = {"query": text, "result": None, "error": None}
    try:
        search = _search_request(request, text)
    except ApiError as error:
        context["error"] = field_message(error.errors) or error.message
        return render(request, "admin/subscribers/list.html", admin, context, status_code=400)
    environment_id = await admin_environment_id(request)
    async with AsyncSession(services_of(request).reader) as session:
        context["result"] = await session.run_sync(search_page, environment_id, search)
    context["query_prefix"] = f"?q={quote(text)}&" if text else "?"
    return render(request, "admin/subscribers/list.html", admin, context)


def masked_credentials(credentials: dict[str, Any]) -> list[tuple[str, str]]:
    """Return each credential's name with its value masked, since these are delivery secrets."""
    masked = []
    for name, value in credentials.items():
        values = value if isinstance(value, list) else [value]
        masked.append((name, ", ".join(_mask(str(item)) for item in values) or "(none)"))
    return masked


def _mask(value: str) -> str:
    if len(value) >= MIN_LENGTH_FOR_SUFFIX:
        return f"•••• {value[-SUFFIX_LENGTH:]} ({len(value)} characters)"
    return f"•••• ({len(value)} characters)"


async def _profile_context(request: Request[Any, Any, Any], subscriber_id: str, page: int) -> dict[str, Any]:
    """Read everything the profile page shows, raising ApiError when the subscriber does not exist."""
    environment_id = await admin_environment_id(request)
    listing, workflows = await read_listing(request, environment_id, subscriber_id, "")
    subscriber = listing.subscriber
    async with AsyncSession(services_of(request).reader) as session:
        message_condition = (Message.subscriber_pk == subscriber.id) & (Message.channel == "in_app")
        message_total = await session.scalar(select(func.count()).where(message_condition)) or 0
        messages = (
            await session.execute(
                select(Message, Workflow.workflow_id)
                .join(Workflow, Workflow.id == Message.workflow_pk)
                .where(message_condition)
                .order_by(Message.created_at.desc(), Message.id.desc())
                .limit(PAGE_SIZE)
                .offset((page - 1) * PAGE_SIZE)
            )
        ).all()
        topic_total = (
            await session.scalar(select(func.count()).where(TopicSubscription.subscriber_pk == subscriber.id))
            or 0
        )
        topics = (
            await session.execute(
                select(Topic.key, Topic.name)
                .join(TopicSubscription, TopicSubscription.topic_pk == Topic.id)
                .where(TopicSubscription.subscriber_pk == subscriber.id)
                .distinct()
                .order_by(Topic.key)
                .limit(TOPICS_SHOWN)
            )
        ).all()
    return {
        "subscriber": subscriber,
        "channels": [
            (
                entry.get("providerId"),
                entry.get("integrationIdentifier"),
                masked_credentials(entry.get("credentials") or {}),
            )
            for entry in subscriber.channels or []
        ],
        "global_preference": listing.global_entry(),
        "workflow_preferences": [listing.workflow_entry(workflow) for workflow in workflows],
        "messages": [tuple(row) for row in messages],
        "message_total": message_total,
        "page": page,
        "has_next": page * PAGE_SIZE < message_total,
        "topics": [tuple(row) for row in topics],
        "topic_total": topic_total,
        "path": subscriber_path(subscriber.subscriber_id),
    }


def _not_found(request: Request[Any, Any, Any], admin: str, subscriber_id: str) -> Template:
    return render(
        request, "admin/subscribers/not_found.html", admin, {"subscriber_id": subscriber_id}, status_code=404
    )


@get("/subscribers/{subscriber_id:str}", dependencies={"admin": Provide(current_admin)})
async def subscriber_page(
    request: Request[Any, Any, Any], admin: str, subscriber_id: str, page: int | None = None
) -> Template:
    try:
        context = await _profile_context(request, subscriber_id, page_number(page))
    except ApiError as error:
        if error.status == 404:
            return _not_found(request, admin, subscriber_id)
        raise
    return render(request, "admin/subscribers/profile.html", admin, context)


@post("/subscribers/{subscriber_id:str}/preferences", dependencies={"admin": Provide(current_admin)})
async def update_subscriber_preferences(
    request: Request[Any, Any, Any],
    admin: str,
    subscriber_id: str,
    data: Annotated[dict[str, Any], Body(media_type=RequestEncodingType.URL_ENCODED)],
) -> Response[Any]:
    """Store the channels of one workflow, or of the global preference, as the form's checkboxes set them."""
    environment_id = await admin_environment_id(request)
    reference = str(data.get("workflow") or "") or None
    try:
        listing, workflows = await read_listing(request, environment_id, subscriber_id, "")
    except ApiError as error:
        if error.status == 404:
            return _not_found(request, admin, subscriber_id)
        raise
    if reference is None:
        channels = list(listing.global_entry()["channels"])
        label = "global preferences"
    else:
        workflow = next((item for item in workflows if item.workflow_id == reference), None)
        if workflow is None:
            logger.info(
                "admin %s: preferences of subscriber %s name unknown workflow %r",
                admin,
                subscriber_id,
                reference,
            )
            return flash_redirect(
                request,
                subscriber_path(subscriber_id),
                f"Workflow {reference!r} was not found or is inactive; preferences were not changed.",
                "error",
            )
        channels = list(listing.workflow_entry(workflow)["channels"])
        label = f"preferences for {reference}"
    update = PreferenceUpdate(
        channels={channel: data.get(f"channel_{channel}") == "on" for channel in channels}
    )
    await apply_updates(request, environment_id, subscriber_id, [(reference, update)])
    logger.info("admin %s updated %s of subscriber %s", admin, label, subscriber_id)
    return flash_redirect(request, subscriber_path(subscriber_id), f"Saved {label}.")


@post("/subscribers/{subscriber_id:str}/delete", dependencies={"admin": Provide(current_admin)})
async def delete_subscriber_form(
    request: Request[Any, Any, Any],
    admin: str,
    subscriber_id: str,
    data: Annotated[dict[str, str], Body(media_type=RequestEncodingType.URL_ENCODED)],
) -> Response[Any]:
    """Delete a subscriber the way DELETE /v2/subscribers/{id} does, after the id is typed to confirm."""
    if (data.get("confirm") or "").strip() != subscriber_id:
        context = await _profile_context_or_none(request, subscriber_id)
        if context is None:
            return _not_found(request, admin, subscriber_id)
        context["delete_error"] = f"confirm must be the subscriber id {subscriber_id!r} to delete it."
        logger.info("admin %s: deletion of subscriber %s not confirmed", admin, subscriber_id)
        return render(request, "admin/subscribers/profile.html", admin, context, status_code=400)
    errors: list[FieldError] = []
    if validate_subscriber_id(subscriber_id, "subscriberId", errors) is None:
        return _not_found(request, admin, subscriber_id)
    services = services_of(request)
    environment_id = await admin_environment_id(request)
    now = services.clock.now()
    try:
        async with AsyncSession(services.writer, expire_on_commit=False) as session, session.begin():
            subscriber_pk, inboxes = await session.run_sync(
                mark_subscriber_deleted, environment_id, subscriber_id, now
            )
    except ApiError as error:
        if error.status == 404:
            return _not_found(request, admin, subscriber_id)
        raise
    await notify_counts_changed(services, subscriber_pk, inboxes)
    logger.info("admin %s deleted subscriber %s", admin, subscriber_id)
    return flash_redirect(request, "/admin/subscribers", f"Deleted subscriber {subscriber_id}.")


async def _profile_context_or_none(
    request: Request[Any, Any, Any], subscriber_id: str
) -> dict[str, Any] | None:
    try:
        return await _profile_context(request, subscriber_id, 1)
    except ApiError as error:
        if error.status == 404:
            return None
        raise


subscribers_router = Router(
    path="/admin",
    route_handlers=[subscribers_page, subscriber_page, update_subscriber_preferences, delete_subscriber_form],
    include_in_schema=False,
)
