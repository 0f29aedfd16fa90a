"""SMS over HTTP: Twilio's Messages API, and Novu's generic SMS provider for any JSON endpoint.

Both send the step's `body` control, rendered as plain text, to the subscriber's
`phone`, through providers.http, so they share its retry rules and send the job's
id as `Idempotency-Key`.

- `twilio` posts a form to {baseUrl}/2010-04-01/Accounts/{accountSid}/Messages.json
  with HTTP Basic auth (accountSid and token). `baseUrl` defaults to Twilio's API,
  and may name any service that implements the same endpoint.
- `generic-sms` posts JSON `{"to", "content", "from", "sender"}` to `baseUrl`, with
  the API key (and the secret key, when set) in the headers the integration names.
  With `authenticateByToken`, it first posts those headers to the URL in `domain`
  and sends the token found under data.{authenticationTokenKey} of that response
  in a header of that name. `idPath` and `datePath` are dotted paths to the message
  id and date in the response.

Credentials never appear in details, errors or logs; URLs in them are shown
without their path, query or user info (see http.shown_url).
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import json
import re
import urllib.parse
from typing import Any

import httpx

from novulite.engine.context import WorkerContext
from novulite.engine.steps import delivery
from novulite.engine.steps.base import (
    ExternalCall,
    PermanentStepError,
    StepContext,
    StepResult,
    TransientStepError,
)
from novulite.engine.templates import render
from novulite.errors import FieldError
from novulite.providers import http
from novulite.providers.base import Provider

TWILIO = "twilio"
GENERIC_SMS = "generic-sms"
TWILIO_BASE_URL = "https://api.twilio.com"
# Twilio account SIDs are "AC" and 32 hex digits; a compatible service may use any URL-safe id.
ACCOUNT_SID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# A plausible international number: an optional "+", then 7 to 15 digits not starting with 0
# (E.164 allows at most 15). Spaces, dots, dashes and brackets between digits are dropped first.
PHONE_PATTERN = re.compile(r"^\+?[1-9][0-9]{6,14}$")
PHONE_SEPARATORS = re.compile(r"[\s.()\-]")
HEADER_NAME_PATTERN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
# Visible ASCII, spaces and tabs: a line break or other control character would end the header.
HEADER_VALUE_PATTERN = re.compile(r"^[\t\x20-\x7e]+$")


@dataclasses.dataclass(frozen=True)
class _Send:
    provider: str
    request: http.ProviderRequest
    # A request to run first whose response contains the token for `request`, for generic-sms.
    token_request: http.ProviderRequest | None
    token_key: str
    id_path: str
    date_path: str
    to: str
    # The message row, without the status and times that the send decides.
    row: dict[str, Any]


def prepare(ctx: StepContext, integration: Any) -> StepResult | ExternalCall:
    """Build the send of an sms step, or skip it when the subscriber has no phone number."""
    provider = integration.provider_id
    phone = str(ctx.subscriber.phone or "").strip()
    if not phone:
        return delivery.skipped("sms", "the subscriber has no phone number", kind="recipient")
    to = phone_number(phone)
    content = render(ctx.controls.get("body"), ctx.variables, "body")
    if not content.strip():
        raise PermanentStepError("body: the rendered message is empty; set the step's body control")
    credentials = dict(integration.credentials or {})
    timeout = _timeout(ctx.controls)
    try:
        if provider == TWILIO:
            send = _twilio(ctx, credentials, to, content, timeout)
        else:
            send = _generic(ctx, credentials, to, content, timeout)
    except ValueError as exc:
        raise PermanentStepError(f"integration {integration.identifier}: {exc}", provider=provider) from exc
    send = dataclasses.replace(send, row=delivery.channel_row(ctx, provider, content))
    max_seconds = send.request.max_seconds + (send.token_request.max_seconds if send.token_request else 0)
    return ExternalCall(
        perform=functools.partial(_perform, send), max_seconds=max_seconds, failure_row=send.row
    )


def phone_number(value: str) -> str:
    """Return `value` without separators, or raise PermanentStepError when it is not a plausible number."""
    compact = PHONE_SEPARATORS.sub("", value)
    if not PHONE_PATTERN.match(compact):
        raise PermanentStepError(
            f"subscriber.phone: {value!r} is not a valid phone number; store it in E.164 form, "
            "such as +15551234567",
            field="subscriber.phone",
        )
    return compact


def _timeout(controls: dict[str, Any]) -> float:
    value = controls.get("timeout")
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return float(value)
    return http.DEFAULT_TIMEOUT_SECONDS


def _required(credentials: dict[str, Any], key: str, meaning: str) -> str:
    value = str(credentials.get(key) or "").strip()
    if not value:
        raise ValueError(f"credentials.{key} is missing: set {meaning}")
    return value


def _twilio(ctx: StepContext, credentials: dict[str, Any], to: str, content: str, timeout: float) -> _Send:
    account_sid = _required(credentials, "accountSid", "the account SID")
    token = _required(credentials, "token", "the auth token")
    sender = _required(credentials, "from", "the sender's phone number or sender id")
    base_url = str(credentials.get("baseUrl") or "").strip() or TWILIO_BASE_URL
    if not ACCOUNT_SID_PATTERN.match(account_sid):
        raise ValueError("credentials.accountSid may contain only letters, digits, '-' and '_'")
    url = f"{base_url.rstrip('/')}/2010-04-01/Accounts/{account_sid}/Messages.json"
    form = urllib.parse.urlencode({"To": to, "From": sender, "Body": content}).encode()
    basic = base64.b64encode(f"{account_sid}:{token}".encode()).decode()
    request = http.post(
        TWILIO,
        url,
        form,
        "application/x-www-form-urlencoded",
        ctx.job.id,
        headers=[("Authorization", f"Basic {basic}"), ("Accept", "application/json")],
        timeout=timeout,
    )
    return _Send(TWILIO, request, None, "", "sid", "date_created", to, {})


def _generic(ctx: StepContext, credentials: dict[str, Any], to: str, content: str, timeout: float) -> _Send:
    base_url = _required(credentials, "baseUrl", "the URL that sends a message")
    sender = _required(credentials, "from", "the sender's phone number or sender id")
    headers = _key_headers(credentials)
    body = {"to": to, "content": content, "from": sender, "sender": sender}
    token_request = None
    token_key = ""
    if credentials.get("authenticateByToken") is True:
        token_key = _required(
            credentials, "authenticationTokenKey", "the name of the token in the authentication response"
        )
        auth_url = _required(credentials, "domain", "the URL that returns an authentication token")
        token_request = http.post(
            GENERIC_SMS, auth_url, b"", "application/json", ctx.job.id, headers=headers, timeout=timeout
        )
    request = http.json_request(GENERIC_SMS, base_url, body, ctx.job.id, headers=headers, timeout=timeout)
    id_path = str(credentials.get("idPath") or "").strip() or "id"
    date_path = str(credentials.get("datePath") or "").strip() or "date"
    return _Send(GENERIC_SMS, request, token_request, token_key, id_path, date_path, to, {})


def _key_headers(credentials: dict[str, Any]) -> list[tuple[str, str]]:
    """Return the API key header, and the secret key header when both its name and value are set."""
    pairs = [("apiKeyRequestHeader", "apiKey")]
    if str(credentials.get("secretKeyRequestHeader") or "").strip() and credentials.get("secretKey"):
        pairs.append(("secretKeyRequestHeader", "secretKey"))
    headers = []
    for name_key, value_key in pairs:
        name = _required(credentials, name_key, "the name of the header that carries the key")
        value = _required(credentials, value_key, "the key")
        if not HEADER_NAME_PATTERN.match(name):
            raise ValueError(f"credentials.{name_key} {name!r} is not a valid header name")
        if not HEADER_VALUE_PATTERN.match(value):
            # The value is a secret, so the error names the field only.
            raise ValueError(f"credentials.{value_key} contains a character a header cannot hold")
        headers.append((name, value))
    return headers


def _perform(send: _Send, worker: WorkerContext) -> StepResult:
    request = send.request
    if send.token_request is not None:
        token = _fetch_token(send, worker)
        headers = [*request.request.headers, (send.token_key, token)]
        request = dataclasses.replace(request, request=dataclasses.replace(request.request, headers=headers))
    response = http.deliver(worker, request)
    body = _json_object(response.body)
    message_id = lookup(body, send.id_path)
    sent_at = lookup(body, send.date_path)
    now = worker.clock.now()
    raw: dict[str, Any] = {"provider": send.provider, "status": response.status, "messageId": message_id}
    if sent_at is not None:
        raw["date"] = sent_at
    return delivery.delivered(
        send.row,
        now,
        f"SMS sent through {send.provider}",
        {"provider": send.provider, "messageId": message_id, "to": send.to, "status": response.status},
        raw,
    )


def _fetch_token(send: _Send, worker: WorkerContext) -> str:
    """Post the key headers to the authentication URL and return the token in its response."""
    assert send.token_request is not None
    try:
        response = http.deliver(worker, send.token_request)
    except http.OutcomeUnknownError as exc:
        # No message has been sent yet, so a lost token response is safe to retry.
        raise TransientStepError(f"authentication request: {exc}", **exc.info) from exc
    data = _json_object(response.body).get("data")
    token = data.get(send.token_key) if isinstance(data, dict) else None
    if not isinstance(token, str) or not HEADER_VALUE_PATTERN.match(token):
        raise PermanentStepError(
            f"{send.provider}: the authentication response has no token that fits in a header "
            f"at data.{send.token_key}",
            provider=send.provider,
            status=response.status,
        )
    return token


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        parsed = json.loads(body) if body else None
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def lookup(data: dict[str, Any], path: str) -> str | None:
    """Return the value at a dotted `path` of `data` as text, or None where the path ends early."""
    current: Any = data
    for segment in path.split("."):
        if not isinstance(current, dict) or current.get(segment) is None:
            return None
        current = current[segment]
    if isinstance(current, dict | list):
        return json.dumps(current)
    return str(current)


def check_credentials(
    provider: str, credentials: dict[str, Any], active: bool, errors: list[FieldError]
) -> None:
    """Add a FieldError per credential that cannot send; required ones only matter when `active`."""
    required = {
        TWILIO: {
            "accountSid": "the account SID, such as AC0123...",
            "token": "the auth token",
            "from": "the sender's phone number, such as +15551234567",
        },
        GENERIC_SMS: {
            "baseUrl": "the URL that sends a message, such as https://sms.example.com/send",
            "apiKeyRequestHeader": "the header that carries the API key, such as X-Api-Key",
            "apiKey": "the API key",
            "from": "the sender's phone number or sender id",
        },
    }[provider]
    if provider == GENERIC_SMS and credentials.get("authenticateByToken") is True:
        required["domain"] = "the URL that returns an authentication token"
        required["authenticationTokenKey"] = "the name of the token in the authentication response"
    for key, meaning in required.items():
        value = credentials.get(key)
        if active and (value is None or (isinstance(value, str) and not value.strip())):
            errors.append(FieldError(f"credentials.{key}", f"is required: {meaning}"))
    for key in ("baseUrl", "domain"):
        _check_url(credentials.get(key), f"credentials.{key}", errors)
    sid = credentials.get("accountSid")
    if (
        provider == TWILIO
        and isinstance(sid, str)
        and sid.strip()
        and not ACCOUNT_SID_PATTERN.match(sid.strip())
    ):
        errors.append(
            FieldError("credentials.accountSid", "may contain only letters, digits, '-' and '_'", sid)
        )
    for key in ("apiKey", "secretKey"):
        value = credentials.get(key)
        if isinstance(value, str) and value and not HEADER_VALUE_PATTERN.match(value):
            errors.append(FieldError(f"credentials.{key}", "contains a character a header cannot hold"))
    for key in ("apiKeyRequestHeader", "secretKeyRequestHeader", "authenticationTokenKey"):
        name = credentials.get(key)
        if isinstance(name, str) and name.strip() and not HEADER_NAME_PATTERN.match(name.strip()):
            errors.append(
                FieldError(f"credentials.{key}", "must be a valid header name such as X-Api-Key", name)
            )


def _check_url(value: Any, field: str, errors: list[FieldError]) -> None:
    if not isinstance(value, str) or not value.strip():
        return
    try:
        url = httpx.URL(value.strip())
    except httpx.InvalidURL:
        url = None
    if url is None or url.scheme not in ("http", "https") or not url.host:
        errors.append(
            FieldError(
                field, "must be an http or https URL such as https://sms.example.com", http.shown_url(value)
            )
        )


PROVIDERS = {
    TWILIO: Provider(frozenset({"sms"}), prepare, functools.partial(check_credentials, TWILIO)),
    GENERIC_SMS: Provider(frozenset({"sms"}), prepare, functools.partial(check_credentials, GENERIC_SMS)),
}
