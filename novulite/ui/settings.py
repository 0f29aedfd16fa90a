"""Admin pages for the API keys, the server settings and admin users, and the integrations."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
from collections.abc import Sequence
from typing import Annotated, Any
from urllib.parse import urlsplit, urlunsplit

from litestar import Request, Response, Router, get, post
from litestar.di import Provide
from litestar.enums import RequestEncodingType
from litestar.params import Body
from litestar.response import Template
from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from novulite import ids, security
from novulite.api.auth import services_of
from novulite.api.environments import rotate_api_key
from novulite.api.integration_credentials import BOOLEAN_CREDENTIALS, EMAIL_PATTERN, OBJECT_CREDENTIALS
from novulite.api.integrations import change_integration
from novulite.config import Settings
from novulite.db.models import AdminUser, Environment, Integration
from novulite.engine.steps.base import StepError
from novulite.errors import ApiError, FieldError
from novulite.integrations import PUBLIC_CREDENTIALS, SECRET_CREDENTIALS, mask_secret
from novulite.providers.sms import phone_number
from novulite.ui.common import (
    PAGE_SIZE,
    current_admin,
    flash_redirect,
    page_number,
    render,
    session_cookie,
)
from novulite.ui.sample_send import SampleOutcome, recipient_kind, send_sample

logger = logging.getLogger("novulite.ui")

ADMIN = {"admin": Provide(current_admin)}
FormData = Annotated[dict[str, str], Body(media_type=RequestEncodingType.URL_ENCODED)]

# Characters of the secret key shown before the mask.
KEY_PREFIX_SHOWN = 8
MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 200
USERNAME_PATTERN = re.compile(r"[A-Za-z0-9._@-]{1,100}")


# API keys


async def _environments(request: Request[Any, Any, Any]) -> list[Environment]:
    async with AsyncSession(services_of(request).reader) as session:
        return list((await session.scalars(select(Environment).order_by(Environment.created_at))).all())


def _masked_key(key: str) -> str:
    return key[:KEY_PREFIX_SHOWN] + "•" * 12


@get("/api-keys", dependencies=ADMIN)
async def api_keys_page(request: Request[Any, Any, Any], admin: str) -> Template:
    return await _render_api_keys(request, admin)


async def _render_api_keys(
    request: Request[Any, Any, Any], admin: str, error: str | None = None, status_code: int = 200
) -> Template:
    environments = [
        (environment, _masked_key(environment.api_key)) for environment in await _environments(request)
    ]
    context = {"environments": environments, "error": error}
    return render(request, "admin/settings/api_keys.html", admin, context, status_code=status_code)


@post("/api-keys/rotate", dependencies=ADMIN)
async def rotate_key(request: Request[Any, Any, Any], admin: str, data: FormData) -> Response[Any]:
    """Rotate an environment's secret key as POST /v1/environments/api-keys/regenerate does."""
    environment_id = data.get("environment_id", "")
    found = [environment for environment in await _environments(request) if environment.id == environment_id]
    if not found:
        return await _render_api_keys(
            request, admin, "Environment not found: reload the page and try again.", 400
        )
    if data.get("confirm") != "yes":
        message = "Confirm: tick “I understand the current key stops working” to rotate the secret key."
        return await _render_api_keys(request, admin, message, 400)
    environment = found[0]
    new_key = await rotate_api_key(services_of(request), environment.id, environment.identifier)
    logger.info("admin %s rotated the secret key of environment %s", admin, environment.identifier)
    message = f"Secret key rotated. The new key is {new_key}. Update every client that uses the old one."
    return flash_redirect(request, "/admin/api-keys", message)


# Settings and admin users


def _url_masked(url: str | None) -> str | None:
    """Return the Redis or PostgreSQL URL with its password replaced by asterisks."""
    if not url:
        return None
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{user}:****@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _settings_rows(settings: Settings) -> list[tuple[str, str]]:
    rate_limits = "off" if settings.rate_limits is None else settings.rate_limits.describe()
    outbound = (
        "public addresses only, plus " + ", ".join(settings.outbound_allow)
        if settings.outbound_allow
        else "public addresses only"
    )
    retention = "forever" if settings.retention_days == 0 else f"{settings.retention_days} days"
    return [
        ("Listening on", f"{settings.host}:{settings.port}"),
        ("Data directory", str(settings.data_dir)),
        ("Job store", _url_masked(settings.database_url) or f"SQLite file {settings.database_path}"),
        ("API rate limits (capacity:refill per second)", rate_limits),
        ("Inbox session length", f"{settings.inbox_token_ttl_seconds / 3600:g} hours"),
        ("WebSocket ping interval", f"{settings.ws_ping_interval_seconds:g} seconds"),
        (
            "Redis for queues, realtime fan-out and the limiter",
            _url_masked(settings.redis_url) or "none (all three stay in this process and SQLite)",
        ),
        ("Redis key prefix", settings.redis_prefix if settings.redis_url else "not used"),
        ("Outbound requests may reach", outbound),
        ("Queue workers", str(settings.queue_workers)),
        ("Maximum request body", f"{settings.max_body_bytes} bytes"),
        ("Log level", settings.log_level),
        ("Log format", settings.log_format),
        ("Delivered messages and execution details kept for", retention),
        ("Prometheus metrics at /metrics", "on" if settings.metrics else "off"),
    ]


