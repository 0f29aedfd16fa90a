"""Delivery to providers over HTTP: one guarded request, and its outcome sorted into retry or fail.

Chat, SMS and push providers that speak HTTP all send through `deliver`, so they
share one set of rules:

- A 2xx response is delivered and never retried.
- 408, 429 and 5xx responses, and a request that never reached the provider in
  full (connection refused or reset, a timeout while connecting), are transient:
  the job is retried with backoff, no sooner than a `Retry-After` requests.
- Other 4xx responses, and destinations the outbound policy refuses, are permanent.
- A request that was sent but got no response may have been delivered. It is
  recorded as "outcome unknown" and not retried, so a slow success never turns
  into a second message.

Every request carries the job's id as its `Idempotency-Key`, the same on every attempt.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import email.utils
import json
from typing import Any

import httpx

from novulite import __version__
from novulite.engine.context import WorkerContext
from novulite.engine.steps.base import PermanentStepError, TransientStepError
from novulite.outbound import OutboundRefused, UnknownHost, guarded_client, policy_for
from novulite.outbound.exchange import (
    OutboundRequest,
    OutboundResponse,
    OutcomeUnknown,
    RedirectError,
    RequestNotSent,
    exchange,
)

DEFAULT_TIMEOUT_SECONDS = 10.0
MAX_REDIRECTS = 3
MAX_BODY_BYTES = 16 * 1024
# Characters of a response body kept in a failed job's error.
EXCERPT_CHARS = 500
TRANSIENT_STATUSES = frozenset({408, 429})
# A longer Retry-After is cut to this, so one response cannot park a job for days.
MAX_RETRY_AFTER_SECONDS = 3600.0
# Seconds added to the timeout for the longest a delivery may take: DNS lookups have no timeout of their own.
LOOKUP_ALLOWANCE_SECONDS = 30.0
USER_AGENT = f"novulite/{__version__}"


class OutcomeUnknownError(PermanentStepError):
    """A request that was sent, but whose response never came, so the provider may have delivered it."""


@dataclasses.dataclass(frozen=True)
class ProviderRequest:
    """One request to a provider, and how to name it in details and errors."""

    # The provider id, such as "slack" or "twilio", recorded with the outcome.
    provider: str
    request: OutboundRequest
    timeout: float = DEFAULT_TIMEOUT_SECONDS

    @property
    def max_seconds(self) -> float:
        """The longest `deliver` may take, for the job's lease."""
        return self.timeout + LOOKUP_ALLOWANCE_SECONDS


def json_request(
    provider: str,
    url: str | httpx.URL,
    body: Any,
    job_id: str,
    *,
    headers: list[tuple[str, str]] | None = None,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
) -> ProviderRequest:
    """Return a POST of `body` as JSON, with the job's id as its idempotency key."""
    content = json.dumps(body, ensure_ascii=False).encode()
    return post(provider, url, content, "application/json", job_id, headers=headers, timeout=timeout)


def post(
    provider: str,
    url: str | httpx.URL,
    content: bytes,
    content_type: str,
    job_id: str,
    *,
    headers: list[tuple[str, str]] | None = None,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
) -> ProviderRequest:
    """Return a POST of `content`, with the job's id as its idempotency key.

    Raises PermanentStepError when `url` is not an http or https URL with a host.
    """
    target = parse_url(url, provider)
    all_headers = [("Content-Type", content_type), *(headers or [])]
    if not any(key.lower() == "idempotency-key" for key, _ in all_headers):
        all_headers.append(("Idempotency-Key", job_id))
    return ProviderRequest(provider, OutboundRequest("POST", target, all_headers, content), timeout)


def parse_url(url: str | httpx.URL, provider: str) -> httpx.URL:
    """Return `url` parsed, or raise PermanentStepError naming the provider when it is unusable."""
    try:
        target = url if isinstance(url, httpx.URL) else httpx.URL(str(url).strip())
    except httpx.InvalidURL as exc:
        raise PermanentStepError(
            f"{provider}: {shown_url(url)!r} is not a valid URL: {exc}", provider=provider
        ) from exc
    if target.scheme not in ("http", "https") or not target.host:
        raise PermanentStepError(
            f"{provider}: {shown_url(target)!r} is not an http or https URL with a host", provider=provider
        )
    return target


