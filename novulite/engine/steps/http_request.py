"""The http_request step: call a URL and keep the response for later steps as `steps.<stepId>`.

Templates are rendered while the job is claimed; the request is sent after the
claim has committed, with no transaction open (see ExternalCall). Every attempt of
a job carries the same Idempotency-Key, the job's id, so a remote that honours the
header can drop the repeats that at-least-once delivery brings.

Retries: a request that did not reach the remote in full (connection refused or
reset, a timeout while connecting or sending) and the statuses 408, 429 and 5xx
are retried with backoff, up to the job's attempts. Other 4xx statuses fail at
once, and so does a destination that the outbound policy refuses. A 2xx response
is never retried.

When the request was sent but no response came back, the remote may have acted
on it. GET, PUT and DELETE are idempotent by definition (RFC 9110, section
9.2.2), so they are retried. POST and PATCH fail as "outcome unknown" instead, for
an operator to check and retry by hand, because a remote that ignores the
Idempotency-Key would act twice. A worker that dies mid-request cannot tell
whether it sent anything, so its job is taken over and sent again with the same
key.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from typing import Any

import httpx

from novulite.engine.context import WorkerContext
from novulite.engine.steps.base import (
    ExternalCall,
    PermanentStepError,
    StepContext,
    StepResult,
    TransientStepError,
)
from novulite.engine.templates import render
from novulite.outbound import OutboundRefused, UnknownHost, guarded_client, policy_for
from novulite.outbound.exchange import (
    OutboundRequest,
    OutboundResponse,
    OutcomeUnknown,
    RedirectError,
    RequestNotSent,
    exchange,
)
from novulite.providers.http import (
    EXCERPT_CHARS,
    LOOKUP_ALLOWANCE_SECONDS,
    TRANSIENT_STATUSES,
    USER_AGENT,
    retry_after,
)

METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH")
IDEMPOTENT_METHODS = frozenset({"GET", "PUT", "DELETE"})
DEFAULT_TIMEOUT_SECONDS = 10.0
MAX_TIMEOUT_SECONDS = 120.0
MAX_REDIRECTS = 5
# Headers the HTTP client sets itself; a step may not set them.
RESERVED_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection"})
# Response bodies above this size are cut, and stored as text.
MAX_BODY_BYTES = 64 * 1024
# Response headers kept in the step output.
KEPT_HEADERS = (
    "content-type",
    "content-length",
    "etag",
    "last-modified",
    "location",
    "retry-after",
    "x-request-id",
)


class OutcomeUnknownError(PermanentStepError):
    """A request that was sent, but whose response never came, with a method that is not idempotent."""


@dataclasses.dataclass(frozen=True)
class _Call:
    job_id: str
    request: OutboundRequest
    timeout: float
    # The URL without credentials or query string, for details and errors.
    shown_url: str


def check_controls(controls: dict[str, Any]) -> list[tuple[str, str]]:
    """Return (control name, problem) pairs for controls that conflict with each other."""
    body = controls.get("body")
    if controls.get("method") == "GET" and body not in (None, "", {}):
        return [("body", "must be empty for a GET request; use POST, PUT or PATCH")]
    return []


def run(ctx: StepContext) -> ExternalCall:
    controls = ctx.controls
    variables = ctx.variables
    method = str(controls.get("method") or "").upper()
    if method not in METHODS:
        raise PermanentStepError(
            f"method: must be one of {', '.join(METHODS)}, got {controls.get('method')!r}"
        )
    url = _url(render(controls.get("url"), variables, "url"))
    headers = _headers(controls.get("headers") or [], variables)
    content, content_type = _body(controls.get("body"), method, variables)
    names = {key.lower() for key, _ in headers}
    if content_type is not None and "content-type" not in names:
        headers.append(("Content-Type", content_type))
    if "idempotency-key" not in names:
        headers.append(("Idempotency-Key", ctx.job.id))
    timeout = float(controls.get("timeout") or DEFAULT_TIMEOUT_SECONDS)
    call = _Call(ctx.job.id, OutboundRequest(method, url, headers, content), timeout, shown_url(url))
    return ExternalCall(
        perform=functools.partial(_perform, call), max_seconds=timeout + LOOKUP_ALLOWANCE_SECONDS
    )


def shown_url(url: httpx.URL) -> str:
    """Return `url` without user info or query string, which may hold secrets."""
    return str(url.copy_with(userinfo=b"", query=None, fragment=None))


def _url(text: str) -> httpx.URL:
    try:
        url = httpx.URL(text.strip())
    except httpx.InvalidURL as exc:
        raise PermanentStepError(f"url: {text!r} is not a valid URL: {exc}") from exc
    if url.scheme not in ("http", "https") or not url.host:
        raise PermanentStepError(f"url: {text!r} is not an http or https URL with a host")
    return url


def _headers(items: list[Any], variables: dict[str, Any]) -> list[tuple[str, str]]:
    headers = []
    for index, item in enumerate(items):
        key = str(item.get("key") or "").strip()
        value = render(item.get("value"), variables, f"headers[{index}].value")
        if "\r" in value or "\n" in value:
            raise PermanentStepError(
                f"headers[{index}].value: the rendered value of {key} contains a line break"
            )
        headers.append((key, value))
    return headers


def _body(body: Any, method: str, variables: dict[str, Any]) -> tuple[bytes | None, str | None]:
    """Render the body; return its bytes and default Content-Type, or (None, None) when there is none."""
    if body is None or body == "" or (method == "GET" and body == {}):
        return None, None
    if isinstance(body, str):
        return render(body, variables, "body").encode(), "text/plain; charset=utf-8"
    return json.dumps(_render_values(body, variables, "body")).encode(), "application/json"


def _render_values(value: Any, variables: dict[str, Any], field: str) -> Any:
    if isinstance(value, dict):
        return {key: _render_values(item, variables, f"{field}.{key}") for key, item in value.items()}
    if isinstance(value, list):
        return [_render_values(item, variables, f"{field}[{index}]") for index, item in enumerate(value)]
    if isinstance(value, str):
        return render(value, variables, field)
    return value


def _perform(call: _Call, worker: WorkerContext) -> StepResult:
    request = call.request
    where = f"{request.method} {call.shown_url}"
    info: dict[str, Any] = {"method": request.method, "url": call.shown_url}
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
        raise PermanentStepError(f"{where}: {exc}", host=exc.host, address=exc.address, **info) from exc
    except (UnknownHost, RedirectError) as exc:
        raise PermanentStepError(f"{where}: {exc}", **info) from exc
    except RequestNotSent as exc:
        raise TransientStepError(f"{where}: {exc}", exceptionType=type(exc.cause).__name__, **info) from exc
    except OutcomeUnknown as exc:
        info.update(exceptionType=type(exc.cause).__name__, outcome="unknown")
        if request.method in IDEMPOTENT_METHODS:
            raise TransientStepError(f"{where}: {exc}", **info) from exc
        raise OutcomeUnknownError(
            f"{where}: {exc}; it is not retried automatically because {request.method} is not idempotent, "
            f"so check the remote and retry the job if needed (the retry carries the same Idempotency-Key)",
            **info,
        ) from exc
    except httpx.HTTPError as exc:
        raise PermanentStepError(f"{where}: {exc}", exceptionType=type(exc).__name__, **info) from exc
    return _result(call, response, info)


def _result(call: _Call, response: OutboundResponse, info: dict[str, Any]) -> StepResult:
    status = response.status
    if not 200 <= status < 300:
        excerpt = response.body[: EXCERPT_CHARS * 4].decode(errors="replace")[:EXCERPT_CHARS]
        message = f"{call.request.method} {call.shown_url} returned HTTP {status}"
        failure = dict(info, status=status, responseExcerpt=excerpt)
        if status in TRANSIENT_STATUSES or status >= 500:
            wait = retry_after(response.headers.get("retry-after"))
            if wait is not None:
                failure["retryAfterSeconds"] = wait
            raise TransientStepError(message, **failure)
        raise PermanentStepError(message, **failure)
    output: dict[str, Any] = {
        "status": status,
        "headers": {name: response.headers[name] for name in KEPT_HEADERS if name in response.headers},
        "body": _decoded_body(response),
    }
    if response.truncated:
        output["bodyTruncated"] = True
    raw = dict(info, status=status, redirects=response.redirects)
    if response.redirects:
        raw["finalUrl"] = shown_url(response.url)
    return StepResult(
        output=output,
        details=[
            (
                f"Request completed: {call.request.method} {call.shown_url} returned HTTP {status}",
                "Success",
                raw,
            )
        ],
    )


def _decoded_body(response: OutboundResponse) -> Any:
    """Return a JSON body parsed, and any other body as text."""
    content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
    is_json = content_type == "application/json" or content_type.endswith("+json")
    if is_json and not response.truncated:
        try:
            return json.loads(response.body)
        except ValueError:
            pass
    charset = "utf-8"
    for parameter in response.headers.get("content-type", "").split(";")[1:]:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset" and value.strip():
            charset = value.strip().strip('"')
    try:
        return response.body.decode(charset, errors="replace")
    except LookupError:
        return response.body.decode("utf-8", errors="replace")