@dataclasses.dataclass(frozen=True)
class FormError:
    form: str  # "password" or "user"
    field: str
    message: str


async def _render_settings(
    request: Request[Any, Any, Any],
    admin: str,
    error: FormError | None = None,
    values: dict[str, str] | None = None,
) -> Template:
    services = services_of(request)
    async with AsyncSession(services.reader) as session:
        users = (await session.execute(select(AdminUser).order_by(AdminUser.username))).scalars().all()
    context = {
        "settings_rows": _settings_rows(services.settings),
        "users": users,
        "error": error,
        "values": values or {},
        "min_password_length": MIN_PASSWORD_LENGTH,
    }
    return render(request, "admin/settings/settings.html", admin, context, status_code=400 if error else 200)


@get("/settings", dependencies=ADMIN)
async def settings_page(request: Request[Any, Any, Any], admin: str) -> Template:
    return await _render_settings(request, admin)


def _password_problem(password: str, field: str) -> str | None:
    if len(password) < MIN_PASSWORD_LENGTH:
        return f"{field} is too short: use at least {MIN_PASSWORD_LENGTH} characters."
    if len(password) > MAX_PASSWORD_LENGTH:
        return f"{field} is too long: use at most {MAX_PASSWORD_LENGTH} characters."
    return None


async def _stored_hash(request: Request[Any, Any, Any], username: str) -> str | None:
    async with AsyncSession(services_of(request).reader) as session:
        return await session.scalar(select(AdminUser.password_hash).where(AdminUser.username == username))


@post("/settings/password", dependencies=ADMIN)
async def change_password(request: Request[Any, Any, Any], admin: str, data: FormData) -> Response[Any]:
    """Change the signed-in admin's password after checking the current one."""
    current = data.get("current_password", "")
    new = data.get("new_password", "")
    repeated = data.get("new_password_again", "")
    stored = await _stored_hash(request, admin)
    if stored is None or not await asyncio.to_thread(security.verify_password, current, stored):
        logger.info("admin %s entered a wrong current password when changing it", admin)
        error = FormError("password", "current_password", "Current password is wrong.")
        return await _render_settings(request, admin, error)
    problem = _password_problem(new, "New password")
    if problem:
        return await _render_settings(request, admin, FormError("password", "new_password", problem))
    if new != repeated:
        error = FormError(
            "password", "new_password_again", "New password (again) does not match the new password."
        )
        return await _render_settings(request, admin, error)
    password_hash = await asyncio.to_thread(security.hash_password, new)
    async with services_of(request).writer.begin() as connection:
        await connection.execute(
            update(AdminUser).where(AdminUser.username == admin).values(password_hash=password_hash)
        )
    logger.info("admin %s changed their password", admin)
    # Sessions carry a digest of the password hash, so every other session of this admin ends
    # here, and this browser gets a new one.
    response = flash_redirect(request, "/admin/settings", "Your password was changed.")
    response.set_cookie(session_cookie(request, admin, password_hash))
    return response


@post("/settings/users", dependencies=ADMIN)
async def add_user(request: Request[Any, Any, Any], admin: str, data: FormData) -> Response[Any]:
    """Add an admin user with a username and password."""
    username = data.get("username", "").strip()
    password = data.get("password", "")
    values = {"username": username}
    taken = FormError("user", "username", f"Username {username} is taken: choose another.")

    if not USERNAME_PATTERN.fullmatch(username):
        message = "Username is invalid: use 1 to 100 letters, digits or the characters . _ @ -."
        return await _render_settings(request, admin, FormError("user", "username", message), values)
    if await _stored_hash(request, username) is not None:
        return await _render_settings(request, admin, taken, values)
    problem = _password_problem(password, "Password")
    if problem:
        return await _render_settings(request, admin, FormError("user", "password", problem), values)

    services = services_of(request)
    password_hash = await asyncio.to_thread(security.hash_password, password)
    try:
        async with services.writer.begin() as connection:
            await connection.execute(
                insert(AdminUser).values(
                    id=ids.new_id(),
                    username=username,
                    password_hash=password_hash,
                    created_at=services.clock.now(),
                )
            )
    except IntegrityError:
        # Another request added the same username after the check above.
        logger.info("admin %s could not add %s: another request added it first", admin, username)
        return await _render_settings(request, admin, taken, values)
    logger.info("admin %s added the admin user %s", admin, username)
    return flash_redirect(request, "/admin/settings", f"Admin user {username} was added.")


