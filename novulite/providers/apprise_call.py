"""One Apprise notification, sent under the outbound policy, a time limit and a record of what happened.

Apprise plugins send with `requests` themselves, so novulite cannot hand them its
guarded HTTP client. Instead, while a call runs in a thread, this module:

- checks the host that the URL names against the outbound policy before the
  plugin runs, for plugins whose URL carries the host (json://, ntfy://host ...);
  plugins that do not send with requests (email, MQTT ...) get only this check;
- checks every request that `requests` sends from that thread, including
  redirects and the fixed hosts of SaaS plugins, before it connects, and caps
  its timeouts at what is left of the call's time limit;
- records each response status and request exception, because a plugin returns
  only True or False;
- keeps the plugin's log records of warning level and above as the failure's
  reason, and out of the server's log, since some plugins log their URL.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

import apprise
import httpcore
import requests
import requests.adapters
import urllib3.exceptions

from novulite.engine.steps.base import PermanentStepError, TransientStepError
from novulite.outbound import OutboundPolicy, OutboundRefused, UnknownHost, resolve
from novulite.providers.http import TRANSIENT_STATUSES, OutcomeUnknownError, excerpt, retry_after

PROVIDER_ID = "apprise"
# Timeouts of each request a plugin sends, in seconds, as requests' (connect, read) pair.
CONNECT_TIMEOUT_SECONDS = 5.0
READ_TIMEOUT_SECONDS = 10.0
# The maximum time one Apprise URL may take. No request starts after it, and none may run past it.
# NOTE: a read timeout bounds each socket read, not the whole response, so a server that
# trickles bytes can hold one request somewhat past this limit.
CALL_SECONDS = 30.0
# Characters of the plugin's log kept as a failure's reason.
REASON_CHARS = 500

_local = threading.local()


@dataclasses.dataclass
class CallRecord:
    """The outcome of one plugin call: its responses, request exceptions, refusals and log lines."""

    policy: OutboundPolicy
    deadline: float
    statuses: list[int] = dataclasses.field(default_factory=list)
    retry_after: str | None = None
    # The start of the first non-2xx response's body.
    response_excerpt: str | None = None
    errors: list[requests.RequestException] = dataclasses.field(default_factory=list)
    refused: list[OutboundRefused] = dataclasses.field(default_factory=list)
    log: list[str] = dataclasses.field(default_factory=list)


class _CaptureFilter(logging.Filter):
    """Divert the `apprise` logger's records of a thread with an active call into its CallRecord."""

    def filter(self, record: logging.LogRecord) -> bool:
        call: CallRecord | None = getattr(_local, "call", None)
        if call is None or record.thread != threading.get_ident():
            return True
        if record.levelno >= logging.WARNING:
            call.log.append(record.getMessage())
        return False


_original_send = requests.adapters.HTTPAdapter.send


def _guarded_send(self: requests.adapters.HTTPAdapter, request: Any, *args: Any, **kwargs: Any) -> Any:
    """Check a request of an active call against the policy, bound its time, and record its outcome."""
    call: CallRecord | None = getattr(_local, "call", None)
    if call is None:
        return _original_send(self, request, *args, **kwargs)

    target = urllib.parse.urlsplit(request.url)
    host = target.hostname or ""
    port = target.port or (443 if target.scheme == "https" else 80)
    try:
        check_host(call.policy, host, port)
    except OutboundRefused as exc:
        call.refused.append(exc)
        raise

    remaining = call.deadline - time.monotonic()
    if remaining <= 0:
        raise requests.exceptions.ConnectTimeout(f"the Apprise call used up its {CALL_SECONDS:.0f} s")
    connect, read = _timeouts(kwargs.get("timeout"))
    kwargs["timeout"] = (min(connect, remaining), min(read, remaining))

    try:
        response = _original_send(self, request, *args, **kwargs)
    except requests.RequestException as exc:
        call.errors.append(exc)
        raise

    call.statuses.append(response.status_code)
    if response.headers.get("Retry-After"):
        call.retry_after = response.headers["Retry-After"]
    # A streamed body belongs to the plugin, which reads it later; reading it here would consume it.
    failed = not 200 <= response.status_code < 300
    if failed and call.response_excerpt is None and not kwargs.get("stream"):
        call.response_excerpt = excerpt(response.content)
    return response


def _timeouts(given: Any) -> tuple[float, float]:
    """Return the plugin's (connect, read) timeouts, capped at this module's limits."""
    if isinstance(given, tuple) and len(given) == 2:
        connect, read = given
    else:
        connect = read = given
    return (
        min(float(connect or CONNECT_TIMEOUT_SECONDS), CONNECT_TIMEOUT_SECONDS),
        min(float(read or READ_TIMEOUT_SECONDS), READ_TIMEOUT_SECONDS),
    )


# Installed once per process. Requests from threads without an active call pass through unchanged.
requests.adapters.HTTPAdapter.send = _guarded_send  # type: ignore[method-assign]
logging.getLogger(apprise.logger.name).addFilter(_CaptureFilter())


def limit_plugin(plugin: Any) -> None:
    """Stop a plugin from sleeping between requests or retrying, and cap its socket timeouts.

    novulite spaces the sends to a service itself (see providers/apprise.py) and retries
    failed jobs with backoff. The caps lower, never raise, the timeouts that the URL's
    `cto` and `rto` set. They bound plugins that do not send with requests, such as
    email and MQTT, which the per-request limits here do not reach.
    """
    plugin.request_rate_per_sec = 0
    plugin.retry = 0
    connect = float(plugin.socket_connect_timeout or 0) or CONNECT_TIMEOUT_SECONDS
    read = float(plugin.socket_read_timeout or 0) or READ_TIMEOUT_SECONDS
    plugin.socket_connect_timeout = min(connect, CONNECT_TIMEOUT_SECONDS)
    plugin.socket_read_timeout = min(read, READ_TIMEOUT_SECONDS)


