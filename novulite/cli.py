"""The `novulite` command: a click group whose default command is `serve`."""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import math
import os
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import uvicorn

from novulite import __version__
from novulite.cli_options import shared_options
from novulite.config import Settings, default_data_dir
from novulite.logs import RedactSecrets, formatter_for
from novulite.providers.vapid import SUBJECT_PATTERN, generate_key_pair
from novulite.rate_limits import BULK_COST_HELP, SPEC_HELP, parse_rate_limits

logger = logging.getLogger("novulite")

SECRET_VARIABLES = """\b
First-start secrets, read from the environment only so they stay out of `ps`:
  NOVULITE_API_KEY         secret API key of the Development environment
  NOVULITE_APP_ID          its public application identifier
  NOVULITE_ADMIN_PASSWORD  password of the admin user `admin`
Each is generated when unset. Later starts ignore them.
"""

REDIS_REQUIRED = (
    "novulite {what} needs --redis-url (or NOVULITE_REDIS_URL), because processes that share "
    "one job store also share its queues and limiter through Redis"
)


def _configure_logging(level: str, log_format: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter_for(log_format))
    handler.addFilter(RedactSecrets())
    logging.basicConfig(level=level.upper(), handlers=[handler])
    # Huey logs every task at INFO, which costs throughput and buries novulite's own lines.
    quiet = max(logging.WARNING, logging.getLevelName(level.upper()))
    logging.getLogger("huey").setLevel(quiet)
    logging.getLogger("alembic").setLevel(quiet)
    # httpx logs each outbound request's full URL at INFO, and a query string may carry a secret.
    logging.getLogger("httpx").setLevel(quiet)


class _GracefulServer(uvicorn.Server):
    """A uvicorn server that drains the process's jobs on SIGTERM or SIGINT and then exits with status 0.

    uvicorn re-raises the caught signal after shutting down, so the process would
    otherwise die by SIGTERM (status 143) even after a clean stop. The server also
    stops when the lifecycle's start-up fails, so the process can exit with status 1.
    """

    def __init__(self, config: uvicorn.Config, lifecycle: Any) -> None:
        super().__init__(config)
        self._lifecycle = lifecycle

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        with super().capture_signals():
            yield
            # NOTE: _captured_signals is uvicorn's private list (0.29 to 0.55 at least).
            getattr(self, "_captured_signals", []).clear()

    async def on_tick(self, counter: int) -> bool:
        if self._lifecycle.failed:
            self.should_exit = True
        return await super().on_tick(counter)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # Stop listening first, then close inbox sockets with 1001 before uvicorn would close
        # them with 1012, and start the job drain beside uvicorn's wait for open requests.
        for server in getattr(self, "servers", []):
            server.close()
        await self._lifecycle.begin_shutdown()
        # Open requests get what is left of the shutdown timeout, so they end by the drain's deadline.
        self.config.timeout_graceful_shutdown = math.ceil(self._lifecycle.seconds_left())
        await super().shutdown(sockets)


@click.group(invoke_without_command=True, context_settings={"auto_envvar_prefix": "NOVULITE"})
@click.version_option(__version__, prog_name="novulite")
@click.pass_context
def main(ctx: click.Context) -> None:
    """novulite: a self-hosted notification server that speaks Novu's API.

    Without a command, runs `serve` with its defaults.
    """
    if ctx.invoked_subcommand is None:
        ctx.invoke(serve)


def _check_port_free(host: str, port: int) -> None:
    """Fail before the first start creates anything (and prints its one-time secrets) if the port is taken."""
    try:
        with socket.create_server((host, port)):
            pass
    except OSError as exc:
        raise click.ClickException(
            f"cannot listen on {host}:{port}: {exc.strerror}; stop the other server or pass --port"
        ) from exc


def _print_first_start(secrets: Any, settings: Settings) -> None:
    lines = [
        "",
        "novulite created a new database. Keep these values: they are shown only this once.",
        f"  secret API key:          {secrets.api_key}",
        f"  application identifier:  {secrets.app_identifier}",
        "  admin user:              admin",
        f"  admin password:          {secrets.admin_password}",
        f"  admin UI:                http://{settings.host}:{settings.port}/admin/",
        "",
    ]
    click.echo("\n".join(lines))


