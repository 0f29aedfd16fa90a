"""Chat webhook formats: the escaping of inserted values, and the JSON body each webhook accepts.

An escape function makes a value that a template inserts show as typed, so that a
subscriber's name or a payload field cannot add formatting, links or mentions. The
template's own text is never escaped (see novulite.engine.templates).
"""

from __future__ import annotations

import re
from typing import Any

# Discord: user mentions written in the template notify; @everyone, @here and role mentions never do.
DISCORD_ALLOWED_MENTIONS: dict[str, Any] = {"parse": ["users"]}
# Discord rejects a message whose content is longer than this.
DISCORD_MAX_CONTENT = 2000
ADAPTIVE_CARD_TYPE = "application/vnd.microsoft.card.adaptive"
# The Adaptive Card schema version that the card declares.
ADAPTIVE_CARD_VERSION = "1.4"

# A backslash makes Discord show a markdown character as typed, so every character that starts
# formatting, a link, a mention (<@id>, @everyone) or a timestamp (<t:...>) gets one.
_DISCORD_SPECIALS = re.compile(r"([\\*_~`|<>#\-\[\]()@])")
# CommonMark punctuation that Mattermost's and Teams' markdown give a meaning, and & that starts an entity.
_MARKDOWN_SPECIALS = re.compile(r"([\\*_~`|<>#\-+!\[\]()&])")
# "1." at the start of a line starts an ordered list; the dot is escaped in values.
_ORDERED_LIST = re.compile(r"(?m)^(\s*\d+)\.")
# An @ that starts a word, as in @channel or @all; addresses such as a@example.com are left alone.
_WORD_START_AT = re.compile(r"(?<![\w.+-])@(?=\w)")
ZERO_WIDTH_SPACE = "\u200b"


def escape_slack(value: str) -> str:
    """Escape a value for Slack mrkdwn: &, < and > as entities, so no link, mention or <!here> forms.

    Slack has no escape for *, _ and ~, so those still format; see docs/channels/chat.md.
    """
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def escape_discord(value: str) -> str:
    """Escape a value for Discord markdown with a backslash before each character that formats."""
    return _ORDERED_LIST.sub(r"\1\\.", _DISCORD_SPECIALS.sub(r"\\\1", value))


def escape_mattermost(value: str) -> str:
    """Escape a value for Mattermost markdown, and keep @channel, @all and @here from notifying.

    Mattermost looks for mentions in the message text apart from its markdown, so a backslash
    is not relied on there: a zero-width space after the @ breaks the mention word instead.
    NOTE: not checked against a Mattermost server.
    """
    escaped = _ORDERED_LIST.sub(r"\1\\.", _MARKDOWN_SPECIALS.sub(r"\\\1", value))
    return _WORD_START_AT.sub("@" + ZERO_WIDTH_SPACE, escaped)


def escape_teams(value: str) -> str:
    """Escape a value for the markdown of an Adaptive Card TextBlock, which has no HTML.

    NOTE: the escapes follow CommonMark's backslash escapes and are not checked against a Teams client.
    """
    return _ORDERED_LIST.sub(r"\1\\.", _MARKDOWN_SPECIALS.sub(r"\\\1", value))


def slack_body(content: str) -> dict[str, Any]:
    return {"text": content}


def discord_body(content: str) -> dict[str, Any]:
    return {"content": content, "allowed_mentions": DISCORD_ALLOWED_MENTIONS}


def teams_body(content: str) -> dict[str, Any]:
    """Return a message with one Adaptive Card, which Teams incoming webhooks and Workflows accept."""
    card = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": ADAPTIVE_CARD_VERSION,
        "body": [{"type": "TextBlock", "text": content, "wrap": True}],
    }
    return {
        "type": "message",
        "attachments": [{"contentType": ADAPTIVE_CARD_TYPE, "contentUrl": None, "content": card}],
    }


def mattermost_body(content: str) -> dict[str, Any]:
    return {"text": content}
