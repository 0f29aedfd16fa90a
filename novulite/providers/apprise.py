"""The apprise provider: sms, chat and push through any of the services Apprise supports.

An apprise integration keeps one or more Apprise URLs, such as
`discord://webhook_id/token` or `json://hooks.example.com/notify`, separated by
spaces or commas, in its `webhookUrl` credential. A subscriber's channel
credentials entry whose `integrationIdentifier` names the integration may give
its own `webhookUrl`, which replaces the integration's for that subscriber.

The step's `subject`, where the channel has one, becomes the title, and its
`body` the body, both rendered as plain text.

Apprise plugins space their requests to a service by sleeping in the calling
thread. Here no plugin sleeps: this process keeps the next free send time per
service, and a job whose service is busy waits as a delayed job until its slot,
so no worker or call-pool thread is held while it waits.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import hashlib
import threading
from typing import Any

import apprise
from apprise.manager_plugins import NotificationManager
from apprise.utils.parse import parse_urls

from novulite.engine.context import WorkerContext
from novulite.engine.steps import delivery
from novulite.engine.steps.base import ExternalCall, PermanentStepError, StepContext, StepResult
from novulite.engine.templates import render
from novulite.errors import FieldError
from novulite.outbound import policy_for
from novulite.providers import apprise_call
from novulite.providers.base import Provider
from novulite.providers.http import LOOKUP_ALLOWANCE_SECONDS

PROVIDER_ID = apprise_call.PROVIDER_ID
CREDENTIAL = "webhookUrl"
# The key a waiting job's output carries, so its second run sends instead of waiting again.
SLOT_OUTPUT_KEY = "appriseSlotAt"
MAX_URLS = 20
URLS_HELP = (
    "one or more Apprise URLs, such as json://hooks.example.com/notify or discord://webhook_id/token, "
    "separated by spaces or commas"
)
SCHEMES_HELP = "see the supported services at https://github.com/caronc/apprise/wiki"

_plugins = NotificationManager()


@dataclasses.dataclass(frozen=True)
class _Target:
    """One parsed Apprise URL."""

    url: str
    scheme: str
    plugin: Any


class ServiceSlots:
    """The next time each service may be sent to, shared by this process's workers.

    NOTE: the times live in this process only, so servers that share one database
    each space their sends on their own.
    """

    # Entries whose time has passed are dropped once this many are kept.
    PRUNE_AT = 1000

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._next: dict[str, dt.datetime] = {}

    def reserve(self, key: str, interval_seconds: float, now: dt.datetime) -> dt.datetime:
        """Return the start of the service's next free slot, and mark the slot taken."""
        with self._lock:
            if len(self._next) >= self.PRUNE_AT:
                self._next = {name: at for name, at in self._next.items() if at > now}
            slot = max(now, self._next.get(key, now))
            self._next[key] = slot + dt.timedelta(seconds=interval_seconds)
            return slot


SLOTS = ServiceSlots()


def split_urls(text: str) -> list[str]:
    """Return the URLs of a `webhookUrl` value, split on whitespace and commas as Apprise does."""
    return [url for url in parse_urls(text) if url]


def scheme_of(url: str) -> str:
    return url.split("://", 1)[0].lower() if "://" in url else ""


def url_problem(url: str) -> str | None:
    """Return why Apprise cannot use `url`, without repeating the URL, or None when it can."""
    scheme = scheme_of(url)
    if not scheme:
        return "has no scheme; write it as scheme://..., such as json://hooks.example.com/notify"
    if scheme not in _plugins:
        version = apprise.__version__
        return f"uses the scheme {scheme!r}, which Apprise {version} does not support; {SCHEMES_HELP}"
    if _instantiate(url) is None:
        return f"is not a valid {scheme} URL; check its form on the service's page of the Apprise wiki"
    return None


def _instantiate(url: str) -> Any:
    # The capture keeps Apprise's log records, which can contain the URL, out of the server's log.
    with apprise_call.recording(policy_for(())):
        return apprise.Apprise.instantiate(url, suppress_exceptions=True)


def check_credentials(credentials: dict[str, Any], active: bool, errors: list[FieldError]) -> None:
    """Add a FieldError when `webhookUrl` is missing, or contains a URL that Apprise cannot use.

    The errors name the URL's position and scheme, never the URL, which is a secret.
    """
    field = f"credentials.{CREDENTIAL}"
    value = credentials.get(CREDENTIAL)
    if value is None or (isinstance(value, str) and not value.strip()):
        if active:
            errors.append(FieldError(field, f"is required: {URLS_HELP}"))
        return
    if not isinstance(value, str):
        errors.append(FieldError(field, f"must be a string: {URLS_HELP}"))
        return
    urls = split_urls(value)
    if len(urls) > MAX_URLS:
        errors.append(FieldError(field, f"has {len(urls)} URLs; keep at most {MAX_URLS}"))
        return
    for position, url in enumerate(urls, start=1):
        problem = url_problem(url)
        if problem is not None:
            errors.append(FieldError(field, f"URL {position} of {len(urls)} {problem}"))