@main.command(epilog=SECRET_VARIABLES)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    envvar="NOVULITE_HOST",
    show_envvar=True,
    help="Address to listen on.",
)
@click.option(
    "--port",
    default=8000,
    show_default=True,
    type=click.IntRange(0, 65535),
    envvar="NOVULITE_PORT",
    show_envvar=True,
    help="TCP port to listen on.",
)
@shared_options
@click.option(
    "--queue-workers",
    default=1,
    show_default=True,
    type=click.IntRange(1, 64),
    envvar="NOVULITE_QUEUE_WORKERS",
    show_envvar=True,
    help="Worker threads per queue.",
)
@click.option(
    "--inbox-session-hours",
    default=15 * 24.0,
    show_default=True,
    type=click.FloatRange(0.01, 24 * 365),
    envvar="NOVULITE_INBOX_SESSION_HOURS",
    show_envvar=True,
    help="Hours an inbox session token from POST /v1/inbox/session stays valid. Rotating the "
    "secret API key ends every session at once.",
)
@click.option(
    "--ws-ping-interval",
    default=25.0,
    show_default=True,
    type=click.FloatRange(0.5, 3600),
    envvar="NOVULITE_WS_PING_INTERVAL",
    show_envvar=True,
    help="Seconds between WebSocket ping frames on each inbox socket. A socket whose peer has not "
    "answered a ping with a pong within the same time is closed.",
)
@click.option(
    "--ws-compression/--no-ws-compression",
    default=False,
    show_default=True,
    envvar="NOVULITE_WS_COMPRESSION",
    show_envvar=True,
    help="Accept the permessage-deflate extension that browsers offer on inbox sockets. Inbox frames "
    "are small JSON, and each compressing socket took about 37 KiB more server memory in "
    "bench/sockets.py.",
)
@click.option(
    "--access-log/--no-access-log",
    default=False,
    envvar="NOVULITE_ACCESS_LOG",
    show_envvar=True,
    help="Log every HTTP request.",
)
@click.option(
    "--rate-limits",
    "rate_limits_spec",
    default="off",
    show_default=True,
    envvar="NOVULITE_RATE_LIMITS",
    show_envvar=True,
    help=SPEC_HELP,
)
@click.option(
    "--rate-limit-bulk-cost",
    default="events",
    show_default=True,
    envvar="NOVULITE_RATE_LIMIT_BULK_COST",
    show_envvar=True,
    help=BULK_COST_HELP,
)
@click.option(
    "--metrics/--no-metrics",
    default=True,
    show_default=True,
    envvar="NOVULITE_METRICS",
    show_envvar=True,
    help="Serve Prometheus metrics at GET /metrics, without authentication, to any client that "
    "reaches the port. Do not expose that port publicly, or pass --no-metrics.",
)
@click.option(
    "--workers/--no-workers",
    default=True,
    show_default=True,
    envvar="NOVULITE_WORKERS",
    show_envvar=True,
    help="Run queue consumers, the due-job timer and the reconciler in this process. --no-workers "
    "serves the API only and leaves jobs to `novulite worker` processes; it needs --redis-url.",
)
def serve(
    host: str,
    port: int,
    shared: dict[str, Any],
    queue_workers: int,
    inbox_session_hours: float,
    ws_ping_interval: float,
    ws_compression: bool,
    access_log: bool,
    rate_limits_spec: str,
    rate_limit_bulk_cost: str,
    metrics: bool,
    workers: bool,
) -> None:
    """Run the API, the queue consumers, the inbox socket and the admin UI in one process.

    With --no-workers the process serves the API, the inbox socket and the admin UI only,
    and `novulite worker` processes on the same job store and Redis run the jobs.
    """
    if not workers and not shared["redis_url"]:
        raise click.UsageError(REDIS_REQUIRED.format(what="serve --no-workers"))
    try:
        rate_limits = parse_rate_limits(rate_limits_spec, rate_limit_bulk_cost)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--rate-limits' / '--rate-limit-bulk-cost'") from None
    _configure_logging(shared["log_level"], shared["log_format"])
    # Queue consumers run as threads beside the event loop. With Python's default 5 ms switch
    # interval, a thread coming back from SQLite waits up to 5 ms for the interpreter lock each
    # time; 0.5 ms cut the trigger-to-socket p50 at 100 triggers/s from 35 to 13 ms (bench/trigger.py).
    sys.setswitchinterval(0.0005)
    settings = Settings(
        **shared,
        host=host,
        port=port,
        queue_workers=queue_workers,
        inbox_token_ttl_seconds=max(1, round(inbox_session_hours * 3600)),
        ws_ping_interval_seconds=ws_ping_interval,
        initial_api_key=os.environ.get("NOVULITE_API_KEY") or None,
        initial_app_id=os.environ.get("NOVULITE_APP_ID") or None,
        initial_admin_password=os.environ.get("NOVULITE_ADMIN_PASSWORD") or None,
        rate_limits=rate_limits,
        metrics=metrics,
        consumed_queues=None if workers else (),
    )
    _check_port_free(host, port)
    _check_redis_url(settings.redis_url)
    # Imported only once the options passed their checks, because these imports take most of the
    # start-up time and a rejected option should be reported at once.
    from novulite.app import create_asgi_app_with_services

    _prepare_store(settings)
    app, services = create_asgi_app_with_services(settings)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=access_log,
        # _GracefulServer.shutdown lowers this to the time left before the drain's deadline.
        timeout_graceful_shutdown=math.ceil(settings.shutdown_timeout_seconds),
        lifespan="on",
        # Protocol-level pings: browsers reply with pongs on their own, so @novu/js (in either socket
        # mode) needs no code for them, and a peer that vanished without a close frame is found.
        # NOTE: on a missed pong uvicorn closes the transport gracefully, so a socket whose
        # write buffer is full (a peer that stopped reading during a burst) can stay open, and
        # counted, until the kernel gives up on the TCP connection.
        ws="websockets-sansio",
        ws_ping_interval=ws_ping_interval,
        ws_ping_timeout=ws_ping_interval,
        # bench/sockets.py measured 84 KiB of server RSS per idle socket with permessage-deflate
        # and 47 KiB without, and its burst of frames to 2,000 sockets took about a third less time.
        ws_per_message_deflate=ws_compression,
    )
    _tune_garbage_collector()
    _GracefulServer(config, services.lifecycle).run()
    if services.lifecycle.failed:
        sys.exit(1)


