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
# Output statements are HTML-escaped, but the template's own text and string literals are not.
_html = _LimitedEnvironment(autoescape=True)


@functools.lru_cache(maxsize=512)
def _parse(source: str, escape_html: bool = False) -> Any:
    return (_html if escape_html else _plain).from_string(source)


def compile_template(source: str, escape_html: bool = False) -> Any:
    """Parse `source`, raising TemplateError with the parser's message when it is invalid."""
    try:
        return _parse(source, escape_html)
    except LiquidError as exc:
        raise TemplateError(str(exc)) from exc


def render(
    source: str | None, variables: dict[str, Any], field: str | None = None, *, escape_html: bool = False
) -> str:
    """Render `source` as plain text; a missing variable renders as an empty string.

    With `escape_html`, the values that variables insert are HTML-escaped, for HTML bodies only.
    A TemplateError names `field`, the control value the template came from, when given.
    """
    if not source:
        return ""
    try:
        return str(compile_template(source, escape_html).render(**variables))
    except (LiquidError, TemplateError) as exc:
        raise TemplateError(f"{field}: {exc}" if field else str(exc)) from exc
