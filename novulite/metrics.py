"""Prometheus metrics of one novulite process, served as text at GET /metrics."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import time
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

METRICS_PATH = "/metrics"
# The route label of requests that matched no route, such as 404s, so unknown URLs add no series.
UNMATCHED_ROUTE = "unmatched"
# The provider label of deliveries whose message row names no provider, such as in_app steps.
NO_PROVIDER = "none"
# Step types whose final outcome counts as a delivery.
DELIVERY_CHANNELS = frozenset({"in_app", "email", "sms", "push", "chat"})
# Methods kept as label values; any other method is recorded as OTHER_METHOD.
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
OTHER_METHOD = "other"


# Key of the server_setting row where metric-active-jobs passes store their figures.
SNAPSHOT_KEY = "metrics.active_jobs"


@dataclasses.dataclass(frozen=True)
class ActiveJobs:
    """Figures of one metric-active-jobs pass."""

    recorded_at: dt.datetime
    jobs_by_status: dict[str, int]
    # Entries waiting per queue; empty when the queues' Redis was unreachable.
    queue_depths: dict[str, int]


def read_active_jobs(raw: Any) -> ActiveJobs | None:
    """Return the last recorded figures, or None before the first pass."""
    row = raw.execute("SELECT value FROM server_setting WHERE key = ?", (SNAPSHOT_KEY,)).fetchone()
    if row is None:
        return None
    stored = json.loads(row[0])
    return ActiveJobs(
        recorded_at=dt.datetime.fromisoformat(stored["recordedAt"]),
        jobs_by_status=stored["jobs"],
        queue_depths=stored["queues"],
    )


class _StateCollector(Collector):
    """Gauges read when a scrape collects them: the last metric-active-jobs figures and open sockets."""

    def __init__(self, active_jobs: Callable[[], ActiveJobs | None], socket_count: Callable[[], int]) -> None:
        self._active_jobs = active_jobs
        self._socket_count = socket_count

    def collect(self) -> Iterable[Metric]:
        recorded = self._active_jobs()
        jobs = GaugeMetricFamily("novulite_jobs", "Jobs in the job store by status.", labels=["status"])
        depth = GaugeMetricFamily(
            "novulite_queue_depth", "Entries waiting in each Huey queue.", labels=["queue"]
        )
        if recorded is not None:
            for status, count in sorted(recorded.jobs_by_status.items()):
                jobs.add_metric([status], count)
            for queue, count in sorted(recorded.queue_depths.items()):
                depth.add_metric([queue], count)
        yield jobs
        yield depth
        if recorded is not None:
            yield GaugeMetricFamily(
                "novulite_active_jobs_recorded_timestamp_seconds",
                "Unix time of the metric-active-jobs pass that novulite_jobs and novulite_queue_depth "
                "come from.",
                value=recorded.recorded_at.timestamp(),
            )

        yield GaugeMetricFamily(
            "novulite_open_sockets", "Open inbox WebSocket connections.", value=self._socket_count()
        )


class Metrics:
    """The registry of one app and the instruments that the server and its workers update."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.deliveries = Counter(
            "novulite_deliveries",
            "Channel steps that ended delivered, counted once per final outcome.",
            ["channel", "provider"],
            registry=self.registry,
        )
        self.delivery_failures = Counter(
            "novulite_delivery_failures",
            "Channel steps that failed for good, after their last attempt.",
            ["channel", "provider"],
            registry=self.registry,
        )
        self.request_duration = Histogram(
            "novulite_http_request_duration_seconds",
            "Seconds from the start of an HTTP request until its response ended.",
            ["method", "route"],
            registry=self.registry,
        )

    def watch_state(
        self, active_jobs: Callable[[], ActiveJobs | None], socket_count: Callable[[], int]
    ) -> None:
        """Register the gauges that read the metric-active-jobs figures and the sockets at each scrape."""
        self.registry.register(_StateCollector(active_jobs, socket_count))

    def count_delivery(self, channel: str, provider: str | None, delivered: bool) -> None:
        counter = self.deliveries if delivered else self.delivery_failures
        counter.labels(channel, provider or NO_PROVIDER).inc()


class RequestTimer:
    """An ASGI wrapper that records each HTTP request's duration by method and route template.

    The route is the path template that Litestar's router stores in the scope, such as
    /v1/subscribers/{subscriber_id:str}, so raw URLs never become label values. An app
    in front of Litestar that handles a route itself sets `path_template` the same way.
    """

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] == METRICS_PATH:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        try:
            await self.app(scope, receive, send)
        finally:
            elapsed = time.perf_counter() - started
            method = scope["method"] if scope["method"] in HTTP_METHODS else OTHER_METHOD
            route = scope.get("path_template") or UNMATCHED_ROUTE
            self.metrics.request_duration.labels(method, route).observe(elapsed)