def check_host(policy: OutboundPolicy, host: str, port: int) -> None:
    """Resolve `host` and raise OutboundRefused unless the policy allows each of its addresses.

    NOTE: requests resolves the name again when it connects, so a DNS answer that
    changes in between (DNS rebinding) can still reach an address this check refused.
    novulite's own HTTP client connects to the checked address, but requests offers no
    way to pin it.
    """
    bare = host.strip("[]")
    if not bare:
        return
    for address in resolve(bare, port):
        policy.check(bare, address)


def plugin_hosts(plugin: Any) -> list[tuple[str, int]]:
    """Return the hosts and ports a plugin's URL names, for plugins whose URL carries its server's host."""
    hosts: list[tuple[str, int]] = []
    default_port = 443 if getattr(plugin, "secure", False) else 80
    if "host" in plugin.template_tokens and plugin.host:
        hosts.append((str(plugin.host), int(plugin.port or default_port)))
    # The email plugin sends to an SMTP server that its URL may name apart from the host.
    smtp_host = getattr(plugin, "smtp_host", None)
    if isinstance(smtp_host, str) and smtp_host:
        hosts.append((smtp_host, int(plugin.port or 25)))
    return hosts


@contextlib.contextmanager
def recording(policy: OutboundPolicy) -> Iterator[CallRecord]:
    """Make this thread's requests and Apprise log records part of a new CallRecord."""
    call = CallRecord(policy=policy, deadline=time.monotonic() + CALL_SECONDS)
    _local.call = call
    try:
        yield call
    finally:
        _local.call = None


def notify(plugin: Any, service: str, title: str, body: str, policy: OutboundPolicy, secret: str) -> None:
    """Send one notification through `plugin`, or raise the StepError that its failure calls for.

    `service` is the URL's scheme, and `secret` the URL, which is cut from any reason recorded.
    """
    info: dict[str, Any] = {"provider": PROVIDER_ID, "service": service}
    where = f"apprise {service}"
    try:
        for host, port in plugin_hosts(plugin):
            check_host(policy, host, port)
    except OutboundRefused as exc:
        raise _refused(service, exc, info) from exc
    except UnknownHost as exc:
        raise PermanentStepError(f"{where}: {exc}", exceptionType="UnknownHost", **info) from exc
    except httpcore.ConnectError as exc:
        raise TransientStepError(f"{where}: {exc}", exceptionType="ConnectError", **info) from exc

    with recording(policy) as call:
        try:
            delivered = bool(plugin.notify(body=body, title=title, body_format=apprise.NotifyFormat.TEXT))
        except OutboundRefused:
            delivered = False
        except UnknownHost as exc:
            raise PermanentStepError(f"{where}: {exc}", exceptionType="UnknownHost", **info) from exc
        except httpcore.ConnectError as exc:
            raise TransientStepError(f"{where}: {exc}", exceptionType="ConnectError", **info) from exc
    if call.refused:
        raise _refused(service, call.refused[0], info)
    if delivered:
        return
    raise failure(call, service, info, secret)


def _refused(service: str, exc: OutboundRefused, info: dict[str, Any]) -> PermanentStepError:
    return PermanentStepError(
        f"apprise {service}: {exc}",
        host=exc.host,
        address=exc.address,
        exceptionType="OutboundRefused",
        **info,
    )


def failure(call: CallRecord, service: str, info: dict[str, Any], secret: str) -> Exception:
    """Return the StepError for a call the plugin reported as failed, classified by what it recorded."""
    reason = " ".join(call.log).replace(secret, "(the Apprise URL)")[:REASON_CHARS]
    failed = dict(info, reason=reason or "the plugin reported a failure and logged no reason")
    where = f"apprise {service}"
    bad_status = next((status for status in call.statuses if not 200 <= status < 300), None)
    if bad_status is not None:
        failed["status"] = bad_status
        if call.response_excerpt:
            failed["responseExcerpt"] = call.response_excerpt.replace(secret, "(the Apprise URL)")
        message = f"{where} returned HTTP {bad_status}: {failed['reason']}"
        if bad_status in TRANSIENT_STATUSES or bad_status >= 500:
            wait = retry_after(call.retry_after)
            if wait is not None:
                failed["retryAfterSeconds"] = wait
            return TransientStepError(message, **failed)
        return PermanentStepError(message, **failed)
    if call.errors:
        error = call.errors[-1]
        failed["exceptionType"] = type(error).__name__
        message = f"{where}: {type(error).__name__}: {failed['reason']}"
        if _not_sent(error):
            return TransientStepError(message, **failed)
        return OutcomeUnknownError(
            f"{message}; it is not retried automatically because the service may have delivered it, "
            "so check with the service and retry the job if needed",
            outcome="unknown",
            **failed,
        )
    # A plugin that fails without any response or request error rejected its input or its URL.
    return PermanentStepError(f"{where}: {failed['reason']}", **failed)


def _not_sent(error: requests.RequestException) -> bool:
    """Return whether `error` happened before the request reached the server."""
    if isinstance(error, requests.exceptions.ConnectTimeout):
        return True
    if not isinstance(error, requests.exceptions.ConnectionError):
        return False
    cause = error.args[0] if error.args else None
    inner = getattr(cause, "reason", cause)
    return isinstance(inner, urllib3.exceptions.NewConnectionError | urllib3.exceptions.ConnectTimeoutError)
