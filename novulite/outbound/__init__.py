"""Outbound HTTP for workflow steps: which destinations are allowed, and a client that enforces it."""

from novulite.outbound.policy import (
    ALLOW_OPTION,
    ALLOW_SETTING,
    OutboundPolicy,
    OutboundRefused,
    parse_allow_entries,
    policy_for,
    refusal_reason,
    split_allow_setting,
)
from novulite.outbound.transport import GuardedBackend, UnknownHost, guarded_client, resolve

__all__ = [
    "ALLOW_OPTION",
    "ALLOW_SETTING",
    "GuardedBackend",
    "OutboundPolicy",
    "OutboundRefused",
    "UnknownHost",
    "guarded_client",
    "parse_allow_entries",
    "policy_for",
    "refusal_reason",
    "resolve",
    "split_allow_setting",
]
