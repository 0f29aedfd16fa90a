"""Subscriber preferences: Novu's v2 API under /v2/subscribers and the legacy v1 routes.

Listings show effective values, resolved the way the job runner resolves them
(novulite.engine.preferences), so a listing shows what a trigger would deliver.
Updates store only the channels a request names and merge them into the stored row
in the database, so concurrent updates of different channels all persist.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from litestar import Request, Router, get, patch
from litestar.di import Provide
from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from novulite.api.auth import environment_from_api_key, services_of
from novulite.api.body import read_json_object
from novulite.api.preference_input import (
    PreferenceUpdate,
    parse_bulk,
    parse_criticality,
    parse_legacy_global,
    parse_legacy_workflow,
    parse_update,
)
from novulite.clock import isoformat
from novulite.db.models import Preference, Step, Subscriber, Workflow
from novulite.directory import EnvironmentInfo
from novulite.engine.lookups import PreferenceIndex
from novulite.engine.preferences import CHANNELS, GLOBAL_SCOPE, step_channels
from novulite.errors import SUBSCRIBER_NOT_FOUND, WORKFLOW_NOT_FOUND, WORKFLOWS_NOT_FOUND, ApiError
from novulite.ids import new_id
from novulite.json_sql import json_merge
from novulite.messages import context_key


async def _subscriber(session: AsyncSession, environment_id: str, subscriber_id: str) -> Subscriber:
    subscriber = await session.scalar(
        select(Subscriber).where(
            Subscriber.environment_id == environment_id,
            Subscriber.subscriber_id == subscriber_id,
            Subscriber.deleted.is_(False),
        )
    )
    if subscriber is None:
        raise ApiError(SUBSCRIBER_NOT_FOUND, subscriber_id=subscriber_id)
    return subscriber


async def _workflows_by_reference(
    session: AsyncSession, environment_id: str, references: list[str]
) -> dict[str, Workflow]:
    """Find workflows by identifier or internal id; raise a 404 naming any that do not exist."""
    rows = await session.scalars(
        select(Workflow).where(
            Workflow.environment_id == environment_id,
            Workflow.workflow_id.in_(references) | Workflow.id.in_(references),
        )
    )
    found: dict[str, Workflow] = {}
    for workflow in rows:
        found[workflow.workflow_id] = workflow
        found[workflow.id] = workflow
    missing = [reference for reference in dict.fromkeys(references) if reference not in found]
    if len(missing) == 1 and len(references) == 1:
        raise ApiError(WORKFLOW_NOT_FOUND, workflow_id=missing[0])
    if missing:
        raise ApiError(WORKFLOWS_NOT_FOUND, workflow_ids=", ".join(repr(item) for item in missing))
    return found


async def _step_types(session: AsyncSession, workflow_pks: list[str]) -> dict[str, list[str]]:
    types: dict[str, list[str]] = {pk: [] for pk in workflow_pks}
    rows = await session.execute(
        select(Step.workflow_pk, Step.type)
        .where(Step.workflow_pk.in_(workflow_pks), Step.active.is_(True))
        .order_by(Step.position)
    )
    for workflow_pk, step_type in rows:
        types[workflow_pk].append(step_type)
    return types


class Listing:
    """A subscriber's preferences with everything needed to show them for one context."""

    def __init__(
        self,
        subscriber: Subscriber,
        context: str,
        rows: list[Preference],
        step_types: dict[str, list[str]],
    ) -> None:
        self.subscriber = subscriber
        self.context = context
        self.index = PreferenceIndex(rows)
        self.step_types = step_types

    def _stored(self, scope: str) -> Preference | None:
        stored = self.index.get(self.subscriber.id, scope, self.context)
        return stored.row if stored is not None else None

    def global_entry(self) -> dict[str, Any]:
        stored = self._stored(GLOBAL_SCOPE)
        used = {channel for types in self.step_types.values() for channel in step_channels(types)}
        saved = dict(stored.channels) if stored is not None else {}
        # Novu lists the channels the workflows use; channels saved without a step are listed too.
        listed = [channel for channel in CHANNELS if channel in used or channel in saved]
        listed += [channel for channel in saved if channel not in listed]
        entry: dict[str, Any] = {
            "enabled": stored.enabled if stored is not None else True,
            "channels": {channel: bool(saved.get(channel, True)) for channel in listed},
        }
        if stored is not None and stored.schedule is not None:
            entry["schedule"] = stored.schedule
        return entry

    def workflow_entry(self, workflow: Workflow) -> dict[str, Any]:
        resolution = self.index.resolve(workflow, self.subscriber.id, self.context)
        channels = step_channels(self.step_types.get(workflow.id, []))
        stored = self._stored(workflow.id)
        entry: dict[str, Any] = {
            "enabled": stored.enabled if stored is not None else True,
            "channels": {channel: resolution.channels[channel] for channel in channels},
            "overrides": [
                {"channel": channel, "source": resolution.sources[channel]} for channel in channels
            ],
            "workflow": {
                "slug": workflow.workflow_id,
                "identifier": workflow.workflow_id,
                "name": workflow.name,
                "updatedAt": isoformat(workflow.updated_at),
            },
        }
        if stored is not None:
            entry["updatedAt"] = isoformat(stored.updated_at)
        return entry

    def legacy_entry(self, workflow: Workflow) -> dict[str, Any]:
        """Return the v1 shape, `{template, preference}`, that Novu's older clients read."""
        entry = self.workflow_entry(workflow)
        return {
            "template": {
                "_id": workflow.id,
                "name": workflow.name,
                "critical": workflow.critical,
                "tags": workflow.tags or [],
                "triggers": [{"type": "event", "identifier": workflow.workflow_id, "variables": []}],
            },
            "preference": {
                "enabled": entry["enabled"],
                "channels": entry["channels"],
                "overrides": entry["overrides"],
            },
        }

    def bulk_entry(self, workflow: Workflow) -> dict[str, Any]:
        entry = self.workflow_entry(workflow)
        return {
            "level": "template",
            "enabled": entry["enabled"],
            "channels": entry["channels"],
            "workflow": {
                "id": workflow.id,
                "identifier": workflow.workflow_id,
                "name": workflow.name,
                "critical": workflow.critical,
                "severity": workflow.severity,
                "tags": workflow.tags or [],
            },
        }


