"""Command-line options that `serve` and `worker` share, defined once for both."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

import click

from novulite.config import default_data_dir
from novulite.logs import LOG_FORMATS
from novulite.outbound.policy import ALLOW_OPTION, ALLOW_SETTING, split_allow_setting
from novulite.redis_keys import DEFAULT_PREFIX as DEFAULT_REDIS_PREFIX
from novulite.redis_keys import PREFIX_RULE, check_prefix

F = TypeVar("F", bound=Callable[..., Any])


def _outbound_allow(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[str, ...]:
    try:
        return split_allow_setting(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc


def _redis_prefix(ctx: click.Context, param: click.Parameter, value: str) -> str:
    try:
        check_prefix(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    return value


def _database_url(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if not value:
        return None
    from novulite.db.postgres import DatabaseUrlError, sqlalchemy_url

    try:
        sqlalchemy_url(value)
    except DatabaseUrlError as exc:
        raise click.BadParameter(str(exc)) from None
    return value


SHARED_OPTIONS = (
    click.option(
        "--data-dir",
        type=click.Path(file_okay=False, path_type=Path),
        envvar="NOVULITE_DATA_DIR",
        show_envvar=True,
        help=f"Folder for the database and queue files. [default: {default_data_dir()}]",
    ),
    click.option(
        "--log-level",
        default="info",
        show_default=True,
        type=click.Choice(["debug", "info", "warning", "error"]),
        envvar="NOVULITE_LOG_LEVEL",
        show_envvar=True,
        help="Lowest level of log lines to print.",
    ),
    click.option(
        "--log-format",
        default="text",
        show_default=True,
        type=click.Choice(LOG_FORMATS),
        envvar="NOVULITE_LOG_FORMAT",
        show_envvar=True,
        help="Format of log lines on standard error. text is for reading, json writes one JSON object per "
        "line (time, level, logger, message, exception) and kv writes key=value pairs (logfmt). Every "
        "format redacts tokens, API keys and passwords.",
    ),
    click.option(
        "--database-url",
        envvar="NOVULITE_DATABASE_URL",
        show_envvar=True,
        callback=_database_url,
        help="PostgreSQL for the job store, such as "
        "postgresql://novulite:PASSWORD@db.internal:5432/novulite; set NOVULITE_DATABASE_URL instead to "
        "keep a password out of `ps`. Without it the job store is "
        "novulite.db in the data directory, which only processes on this host can share.",
    ),
    click.option(
        "--redis-url",
        envvar="NOVULITE_REDIS_URL",
        show_envvar=True,
        help="Redis shared by every process of one deployment, such as redis://:PASSWORD@127.0.0.1:6379/0; "
        "set NOVULITE_REDIS_URL instead to keep a password out of `ps`. It holds the queues, the realtime "
        "fan-out between processes and the limiter's state (throttle windows and API rate limits). "
        "Required by `novulite worker` and `serve --no-workers`. Without it all three stay in this "
        "process and its data directory, and only one process may use the data directory. At start "
        "the process waits up to --startup-timeout for it.",
    ),
    click.option(
        "--redis-prefix",
        default=DEFAULT_REDIS_PREFIX,
        show_default=True,
        envvar="NOVULITE_REDIS_PREFIX",
        show_envvar=True,
        callback=_redis_prefix,
        help="Start of every Redis key and pub/sub channel this process uses. Processes of one deployment "
        "must share it, and deployments that share a Redis need different ones. "
        f"{PREFIX_RULE[0].upper()}{PREFIX_RULE[1:]}.",
    ),
    click.option(
        "--reconcile-interval",
        default=5.0,
        show_default=True,
        type=click.FloatRange(0.1, 3600),
        envvar="NOVULITE_RECONCILE_INTERVAL",
        show_envvar=True,
        help="Seconds between passes of the reconciler, which re-queues work whose queue entry was lost.",
    ),
    click.option(
        "--reconcile-grace",
        default=30.0,
        show_default=True,
        type=click.FloatRange(0.5, 86400),
        envvar="NOVULITE_RECONCILE_GRACE",
        show_envvar=True,
        help="Seconds queued work may wait before the reconciler assumes its queue entry was lost and "
        "enqueues it again. A shorter grace recovers sooner but re-queues more entries that were only "
        "slow; repeated entries are harmless.",
    ),
    click.option(
        "--job-lease-seconds",
        default=60.0,
        show_default=True,
        type=click.FloatRange(3, 3600),
        envvar="NOVULITE_JOB_LEASE_SECONDS",
        show_envvar=True,
        help="Seconds a job's claim lasts without renewal; a running worker renews it every third of that. "
        "After a crash, jobs wait this long before another attempt.",
    ),
    click.option(
        ALLOW_OPTION,
        "outbound_allow",
        default="",
        envvar=ALLOW_SETTING,
        show_envvar=True,
        callback=_outbound_allow,
        help="Comma-separated host names and CIDR ranges that http_request steps may reach although they "
        "are loopback, private, link-local or metadata addresses. [default: none]",
    ),
    click.option(
        "--retention-days",
        default=30,
        show_default=True,
        type=click.IntRange(0, 100 * 365),
        envvar="NOVULITE_RETENTION_DAYS",
        show_envvar=True,
        help="Days to keep delivered messages and execution details; an hourly purge deletes older ones. "
        "Unread, unarchived in-app messages and failed deliveries are kept. 0 keeps everything.",
    ),
    click.option(
        "--startup-timeout",
        default=60.0,
        show_default=True,
        type=click.FloatRange(0.5, 3600),
        envvar="NOVULITE_STARTUP_TIMEOUT",
        show_envvar=True,
        help="Seconds to wait at start for the job store and Redis to respond. The queue consumers start "
        "once they do; past this time the process exits with status 1 and names what did not respond.",
    ),
    click.option(
        "--shutdown-timeout",
        default=30.0,
        show_default=True,
        type=click.FloatRange(0, 3600),
        envvar="NOVULITE_SHUTDOWN_TIMEOUT",
        show_envvar=True,
        help="Seconds that running jobs and open requests get to finish after SIGTERM or SIGINT. The "
        "leases of jobs still running then are released, so another process takes them over at once.",
    ),
)


# Settings fields whose names add a unit to their option's name.
_SETTINGS_FIELDS = {
    "reconcile_interval": "reconcile_interval_seconds",
    "reconcile_grace": "reconcile_grace_seconds",
    "startup_timeout": "startup_timeout_seconds",
    "shutdown_timeout": "shutdown_timeout_seconds",
}


def _option_names() -> tuple[str, ...]:
    """Return the parameter names that the shared options pass to a command."""

    def probe() -> None:
        pass

    for option in SHARED_OPTIONS:
        option(probe)
    # click.option stores its Option objects on the decorated function until the command is built.
    parameters: list[click.Parameter] = probe.__click_params__  # type: ignore[attr-defined]
    return tuple(parameter.name for parameter in parameters if parameter.name)


def shared_options(command: F) -> F:
    """Add the options of SHARED_OPTIONS to a command, which receives their values as `shared`.

    `shared` contains them as keyword arguments of config.Settings, with the data directory
    resolved, so each command builds its Settings from them and its own options.
    """
    names = _option_names()

    @functools.wraps(command)
    def run(**values: Any) -> Any:
        shared = {_SETTINGS_FIELDS.get(name, name): values.pop(name) for name in names}
        shared["data_dir"] = (shared["data_dir"] or default_data_dir()).expanduser().resolve()
        shared["redis_url"] = shared["redis_url"] or None
        return command(shared=shared, **values)

    for option in reversed(SHARED_OPTIONS):
        run = option(run)
    return cast(F, run)