def _check_redis_url(redis_url: str | None) -> None:
    if not redis_url:
        return
    from novulite.runtime import redis_url_problem

    problem = redis_url_problem(redis_url)
    if problem is not None:
        raise click.ClickException(f"{problem}; correct --redis-url")


def _prepare_store(settings: Settings) -> None:
    """Wait for the job store to respond, migrate it, and print the secrets of a new one."""
    from novulite.bootstrap import prepare_database
    from novulite.clock import SystemClock
    from novulite.db.engine import create_sync_engine
    from novulite.db.migrate import SchemaTooNewError
    from novulite.runtime import StartupTimedOut, store_dependency, wait_for

    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise click.ClickException(f"cannot create the data directory {settings.data_dir}: {exc}") from exc
    engine = create_sync_engine(settings.database_target)
    try:
        # NOTE: the health check is served only after this wait, because the app reads its signing
        # key from the job store. Until then a probe's connection is refused instead of getting 503.
        dependency = store_dependency(engine, settings.database_label)
        wait_for([dependency], settings.startup_timeout_seconds, threading.Event())
        secrets = prepare_database(engine, settings, SystemClock())
    except StartupTimedOut as exc:
        logger.error("start-up failed: %s", exc)
        sys.exit(1)
    except SchemaTooNewError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        engine.dispose()
    if secrets is not None:
        _print_first_start(secrets, settings)


# Tracked allocations, net of deallocations, that start a young-generation collection;
# CPython's default is 700. Each idle inbox socket keeps about 140 tracked objects
# (coroutines, closures, queues) alive, and a burst of frames to 2,000 sockets ran about
# 145 young collections, whose promotions then set off full ones.
GC_YOUNG_THRESHOLD = 10_000


def _tune_garbage_collector() -> None:
    """Move the objects that live as long as the process out of the collector's way.

    A full collection walks every tracked object: the app's own, about 150,000 after
    startup, plus those of every open socket. bench/sockets.py on 2 vCPUs spent 0.6 to
    0.8 s of a 2 s burst in two full collections. gc.freeze() leaves the startup
    objects out of every later collection, and the higher young threshold makes
    collections of all generations rarer. Together they cut the collector's time in
    that burst to one full collection of about 0.25 s.
    """
    gc.collect()
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, oldest)


def _vapid_subject(ctx: click.Context, param: click.Parameter, value: str) -> str:
    if not SUBJECT_PATTERN.match(value):
        raise click.BadParameter(f"{value!r} must be a mailto: address or an https: URL")
    return value


