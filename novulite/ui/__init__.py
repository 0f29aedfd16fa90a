"""The admin web UI: server-rendered pages under /admin behind a sign-in."""

from __future__ import annotations

from litestar import Router

from novulite.ui.pages import admin_router
from novulite.ui.settings import settings_router

# Each admin area's router; the app registers all of them.
ADMIN_ROUTERS: list[Router] = [admin_router]
ADMIN_ROUTERS.append(settings_router)
