"""The error catalogue and the one JSON error shape every response uses.

The shape follows Novu's API because its SDKs parse error bodies strictly:
`statusCode`, `timestamp`, `path` and `message` always; for 400 a list
`errors: [{field, message, value?}]` (novu-py's PayloadValidationExceptionDto) and
for 422 a mapping `errors: {field: {messages: [...], value?}}` (its
ValidationErrorDto). Each catalogue entry also carries a stable numeric `code`:
the HTTP status times 100 plus a sequence number.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import uuid
from collections.abc import Sequence
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException

from novulite.clock import isoformat

logger = logging.getLogger("novulite.api")

_UNSET: Any = object()


@dataclasses.dataclass(frozen=True)
class ErrorCode:
    code: int
    status: int
    message: str

    def with_message(self, **values: Any) -> str:
        return self.message.format(**values)


INVALID_JSON = ErrorCode(40001, 400, "the request body is not valid JSON ({detail}); send a JSON object")
INVALID_FIELDS = ErrorCode(40002, 400, "the request has invalid fields; each entry in errors names one")
INVALID_QUERY = ErrorCode(
    40003, 400, "the query string has invalid parameters; each entry in errors names one"
)
IDEMPOTENCY_KEY_INVALID = ErrorCode(
    40004, 400, "the Idempotency-Key header must be 1 to {limit} characters; send a shorter unique key"
)
RATE_LIMIT_COST_TOO_HIGH = ErrorCode(
    40005,
    400,
    "this request costs {cost} tokens of the {category} rate limit, but its bucket holds only {capacity}, "
    "so it can never be allowed; split it into requests of at most {capacity} events",
)
PRIMARY_NOT_SUPPORTED = ErrorCode(
    40021,
    400,
    "{channel} integrations cannot be primary; only email and sms channels have a primary integration",
)
MISSING_AUTHORIZATION = ErrorCode(
    40101, 401, "missing Authorization header; send 'Authorization: ApiKey <secret API key>'"
)
INVALID_AUTH_SCHEME = ErrorCode(
    40102,
    401,
    "invalid authentication scheme {scheme!r}; send 'Authorization: ApiKey <secret API key>'",
)
INVALID_API_KEY = ErrorCode(
    40103,
    401,
    "the API key is not valid; use the environment's secret key, printed at first start",
)
INVALID_INBOX_TOKEN = ErrorCode(
    40104,
    401,
    "the inbox session token is missing, invalid or expired; start a new session with POST /v1/inbox/session",
)
INVALID_SUBSCRIBER_HASH = ErrorCode(
    40105,
    401,
    "subscriberHash is missing or not valid for this subscriber; compute it on your server "
    "as the lowercase hex HMAC-SHA256 of the subscriberId, keyed with the secret API key",
)
INVALID_CONTEXT_HASH = ErrorCode(
    40106,
    401,
    "contextHash is missing or not valid for this context; compute it on your server as the lowercase "
    "hex HMAC-SHA256 of the context's canonical JSON (keys sorted, no white space), keyed with the "
    "secret API key",
)
ROUTE_NOT_FOUND = ErrorCode(40401, 404, "no route matches {method} {path}")
WORKFLOW_NOT_FOUND = ErrorCode(40402, 404, "workflow {workflow_id!r} was not found")
NOTIFICATION_NOT_FOUND = ErrorCode(40403, 404, "notification {notification_id!r} was not found")
SUBSCRIBER_NOT_FOUND = ErrorCode(
    40404, 404, "subscriber {subscriber_id!r} was not found; create it with POST /v2/subscribers"
)
WORKFLOWS_NOT_FOUND = ErrorCode(40405, 404, "these workflows were not found: {workflow_ids}")
TOPIC_NOT_FOUND = ErrorCode(
    40406, 404, "topic {key!r} was not found; create it with POST /v2/topics or check the key"
)
SUBSCRIPTION_NOT_FOUND = ErrorCode(
    40407,
    404,
    "topic {key!r} has no subscription with the identifier {identifier!r}; "
    "list them with GET /v2/topics/{key}/subscriptions",
)
MESSAGE_NOT_FOUND = ErrorCode(40411, 404, "message {message_id!r} was not found")
JOB_NOT_FOUND = ErrorCode(
    40421, 404, "job {job_id!r} was not found; GET /v1/notifications/{{id}} lists a notification's jobs"
)
INTEGRATION_NOT_FOUND = ErrorCode(
    40420, 404, "integration {integration_id!r} was not found; list them with GET /v1/integrations"
)
# Paths served only as WebSockets, where a plain HTTP request gets 426 rather than 405.
WEBSOCKET_PATHS = ("/ws",)
METHOD_NOT_ALLOWED = ErrorCode(40501, 405, "method {method} is not allowed on {path}")
WEBSOCKET_ONLY = ErrorCode(
    42601,
    426,
    "{path} takes WebSocket connections only; open ws://<host>:<port>{path}?token=<inbox session token>",
)
TOPIC_EXISTS = ErrorCode(
    40902, 409, "topic {key!r} already exists; send the request without failIfExists=true to update it"
)
INTEGRATION_IDENTIFIER_EXISTS = ErrorCode(
    40920,
    409,
    "an integration with the identifier {identifier!r} already exists in this environment; "
    "choose another identifier or update that integration",
)
SUBSCRIBER_EXISTS = ErrorCode(
    40910,
    409,
    "subscriber {subscriber_id!r} already exists; leave out failIfExists=true to update it instead",
)
BODY_TOO_LARGE = ErrorCode(41301, 413, "the request body is larger than {limit} bytes; send less data")
TRIGGER_WORKFLOW_NOT_FOUND = ErrorCode(
    42201,
    422,
    "workflow_not_found: no workflow has the identifier {name!r}; "
    "create it with POST /v2/workflows or fix the trigger's name",
)
IDEMPOTENCY_REQUEST_RUNNING = ErrorCode(
    40901,
    409,
    "a request with this Idempotency-Key is still running; retry after a second to get its response",
)
IDEMPOTENCY_KEY_REUSED = ErrorCode(
    42202,
    422,
    "this Idempotency-Key was already used with a different request; send a new key for a new request",
)
TRIGGER_TOPIC_NOT_FOUND = ErrorCode(
    42203,
    422,
    "topic_not_found: no topic has the key {keys}; create it with POST /v2/topics "
    "or fix the topicKey in the trigger's `to`",
)
RATE_LIMITED = ErrorCode(
    42901,
    429,
    "API rate limit exceeded for the {category} category: this request costs {cost}, and the bucket "
    "has {remaining} of its {capacity} left, refilling {refill} per second; retry after {retry_after} s",
)
INTERNAL_ERROR = ErrorCode(
    50001, 500, "internal server error; the server log has the details under errorId {error_id}"
)
SERVICE_UNAVAILABLE = ErrorCode(50301, 503, "the server is shutting down or not ready; retry shortly")

# Names for statuses that Novu's errors carry in an `error` field, as NestJS does.
_STATUS_NAMES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Payload Too Large",
    422: "Unprocessable Entity",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


@dataclasses.dataclass(frozen=True)
class FieldError:
    """One invalid field: a dotted path such as `to[2].subscriberId`, what is wrong and the fix."""

    field: str
    message: str
    value: Any = _UNSET


class ApiError(Exception):
    """An error response: raise it anywhere in a handler and the app renders it."""

    def __init__(
        self,
        error: ErrorCode,
        *,
        errors: Sequence[FieldError] = (),
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
        **values: Any,
    ) -> None:
        self.error = error
        self.message = error.with_message(**values)
        self.errors = list(errors)
        self.headers = headers or {}
        # Fields added to the body beside the standard ones, such as the existing entity of a 409.
        self.extra = extra
        super().__init__(self.message)

    @property
    def status(self) -> int:
        return self.error.status


def error_body(
    status: int,
    path: str,
    message: str,
    *,
    code: int,
    errors: Sequence[FieldError] = (),
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Build the JSON error body for `status`; used by HTTP handlers and refused sockets alike."""
    body: dict[str, Any] = {
        "statusCode": status,
        "timestamp": isoformat(dt.datetime.now(dt.UTC)),
        "path": path,
        "message": message,
        "error": _STATUS_NAMES.get(status, "Error"),
        "code": code,
    }
    if status == 400:
        body["type"] = "validation_error" if errors else "bad_request"
        body["errors"] = [_field_entry(error) for error in errors]
    elif status == 422:
        grouped: dict[str, dict[str, Any]] = {}
        for error in errors:
            entry = grouped.setdefault(error.field, {"messages": []})
            entry["messages"].append(error.message)
            if error.value is not _UNSET:
                entry["value"] = error.value
        body["errors"] = grouped
    if extra:
        body.update(extra)
    return body


