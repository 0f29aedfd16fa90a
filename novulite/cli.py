"""The `novulite` command: a click group whose default command is `serve`."""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import uvicorn

from novulite import __version__
from novulite.config import Settings, default_data_dir
from novulite.logs import LOG_FORMATS, RedactSecrets, formatter_for
from novulite.outbound.policy import ALLOW_OPTION, ALLOW_SETTING, split_allow_setting
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
    """A uvicorn server whose graceful stop on SIGTERM or SIGINT ends the process with status 0.

    uvicorn re-raises the caught signal after shutting down, so the process would
    otherwise die by SIGTERM (status 143) even after a clean stop.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        with super().capture_signals():
            yield
            # NOTE: _captured_signals is uvicorn's private list (0.29 to 0.55 at least).
            getattr(self, "_captured_signals", []).clear()


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


def _outbound_allow(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[str, ...]:
    try:
        return split_allow_setting(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc


def _database_url(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if not value:
        return None
    from novulite.db.postgres import DatabaseUrlError, sqlalchemy_url

    try:
        sqlalchemy_url(value)
    except DatabaseUrlError as exc:
        raise click.BadParameter(str(exc)) from None
    return value


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
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="NOVULITE_DATA_DIR",
    show_envvar=True,
    help=f"Folder for the database and queue files. [default: {default_data_dir()}]",
)
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
    envvar="NOVULITE_LOG_LEVEL",
    show_envvar=True,
    help="Lowest level of log lines to print.",
)
@click.option(
    "--log-format",
    default="text",
    show_default=True,
    type=click.Choice(LOG_FORMATS),
    envvar="NOVULITE_LOG_FORMAT",
    show_envvar=True,
    help="Format of log lines on standard error. text is for reading, json writes one JSON object per "
    "line (time, level, logger, message, exception) and kv writes key=value pairs (logfmt). Every "
    "format redacts tokens, API keys and passwords.",
)
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
    "--job-lease-seconds",
    default=60.0,
    show_default=True,
    type=click.FloatRange(3, 3600),
    envvar="NOVULITE_JOB_LEASE_SECONDS",
    show_envvar=True,
    help="Seconds a job's claim lasts without renewal; a running worker renews it every third of that. "
    "After a crash, jobs wait this long before another attempt.",
)
@click.option(
    ALLOW_OPTION,
    "outbound_allow",
    default="",
    envvar=ALLOW_SETTING,
    show_envvar=True,
    callback=_outbound_allow,
    help="Comma-separated host names and CIDR ranges that http_request steps may reach although they "
    "are loopback, private, link-local or metadata addresses. [default: none]",
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
    "--retention-days",
    default=30,
    show_default=True,
    type=click.IntRange(0, 100 * 365),
    envvar="NOVULITE_RETENTION_DAYS",
    show_envvar=True,
    help="Days to keep delivered messages and execution details; an hourly purge deletes older ones. "
    "Unread, unarchived in-app messages and failed deliveries are kept. 0 keeps everything.",
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
    "--database-url",
    envvar="NOVULITE_DATABASE_URL",
    show_envvar=True,
    callback=_database_url,
    help="PostgreSQL for the job store, such as postgresql://novulite:PASSWORD@db.internal:5432/novulite; "
    "set NOVULITE_DATABASE_URL instead to keep a password out of `ps`. Without it the job store is "
    "novulite.db in the data directory.",
)
@click.option(
    "--redis-url",
    envvar="NOVULITE_REDIS_URL",
    show_envvar=True,
    help="Redis for the limiter (throttle windows and API rate limits), such as "
    "redis://:PASSWORD@127.0.0.1:6379/0; set NOVULITE_REDIS_URL instead to keep a password out of `ps`. "
    "Without it the limiter keeps its state in limiter.db in the data directory. The server "
    "exits when this Redis does not respond at start within 3 s.",
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
def serve(
    host: str,
    port: int,
    data_dir: Path | None,
    log_level: str,
    log_format: str,
    queue_workers: int,
    job_lease_seconds: float,
    outbound_allow: tuple[str, ...],
    inbox_session_hours: float,
    retention_days: int,
    ws_ping_interval: float,
    ws_compression: bool,
    access_log: bool,
    database_url: str | None,
    redis_url: str | None,
    rate_limits_spec: str,
    rate_limit_bulk_cost: str,
    metrics: bool,
) -> None:
    """Run the API, the queue consumers, the inbox socket and the admin UI in one process."""
    try:
        rate_limits = parse_rate_limits(rate_limits_spec, rate_limit_bulk_cost)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--rate-limits' / '--rate-limit-bulk-cost'") from None
    _configure_logging(log_level, log_format)
    # Queue consumers run as threads beside the event loop. With Python's default 5 ms switch
    # interval, a thread coming back from SQLite waits up to 5 ms for the interpreter lock each
    # time; 0.5 ms cut the trigger-to-socket p50 at 100 triggers/s from 35 to 13 ms (bench/trigger.py).
    sys.setswitchinterval(0.0005)
    settings = Settings(
        data_dir=(data_dir or default_data_dir()).expanduser().resolve(),
        host=host,
        port=port,
        log_level=log_level,
        log_format=log_format,
        queue_workers=queue_workers,
        job_lease_seconds=job_lease_seconds,
        outbound_allow=outbound_allow,
        inbox_token_ttl_seconds=max(1, round(inbox_session_hours * 3600)),
        retention_days=retention_days,
        ws_ping_interval_seconds=ws_ping_interval,
        initial_api_key=os.environ.get("NOVULITE_API_KEY") or None,
        initial_app_id=os.environ.get("NOVULITE_APP_ID") or None,
        initial_admin_password=os.environ.get("NOVULITE_ADMIN_PASSWORD") or None,
        database_url=database_url,
        redis_url=redis_url or None,
        rate_limits=rate_limits,
        metrics=metrics,
    )
    _check_port_free(host, port)
    if settings.redis_url:
        from novulite.limiter.connect import LimiterUnavailable, check_redis

        try:
            check_redis(settings.redis_url)
        except LimiterUnavailable as exc:
            raise click.ClickException(f"{exc}; start Redis or correct --redis-url") from None
    # Imported only once the options passed their checks, because these imports take most of the
    # start-up time and a rejected option should be reported at once.
    from novulite.app import create_asgi_app
    from novulite.bootstrap import prepare_database
    from novulite.clock import SystemClock
    from novulite.db.engine import create_sync_engine
    from novulite.db.migrate import SchemaTooNewError

    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise click.ClickException(f"cannot create the data directory {settings.data_dir}: {exc}") from exc
    engine = create_sync_engine(settings.database_target)
    try:
        secrets = prepare_database(engine, settings, SystemClock())
    except SchemaTooNewError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        engine.dispose()
    if secrets is not None:
        _print_first_start(secrets, settings)
    config = uvicorn.Config(
        create_asgi_app(settings),
        host=host,
        port=port,
        log_config=None,
        access_log=access_log,
        timeout_graceful_shutdown=2,
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
    _GracefulServer(config).run()


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