async def read_listing(
    request: Request[Any, Any, Any], environment_id: str, subscriber_id: str, context: str
) -> tuple[Listing, list[Workflow]]:
    """Read a subscriber's preferences and the environment's active workflows."""
    async with AsyncSession(services_of(request).reader) as session:
        subscriber = await _subscriber(session, environment_id, subscriber_id)
        workflows = list(
            await session.scalars(
                select(Workflow)
                .where(Workflow.environment_id == environment_id, Workflow.active.is_(True))
                .order_by(Workflow.created_at, Workflow.id)
            )
        )
        rows = list(
            await session.scalars(
                select(Preference).where(
                    Preference.subscriber_pk == subscriber.id,
                    Preference.context_key.in_({context, ""}),
                )
            )
        )
        step_types = await _step_types(session, [workflow.id for workflow in workflows])
    return Listing(subscriber, context, rows, step_types), workflows


def by_criticality(workflows: list[Workflow], criticality: str) -> list[Workflow]:
    if criticality == "all":
        return workflows
    critical = criticality == "critical"
    return [workflow for workflow in workflows if workflow.critical == critical]


async def _preferences_body(
    request: Request[Any, Any, Any],
    environment: EnvironmentInfo,
    subscriber_id: str,
    criticality: str,
    context: str,
) -> dict[str, Any]:
    listing, workflows = await read_listing(request, environment.id, subscriber_id, context)
    return {
        "global": listing.global_entry(),
        "workflows": [
            listing.workflow_entry(workflow) for workflow in by_criticality(workflows, criticality)
        ],
    }


def _query_context(request: Request[Any, Any, Any]) -> str:
    return context_key(request.query_params.getall("contextKeys", []))


async def _store(
    session: AsyncSession,
    environment_id: str,
    subscriber_pk: str,
    update: PreferenceUpdate,
    workflow: Workflow | None,
    now: dt.datetime,
) -> None:
    """Upsert one preference row, merging the named channels into the stored ones in the same statement.

    The merge runs inside the database, on the row as it is when the statement runs. Two
    concurrent updates of different channels therefore both persist, because neither
    writes back a copy it read earlier.
    """
    values = {
        "id": new_id(),
        "environment_id": environment_id,
        "subscriber_pk": subscriber_pk,
        "workflow_pk": workflow.id if workflow is not None else None,
        "scope": workflow.id if workflow is not None else GLOBAL_SCOPE,
        "enabled": True if update.enabled is None else update.enabled,
        "channels": update.channels,
        "schedule": update.schedule,
        "context_key": update.context,
        "created_at": now,
        "updated_at": now,
    }
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    statement = insert(Preference).values(**values)
    changes: dict[str, Any] = {
        "channels": json_merge(Preference.channels, statement.excluded.channels),
        "updated_at": statement.excluded.updated_at,
    }
    if update.enabled is not None:
        changes["enabled"] = statement.excluded.enabled
    if update.schedule is not None:
        # NOTE: the schedule is stored and listed, but deliveries do not wait for it yet.
        changes["schedule"] = statement.excluded.schedule
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=["subscriber_pk", "scope", "context_key"], set_=changes
        )
    )