def _urls_for(ctx: StepContext, integration: Any) -> tuple[str, str]:
    """Return the Apprise URLs for this subscriber, and where they came from."""
    for entry in ctx.subscriber.channels or []:
        if not isinstance(entry, dict) or entry.get("integrationIdentifier") != integration.identifier:
            continue
        override = (entry.get("credentials") or {}).get(CREDENTIAL)
        if isinstance(override, str) and override.strip():
            return override, f"the subscriber's {CREDENTIAL} for integration {integration.identifier!r}"
    stored = (integration.credentials or {}).get(CREDENTIAL)
    return (stored if isinstance(stored, str) else ""), f"integration {integration.identifier!r}"


def _targets(text: str, source: str) -> list[_Target]:
    urls = split_urls(text)
    if not urls:
        raise PermanentStepError(f"{source} has no {CREDENTIAL}; set it to {URLS_HELP}", provider=PROVIDER_ID)
    targets = []
    for position, url in enumerate(urls, start=1):
        problem = url_problem(url)
        if problem is not None:
            raise PermanentStepError(
                f"{CREDENTIAL} of {source}: URL {position} of {len(urls)} {problem}",
                provider=PROVIDER_ID,
                service=scheme_of(url),
            )
        targets.append(_Target(url, scheme_of(url), _instantiate(url)))
    return targets


def _service_key(target: _Target) -> str:
    """Return a key for the account a URL sends to, hashed because the URL's parts are secrets."""
    try:
        identifier = target.plugin.url_identifier or target.url
    except (AttributeError, NotImplementedError):
        identifier = target.url
    return hashlib.sha256(f"{type(target.plugin).__name__}:{identifier!r}".encode()).hexdigest()


def _reserve_slots(targets: list[_Target], now: dt.datetime) -> dt.datetime:
    """Reserve each target's next send slot; return the latest start among them."""
    latest = now
    for target in targets:
        # Apprise names the seconds between two requests to a service `request_rate_per_sec`.
        interval = float(type(target.plugin).request_rate_per_sec or 0) * max(1, len(target.plugin))
        if interval > 0:
            latest = max(latest, SLOTS.reserve(_service_key(target), interval, now))
    return latest


def prepare(ctx: StepContext, integration: Any) -> StepResult | ExternalCall:
    text, source = _urls_for(ctx, integration)
    targets = _targets(text, source)
    controls = ctx.controls
    title = " ".join(render(controls.get("subject"), ctx.variables, "subject").split())
    body = render(controls.get("body"), ctx.variables, "body")
    if not body.strip() and not title:
        raise PermanentStepError(
            "body: the rendered body is empty; write a body, or check the variables it uses",
            provider=PROVIDER_ID,
        )

    output = ctx.job.output if isinstance(ctx.job.output, dict) else {}
    if SLOT_OUTPUT_KEY not in output:
        slot = _reserve_slots(targets, ctx.now)
        if slot > ctx.now:
            services = ", ".join(sorted({target.scheme for target in targets}))
            text = f"Waiting until {slot.isoformat()} for the next free send slot of {services}"
            return StepResult(
                output={SLOT_OUTPUT_KEY: slot.isoformat()},
                wait_until=slot,
                details=[(text, "Pending", {"provider": PROVIDER_ID, "services": services})],
            )

    row = delivery.channel_row(ctx, PROVIDER_ID, body, subject=title or None)
    max_seconds = len(targets) * (apprise_call.CALL_SECONDS + LOOKUP_ALLOWANCE_SECONDS)
    return ExternalCall(
        perform=functools.partial(_perform, targets, title, body, row),
        max_seconds=max_seconds,
        failure_row=row,
    )


def _perform(
    targets: list[_Target], title: str, body: str, row: dict[str, Any], worker: WorkerContext
) -> StepResult:
    policy = policy_for(worker.settings.outbound_allow)
    for target in targets:
        plugin = target.plugin
        apprise_call.limit_plugin(plugin)
        # NOTE: with several URLs, a retry after a later URL failed sends to the earlier ones again.
        apprise_call.notify(plugin, target.scheme, title, body, policy, target.url)
    services = sorted({target.scheme for target in targets})
    return delivery.delivered(
        row,
        worker.clock.now(),
        f"Sent through Apprise ({', '.join(services)})",
        {"provider": PROVIDER_ID, "services": services, "urls": len(targets)},
        {"provider": PROVIDER_ID, "services": services},
    )


PROVIDERS: dict[str, Provider] = {
    PROVIDER_ID: Provider(
        channels=frozenset({"sms", "chat", "push"}), prepare=prepare, check_credentials=check_credentials
    ),
}
