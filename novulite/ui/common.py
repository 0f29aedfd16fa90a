"""Shared parts of the admin pages: the signed-in admin, flash messages, paging and rendering."""

from __future__ import annotations

import hashlib
from typing import Any
from urllib.parse import quote, urlencode

from litestar import Request, Response
from litestar.datastructures import Cookie
from litestar.response import Redirect, Template
from sqlalchemy import select

from novulite.api.auth import services_of
from novulite.db.models import AdminUser

SESSION_COOKIE = "novulite_admin"
SESSION_SECONDS = 12 * 3600
FLASH_COOKIE = "novulite_flash"
# A flash message lives until the next page shows it, and at most this long.
FLASH_SECONDS = 120
PAGE_SIZE = 50
FLASH_LEVELS = ("success", "error", "info")


class AdminLoginRequired(Exception):
    """Raised by pages that need a signed-in admin; the app responds with a redirect to sign in."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


def login_redirect(request: Request[Any, Any, Any], exc: AdminLoginRequired) -> Response[Any]:
    return Redirect(path=f"/admin/login?next={quote(exc.next_path)}", status_code=303)


def password_fingerprint(password_hash: str) -> str:
    """Return a short digest of a stored password hash, which a session carries and checks."""
    return hashlib.sha256(password_hash.encode()).hexdigest()[:16]


def session_cookie(request: Request[Any, Any, Any], username: str, password_hash: str) -> Cookie:
    """Return the sign-in cookie; it stops working when the admin's password changes."""
    claims = {"user": username, "pwd": password_fingerprint(password_hash)}
    token = services_of(request).admin_sessions.sign(claims, SESSION_SECONDS)
    return Cookie(
        key=SESSION_COOKIE,
        value=token,
        path="/",
        httponly=True,
        samesite="lax",
        max_age=SESSION_SECONDS,
    )


async def current_admin(request: Request[Any, Any, Any]) -> str:
    """Return the signed-in admin's username, or raise AdminLoginRequired."""
    services = services_of(request)
    token = request.cookies.get(SESSION_COOKIE)
    claims = services.admin_sessions.verify(token) if token else None
    stored = None
    if claims is not None:
        async with services.reader.connect() as connection:
            stored = await connection.scalar(
                select(AdminUser.password_hash).where(AdminUser.username == str(claims.get("user")))
            )
    if claims is None or stored is None or claims.get("pwd") != password_fingerprint(stored):
        # The raw path keeps a trailing slash, which Litestar's routing drops from request.url.
        raw_path = request.scope.get("raw_path", b"").decode("latin-1") or request.url.path
        raise AdminLoginRequired(raw_path)
    return str(claims["user"])


def page_number(page: int | None) -> int:
    return max(page or 1, 1)


def flash_redirect(
    request: Request[Any, Any, Any], path: str, message: str, level: str = "success"
) -> Response[Any]:
    """Redirect to `path` after a form post, and show `message` once on the page it lands on.

    The message travels in a signed cookie, so a link cannot make the admin UI show text
    the server did not write.
    """
    if level not in FLASH_LEVELS:
        raise ValueError(f"unknown flash level {level!r}; use one of {', '.join(FLASH_LEVELS)}")
    token = services_of(request).admin_sessions.sign({"flash": message, "level": level}, FLASH_SECONDS)
    cookie = Cookie(
        key=FLASH_COOKIE, value=token, path="/admin", httponly=True, samesite="strict", max_age=FLASH_SECONDS
    )
    return Redirect(path=path, status_code=303, cookies=[cookie])


def _pager_prefix(request: Request[Any, Any, Any]) -> str:
    """Return the current query string without `page`, ready for `page=N` to follow."""
    others = [(key, value) for key, value in request.query_params.multi_items() if key != "page"]
    return "?" + (urlencode(others) + "&" if others else "")


def render(
    request: Request[Any, Any, Any],
    template: str,
    admin: str,
    context: dict[str, Any] | None = None,
    *,
    status_code: int = 200,
) -> Template:
    """Render an admin page with the signed-in admin, the pending flash message and the pager's query."""
    flash = None
    token = request.cookies.get(FLASH_COOKIE)
    if token:
        claims = services_of(request).admin_sessions.verify(token)
        if claims is not None and isinstance(claims.get("flash"), str):
            flash = {"message": claims["flash"], "level": claims.get("level", "info")}
    response = Template(
        template,
        context={"admin": admin, "flash": flash, "pager_prefix": _pager_prefix(request), **(context or {})},
        status_code=status_code,
    )
    if token:
        response.delete_cookie(FLASH_COOKIE, path="/admin")
    return response