async def apply_updates(
    request: Request[Any, Any, Any],
    environment_id: str,
    subscriber_id: str,
    updates: list[tuple[str | None, PreferenceUpdate]],
) -> dict[str, Workflow]:
    """Store updates, each for a workflow reference or None for global, in one transaction."""
    services = services_of(request)
    now = services.clock.now()
    async with AsyncSession(services.writer, expire_on_commit=False) as session, session.begin():
        subscriber = await _subscriber(session, environment_id, subscriber_id)
        references = [reference for reference, _ in updates if reference is not None]
        workflows = await _workflows_by_reference(session, environment_id, references) if references else {}
        for reference, update in updates:
            workflow = workflows[reference] if reference is not None else None
            await _store(session, environment_id, subscriber.id, update, workflow, now)
    return workflows


@get("/v2/subscribers/{subscriber_id:str}/preferences")
async def list_preferences(
    request: Request[Any, Any, Any], environment: EnvironmentInfo, subscriber_id: str
) -> dict[str, Any]:
    criticality = parse_criticality(request.query_params.get("criticality"))
    body = await _preferences_body(request, environment, subscriber_id, criticality, _query_context(request))
    return {"data": body}


@patch("/v2/subscribers/{subscriber_id:str}/preferences")
async def update_preferences(
    request: Request[Any, Any, Any], environment: EnvironmentInfo, subscriber_id: str
) -> dict[str, Any]:
    workflow_reference, update = parse_update(await read_json_object(request, allow_empty=True))
    await apply_updates(request, environment.id, subscriber_id, [(workflow_reference, update)])
    body = await _preferences_body(request, environment, subscriber_id, "nonCritical", update.context)
    return {"data": body}


@patch("/v2/subscribers/{subscriber_id:str}/preferences/bulk")
async def bulk_update_preferences(
    request: Request[Any, Any, Any], environment: EnvironmentInfo, subscriber_id: str
) -> dict[str, Any]:
    updates = parse_bulk(await read_json_object(request))
    workflows = await apply_updates(request, environment.id, subscriber_id, list(updates))
    listing, _ = await read_listing(request, environment.id, subscriber_id, updates[0][1].context)
    ordered = list({workflows[reference].id: workflows[reference] for reference, _ in updates}.values())
    return {"data": [listing.bulk_entry(workflow) for workflow in ordered]}


@get("/v1/subscribers/{subscriber_id:str}/preferences")
async def legacy_list_preferences(
    request: Request[Any, Any, Any], environment: EnvironmentInfo, subscriber_id: str
) -> dict[str, Any]:
    criticality = parse_criticality(request.query_params.get("criticality"))
    listing, workflows = await read_listing(request, environment.id, subscriber_id, "")
    return {"data": [listing.legacy_entry(workflow) for workflow in by_criticality(workflows, criticality)]}


@patch("/v1/subscribers/{subscriber_id:str}/preferences")
async def legacy_update_global(
    request: Request[Any, Any, Any], environment: EnvironmentInfo, subscriber_id: str
) -> dict[str, Any]:
    update = parse_legacy_global(await read_json_object(request))
    await apply_updates(request, environment.id, subscriber_id, [(None, update)])
    listing, _ = await read_listing(request, environment.id, subscriber_id, "")
    return {"data": {"preference": listing.global_entry()}}


@patch("/v1/subscribers/{subscriber_id:str}/preferences/{workflow_id:str}")
async def legacy_update_workflow(
    request: Request[Any, Any, Any], environment: EnvironmentInfo, subscriber_id: str, workflow_id: str
) -> dict[str, Any]:
    update = parse_legacy_workflow(await read_json_object(request))
    workflows = await apply_updates(request, environment.id, subscriber_id, [(workflow_id, update)])
    listing, _ = await read_listing(request, environment.id, subscriber_id, "")
    return {"data": listing.legacy_entry(workflows[workflow_id])}


preferences_router = Router(
    path="/",
    route_handlers=[
        list_preferences,
        update_preferences,
        bulk_update_preferences,
        legacy_list_preferences,
        legacy_update_global,
        legacy_update_workflow,
    ],
    dependencies={"environment": Provide(environment_from_api_key)},
)