# Integrations

# Fields the edit form always offers for a provider, beside those already stored.
SMTP_CREDENTIALS = (
    "host",
    "port",
    "secure",
    "requireTls",
    "ignoreTls",
    "user",
    "password",
    "from",
    "senderName",
    "replyTo",
)
EXPECTED_CREDENTIALS: dict[str, tuple[str, ...]] = {
    "smtp": SMTP_CREDENTIALS,
    "nodemailer": SMTP_CREDENTIALS,
    "twilio": ("accountSid", "token", "from"),
    "push-webhook": ("webhookUrl", "secretKey"),
}
CHAT_CREDENTIALS = ("webhookUrl", "secretKey")
CREDENTIAL_KEY_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")


@dataclasses.dataclass(frozen=True)
class CredentialField:
    key: str
    # "secret", "boolean", "object" or "text".
    kind: str
    # The stored value as the form shows it: masked for a secret, "true"/"false"/"" for a boolean.
    shown: str
    stored: bool


def _is_secret(key: str, provider_id: str) -> bool:
    return key in SECRET_CREDENTIALS and key not in PUBLIC_CREDENTIALS.get(provider_id, frozenset())


def _credential_fields(integration: Integration) -> list[CredentialField]:
    stored = integration.credentials or {}
    expected = EXPECTED_CREDENTIALS.get(integration.provider_id)
    if expected is None and integration.channel == "chat":
        expected = CHAT_CREDENTIALS
    keys = list(expected or ()) + [key for key in stored if key not in (expected or ())]
    fields = []
    for key in keys:
        value = stored.get(key)
        if _is_secret(key, integration.provider_id):
            fields.append(CredentialField(key, "secret", str(mask_secret(value) or ""), key in stored))
        elif key in BOOLEAN_CREDENTIALS:
            shown = ""
            if value is not None:
                shown = "true" if value else "false"
            fields.append(CredentialField(key, "boolean", shown, key in stored))
        elif key in OBJECT_CREDENTIALS or isinstance(value, dict | list):
            fields.append(CredentialField(key, "object", "", key in stored))
        else:
            fields.append(CredentialField(key, "text", "" if value is None else str(value), key in stored))
    return fields


def _credentials_from_form(
    integration: Integration, data: dict[str, str], errors: list[FieldError]
) -> dict[str, Any]:
    """Return the credentials the edit form sets: a blank secret keeps its stored value."""
    credentials = dict(integration.credentials or {})
    for field in _credential_fields(integration):
        if field.kind == "object":
            continue
        sent = data.get(f"cred.{field.key}", "")
        if field.kind == "secret":
            if sent:
                credentials[field.key] = sent
        elif field.kind == "boolean":
            if sent in ("true", "false"):
                credentials[field.key] = sent == "true"
            else:
                credentials.pop(field.key, None)
        elif sent.strip():
            credentials[field.key] = sent.strip()
        else:
            credentials.pop(field.key, None)
    new_key = data.get("new_key", "").strip()
    new_value = data.get("new_value", "")
    if new_key:
        if not CREDENTIAL_KEY_PATTERN.fullmatch(new_key):
            errors.append(
                FieldError("new_key", "must start with a letter and contain only letters, digits and _")
            )
        elif new_key in BOOLEAN_CREDENTIALS:
            credentials[new_key] = new_value.strip().lower() == "true"
        elif new_value.strip():
            credentials[new_key] = new_value.strip()
        else:
            errors.append(FieldError("new_value", f"is empty: enter a value for credentials.{new_key}"))
    return credentials


async def _integration(request: Request[Any, Any, Any], integration_id: str) -> Integration | None:
    async with AsyncSession(services_of(request).reader) as session:
        return await session.scalar(select(Integration).where(Integration.id == integration_id))


@get("/integrations", dependencies=ADMIN)
async def integrations_page(request: Request[Any, Any, Any], admin: str, page: int | None = None) -> Template:
    number = page_number(page)
    async with AsyncSession(services_of(request).reader) as session:
        total = await session.scalar(select(func.count()).select_from(Integration)) or 0
        rows = (
            await session.scalars(
                select(Integration)
                .order_by(Integration.channel, Integration.created_at, Integration.id)
                .limit(PAGE_SIZE)
                .offset((number - 1) * PAGE_SIZE)
            )
        ).all()
    context = {"integrations": rows, "page": number, "has_next": number * PAGE_SIZE < total, "total": total}
    return render(request, "admin/settings/integrations.html", admin, context)


