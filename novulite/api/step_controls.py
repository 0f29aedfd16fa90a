"""Checks of a workflow's step control values and preference defaults when it is saved.

Every Liquid template among the control values is compiled here, so a syntax error
is a 400 on save rather than a failed job later.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from novulite.api.body import json_type
from novulite.engine import conditions
from novulite.engine.preferences import PREFERENCE_CHANNELS
from novulite.engine.steps import delay, digest, http_request, throttle
from novulite.engine.templates import TemplateError, compile_template
from novulite.errors import FieldError

# Step types this server accepts; Novu's other types are rejected when a workflow is saved.
SUPPORTED_STEP_TYPES = (
    "in_app",
    "email",
    "sms",
    "push",
    "chat",
    "delay",
    "digest",
    "throttle",
    "http_request",
)
# Step types that deliver or call out, whose transient failures are retried up to `maxAttempts`.
RETRIED_STEP_TYPES = frozenset({"email", "sms", "push", "chat", "http_request"})
MAX_ATTEMPTS = 10
REDIRECT_TARGETS = ("_self", "_blank", "_parent", "_top", "_unfencedTop")
EDITOR_TYPES = ("block", "html")

Check = Callable[[Any, str, list[FieldError]], None]


def _template(value: Any, field: str, errors: list[FieldError]) -> None:
    if not isinstance(value, str):
        errors.append(FieldError(field, f"must be a string, got {json_type(value)}"))
        return
    try:
        compile_template(value)
    except TemplateError as exc:
        errors.append(FieldError(field, f"is not a valid Liquid template: {exc}"))


def _string(value: Any, field: str, errors: list[FieldError]) -> None:
    if not isinstance(value, str):
        errors.append(FieldError(field, f"must be a string, got {json_type(value)}"))


def _nullable_string(value: Any, field: str, errors: list[FieldError]) -> None:
    if value is not None:
        _string(value, field, errors)


def _boolean(value: Any, field: str, errors: list[FieldError]) -> None:
    if not isinstance(value, bool):
        errors.append(FieldError(field, f"must be true or false, got {json_type(value)}"))


def _editor_type(value: Any, field: str, errors: list[FieldError]) -> None:
    if value not in EDITOR_TYPES:
        errors.append(FieldError(field, f"must be one of {', '.join(EDITOR_TYPES)}", value))


def _object(value: Any, field: str, errors: list[FieldError]) -> bool:
    if isinstance(value, dict):
        return True
    errors.append(FieldError(field, f"must be an object, got {json_type(value)}"))
    return False


def _redirect(value: Any, field: str, errors: list[FieldError]) -> None:
    if not _object(value, field, errors):
        return
    if "url" not in value:
        errors.append(FieldError(f"{field}.url", "is required: the URL to open, a string or a template"))
    else:
        _template(value["url"], f"{field}.url", errors)
    if "target" in value and value["target"] not in REDIRECT_TARGETS:
        errors.append(
            FieldError(f"{field}.target", f"must be one of {', '.join(REDIRECT_TARGETS)}", value["target"])
        )


def _action(value: Any, field: str, errors: list[FieldError]) -> None:
    if not _object(value, field, errors):
        return
    if "label" in value:
        _template(value["label"], f"{field}.label", errors)
    if "redirect" in value:
        _redirect(value["redirect"], f"{field}.redirect", errors)


def _data(value: Any, field: str, errors: list[FieldError]) -> None:
    """Check an in-app `data` object, whose string values are templates rendered at run time."""
    if not _object(value, field, errors):
        return
    for key, item in value.items():
        if isinstance(item, str):
            _template(item, f"{field}.{key}", errors)
        elif isinstance(item, dict):
            _data(item, f"{field}.{key}", errors)


def _sender(value: Any, field: str, errors: list[FieldError]) -> None:
    if not _object(value, field, errors):
        return
    for key in ("email", "name"):
        if key in value:
            _string(value[key], f"{field}.{key}", errors)


def _method(value: Any, field: str, errors: list[FieldError]) -> None:
    if value not in http_request.METHODS:
        errors.append(FieldError(field, f"must be one of {', '.join(http_request.METHODS)}", value))


def _request_url(value: Any, field: str, errors: list[FieldError]) -> None:
    """Check a URL template; a URL without template tags must also be an http(s) URL with a host."""
    count = len(errors)
    _template(value, field, errors)
    if len(errors) > count or "{" in value:
        return
    try:
        url = httpx.URL(value.strip())
    except httpx.InvalidURL:
        url = None
    if url is None or url.scheme not in ("http", "https") or not url.host:
        errors.append(
            FieldError(field, "must be an http or https URL such as https://example.com/hook", value)
        )


def _request_headers(value: Any, field: str, errors: list[FieldError]) -> None:
    if not isinstance(value, list):
        errors.append(
            FieldError(field, f"must be an array of {{key, value}} objects, got {json_type(value)}")
        )
        return
    for index, item in enumerate(value):
        item_field = f"{field}[{index}]"
        if not _object(item, item_field, errors):
            continue
        key = item.get("key")
        if not isinstance(key, str) or not key.strip():
            errors.append(
                FieldError(f"{item_field}.key", "is required: a header name such as X-Api-Key", key)
            )
        elif any(c in key for c in " \t\r\n:"):
            errors.append(
                FieldError(
                    f"{item_field}.key",
                    "is not a valid header name: remove spaces, line breaks and colons, as in X-Api-Key",
                    key,
                )
            )
        elif key.strip().lower() in http_request.RESERVED_HEADERS:
            errors.append(
                FieldError(f"{item_field}.key", "is set by the HTTP client; remove this header", key)
            )
        if "value" not in item:
            errors.append(
                FieldError(f"{item_field}.value", "is required: the header value, a string or a template")
            )
        elif isinstance(item["value"], str) and ("\r" in item["value"] or "\n" in item["value"]):
            errors.append(
                FieldError(f"{item_field}.value", "contains a line break, which a header value cannot hold")
            )
        else:
            _template(item["value"], f"{item_field}.value", errors)


def _request_body(value: Any, field: str, errors: list[FieldError]) -> None:
    """Check a request body: a string template, or an object whose string values are templates."""
    if isinstance(value, str):
        _template(value, field, errors)
    elif isinstance(value, dict):
        for key, item in value.items():
            _request_body_value(item, f"{field}.{key}", errors)
    else:
        errors.append(FieldError(field, f"must be an object or a string, got {json_type(value)}"))


def _request_body_value(value: Any, field: str, errors: list[FieldError]) -> None:
    if isinstance(value, list):
        for index, item in enumerate(value):
            _request_body_value(item, f"{field}[{index}]", errors)
    elif isinstance(value, str | dict):
        _request_body(value, field, errors)


def _timeout(value: Any, field: str, errors: list[FieldError]) -> None:
    limit = http_request.MAX_TIMEOUT_SECONDS
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= limit:
        errors.append(FieldError(field, f"must be a number of seconds above 0 and at most {limit:g}", value))


def _schema_validation(value: Any, field: str, errors: list[FieldError]) -> None:
    _boolean(value, field, errors)
    if value is True:
        errors.append(FieldError(field, "is not supported by this server yet; set it to false", value))


def _response_schema(value: Any, field: str, errors: list[FieldError]) -> None:
    # Stored for Novu clients that send it; responses are not validated against it.
    _object(value, field, errors)


# Control value name -> check, per step type; other control values are stored unchecked.
CONTROL_CHECKS: dict[str, dict[str, Check]] = {
    "in_app": {
        "subject": _template,
        "body": _template,
        "avatar": _template,
        "primaryAction": _action,
        "secondaryAction": _action,
        "redirect": _redirect,
        "data": _data,
        "disableOutputSanitization": _boolean,
    },
    "email": {
        "subject": _template,
        "body": _template,
        "editorType": _editor_type,
        "layoutId": _nullable_string,
        "from": _sender,
        "replyTo": _string,
        "preheader": _template,
        "useProviderDefaults": _boolean,
        "disableOutputSanitization": _boolean,
        "integrationIdentifier": _nullable_string,
    },
    # `timeout` is novulite's own: the seconds an sms provider has to respond.
    "sms": {"body": _template, "integrationIdentifier": _nullable_string, "timeout": _timeout},
    "push": {"subject": _template, "body": _template, "integrationIdentifier": _nullable_string},
    "chat": {"body": _template, "integrationIdentifier": _nullable_string},
    "http_request": {
        "method": _method,
        "url": _request_url,
        "headers": _request_headers,
        "body": _request_body,
        "timeout": _timeout,
        "continueOnFailure": _boolean,
        "enforceSchemaValidation": _schema_validation,
        "responseBodySchema": _response_schema,
    },
    # Delay, digest and throttle controls depend on each other, so STEP_CHECKS checks them together.
    "delay": {},
    "digest": {},
    "throttle": {},
}
# Step type -> a check of all its control values at once, returning (control name, problem) pairs.
STEP_CHECKS: dict[str, Callable[[dict[str, Any]], list[tuple[str, str]]]] = {
    "delay": delay.check_controls,
    "digest": digest.check_controls,
    "http_request": http_request.check_controls,
    "throttle": throttle.check_controls,
}
REQUIRED_CONTROLS = {
    "in_app": {"body": "the message text"},
    "email": {"subject": "the email's subject line"},
    "http_request": {"method": f"one of {', '.join(http_request.METHODS)}", "url": "the URL to call"},
}


def _max_attempts(step_type: str, value: Any, field: str, errors: list[FieldError]) -> None:
    if step_type not in RETRIED_STEP_TYPES:
        types = ", ".join(sorted(RETRIED_STEP_TYPES))
        errors.append(FieldError(field, f"applies only to steps that call out ({types}); remove it", value))
    elif isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_ATTEMPTS:
        problem = f"must be a whole number of attempts from 1 to {MAX_ATTEMPTS}"
        errors.append(FieldError(field, problem, value))


def validate_controls(step_type: str, controls: dict[str, Any], field: str, errors: list[FieldError]) -> None:
    """Check a step's control values for its type, appending one FieldError per problem."""
    for name, check in CONTROL_CHECKS[step_type].items():
        if name in controls and controls[name] is not None:
            check(controls[name], f"{field}.{name}", errors)
    for name, meaning in REQUIRED_CONTROLS.get(step_type, {}).items():
        if not controls.get(name):
            errors.append(FieldError(f"{field}.{name}", f"is required for an {step_type} step: {meaning}"))
    step_check = STEP_CHECKS.get(step_type)
    if step_check is not None:
        errors.extend(FieldError(f"{field}.{name}", problem) for name, problem in step_check(controls))
    if "stopOnFailure" in controls:
        _boolean(controls["stopOnFailure"], f"{field}.stopOnFailure", errors)
    if "maxAttempts" in controls:
        _max_attempts(step_type, controls["maxAttempts"], f"{field}.maxAttempts", errors)
    for path, problem in conditions.check(controls):
        errors.append(FieldError(f"{field}.{path}", problem))


