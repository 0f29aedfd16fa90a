"""Admin pages for the API keys, the server settings and admin users, and the integrations."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
from typing import Annotated, Any
from urllib.parse import urlsplit, urlunsplit

from litestar import Request, Response, Router, get, post
from litestar.di import Provide
from litestar.enums import RequestEncodingType
from litestar.params import Body
from litestar.response import Template
from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from novulite import ids, security
from novulite.api.auth import services_of
from novulite.api.environments import rotate_api_key
from novulite.config import Settings
from novulite.db.models import AdminUser, Environment
from novulite.ui.common import current_admin, flash_redirect, render

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
    message = f"Secret key rotated. The new key is {new_key}; update every client that uses the old one."
    return flash_redirect(request, "/admin/api-keys", message)


# Settings and admin users


def _redis_url_masked(url: str | None) -> str | None:
    """Return the Redis URL with its password replaced by asterisks."""
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
    return [
        ("Listening on", f"{settings.host}:{settings.port}"),
        ("Data directory", str(settings.data_dir)),
        ("API rate limits (capacity:refill per second)", rate_limits),
        ("Inbox session length", f"{settings.inbox_token_ttl_seconds / 3600:g} hours"),
        ("WebSocket ping interval", f"{settings.ws_ping_interval_seconds:g} seconds"),
        ("Redis for the limiter", _redis_url_masked(settings.redis_url) or "none (the limiter uses SQLite)"),
        ("Outbound requests may reach", outbound),
        ("Queue workers", str(settings.queue_workers)),
        ("Maximum request body", f"{settings.max_body_bytes} bytes"),
        ("Log level", settings.log_level),
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
    return flash_redirect(request, "/admin/settings", "Your password was changed.")


@post("/settings/users", dependencies=ADMIN)
async def add_user(request: Request[Any, Any, Any], admin: str, data: FormData) -> Response[Any]:
    """Add an admin user with a username and password."""
    username = data.get("username", "").strip()
    password = data.get("password", "")
    values = {"username": username}
    if not USERNAME_PATTERN.fullmatch(username):
        message = "Username is invalid: use 1 to 100 letters, digits or the characters . _ @ -."
        return await _render_settings(request, admin, FormError("user", "username", message), values)
    if await _stored_hash(request, username) is not None:
        message = f"Username {username} is taken: choose another."
        return await _render_settings(request, admin, FormError("user", "username", message), values)
    problem = _password_problem(password, "Password")
    if problem:
        return await _render_settings(request, admin, FormError("user", "password", problem), values)
    services = services_of(request)
    password_hash = await asyncio.to_thread(security.hash_password, password)
    async with services.writer.begin() as connection:
        await connection.execute(
            insert(AdminUser).values(
                id=ids.new_id(),
                username=username,
                password_hash=password_hash,
                created_at=services.clock.now(),
            )
        )
    logger.info("admin %s added the admin user %s", admin, username)
    return flash_redirect(request, "/admin/settings", f"Admin user {username} was added.")


settings_router = Router(
    path="/admin",
    route_handlers=[api_keys_page, rotate_key, settings_page, change_password, add_user],
    include_in_schema=False,
)
