"""Provider integrations under /v1/integrations, in the shapes novu-py sends and parses."""

from __future__ import annotations

import re
from typing import Any

from litestar import Request, Router, delete, get, post, put
from litestar.di import Provide
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from novulite.api.auth import environment_from_api_key, services_of
from novulite.api.body import read_json_object
from novulite.api.integration_credentials import check_credentials, check_smtp
from novulite.clock import isoformat
from novulite.db.models import Integration
from novulite.directory import EnvironmentInfo
from novulite.errors import (
    INTEGRATION_IDENTIFIER_EXISTS,
    INTEGRATION_NOT_FOUND,
    INVALID_FIELDS,
    PRIMARY_NOT_SUPPORTED,
    ApiError,
    FieldError,
)
from novulite.ids import ORGANIZATION_ID, new_id, new_transaction_id
from novulite.integrations import CHANNELS, SECRET_CREDENTIALS, mask_secret, masked_credentials
from novulite.providers import smtp
from novulite.providers.registry import PROVIDERS
from novulite.services import Services

# As in Novu, only these channels pick a primary integration; the others use the newest active one.
PRIMARY_CHANNELS = ("email", "sms")
MAX_NAME_LENGTH = 255
MAX_PROVIDER_LENGTH = 100


def integration_body(integration: Integration) -> dict[str, Any]:
    return {
        "_id": integration.id,
        "_environmentId": integration.environment_id,
        "_organizationId": ORGANIZATION_ID,
        "name": integration.name,
        "identifier": integration.identifier,
        "providerId": integration.provider_id,
        "channel": integration.channel,
        "kind": "delivery",
        "credentials": masked_credentials(integration.credentials or {}, integration.provider_id),
        "active": bool(integration.active),
        "deleted": False,
        "primary": bool(integration.primary),
        "conditions": [],
        "createdAt": isoformat(integration.created_at),
        "updatedAt": isoformat(integration.updated_at),
    }


def _text(body: dict[str, Any], field: str, limit: int, errors: list[FieldError]) -> str | None:
    """Return an optional non-empty string field; None when it is absent or null."""
    value = body.get(field)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > limit:
        errors.append(FieldError(field, f"must be a non-empty string of at most {limit} characters", value))
        return None
    return value.strip()


def _flag(body: dict[str, Any], field: str, errors: list[FieldError]) -> bool | None:
    value = body.get(field)
    if value is None or isinstance(value, bool):
        return value
    errors.append(FieldError(field, "must be true or false", value))
    return None


