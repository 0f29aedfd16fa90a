"""Novu's Inbox preference routes under /v1/inbox, as @novu/js calls them with a session token.

They read and write the same preference rows as the server API (novulite.api.preferences),
for the subscriber and context the token was issued for, so a change here affects the next
trigger exactly as a change through /v2/subscribers/{id}/preferences does.
"""

from __future__ import annotations

from typing import Any

from litestar import Request, Router, get, patch
from litestar.di import Provide

from novulite.api.auth import InboxSubject, inbox_subject
from novulite.api.body import read_json_object
from novulite.api.preference_input import (
    PreferenceUpdate,
    parse_criticality,
    parse_inbox_bulk,
    parse_inbox_global,
    parse_inbox_workflow,
)
from novulite.api.preferences import Listing, apply_updates, by_criticality, read_listing
from novulite.db.models import Workflow
from novulite.errors import INVALID_FIELDS, INVALID_QUERY, ApiError, FieldError
from novulite.messages import SEVERITIES


def _global_pref(listing: Listing) -> dict[str, Any]:
    return {"level": "global", **listing.global_entry()}


def _workflow_pref(listing: Listing, workflow: Workflow) -> dict[str, Any]:
    entry = listing.workflow_entry(workflow)
    return {
        "level": "template",
        "enabled": entry["enabled"],
        "channels": entry["channels"],
        "overrides": entry["overrides"],
        "workflow": {
            "id": workflow.id,
            "identifier": workflow.workflow_id,
            "name": workflow.name,
            "critical": workflow.critical,
            "severity": workflow.severity,
            "tags": workflow.tags or [],
        },
    }


def _tag_groups(request: Request[Any, Any, Any]) -> list[set[str]]:
    """Read @novu/js tag filters: `tags[]=a&tags[]=b` (any of) or `tags[0][]=a&tags[1][]=b` (all groups)."""
    params = request.query_params
    groups: dict[str, set[str]] = {}
    flat = params.getall("tags", []) + params.getall("tags[]", [])
    if flat:
        groups[""] = set(flat)
    for key in params:
        if key.startswith("tags[") and key.endswith("][]"):
            groups.setdefault(key, set()).update(params.getall(key))
    return list(groups.values())


def _severities(request: Request[Any, Any, Any]) -> set[str]:
    params = request.query_params
    values = params.getall("severity", []) + params.getall("severity[]", [])
    errors = [
        FieldError("severity", f"must be one of {', '.join(SEVERITIES)}", value)
        for value in values
        if value not in SEVERITIES
    ]
    if errors:
        raise ApiError(INVALID_QUERY, errors=errors)
    return set(values)


def _matches(workflow: Workflow, tag_groups: list[set[str]], severities: set[str]) -> bool:
    tags = set(workflow.tags or [])
    if any(not tags & group for group in tag_groups):
        return False
    return not severities or workflow.severity in severities


@get("/preferences")
async def list_inbox_preferences(request: Request[Any, Any, Any], subject: InboxSubject) -> dict[str, Any]:
    criticality = parse_criticality(request.query_params.get("criticality"))
    severities = _severities(request)
    tag_groups = _tag_groups(request)
    listing, workflows = await read_listing(
        request, subject.environment_id, subject.subscriber_id, subject.context
    )
    matching = [
        workflow
        for workflow in by_criticality(workflows, criticality)
        if _matches(workflow, tag_groups, severities)
    ]
    return {"data": [_global_pref(listing), *(_workflow_pref(listing, workflow) for workflow in matching)]}


@get("/preferences/global")
async def get_inbox_global(request: Request[Any, Any, Any], subject: InboxSubject) -> dict[str, Any]:
    listing, _ = await read_listing(request, subject.environment_id, subject.subscriber_id, subject.context)
    return {"data": _global_pref(listing)}


@patch("/preferences")
async def update_inbox_global(request: Request[Any, Any, Any], subject: InboxSubject) -> dict[str, Any]:
    update = parse_inbox_global(await read_json_object(request, allow_empty=True), subject.context)
    await apply_updates(request, subject.environment_id, subject.subscriber_id, [(None, update)])
    listing, _ = await read_listing(request, subject.environment_id, subject.subscriber_id, subject.context)
    return {"data": _global_pref(listing)}


async def _apply_to_workflows(
    request: Request[Any, Any, Any], subject: InboxSubject, updates: list[tuple[str, PreferenceUpdate]]
) -> tuple[Listing, list[Workflow]]:
    """Store workflow preferences unless one names a critical workflow, then list them in request order."""
    _, active = await read_listing(request, subject.environment_id, subject.subscriber_id, subject.context)
    by_reference = {key: workflow for workflow in active for key in (workflow.id, workflow.workflow_id)}
    critical = [
        FieldError(
            "workflowId",
            "is a critical workflow, whose preferences subscribers cannot change; remove it from the request",
            reference,
        )
        for reference, _ in updates
        if reference in by_reference and by_reference[reference].critical
    ]
    if critical:
        raise ApiError(INVALID_FIELDS, errors=critical)
    stored = await apply_updates(request, subject.environment_id, subject.subscriber_id, list(updates))
    listing, _ = await read_listing(request, subject.environment_id, subject.subscriber_id, subject.context)
    ordered = {stored[reference].id: stored[reference] for reference, _ in updates}
    return listing, list(ordered.values())


@patch("/preferences/bulk")
async def bulk_update_inbox(request: Request[Any, Any, Any], subject: InboxSubject) -> dict[str, Any]:
    updates = parse_inbox_bulk(await read_json_object(request), subject.context)
    listing, workflows = await _apply_to_workflows(request, subject, updates)
    return {"data": [_workflow_pref(listing, workflow) for workflow in workflows]}


@patch("/preferences/{workflow_reference:str}")
async def update_inbox_workflow(
    request: Request[Any, Any, Any], subject: InboxSubject, workflow_reference: str
) -> dict[str, Any]:
    update = parse_inbox_workflow(await read_json_object(request, allow_empty=True), subject.context)
    listing, workflows = await _apply_to_workflows(request, subject, [(workflow_reference, update)])
    return {"data": _workflow_pref(listing, workflows[0])}


inbox_preferences_router = Router(
    path="/v1/inbox",
    route_handlers=[
        list_inbox_preferences,
        get_inbox_global,
        update_inbox_global,
        bulk_update_inbox,
        update_inbox_workflow,
    ],
    dependencies={"subject": Provide(inbox_subject)},
)
