"""The interface of a provider module: the channels it delivers, and how it prepares a delivery."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from novulite.engine.steps.base import ExternalCall, StepContext, StepResult
from novulite.errors import FieldError

# Builds the delivery of a claimed job from its context and the integration row: an ExternalCall
# that sends, or a StepResult such as a skip. Runs inside the job store's transaction.
Prepare = Callable[[StepContext, Any], StepResult | ExternalCall]
# Adds a FieldError per problem in `credentials`. Required fields must be set only when `active` is true.
CheckCredentials = Callable[[dict[str, Any], bool, list[FieldError]], None]


@dataclasses.dataclass(frozen=True)
class Provider:
    """A way to deliver some channels, named by the provider id an integration carries."""

    channels: frozenset[str]
    prepare: Prepare
    check_credentials: CheckCredentials | None = None