def _field_entry(error: FieldError) -> dict[str, Any]:
    entry: dict[str, Any] = {"field": error.field, "message": error.message}
    if error.value is not _UNSET:
        entry["value"] = error.value
    return entry


def _response(request: Request[Any, Any, Any], error: ApiError) -> Response[Any]:
    body = error_body(
        error.status,
        request.url.path,
        error.message,
        code=error.error.code,
        errors=error.errors,
        extra=error.extra,
    )
    return Response(content=body, status_code=error.status, headers=error.headers)


def handle_api_error(request: Request[Any, Any, Any], exc: ApiError) -> Response[Any]:
    logger.debug("%s %s -> %s: %s", request.method, request.url.path, exc.status, exc.message)
    return _response(request, exc)


def handle_http_exception(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    """Render Litestar's own errors (unknown route, wrong method, body too large) in our shape."""
    status = exc.status_code
    path = request.url.path
    if status == 404:
        error = ApiError(ROUTE_NOT_FOUND, method=request.method, path=path)
    elif status == 405 and path in WEBSOCKET_PATHS:
        error = ApiError(WEBSOCKET_ONLY, path=path, headers={"Upgrade": "websocket", "Connection": "Upgrade"})
    elif status == 405:
        # Litestar puts the route's methods in an Allow header, which a 405 must keep.
        error = ApiError(
            METHOD_NOT_ALLOWED, method=request.method, path=path, headers=dict(exc.headers or {})
        )
    elif status == 413:
        limit = request.app.state.get("max_body_bytes", "the allowed")
        error = ApiError(BODY_TOO_LARGE, limit=limit)
    elif status >= 500:
        return handle_internal_error(request, exc)
    else:
        # Litestar's validation of path and query parameters; its detail names the parameter.
        generic = ErrorCode(status * 100, status, "{detail}")
        detail = exc.detail or _STATUS_NAMES.get(status, "request failed")
        error = ApiError(generic, detail=detail)
    return handle_api_error(request, error)


def handle_internal_error(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    error_id = str(uuid.uuid4())
    logger.error(
        "unhandled error in %s %s, errorId %s",
        request.method,
        request.url.path,
        error_id,
        exc_info=exc,
    )
    body = error_body(
        500,
        request.url.path,
        INTERNAL_ERROR.with_message(error_id=error_id),
        code=INTERNAL_ERROR.code,
        extra={"errorId": error_id},
    )
    return Response(content=body, status_code=500)


EXCEPTION_HANDLERS: dict[Any, Any] = {
    ApiError: handle_api_error,
    HTTPException: handle_http_exception,
    Exception: handle_internal_error,
}
