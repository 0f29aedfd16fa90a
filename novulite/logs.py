"""Log line formats (text, JSON, key=value) and the redaction of secrets that applies to all of them."""

from __future__ import annotations

import datetime
import json
import logging
import re
from collections.abc import Mapping
from typing import Any

LOG_FORMATS = ("text", "json", "kv")
REDACTED = "[redacted]"

# Dictionary keys and query parameters whose values are secrets, matched case-insensitively at the
# end of the name, so that `adminPassword`, `client_secret`, `access_token` and `apiKey` match too.
_SECRET_NAME = r"[\w.-]*(?:password|passwd|secret|token|api[_-]?key|authorization)"
_SECRET_KEY = re.compile(rf"^{_SECRET_NAME}$", re.IGNORECASE)
_TEXT_PATTERNS = (
    # The credentials of an Authorization header: `ApiKey ...`, `Bearer ...`, `Basic ...`. This runs
    # first, so that the next pattern cannot take the scheme name for the secret after `Authorization:`.
    (re.compile(r"(?i)\b(ApiKey|Bearer|Basic)\s+(?!\[redacted\])[\w.~+/=-]{8,}"), rf"\1 {REDACTED}"),
    # A secret after its name: `token=...` in a query string, `"password": "..."` in JSON or a dict's repr.
    (
        re.compile(
            rf"(?i)(\b{_SECRET_NAME}[\"']?\s*[:=]\s*[\"']?)(?!\[redacted\]|(?:ApiKey|Bearer|Basic)\s+\[redacted\])[^\"'\s,&;}}]+"
        ),
        rf"\1{REDACTED}",
    ),
    # The password of a URL such as redis://:PASSWORD@host or smtp://user:PASSWORD@host, unless
    # novulite.limiter.connect.redact_url already replaced it with ***.
    (re.compile(r"(\b[a-zA-Z][\w+.-]*://[^\s/:@]*:)(?!\*\*\*@)[^\s/@]+@"), rf"\1{REDACTED}@"),
    # The same URL percent-encoded in a query string, as uvicorn logs it: redis%3A%2F%2F%3APASSWORD%40host.
    (
        re.compile(r"(?i)(\b[a-z][\w+.-]*%3A%2F%2F(?:(?!%3A|%40|%2F)[^\s&])*%3A)(?:(?!%40)[^\s&])+%40"),
        rf"\1{REDACTED}%40",
    ),
)


def redact_text(text: str) -> str:
    """Replace every secret that the patterns above recognise in `text`."""
    for pattern, replacement in _TEXT_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def redact_value(value: Any) -> Any:
    """Return a copy of `value` whose dictionaries show REDACTED under secret keys, at any depth."""
    if isinstance(value, Mapping):
        return {
            key: REDACTED if isinstance(key, str) and _SECRET_KEY.match(key) else redact_value(item)
            for key, item in value.items()
        }
    if isinstance(value, (list, tuple)):
        return type(value)(redact_value(item) for item in value)
    return value


class RedactSecrets(logging.Filter):
    """Rewrite a record's message with its secrets redacted, before any handler formats it.

    This covers inbox session tokens that uvicorn logs in each WebSocket URL (`/ws?token=...`),
    API keys in Authorization headers, passwords in URLs and values under secret keys in logged dicts.
    NOTE: redaction matches names and URL forms, so a secret logged bare, as in `logger.info("%s", key)`,
    passes unchanged.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            if isinstance(record.args, Mapping):
                record.args = redact_value(record.args)
            else:
                record.args = tuple(redact_value(arg) for arg in record.args)
        elif isinstance(record.msg, (Mapping, list, tuple)):
            record.msg = redact_value(record.msg)
        message = record.getMessage()
        record.msg = redact_text(message)
        record.args = None
        return True


def _timestamp(record: logging.LogRecord) -> str:
    moment = datetime.datetime.fromtimestamp(record.created, tz=datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class _RedactingFormatter(logging.Formatter):
    """A formatter that redacts tracebacks and stacks too, since an exception's message may contain a URL."""

    def formatException(self, ei: Any) -> str:
        return redact_text(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:
        return redact_text(super().formatStack(stack_info))

    def exception_text(self, record: logging.LogRecord) -> str | None:
        parts = []
        if record.exc_info:
            parts.append(self.formatException(record.exc_info))
        if record.stack_info:
            parts.append(self.formatStack(record.stack_info))
        return "\n".join(parts) or None


class TextFormatter(_RedactingFormatter):
    """`2026-01-01 12:00:00,000 INFO novulite: message`, the format of earlier versions."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")


class JsonFormatter(_RedactingFormatter):
    """One JSON object per line with time (UTC, ISO 8601), level, logger, message and exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "message": redact_text(record.getMessage()),
            "exception": self.exception_text(record),
        }
        return json.dumps(entry, ensure_ascii=False, default=str)


class KeyValueFormatter(_RedactingFormatter):
    """`time=... level=... logger=... msg="..."` (logfmt), with `exception="..."` after an error.

    Quoted values use JSON string escapes, so a newline in a message stays on one line.
    """

    def format(self, record: logging.LogRecord) -> str:
        fields = [
            f"time={_timestamp(record)}",
            f"level={record.levelname}",
            f"logger={_quote_if_needed(record.name)}",
            f"msg={json.dumps(redact_text(record.getMessage()), ensure_ascii=False)}",
        ]
        exception = self.exception_text(record)
        if exception is not None:
            fields.append(f"exception={json.dumps(exception, ensure_ascii=False)}")
        return " ".join(fields)


def _quote_if_needed(value: str) -> str:
    if value and not re.search(r"[\s=\"]", value):
        return value
    return json.dumps(value, ensure_ascii=False)


def formatter_for(log_format: str) -> logging.Formatter:
    """Return the formatter for a value of --log-format; raise ValueError for any other value."""
    if log_format == "text":
        return TextFormatter()
    if log_format == "json":
        return JsonFormatter()
    if log_format == "kv":
        return KeyValueFormatter()
    raise ValueError(f"invalid log format {log_format!r}; expected one of {', '.join(LOG_FORMATS)}")