def validate_preferences(value: Any, errors: list[FieldError]) -> dict[str, Any] | None:
    """Check a workflow's `preferences` {user?, workflow?}; return it when valid."""
    if value is None:
        return None
    if not isinstance(value, dict):
        errors.append(
            FieldError("preferences", f"must be an object {{user?, workflow?}}, got {json_type(value)}")
        )
        return None
    count = len(errors)
    for level_name in ("user", "workflow"):
        level = value.get(level_name)
        if level is None:
            continue
        field = f"preferences.{level_name}"
        if not _object(level, field, errors):
            continue
        _preference_level(level, field, errors)
    return value if len(errors) == count else None


def _preference_level(level: dict[str, Any], field: str, errors: list[FieldError]) -> None:
    all_ = level.get("all")
    if all_ is not None and _object(all_, f"{field}.all", errors):
        for flag in ("enabled", "readOnly"):
            if flag in all_:
                _boolean(all_[flag], f"{field}.all.{flag}", errors)
    channels = level.get("channels")
    if channels is None or not _object(channels, f"{field}.channels", errors):
        return
    for channel, setting in channels.items():
        channel_field = f"{field}.channels.{channel}"
        if channel not in PREFERENCE_CHANNELS:
            errors.append(
                FieldError(channel_field, f"is not a channel; use {', '.join(PREFERENCE_CHANNELS)}", channel)
            )
        elif _object(setting, channel_field, errors) and "enabled" in setting:
            _boolean(setting["enabled"], f"{channel_field}.enabled", errors)
