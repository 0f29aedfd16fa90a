"""Names of everything novulite creates in Redis, all under one prefix per deployment.

Several deployments can share one Redis when each has its own prefix. Keys that a
Lua script touches together carry the same hash tag (the text between the first
`{` and the next `}`), so Redis Cluster stores them in one slot. The tag includes
the prefix, so the queues of different deployments spread over the cluster's slots.
"""

from __future__ import annotations

import re

DEFAULT_PREFIX = "novulite"
# Braces would start a hash tag inside the prefix and put every key in one cluster slot.
PREFIX_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9:._-]{0,63}")
PREFIX_RULE = "1 to 64 characters of letters, digits, ':', '.', '_' or '-', starting with a letter or digit"


def check_prefix(prefix: str) -> str:
    """Return `prefix` if keys can be built on it, else raise ValueError naming the rule."""
    if not PREFIX_PATTERN.fullmatch(prefix):
        raise ValueError(f"the Redis key prefix {prefix!r} is invalid: use {PREFIX_RULE}")
    return prefix


def queue_key(prefix: str, queue: str, kind: str) -> str:
    """Return the key of a queue's list ("queue") or sorted set of delayed entries ("schedule")."""
    return f"{prefix}:{{{prefix}:{queue}}}:{kind}"


def limiter_prefix(prefix: str) -> str:
    """Return the text that starts every limiter key (throttle windows and token buckets)."""
    return f"{prefix}:limiter:"


def realtime_channel(prefix: str) -> str:
    """Return the pub/sub channel that carries realtime inbox events between processes."""
    return f"{prefix}:realtime"