def generated_identifier(name: str) -> str:
    """Return Novu's form of a generated identifier: the name as a slug plus a short random suffix."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:200] or "integration"
    return f"{slug}-{new_transaction_id()[:6]}"


def keep_masked_secrets(sent: dict[str, Any], stored: dict[str, Any]) -> dict[str, Any]:
    """Keep stored secrets that a client sent back in the masked form a response showed it."""
    merged = dict(sent)
    for key in SECRET_CREDENTIALS & sent.keys() & stored.keys():
        if sent[key] == mask_secret(stored[key]) and sent[key] != stored[key]:
            merged[key] = stored[key]
    return merged


def check_provider_credentials(
    provider_id: str, channel: str, credentials: dict[str, Any], active: bool, errors: list[FieldError]
) -> None:
    if provider_id in smtp.PROVIDER_IDS:
        if channel != "email":
            errors.append(FieldError("channel", f"must be email for the {provider_id} provider", channel))
        check_smtp(credentials, active, errors)
        return
    provider = PROVIDERS.get(provider_id)
    # Novu stores integrations of any provider; a step skips one this server cannot deliver through.
    if provider is None:
        return
    if channel not in provider.channels:
        allowed = " or ".join(sorted(provider.channels))
        errors.append(FieldError("channel", f"must be {allowed} for the {provider_id} provider", channel))
    if provider.check_credentials is not None:
        provider.check_credentials(credentials, active, errors)


async def _find(session: AsyncSession, environment_id: str, integration_id: str) -> Integration:
    integration = await session.scalar(
        select(Integration).where(
            Integration.environment_id == environment_id, Integration.id == integration_id
        )
    )
    if integration is None:
        raise ApiError(INTEGRATION_NOT_FOUND, integration_id=integration_id)
    return integration


async def _list(
    session: AsyncSession, environment_id: str, *, active_only: bool = False
) -> list[dict[str, Any]]:
    statement = select(Integration).where(Integration.environment_id == environment_id)
    if active_only:
        statement = statement.where(Integration.active.is_(True))
    rows = await session.scalars(statement.order_by(Integration.created_at, Integration.id))
    return [integration_body(row) for row in rows]


async def _identifier_taken(session: AsyncSession, environment_id: str, identifier: str, own_id: str) -> bool:
    other = await session.scalar(
        select(Integration.id).where(
            Integration.environment_id == environment_id,
            Integration.identifier == identifier,
            Integration.id != own_id,
        )
    )
    return other is not None


async def _make_primary(session: AsyncSession, integration: Integration) -> None:
    """Make `integration` its channel's only primary one; the caller's transaction covers both writes."""
    await session.execute(
        update(Integration)
        .where(
            Integration.environment_id == integration.environment_id,
            Integration.channel == integration.channel,
            Integration.id != integration.id,
            Integration.primary.is_(True),
        )
        .values(primary=False)
    )
    integration.primary = True
    integration.active = True


async def _has_primary(session: AsyncSession, environment_id: str, channel: str) -> bool:
    found = await session.scalar(
        select(Integration.id).where(
            Integration.environment_id == environment_id,
            Integration.channel == channel,
            Integration.primary.is_(True),
        )
    )
    return found is not None


def _raise_duplicate(identifier: str) -> None:
    raise ApiError(INTEGRATION_IDENTIFIER_EXISTS, identifier=identifier)


@get("/")
async def list_integrations(request: Request[Any, Any, Any], environment: EnvironmentInfo) -> dict[str, Any]:
    async with AsyncSession(services_of(request).reader) as session:
        return {"data": await _list(session, environment.id)}


@get("/active")
async def list_active_integrations(
    request: Request[Any, Any, Any], environment: EnvironmentInfo
) -> dict[str, Any]:
    async with AsyncSession(services_of(request).reader) as session:
        return {"data": await _list(session, environment.id, active_only=True)}


@post("/", status_code=201)
async def create_integration(request: Request[Any, Any, Any], environment: EnvironmentInfo) -> dict[str, Any]:
    """Create an integration, inactive unless `active` is true.

    NOTE: Novu stores `active` as sent and leaves a missing one to its schema default, which
    is taken here to be false.
    """
    services = services_of(request)
    body = await read_json_object(request)
    errors: list[FieldError] = []
    provider_id = _text(body, "providerId", MAX_PROVIDER_LENGTH, errors)
    if body.get("providerId") is None:
        errors.append(FieldError("providerId", "is required: the provider's id, such as smtp or twilio"))
    channel = body.get("channel", "")
    if "channel" not in body:
        errors.append(FieldError("channel", f"is required: one of {', '.join(CHANNELS)}"))
    elif channel not in CHANNELS:
        errors.append(FieldError("channel", f"must be one of {', '.join(CHANNELS)}", channel))
    name = _text(body, "name", MAX_NAME_LENGTH, errors)
    identifier = _text(body, "identifier", MAX_NAME_LENGTH, errors)
    active = bool(_flag(body, "active", errors))
    _flag(body, "check", errors)
    sent = body.get("credentials")
    credentials = check_credentials({} if sent is None else sent, errors)
    if not errors and provider_id is not None and credentials is not None:
        check_provider_credentials(provider_id, channel, credentials, active, errors)
    if errors or provider_id is None or credentials is None:
        raise ApiError(INVALID_FIELDS, errors=errors)

    # Novu names an integration after its provider when no name is sent.
    name = name or provider_id[:1].upper() + provider_id[1:]
    identifier = identifier or generated_identifier(name)
    now = services.clock.now()
    integration = Integration(
        id=new_id(),
        environment_id=environment.id,
        provider_id=provider_id,
        channel=channel,
        name=name,
        identifier=identifier,
        credentials=credentials,
        active=active,
        primary=False,
        created_at=now,
        updated_at=now,
    )
    try:
        async with AsyncSession(services.writer, expire_on_commit=False) as session, session.begin():
            if await _identifier_taken(session, environment.id, identifier, integration.id):
                _raise_duplicate(identifier)
            # Novu makes an active integration primary when its channel has no primary one yet.
            if (
                active
                and channel in PRIMARY_CHANNELS
                and not await _has_primary(session, environment.id, channel)
            ):
                integration.primary = True
            session.add(integration)
    except IntegrityError:
        _raise_duplicate(identifier)
    return {"data": integration_body(integration)}


async def change_integration(
    services: Services, environment_id: str, integration_id: str, body: dict[str, Any]
) -> Integration:
    """Change an integration from a body in the shape of PUT /v1/integrations/{id} and return it.

    Sent credentials replace the stored ones, as in Novu, except secrets sent back masked.
    Raises ApiError: INVALID_FIELDS with an entry per problem, INTEGRATION_NOT_FOUND,
    INTEGRATION_IDENTIFIER_EXISTS or PRIMARY_NOT_SUPPORTED.
    """
    errors: list[FieldError] = []
    name = _text(body, "name", MAX_NAME_LENGTH, errors)
    identifier = _text(body, "identifier", MAX_NAME_LENGTH, errors)
    active = _flag(body, "active", errors)
    primary = _flag(body, "primary", errors)
    _flag(body, "check", errors)
    sent = None
    if body.get("credentials") is not None:
        sent = check_credentials(body["credentials"], errors)
    if errors:
        raise ApiError(INVALID_FIELDS, errors=errors)

    try:
        async with AsyncSession(services.writer, expire_on_commit=False) as session, session.begin():
            integration = await _find(session, environment_id, integration_id)
            if sent is not None:
                integration.credentials = keep_masked_secrets(sent, integration.credentials or {})
            if active is not None:
                integration.active = active
                if not active:
                    integration.primary = False
            check_provider_credentials(
                integration.provider_id,
                integration.channel,
                integration.credentials,
                integration.active,
                errors,
            )
            if errors:
                raise ApiError(INVALID_FIELDS, errors=errors)
            if identifier is not None and identifier != integration.identifier:
                if await _identifier_taken(session, environment_id, identifier, integration.id):
                    _raise_duplicate(identifier)
                integration.identifier = identifier
            if name is not None:
                integration.name = name
            if primary is True:
                if integration.channel not in PRIMARY_CHANNELS:
                    raise ApiError(PRIMARY_NOT_SUPPORTED, channel=integration.channel)
                await _make_primary(session, integration)
            elif primary is False:
                integration.primary = False
            integration.updated_at = services.clock.now()
    except IntegrityError:
        _raise_duplicate(identifier or "")
    return integration


@put("/{integration_id:str}")
async def update_integration(
    request: Request[Any, Any, Any], environment: EnvironmentInfo, integration_id: str
) -> dict[str, Any]:
    """Change an integration; sent credentials replace the stored ones, as in Novu."""
    body = await read_json_object(request)
    integration = await change_integration(services_of(request), environment.id, integration_id, body)
    return {"data": integration_body(integration)}


@delete("/{integration_id:str}", status_code=200)
async def delete_integration(
    request: Request[Any, Any, Any], environment: EnvironmentInfo, integration_id: str
) -> dict[str, Any]:
    """Delete an integration and return the environment's remaining ones, as Novu does."""
    async with AsyncSession(services_of(request).writer) as session, session.begin():
        integration = await _find(session, environment.id, integration_id)
        await session.delete(integration)
        await session.flush()
        return {"data": await _list(session, environment.id)}


@post("/{integration_id:str}/set-primary", status_code=200)
async def set_primary_integration(
    request: Request[Any, Any, Any], environment: EnvironmentInfo, integration_id: str
) -> dict[str, Any]:
    """Make an integration its channel's primary one, and active; the previous primary loses the flag."""
    services = services_of(request)
    async with AsyncSession(services.writer, expire_on_commit=False) as session, session.begin():
        integration = await _find(session, environment.id, integration_id)
        if integration.channel not in PRIMARY_CHANNELS:
            raise ApiError(PRIMARY_NOT_SUPPORTED, channel=integration.channel)
        if not integration.primary or not integration.active:
            await _make_primary(session, integration)
            integration.updated_at = services.clock.now()
    return {"data": integration_body(integration)}


integrations_router = Router(
    path="/v1/integrations",
    route_handlers=[
        list_integrations,
        list_active_integrations,
        create_integration,
        update_integration,
        delete_integration,
        set_primary_integration,
    ],
    dependencies={"environment": Provide(environment_from_api_key)},
)
