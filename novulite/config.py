"""Runtime settings for one novulite process."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import platformdirs

from novulite.rate_limits import RateLimits


def default_data_dir() -> Path:
    """Return the per-user data folder, never the install location (pipx caches venvs)."""
    return Path(platformdirs.user_data_dir("novulite", appauthor=False))


@dataclasses.dataclass(frozen=True)
class Settings:
    """Settings resolved from flags and NOVULITE_* environment variables."""

    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 8000
    log_level: str = "info"
    # Format of log lines: text, json or kv (see novulite.logs).
    log_format: str = "text"
    # Secrets used only when the database is created; later starts ignore them.
    initial_api_key: str | None = None
    initial_app_id: str | None = None
    initial_admin_password: str | None = None
    # Worker threads per queue inside the server process.
    queue_workers: int = 1
    # Seconds a worker may hold a running job without renewing its lease before another may take it over.
    job_lease_seconds: float = 60.0
    # Host names and CIDR ranges that outbound requests may reach although they are not public.
    outbound_allow: tuple[str, ...] = ()
    # Seconds between passes of the reconciler that re-queues due or abandoned work.
    reconcile_interval_seconds: float = 5.0
    # Seconds a queued row may wait before the reconciler assumes its queue entry was lost.
    reconcile_grace_seconds: float = 30.0
    # Days that delivered messages and execution details are kept; 0 keeps them forever.
    retention_days: int = 30
    # Seconds an inbox session token stays valid.
    inbox_token_ttl_seconds: int = 15 * 24 * 3600
    # Seconds between WebSocket pings on each inbox socket. Uvicorn sends the pings, so this copy
    # only shows the value on the admin settings page.
    ws_ping_interval_seconds: float = 25.0
    # Maximum accepted request body, in bytes.
    max_body_bytes: int = 2 * 1024 * 1024
    # PostgreSQL job store URL (postgresql://user@host:port/db); None keeps the job store in SQLite.
    database_url: str | None = None
    # Redis for the queues, realtime fan-out and the limiter, shared by every process that uses it;
    # None keeps all three inside this process and its data directory.
    redis_url: str | None = None
    # Start of every Redis key and channel name, so several deployments can share one Redis.
    redis_prefix: str = "novulite"
    # API rate limits per API key; None turns them off.
    rate_limits: RateLimits | None = None
    # Whether GET /metrics serves Prometheus metrics. When off, the path returns 404.
    metrics: bool = True
    # Queues this process consumes: None for every queue, () for none (an API-only process). A
    # process that consumes no queue runs no due-job timer, lease keeper or reconciler either.
    consumed_queues: tuple[str, ...] | None = None
    # Seconds to wait at start for the job store and Redis to respond before exiting with an error.
    startup_timeout_seconds: float = 60.0
    # Seconds that running jobs get to finish after SIGTERM before their leases are released.
    shutdown_timeout_seconds: float = 30.0

    @property
    def runs_jobs(self) -> bool:
        return self.consumed_queues != ()

    @property
    def shared_store(self) -> bool:
        """Whether other processes may run jobs on this job store at the same time.

        True in Redis mode and on PostgreSQL, whose job store other hosts can reach.
        """
        return bool(self.redis_url or self.database_url)

    @property
    def database_path(self) -> Path:
        return self.data_dir / "novulite.db"

    @property
    def database_target(self) -> Path | str:
        """Return where the job store lives: the PostgreSQL URL when one is set, else the SQLite file."""
        return self.database_url or self.database_path

    @property
    def database_label(self) -> str:
        """Return the job store's location for logs and messages, with any password redacted."""
        if self.database_url is None:
            return str(self.database_path)
        from novulite.limiter.connect import redact_url

        return redact_url(self.database_url)

    @property
    def queue_dir(self) -> Path:
        return self.data_dir / "queues"
