"""GET /v1/health-check: whether the database and the queue consumers work."""

from __future__ import annotations

import asyncio
from typing import Any

from litestar import Request, Response, get
from sqlalchemy import text

from novulite import __version__
from novulite.api.auth import services_of


@get("/v1/health-check")
async def health_check(request: Request[Any, Any, Any]) -> Response[Any]:
    services = services_of(request)
    info: dict[str, Any] = {}
    error: dict[str, Any] = {}
    try:
        async with services.reader.connect() as connection:
            await connection.execute(text("SELECT 1"))
        info["db"] = {"status": "up"}
    except Exception as exc:
        error["db"] = {"status": "down", "message": f"{type(exc).__name__}: {exc}"}
    try:
        pending = await asyncio.to_thread(services.queues.pending_counts)
        queues = {"status": "up" if services.queues.running else "down", "pending": pending}
    except Exception as exc:
        queues = {"status": "down", "message": f"{type(exc).__name__}: {exc}"}
    (info if queues["status"] == "up" else error)["queues"] = queues
    # Only a count, because the health check needs no authentication and must not name subscribers.
    info["sockets"] = {"status": "up", "open": services.hub.connection_count}
    healthy = not error
    body = {
        "status": "ok" if healthy else "error",
        "info": info,
        "error": error,
        "details": {**info, **error},
        "version": __version__,
    }
    return Response(content=body, status_code=200 if healthy else 503)