@main.command("vapid-keys")
@click.option(
    "--subject",
    required=True,
    callback=_vapid_subject,
    help="Contact for push services, sent as the VAPID `sub` claim: mailto:you@example.com or an https: URL.",
)
def vapid_keys(subject: str) -> None:
    """Generate a VAPID key pair for a webpush integration, and print it with its credentials JSON.

    Give the public key to browsers as the `applicationServerKey` of pushManager.subscribe(),
    and send the credentials object in POST /v1/integrations with providerId webpush and
    channel push. The private key is printed once and stored nowhere else.
    """
    public_key, private_key = generate_key_pair()
    credentials = {"apiKey": public_key, "secretKey": private_key, "from": subject}
    click.echo(f"public key (applicationServerKey): {public_key}")
    click.echo(f"private key:                       {private_key}")
    click.echo("integration credentials:")
    click.echo(json.dumps(credentials, indent=2))


@main.command()
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="NOVULITE_DATA_DIR",
    show_envvar=True,
    help=f"Folder of the server whose database to copy. [default: {default_data_dir()}]",
)
@click.option("--force", is_flag=True, help="Replace PATH if it exists.")
@click.option(
    "--database-url",
    envvar="NOVULITE_DATABASE_URL",
    show_envvar=True,
    help="The server's PostgreSQL job store, if it uses one: this command then stops and names pg_dump.",
)
def backup(path: Path, data_dir: Path | None, force: bool, database_url: str | None) -> None:
    """Write a consistent copy of the job store to PATH, also while the server runs.

    The copy goes to a temporary file beside PATH, passes PRAGMA integrity_check and is
    then renamed to PATH. The queue files are not copied: the server re-queues
    unfinished work from the job store when it starts.
    """
    from novulite.backup import BackupError, back_up, postgresql_backup_message

    if database_url:
        raise click.ClickException(postgresql_backup_message(database_url))
    settings = Settings(data_dir=(data_dir or default_data_dir()).expanduser().resolve())
    try:
        report = back_up(settings.database_path, path.expanduser().absolute(), force=force)
    except BackupError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"wrote {report.path} ({report.size_bytes} bytes), integrity_check ok")
    for table, count in report.row_counts.items():
        click.echo(f"  {table:<17} {count} rows")


def _queue_names(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[str, ...] | None:
    """Parse --queues into a tuple of queue names; None when not given, which means every queue."""
    from novulite.queues import QUEUE_NAMES

    if value is None or not value.strip():
        return None
    names = tuple(dict.fromkeys(name.strip() for name in value.split(",") if name.strip()))
    unknown = [name for name in names if name not in QUEUE_NAMES]
    if unknown:
        raise click.BadParameter(
            f"unknown queue {', '.join(map(repr, unknown))}; valid queues are {', '.join(QUEUE_NAMES)}"
        )
    return names


@main.command()
@shared_options
@click.option(
    "--queues",
    "queue_names",
    envvar="NOVULITE_WORKER_QUEUES",
    show_envvar=True,
    callback=_queue_names,
    help="Comma-separated names of the queues to consume: trigger-handler, process-subscriber, "
    "standard, ws_socket_queue, metric-active-jobs. [default: all]",
)
@click.option(
    "--threads",
    default=1,
    show_default=True,
    type=click.IntRange(1, 64),
    envvar="NOVULITE_WORKER_THREADS",
    show_envvar=True,
    help="Worker threads per queue.",
)
def worker(
    shared: dict[str, Any],
    queue_names: tuple[str, ...] | None,
    threads: int,
) -> None:
    """Run queue consumers only, without HTTP, beside `novulite serve` processes on one job store.

    A worker also runs the due-job timer, the lease keeper and the reconciler; several processes
    may run them at once. It starts once the job store, migrated by `novulite serve`, and Redis
    respond, and stops on SIGTERM or SIGINT after draining its running jobs.
    """
    if not shared["redis_url"]:
        raise click.UsageError(REDIS_REQUIRED.format(what="worker"))
    _check_redis_url(shared["redis_url"])
    _configure_logging(shared["log_level"], shared["log_format"])
    settings = Settings(**shared, queue_workers=threads, metrics=False, consumed_queues=queue_names)
    from novulite.worker_process import run_worker

    sys.exit(run_worker(settings))
