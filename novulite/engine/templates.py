"""Liquid rendering of message content, with resource limits.

python-liquid never evaluates Python from a template. The limits below stop a
template from looping or growing without bound.

Content in a markup format escapes what variables insert, so a value cannot add
markup, links or mentions, while the template's own text keeps its markup. HTML
uses python-liquid's autoescape. Other formats, such as Slack's mrkdwn, pass an
escape function to `render`: see `_FormatEnvironment`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, TextIO

from liquid import Environment
from liquid.builtin.expressions import FilteredExpression, StringLiteral
from liquid.builtin.output import Output, OutputNode
from liquid.builtin.tags.capture_tag import CaptureNode, CaptureTag
from liquid.builtin.tags.echo_tag import EchoNode, EchoTag
from liquid.exceptions import LiquidError
from liquid.filter import string_filter
from liquid.stringify import to_liquid_string

if TYPE_CHECKING:
    from io import StringIO

    from liquid.context import RenderContext

# Escapes one inserted value for a markup format, such as `&` to `&amp;` for Slack.
Escape = Callable[[str], str]


class TemplateError(Exception):
    """A template that cannot be parsed or rendered; retrying will not help."""


class _LimitedEnvironment(Environment):
    loop_iteration_limit: ClassVar[int | None] = 10_000
    local_namespace_limit: ClassVar[int | None] = 100_000
    output_stream_limit: ClassVar[int | None] = 1_000_000


class _Escaped(str):
    """Text that is already in the environment's format: a captured block, or a value marked `safe`."""

    __slots__ = ()


def _output_text(context: RenderContext, expression: Any, value: Any) -> str:
    """Return an output statement's text, escaped unless it is a bare string literal or already escaped."""
    text = to_liquid_string(value, autoescape=False)
    literal = (
        isinstance(expression, FilteredExpression)
        and isinstance(expression.left, StringLiteral)
        and not expression.filters
    )
    if literal or isinstance(value, _Escaped):
        return text
    environment = context.env
    assert isinstance(environment, _FormatEnvironment)
    return environment.escape_value(text)


class _EscapingOutputNode(OutputNode):
    def render_to_output(self, context: RenderContext, buffer: TextIO) -> int:
        value = self.expression.evaluate(context)
        return buffer.write(_output_text(context, self.expression, value))

    async def render_to_output_async(self, context: RenderContext, buffer: TextIO) -> int:
        value = await self.expression.evaluate_async(context)
        return buffer.write(_output_text(context, self.expression, value))


class _EscapingEchoNode(EchoNode):
    render_to_output = _EscapingOutputNode.render_to_output
    render_to_output_async = _EscapingOutputNode.render_to_output_async


class _EscapedCaptureNode(CaptureNode):
    # The block's output statements have escaped their values already, so the capture is not escaped again.
    def _assign(self, context: RenderContext, buf: StringIO) -> None:
        context.assign(self.name, _Escaped(buf.getvalue()))


class _EscapingOutput(Output):
    node_class = _EscapingOutputNode


class _EscapingEcho(EchoTag):
    node_class = _EscapingEchoNode


class _EscapedCapture(CaptureTag):
    node_class = _EscapedCaptureNode


@string_filter
def _safe(value: str) -> str:
    """Mark a value as already in the format, such as a URL inside a link, so it is not escaped."""
    return _Escaped(value)


class _FormatEnvironment(_LimitedEnvironment):
    """An environment whose output statements pass each inserted value through `escape_value`.

    Not escaped: the template's text, bare string literals such as `{{ "*" }}`, blocks
    captured with `capture` (their values were escaped inside), and values passed
    through the `safe` filter. A captured block that a filter changes is escaped again.
    """

    def __init__(self, escape_value: Escape) -> None:
        self.escape_value = escape_value
        super().__init__(autoescape=False)

    def setup_tags_and_filters(self, *, extra: bool = False) -> None:
        super().setup_tags_and_filters(extra=extra)
        self.add_tag(_EscapingOutput)
        self.add_tag(_EscapingEcho)
        self.add_tag(_EscapedCapture)
        self.add_filter("safe", _safe)


_plain = _LimitedEnvironment(autoescape=False)
# Output statements are HTML-escaped, but the template's own text and string literals are not.
_html = _LimitedEnvironment(autoescape=True)


@functools.lru_cache(maxsize=32)
def _format_environment(escape: Escape) -> _FormatEnvironment:
    return _FormatEnvironment(escape)


def _environment(escape_html: bool, escape: Escape | None) -> Environment:
    if escape is not None:
        return _format_environment(escape)
    return _html if escape_html else _plain


@functools.lru_cache(maxsize=512)
def _parse(source: str, escape_html: bool = False, escape: Escape | None = None) -> Any:
    return _environment(escape_html, escape).from_string(source)


def compile_template(source: str, escape_html: bool = False, *, escape: Escape | None = None) -> Any:
    """Parse `source`, raising TemplateError with the parser's message when it is invalid."""
    try:
        return _parse(source, escape_html, escape)
    except LiquidError as exc:
        raise TemplateError(str(exc)) from exc


def render(
    source: str | None,
    variables: dict[str, Any],
    field: str | None = None,
    *,
    escape_html: bool = False,
    escape: Escape | None = None,
) -> str:
    """Render `source` as plain text; a missing variable renders as an empty string.

    With `escape_html`, the values that variables insert are HTML-escaped, for HTML bodies only.
    With `escape`, a function of one string, each inserted value is passed through it instead.
    Pass the same function object every time, because an environment is cached per function.
    A TemplateError names `field`, the control value the template came from, when given.
    """
    if not source:
        return ""
    try:
        return str(compile_template(source, escape_html, escape=escape).render(**variables))
    except (LiquidError, TemplateError) as exc:
        raise TemplateError(f"{field}: {exc}" if field else str(exc)) from exc
