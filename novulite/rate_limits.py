"""API rate limit settings: one token bucket per API key and category, parsed from the command line.

A category's bucket contains up to `capacity` tokens and refills at `refill_per_second`. A request
costs 1 token, and a bulk trigger costs one token per event unless a fixed bulk cost is set.
"""

from __future__ import annotations

import dataclasses
import math

CATEGORIES = ("trigger", "configuration", "global")

# The defaults follow Novu Cloud's business tier (@novu/shared, DEFAULT_API_RATE_LIMIT_SERVICE_MAXIMUM_CONFIG
# and DEFAULT_API_RATE_LIMIT_ALGORITHM_CONFIG): 600, 200 and 300 requests per second over a 5 s
# window with a 10 % burst allowance, so each bucket contains 5.5 seconds' worth of requests.
DEFAULT_REFILL = {"trigger": 600.0, "configuration": 200.0, "global": 300.0}
DEFAULT_CAPACITY = {"trigger": 3300, "configuration": 1100, "global": 1650}

SPEC_HELP = (
    "API rate limits per API key: 'off', 'on' for the defaults "
    "(trigger=3300:600,configuration=1100:200,global=1650:300), or a comma-separated list of "
    "CATEGORY=CAPACITY:REFILL, where CAPACITY is the bucket size in tokens (a request costs one) "
    "and REFILL the tokens added back per second; categories left out keep their defaults. Categories: "
    "trigger (POST /v1/events/trigger, /bulk, /broadcast), configuration (creating, changing "
    "or deleting workflows, subscribers, topics, preferences and subscriptions) and global "
    "(every other API-key request). Off by default, because the limiter call on every request "
    "takes about 40 us on SQLite and 100 us or more on Redis, a fifth or more of what a trigger "
    "request costs (bench/timing_limiter.py)."
)
BULK_COST_HELP = (
    "Cost of POST /v1/events/trigger/bulk against the trigger bucket: 'events' for one token per "
    "event, or a whole number of tokens per request. A fixed cost above the trigger capacity is "
    "rejected at start."
)


@dataclasses.dataclass(frozen=True)
class Bucket:
    capacity: int  # tokens, the largest burst
    refill_per_second: float

    @property
    def policy_window(self) -> int:
        """Return the shortest window, in whole seconds, that refills a whole number of tokens.

        RateLimit-Policy states the limit as a whole number of requests per window.
        """
        for seconds in range(1, 3601):
            if abs(self.refill_per_second * seconds - round(self.refill_per_second * seconds)) < 1e-9:
                return seconds
        return 1

    @property
    def window_limit(self) -> int:
        return max(1, round(self.refill_per_second * self.policy_window))


@dataclasses.dataclass(frozen=True)
class RateLimits:
    buckets: dict[str, Bucket]
    # Tokens per bulk trigger request; None charges one token per event.
    bulk_cost: int | None = None

    def describe(self) -> str:
        parts = [
            f"{category}={bucket.capacity}:{bucket.refill_per_second:g}"
            for category, bucket in self.buckets.items()
        ]
        bulk = "one token per event" if self.bulk_cost is None else f"{self.bulk_cost} tokens"
        return f"{','.join(parts)}, bulk trigger cost {bulk}"


def parse_rate_limits(spec: str, bulk_cost: str = "events") -> RateLimits | None:
    """Parse the --rate-limits and --rate-limit-bulk-cost values; None means rate limits are off.

    Raises ValueError naming the invalid part, or a bulk cost that the trigger bucket can never hold.
    """
    text = spec.strip().lower()
    if text in ("", "off"):
        return None
    buckets = {
        category: Bucket(DEFAULT_CAPACITY[category], DEFAULT_REFILL[category]) for category in CATEGORIES
    }
    if text != "on":
        for item in text.split(","):
            category, bucket = _parse_item(item.strip())
            buckets[category] = bucket
    cost = _parse_bulk_cost(bulk_cost)
    trigger = buckets["trigger"]
    if cost is not None and cost > trigger.capacity:
        raise ValueError(
            f"the bulk trigger cost {cost} exceeds the trigger capacity {trigger.capacity}, so every "
            f"bulk trigger would be rejected; raise the trigger capacity to at least {cost} or lower "
            "the bulk cost"
        )
    return RateLimits(buckets, cost)


def _parse_item(item: str) -> tuple[str, Bucket]:
    category, _, value = item.partition("=")
    category = category.strip()
    if category not in CATEGORIES:
        raise ValueError(f"unknown category {category!r} in {item!r}; use {', '.join(CATEGORIES)}")
    capacity_text, _, refill_text = value.partition(":")
    try:
        capacity = int(capacity_text)
        refill = float(refill_text)
    except ValueError:
        raise ValueError(
            f"{item!r} must be {category}=CAPACITY:REFILL, such as {category}=100:20 "
            "(a bucket of 100 requests that refills 20 per second)"
        ) from None
    if capacity < 1:
        raise ValueError(f"the {category} capacity must be at least 1 request, got {capacity}")
    if not (refill > 0 and math.isfinite(refill)):
        raise ValueError(f"the {category} refill must be a positive number per second, got {refill_text!r}")
    return category, Bucket(capacity, refill)


def _parse_bulk_cost(text: str) -> int | None:
    value = text.strip().lower()
    if value == "events":
        return None
    try:
        cost = int(value)
    except ValueError:
        raise ValueError(
            f"the bulk cost must be 'events' or a whole number of tokens, got {text!r}"
        ) from None
    if cost < 1:
        raise ValueError(f"the bulk cost must be at least 1 token, got {cost}")
    return cost