def shown_url(url: str | httpx.URL) -> str:
    """Return `url` without user info, path or query, which carry secrets in webhook URLs."""
    try:
        parsed = url if isinstance(url, httpx.URL) else httpx.URL(str(url).strip())
    except httpx.InvalidURL:
        return "(invalid URL)"
    if not parsed.host:
        return "(URL without a host)"
    return str(parsed.copy_with(userinfo=b"", path="/", query=None, fragment=None)).rstrip("/")


def deliver(worker: WorkerContext, call: ProviderRequest) -> OutboundResponse:
    """Send `call` through the outbound guard and return the 2xx response.

    Raises TransientStepError, PermanentStepError or OutcomeUnknownError, each with
    the provider, the status and a response excerpt where there was a response, and
    the type of the underlying exception where there was none.
    """
    request = call.request
    where = f"{call.provider}: {request.method} {shown_url(request.url)}"
    info: dict[str, Any] = {"provider": call.provider, "url": shown_url(request.url)}
    policy = policy_for(worker.settings.outbound_allow)
    try:
        with guarded_client(policy, USER_AGENT) as client:
            response = exchange(
                client,
                request,
                timeout=call.timeout,
                max_redirects=MAX_REDIRECTS,
                max_body_bytes=MAX_BODY_BYTES,
            )
    except OutboundRefused as exc:
        raise PermanentStepError(
            f"{where}: {exc}", host=exc.host, address=exc.address, exceptionType="OutboundRefused", **info
        ) from exc
    except (UnknownHost, RedirectError) as exc:
        raise PermanentStepError(f"{where}: {exc}", exceptionType=type(exc).__name__, **info) from exc
    except RequestNotSent as exc:
        raise TransientStepError(f"{where}: {exc}", exceptionType=root_cause_name(exc), **info) from exc
    except OutcomeUnknown as exc:
        raise OutcomeUnknownError(
            f"{where}: {exc}; it is not retried automatically because the provider may have delivered "
            "it, so check with the provider and retry the job if needed (the retry carries the same "
            "Idempotency-Key)",
            exceptionType=root_cause_name(exc),
            outcome="unknown",
            **info,
        ) from exc
    except httpx.HTTPError as exc:
        raise PermanentStepError(f"{where}: {exc}", exceptionType=type(exc).__name__, **info) from exc
    check_status(call.provider, where, response, info)
    return response


def check_status(provider: str, where: str, response: OutboundResponse, info: dict[str, Any]) -> None:
    """Raise the StepError that a non-2xx response calls for; return for a 2xx one."""
    status = response.status
    if 200 <= status < 300:
        return
    failure = dict(info, status=status, responseExcerpt=excerpt(response.body))
    message = f"{where} returned HTTP {status}"
    if failure["responseExcerpt"]:
        message = f"{message}: {failure['responseExcerpt'][:200]}"
    if status in TRANSIENT_STATUSES or status >= 500:
        wait = retry_after(response.headers.get("retry-after"))
        if wait is not None:
            failure["retryAfterSeconds"] = wait
        raise TransientStepError(message, **failure)
    raise PermanentStepError(message, **failure)


def excerpt(body: bytes) -> str:
    """Return the start of a response body as text, for an error record."""
    return body[: EXCERPT_CHARS * 4].decode(errors="replace")[:EXCERPT_CHARS].strip()


def retry_after(value: str | None, now: dt.datetime | None = None) -> float | None:
    """Return the seconds a `Retry-After` header requests, or None when it is missing or invalid.

    The header contains either seconds or an HTTP date (RFC 9110, section 10.2.3).
    """
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), MAX_RETRY_AFTER_SECONDS)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    seconds = (when - (now or dt.datetime.now(dt.UTC))).total_seconds()
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_SECONDS)


def root_cause_name(exc: BaseException) -> str:
    """Return the type name of the innermost cause, such as TimeoutError under httpx's wrappers."""
    seen: set[int] = set()
    current: BaseException = getattr(exc, "cause", None) or exc
    while id(current) not in seen:
        seen.add(id(current))
        nested = current.__cause__ or current.__context__
        if nested is None:
            break
        current = nested
    return type(current).__name__
