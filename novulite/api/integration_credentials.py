"""Checks on the credentials object of an integration, in the value types novu-py parses."""

from __future__ import annotations

import re
from typing import Any

from novulite.api.body import json_type
from novulite.errors import FieldError
from novulite.integrations import SECRET_CREDENTIALS
from novulite.providers import smtp

# Credential fields whose values are booleans in Novu's CredentialsDto; all other fields are strings,
# except tlsOptions, an object.
BOOLEAN_CREDENTIALS = frozenset(
    {"secure", "requireTls", "ignoreTls", "hmac", "authenticateByToken", "useFromAddressOverride"}
)
OBJECT_CREDENTIALS = frozenset({"tlsOptions"})
EMAIL_PATTERN = re.compile(r"^[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+$")
MAX_PORT = 65535


def check_credentials(value: Any, errors: list[FieldError]) -> dict[str, Any] | None:
    """Return the credentials with null fields left out, or None after adding errors.

    novu-py parses each field into a typed model, so a number where it expects a string would
    break every client that lists integrations. Only `port` may be sent as a number.
    """
    if not isinstance(value, dict):
        errors.append(FieldError("credentials", f"must be an object, got {json_type(value)}"))
        return None
    credentials: dict[str, Any] = {}
    failed = False
    for key, item in value.items():
        if item is None:
            continue
        field = f"credentials.{key}"
        if key in BOOLEAN_CREDENTIALS:
            expected = "a boolean (true or false)"
            valid = isinstance(item, bool)
        elif key in OBJECT_CREDENTIALS:
            expected = "an object"
            valid = isinstance(item, dict)
        elif key == "port":
            expected = f"a port number from 1 to {MAX_PORT}"
            valid = _port_number(item) is not None
            item = str(item) if valid else item
        else:
            expected = "a string"
            valid = isinstance(item, str)
        if not valid:
            problem = f"must be {expected}, got {json_type(item)}"
            # An error body never repeats a secret.
            errors.append(
                FieldError(field, problem) if key in SECRET_CREDENTIALS else FieldError(field, problem, item)
            )
            failed = True
        credentials[key] = item
    return None if failed else credentials


def _port_number(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, int) and 1 <= value <= MAX_PORT:
        return value
    return None


def check_smtp(credentials: dict[str, Any], active: bool, errors: list[FieldError]) -> None:
    """Check what the smtp provider needs to send; required fields only matter once it is active."""
    host = credentials.get("host")
    if host is not None and not host.strip():
        errors.append(FieldError("credentials.host", "must be the SMTP server's host name, not empty", host))
    elif host is None and active:
        errors.append(
            FieldError(
                "credentials.host", "is required: the SMTP server's host name, such as smtp.example.com"
            )
        )
    sender = credentials.get("from")
    if sender is not None and not EMAIL_PATTERN.match(sender):
        errors.append(
            FieldError("credentials.from", "must be an email address such as alerts@example.com", sender)
        )
    elif sender is None and active:
        errors.append(
            FieldError(
                "credentials.from", "is required: the sender's email address, such as alerts@example.com"
            )
        )
    if credentials.get("requireTls") and credentials.get("ignoreTls"):
        errors.append(
            FieldError(
                "credentials.ignoreTls",
                "cannot be true together with requireTls; set only requireTls to insist on STARTTLS",
                True,
            )
        )
    try:
        smtp.read_ca_certificates(credentials.get("tlsOptions"))
    except smtp.SmtpSettingsError as exc:
        errors.append(FieldError(exc.field, exc.problem))
    if "password" in credentials and not credentials.get("user"):
        errors.append(FieldError("credentials.user", "is required with password: the SMTP login name"))
