"""One outbound HTTP exchange: redirects followed hop by hop, a time limit, a bounded response body.

Errors are sorted by whether the request may have reached the remote: a failure
before it was sent in full (RequestNotSent) is safe to repeat, one after it was sent
(OutcomeUnknown) may have had an effect there.
"""

from __future__ import annotations

import dataclasses
import time

import httpx

# Statuses that send the client elsewhere; the others are final.
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# Request headers that must not follow a redirect to another origin, because they carry credentials.
CREDENTIAL_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})


class RequestNotSent(Exception):
    """The request did not reach the remote in full: the connection was refused, reset or timed out."""

    def __init__(self, message: str, cause: Exception) -> None:
        super().__init__(message)
        self.cause = cause


class OutcomeUnknown(Exception):
    """The request was sent, but no complete response came back, so the remote may have acted on it."""

    def __init__(self, message: str, cause: Exception) -> None:
        super().__init__(message)
        self.cause = cause


class RedirectError(Exception):
    """A redirect that cannot be followed: too many hops, or a Location that is not an http(s) URL."""


@dataclasses.dataclass(frozen=True)
class OutboundRequest:
    method: str
    url: httpx.URL
    headers: list[tuple[str, str]]
    content: bytes | None = None


@dataclasses.dataclass(frozen=True)
class OutboundResponse:
    status: int
    headers: httpx.Headers
    # The decoded body, cut at the caller's limit.
    body: bytes
    truncated: bool
    # The URL of the final response, after redirects.
    url: httpx.URL
    redirects: int


def exchange(
    client: httpx.Client,
    request: OutboundRequest,
    *,
    timeout: float,
    max_redirects: int,
    max_body_bytes: int,
) -> OutboundResponse:
    """Send `request`, follow up to `max_redirects` redirects, and read the response body.

    At most `max_body_bytes` of the body are read. `timeout` bounds the whole
    exchange, all hops included. Each hop passes through `client`'s transport, so a
    guarded client checks every destination.
    Raises RequestNotSent, OutcomeUnknown or RedirectError, and lets the
    transport's own refusals through.
    """
    deadline = time.monotonic() + timeout
    redirects = 0
    while True:
        response = _send(client, request, deadline)
        try:
            location = response.headers.get("location")
            if response.status_code not in REDIRECT_STATUSES or not location:
                body, truncated = _read_body(response, deadline, max_body_bytes)
                return OutboundResponse(
                    response.status_code, response.headers, body, truncated, request.url, redirects
                )
        finally:
            response.close()
        if redirects >= max_redirects:
            raise RedirectError(f"stopped after {max_redirects} redirects, at {request.url}")
        redirects += 1
        request = _redirected(request, response.status_code, location)


def _send(client: httpx.Client, request: OutboundRequest, deadline: float) -> httpx.Response:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise RequestNotSent("the time limit ran out before the request was sent", TimeoutError())
    prepared = client.build_request(
        request.method,
        request.url,
        headers=request.headers,
        content=request.content,
        timeout=httpx.Timeout(remaining),
    )
    try:
        return client.send(prepared, stream=True)
    except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
        raise RequestNotSent(f"connecting to {request.url.host} failed: {exc}", exc) from exc
    except (httpx.WriteError, httpx.WriteTimeout) as exc:
        raise RequestNotSent(f"sending the request to {request.url.host} failed: {exc}", exc) from exc
    except httpx.TimeoutException as exc:
        raise OutcomeUnknown(
            f"the request was sent, but {request.url.host} did not respond within the time limit", exc
        ) from exc
    except (httpx.ReadError, httpx.RemoteProtocolError) as exc:
        raise OutcomeUnknown(
            f"the request was sent, but {request.url.host} closed the connection without a response: {exc}",
            exc,
        ) from exc


def _read_body(response: httpx.Response, deadline: float, limit: int) -> tuple[bytes, bool]:
    """Read up to `limit` bytes of the body; return them and whether the body was cut short.

    The status is already known, so a body that fails or runs out of time midway
    is returned in part instead of raising.
    """
    chunks: list[bytes] = []
    size = 0
    try:
        for chunk in response.iter_bytes():
            chunks.append(chunk)
            size += len(chunk)
            if size >= limit or time.monotonic() > deadline:
                return b"".join(chunks)[:limit], True
    except httpx.HTTPError:
        return b"".join(chunks)[:limit], True
    return b"".join(chunks), False


def _redirected(request: OutboundRequest, status: int, location: str) -> OutboundRequest:
    """Return the request to send for a redirect, as browsers and httpx do."""
    try:
        url = request.url.join(location)
    except httpx.InvalidURL as exc:
        raise RedirectError(f"the redirect from {request.url} has an invalid Location: {exc}") from exc
    if url.scheme not in ("http", "https"):
        raise RedirectError(f"the redirect from {request.url} leads to {url.scheme}:, not http or https")
    method, content = request.method, request.content
    if (status == 303 and method != "HEAD") or (status in (301, 302) and method == "POST"):
        method, content = "GET", None
    headers = request.headers
    if content is None:
        headers = [(key, value) for key, value in headers if key.lower() != "content-type"]
    if (url.scheme, url.host, url.port) != (request.url.scheme, request.url.host, request.url.port):
        headers = [(key, value) for key, value in headers if key.lower() not in CREDENTIAL_HEADERS]
    return OutboundRequest(method, url, headers, content)
