"""Email attachments from a trigger's `payload.attachments`, in the shape Novu's trigger API takes.

Each entry is an object with `file`, the content in base64, `name`, the file name the
recipient sees, and `mime`, its media type (application/octet-stream when left out).
An entry whose optional `channels` list leaves out "email" is meant for another
channel and is skipped. Novu's `cid` and `disposition` keys are ignored, so every
file is a regular attachment.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import re
from typing import Any

FIELD = "payload.attachments"
# Decoded bytes of all of one message's attachments. Request bodies are limited to 2 MiB,
# so base64 content can only carry about 1.5 MiB, and this limit is below that.
MAX_TOTAL_BYTES = 1024 * 1024
_MEDIA_TYPE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*$")
_WHITESPACE = re.compile(r"\s+")
DEFAULT_MEDIA_TYPE = "application/octet-stream"


class AttachmentError(ValueError):
    """An invalid entry of payload.attachments, with a message that starts with the field's path."""


@dataclasses.dataclass(frozen=True)
class Attachment:
    name: str
    media_type: str
    content: bytes


def read_attachments(value: Any) -> list[Attachment]:
    """Decode the email attachments in `value`, the trigger's payload.attachments (None when absent)."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise AttachmentError(f"{FIELD} must be a list of {{file, name, mime}} objects")
    attachments: list[Attachment] = []
    total = 0
    for index, entry in enumerate(value):
        field = f"{FIELD}[{index}]"
        if not isinstance(entry, dict):
            raise AttachmentError(f"{field} must be an object with file (base64), name and mime")
        if not _for_email(entry.get("channels"), field):
            continue
        attachment = _read_entry(entry, field)
        total += len(attachment.content)
        if total > MAX_TOTAL_BYTES:
            raise AttachmentError(
                f"{FIELD}: the attachments add up to more than {MAX_TOTAL_BYTES} bytes "
                f"(the maximum per email) at {field}; send a link to large files instead"
            )
        attachments.append(attachment)
    return attachments


def _for_email(channels: Any, field: str) -> bool:
    if channels is None:
        return True
    if not isinstance(channels, list) or not all(isinstance(channel, str) for channel in channels):
        raise AttachmentError(f'{field}.channels must be a list of channel names such as ["email"]')
    return "email" in channels


def _read_entry(entry: dict[str, Any], field: str) -> Attachment:
    name = entry.get("name")
    if not isinstance(name, str) or not name.strip():
        raise AttachmentError(
            f"{field}.name is missing: set the file name shown to the recipient, such as invoice.pdf"
        )
    if any(ord(character) < 32 or ord(character) == 127 for character in name):
        raise AttachmentError(f"{field}.name must not contain control characters such as line breaks")

    media_type = entry.get("mime")
    if media_type is None or media_type == "":
        media_type = DEFAULT_MEDIA_TYPE
    if not isinstance(media_type, str) or not _MEDIA_TYPE.match(media_type.strip()):
        raise AttachmentError(
            f"{field}.mime must be a media type such as application/pdf, got {media_type!r}"
        )

    media_type = media_type.strip().lower()
    if media_type.startswith(("multipart/", "message/")):
        # MIME does not allow base64 content in multipart and message parts.
        raise AttachmentError(
            f"{field}.mime {media_type!r} is not allowed for an attachment; "
            "use the file's own type or application/octet-stream"
        )

    encoded = entry.get("file")
    if not isinstance(encoded, str) or not encoded.strip():
        raise AttachmentError(f"{field}.file is missing: set the file's content, encoded in base64")
    try:
        # Line breaks, as in MIME's 76-character lines, are allowed, but other non-base64 characters are not.
        content = base64.b64decode(_WHITESPACE.sub("", encoded), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise AttachmentError(
            f"{field}.file is not valid base64 ({exc}), so encode the file's bytes in base64"
        ) from exc
    return Attachment(name=name.strip(), media_type=media_type, content=content)