async def _render_integration(
    request: Request[Any, Any, Any],
    admin: str,
    integration: Integration,
    *,
    errors: Sequence[FieldError] = (),
    message: str | None = None,
    values: dict[str, str] | None = None,
    outcome: SampleOutcome | None = None,
    status_code: int = 200,
) -> Template:
    context = {
        "integration": integration,
        "fields": _credential_fields(integration),
        "errors": {error.field: error.message for error in errors},
        "error_message": message,
        "values": values or {},
        "recipient_kind": recipient_kind(integration.provider_id, integration.channel),
        "outcome": outcome,
    }
    return render(request, "admin/settings/integration.html", admin, context, status_code=status_code)


def _integration_not_found(request: Request[Any, Any, Any], admin: str, integration_id: str) -> Template:
    context = {"integration_id": integration_id}
    return render(request, "admin/settings/integration_missing.html", admin, context, status_code=404)


@get("/integrations/{integration_id:str}", dependencies=ADMIN)
async def integration_page(request: Request[Any, Any, Any], admin: str, integration_id: str) -> Template:
    integration = await _integration(request, integration_id)
    if integration is None:
        return _integration_not_found(request, admin, integration_id)
    return await _render_integration(request, admin, integration)


@post("/integrations/{integration_id:str}", dependencies=ADMIN)
async def integration_save(
    request: Request[Any, Any, Any], admin: str, integration_id: str, data: FormData
) -> Response[Any]:
    """Save the name, the active flag and the credentials through the integrations API's code."""
    integration = await _integration(request, integration_id)
    if integration is None:
        return _integration_not_found(request, admin, integration_id)

    errors: list[FieldError] = []
    credentials = _credentials_from_form(integration, data, errors)
    # The form shows back what was typed, except the CSRF token and secrets.
    values = {
        key: value
        for key, value in data.items()
        if key != "_csrf_token"
        and not (key.startswith("cred.") and _is_secret(key[5:], integration.provider_id))
    }
    if errors:
        logger.info("admin %s sent invalid fields for the integration %s", admin, integration.identifier)
        message = "The integration was not saved: correct the fields marked below."
        return await _render_integration(
            request, admin, integration, errors=errors, message=message, values=values, status_code=400
        )

    body = {"name": data.get("name", ""), "active": data.get("active") == "yes", "credentials": credentials}
    try:
        await change_integration(services_of(request), integration.environment_id, integration.id, body)
    except ApiError as exc:
        logger.info(
            "admin %s could not save the integration %s: %s", admin, integration.identifier, exc.message
        )
        message = f"The integration was not saved: {exc.message}."
        return await _render_integration(
            request,
            admin,
            integration,
            errors=exc.errors,
            message=message,
            values=values,
            status_code=exc.status,
        )

    logger.info("admin %s changed the integration %s", admin, integration.identifier)
    return flash_redirect(
        request, f"/admin/integrations/{integration.id}", f"Integration {body['name']} was saved."
    )


def _recipient_problem(kind: str | None, recipient: str) -> str | None:
    if kind is None:
        return "This server cannot send a test message through this provider."
    if kind == "email" and not EMAIL_PATTERN.match(recipient):
        return "Recipient must be an email address such as you@example.com."
    if kind == "phone":
        try:
            phone_number(recipient)
        except StepError:
            return "Recipient must be a phone number in E.164 form, such as +15551234567."
    if kind == "webhook" and recipient and urlsplit(recipient).scheme not in ("http", "https"):
        return "Recipient must be an http or https webhook URL, or empty to use the integration's URL."
    return None


@post("/integrations/{integration_id:str}/test", dependencies=ADMIN)
async def integration_test(
    request: Request[Any, Any, Any], admin: str, integration_id: str, data: FormData
) -> Response[Any]:
    """Send one test message through the integration and show what the provider returned."""
    integration = await _integration(request, integration_id)
    if integration is None:
        return _integration_not_found(request, admin, integration_id)
    recipient = data.get("recipient", "").strip()
    kind = recipient_kind(integration.provider_id, integration.channel)
    problem = _recipient_problem(kind, recipient)
    if problem:
        return await _render_integration(
            request,
            admin,
            integration,
            errors=[FieldError("recipient", problem)],
            values={"recipient": recipient},
            status_code=400,
        )
    outcome = await asyncio.to_thread(send_sample, services_of(request).worker, integration, recipient, admin)
    logger.info(
        "admin %s sent a test message through the integration %s: sent=%s",
        admin,
        integration.identifier,
        outcome.sent,
    )
    return await _render_integration(
        request, admin, integration, values={"recipient": recipient}, outcome=outcome
    )


settings_router = Router(
    path="/admin",
    route_handlers=[
        api_keys_page,
        rotate_key,
        settings_page,
        change_password,
        add_user,
        integrations_page,
        integration_page,
        integration_save,
        integration_test,
    ],
    include_in_schema=False,
)
