"""Liquid rendering of message content, with resource limits.

python-liquid never evaluates Python from a template. The limits below stop a
template from looping or growing without bound.
"""

from __future__ import annotations

import functools
from typing import Any, ClassVar

from liquid import Environment
from liquid.exceptions import LiquidError


class TemplateError(Exception):
    """A template that cannot be parsed or rendered; retrying will not help."""


class _LimitedEnvironment(Environment):
    loop_iteration_limit: ClassVar[int | None] = 10_000
    local_namespace_limit: ClassVar[int | None] = 100_000
    output_stream_limit: ClassVar[int | None] = 1_000_000


_plain = _LimitedEnvironment(autoescape=False)


@functools.lru_cache(maxsize=512)
def _parse(source: str) -> Any:
    return _plain.from_string(source)


def compile_template(source: str) -> Any:
    """Parse `source`, raising TemplateError with the parser's message when it is invalid."""
    try:
        return _parse(source)
    except LiquidError as exc:
        raise TemplateError(str(exc)) from exc


def render(source: str | None, variables: dict[str, Any], field: str | None = None) -> str:
    """Render `source` as plain text; a missing variable renders as an empty string.

    A TemplateError names `field`, the control value the template came from, when given.
    """
    if not source:
        return ""
    try:
        return str(compile_template(source).render(**variables))
    except (LiquidError, TemplateError) as exc:
        raise TemplateError(f"{field}: {exc}" if field else str(exc)) from exc
