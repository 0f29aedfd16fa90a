"""Build the Litestar application and the services it starts and stops."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from litestar import Litestar, Request, get
from litestar.config.cors import CORSConfig
from litestar.config.csrf import CSRFConfig
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.response import Redirect, Response
from litestar.static_files import create_static_files_router
from litestar.template.config import TemplateConfig
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from novulite import __version__
from novulite.api.activity import activity_router, jobs_router
from novulite.api.cancel import cancel_router
from novulite.api.environments import environments_router
from novulite.api.events import TriggerRoute, events_router
from novulite.api.health import health_check
from novulite.api.idempotency import IdempotencyMiddleware
from novulite.api.inbox import inbox_router, session_router
from novulite.api.inbox_actions import inbox_actions_router
from novulite.api.inbox_preferences import inbox_preferences_router
from novulite.api.integrations import integrations_router
from novulite.api.messages import messages_router
from novulite.api.preferences import preferences_router
from novulite.api.rate_limits import RateLimitMiddleware, token_taker
from novulite.api.socket import inbox_socket
from novulite.api.subscribers import subscribers_router
from novulite.api.subscribers_v1 import subscribers_v1_router
from novulite.api.topic_subscriptions import subscriber_subscriptions_router, subscriptions_router
from novulite.api.topics import topics_router
from novulite.api.workflows import workflows_router
from novulite.bootstrap import load_signing_key
from novulite.clock import Clock, SystemClock
from novulite.config import Settings
from novulite.db.engine import create_async_engines
from novulite.db.store import Store
from novulite.directory import Directory
from novulite.engine.calls import CallPool
from novulite.engine.context import WorkerContext
from novulite.engine.leases import LeaseKeeper
from novulite.engine.tasks import register_tasks
from novulite.engine.timer import DueJobTimer
from novulite.errors import EXCEPTION_HANDLERS
from novulite.intake import TriggerIntake
from novulite.lifecycle import ServeLifecycle
from novulite.limiter.connect import describe_limiter, open_limiter, redact_url
from novulite.metrics import METRICS_PATH, Metrics, RequestTimer, read_active_jobs
from novulite.queues import Queues
from novulite.realtime import Hub
from novulite.realtime_redis import RedisFanout
from novulite.redis_keys import realtime_channel
from novulite.resources import resource_dir
from novulite.security import TokenSigner
from novulite.services import Services
from novulite.ui import ADMIN_ROUTERS
from novulite.ui.common import AdminLoginRequired, login_redirect

logger = logging.getLogger("novulite")


@get("/", include_in_schema=False)
async def root() -> Redirect:
    return Redirect(path="/admin/", status_code=302)


@get(METRICS_PATH, include_in_schema=False)
async def metrics_page(request: Request[Any, Any, Any]) -> Response[bytes]:
    """Serve the process's metrics in the Prometheus text format, without authentication."""
    metrics: Metrics = request.app.state.services.worker.metrics
    # Collecting runs the job store's GROUP BY query and reads the queue files, so it runs off the loop.
    body = await asyncio.to_thread(generate_latest, metrics.registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


def _build_metrics(store: Store, queues: Queues, hub: Hub) -> Metrics:
    metrics = Metrics()
    metrics.watch_state(
        active_jobs=lambda: read_active_jobs(store.raw_read()), socket_count=lambda: hub.connection_count
    )
    return metrics


def build_worker_context(
    settings: Settings, clock: Clock, store: Store, hub: Hub, on_revoke: Callable[[], None] = lambda: None
) -> WorkerContext:
    """Build what queue tasks share, with its timer, lease keeper and call pool, and register the tasks.

    In Redis mode it also builds the realtime fan-out. `on_revoke` runs when another process
    rotates an environment's key, so that caches which still accept the old key are dropped.
    """
    settings.queue_dir.mkdir(parents=True, exist_ok=True)
    queues = Queues(
        settings.queue_dir,
        workers=settings.queue_workers,
        redis_url=settings.redis_url,
        redis_prefix=settings.redis_prefix,
    )
    limiter = open_limiter(settings.redis_url, settings.data_dir, settings.redis_prefix)
    worker = WorkerContext(
        store=store,
        clock=clock,
        queues=queues,
        settings=settings,
        publish=hub.publish_threadsafe,
        has_sockets=hub.has_sockets,
        limiter=limiter,
        metrics=_build_metrics(store, queues, hub) if settings.metrics else None,
    )
    worker.timer = DueJobTimer(worker)
    worker.leases = LeaseKeeper(store, clock, settings.job_lease_seconds)
    worker.calls = CallPool()
    if settings.redis_url:
        worker.fanout = RedisFanout(
            settings.redis_url, realtime_channel(settings.redis_prefix), hub, on_revoke=on_revoke
        )
        hub.broadcast_revoke = worker.fanout.publish_revoke
    register_tasks(worker)
    return worker


def build_services(settings: Settings, clock: Clock) -> Services:
    store = Store(settings.database_target)
    reader, writer = create_async_engines(settings.database_target)
    signing_key = load_signing_key(store.read_engine)
    hub = Hub()
    directory = Directory(reader)
    worker = build_worker_context(settings, clock, store, hub, on_revoke=directory.invalidate_environments)
    queues = worker.queues
    limiter = worker.limiter
    assert limiter is not None
    intake = TriggerIntake(store, queues)
    return Services(
        settings=settings,
        clock=clock,
        store=store,
        reader=reader,
        writer=writer,
        queues=queues,
        hub=hub,
        intake=intake,
        directory=directory,
        inbox_tokens=TokenSigner(signing_key, "inbox-session"),
        admin_sessions=TokenSigner(signing_key, "admin-session"),
        csrf_secret=hmac.new(signing_key, b"csrf", hashlib.sha256).hexdigest(),
        worker=worker,
        rate_limiter=None if settings.rate_limits is None else token_taker(settings, limiter),
    )


def describe_mode(settings: Settings) -> str:
    """Name where the job store, queues and realtime fan-out live, for the startup log line."""
    store = "PostgreSQL job store" if settings.database_url else "SQLite job store"
    if settings.redis_url:
        return (
            f"mode scale-out ({store}, queues and realtime fan-out in Redis at "
            f"{redact_url(settings.redis_url)} with key prefix {settings.redis_prefix!r})"
        )
    return f"mode embedded ({store}, SQLite queues, in-process realtime)"


def _describe_role(settings: Settings) -> str:
    if not settings.runs_jobs:
        return "role API only (no queue consumers, due-job timer or reconciler)"
    return "role API and queue consumers"


def _lifespan(services: Services) -> Any:
    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        services.hub.bind(asyncio.get_running_loop())
        await services.intake.start()
        # The consumers start in the background once the job store and Redis respond, so the
        # health check can return 503 meanwhile.
        services.lifecycle.start()
        if services.worker.fanout is not None:
            # Inbox sockets connect to serve processes, so each one listens for every process's events.
            services.worker.fanout.start(services.worker)

        settings = services.settings
        rate_limits = settings.rate_limits
        logger.info(
            "novulite %s starting on http://%s:%d, data directory %s, %s, %s, %s, API rate limits %s",
            __version__,
            settings.host,
            settings.port,
            settings.data_dir,
            _describe_role(settings),
            describe_mode(settings),
            describe_limiter(settings.redis_url, settings.data_dir),
            "off" if rate_limits is None else rate_limits.describe(),
        )

        try:
            yield
        finally:
            await _shut_down(services)

    return lifespan


async def _shut_down(services: Services) -> None:
    """Stop in order: new triggers, the sockets, the job drain, then the stores that enqueues need."""
    logger.info("shutting down")
    services.accepting = False
    await services.lifecycle.begin_shutdown()
    await services.intake.stop()
    await services.lifecycle.finish_shutdown()
    if services.worker.fanout is not None:
        await asyncio.to_thread(services.worker.fanout.stop)
    services.queues.close()
    if services.worker.leases is not None:
        await asyncio.to_thread(services.worker.leases.stop)
    if services.rate_limiter is not None:
        await services.rate_limiter.close()
    if services.worker.limiter is not None:
        services.worker.limiter.close()
    await services.reader.dispose()
    await services.writer.dispose()
    services.store.dispose()
    logger.info("stopped")


def create_asgi_app(settings: Settings, clock: Clock | None = None) -> Any:
    """Return what uvicorn serves: the application behind the trigger route's fast path and rate limits."""
    return create_asgi_app_with_services(settings, clock)[0]


def create_asgi_app_with_services(settings: Settings, clock: Clock | None = None) -> tuple[Any, Services]:
    """Return what uvicorn serves and the services behind it, whose lifecycle the server drives."""
    app = create_app(settings, clock)
    services = app.state.services
    routed: Any = TriggerRoute(IdempotencyMiddleware(app, services), services)
    if settings.rate_limits is not None:
        routed = RateLimitMiddleware(routed, services, settings.rate_limits, services.rate_limiter)
    metrics = services.worker.metrics
    if metrics is None:
        return routed, services
    return RequestTimer(routed, metrics), services


def create_app(settings: Settings, clock: Clock | None = None) -> Litestar:
    """Return the application; the database must already be prepared (bootstrap.prepare_database)."""
    services = build_services(settings, clock or SystemClock())
    services.lifecycle = ServeLifecycle(services)
    handlers: dict[Any, Any] = dict(EXCEPTION_HANDLERS)
    handlers[AdminLoginRequired] = login_redirect
    app = Litestar(
        route_handlers=[
            root,
            health_check,
            events_router,
            cancel_router,
            workflows_router,
            subscribers_router,
            subscribers_v1_router,
            preferences_router,
            topics_router,
            subscriptions_router,
            subscriber_subscriptions_router,
            messages_router,
            integrations_router,
            activity_router,
            jobs_router,
            environments_router,
            session_router,
            inbox_router,
            inbox_actions_router,
            inbox_preferences_router,
            inbox_socket,
            *ADMIN_ROUTERS,
            *([metrics_page] if settings.metrics else []),
            create_static_files_router(path="/static", directories=[resource_dir("static")]),
        ],
        lifespan=[_lifespan(services)],
        exception_handlers=handlers,
        template_config=TemplateConfig(directory=resource_dir("templates"), engine=JinjaTemplateEngine),
        csrf_config=CSRFConfig(
            secret=services.csrf_secret,
            cookie_httponly=True,
            cookie_samesite="strict",
            # Only the admin UI uses cookies; API calls authenticate with headers instead.
            exclude=["^/v1/", "^/v2/", "^/ws"],
        ),
        # Browsers call /v1/inbox/* from other origins with Authorization and Novu-* headers, so preflights
        # echo the requested headers. Credentials are not allowed, so admin cookies never go cross-origin.
        cors_config=CORSConfig(allow_origins=["*"], allow_methods=["*"], allow_headers=["*"], max_age=86400),
        request_max_body_size=settings.max_body_bytes,
        openapi_config=None,
        logging_config=None,
        debug=False,
    )
    app.state.services = services
    app.state.max_body_bytes = settings.max_body_bytes
    return app
