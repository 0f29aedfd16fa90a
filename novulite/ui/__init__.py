"""The admin web UI: server-rendered pages under /admin behind a sign-in."""

from __future__ import annotations

from litestar import Router

from novulite.ui.activity import activity_router
from novulite.ui.pages import admin_router
from novulite.ui.settings import settings_router
from novulite.ui.subscribers import subscribers_router
from novulite.ui.topics import topics_router
from novulite.ui.workflows import workflows_router

# Each admin area's router; the app registers all of them.
ADMIN_ROUTERS: list[Router] = [
    admin_router,
    workflows_router,
    activity_router,
    subscribers_router,
    topics_router,
    settings_router,
]
