"""check() and render(): run a ProviderToken's templates and turn every failure into a
TemplateError that names a place and a kind, never a value."""

from __future__ import annotations

from collections.abc import Generator, Mapping
from typing import Any, cast

from jinja2.exceptions import SecurityError, UndefinedError

from tokensync.templating.analysis import FILENAME, Compiled, templates
from tokensync.templating.bounds import BUDGET, MAX_OUTPUT_BYTES, Budget, Refused
from tokensync.templating.context import data_context, metadata_context
from tokensync.templating.keys import LABEL_VALUE_RULE, valid_label_value
from tokensync.templating.spec import Rendered, RenderInput, TemplateError, TemplateSpec


def check(spec: TemplateSpec) -> None:
    """Everything that can be known without a token: keys, syntax, names. Raises TemplateError."""
    for _ in templates(spec):
        pass


def render(spec: TemplateSpec, values: RenderInput) -> Rendered:
    """The Secret's templated data, labels and annotations. Raises TemplateError."""
    metadata = metadata_context(values)
    data = data_context(spec, values, metadata)
    rendered = Rendered(data={}, labels={}, annotations={})
    written = 0
    # One budget for all of this ProviderToken's templates: the bounds are per render.
    reset = BUDGET.set(Budget())
    try:
        for section, key, where, compiled in templates(spec):
            context = data if section == "data" else metadata
            text, written = _run(where, compiled, context, written)
            if not _is_utf8(text):
                raise TemplateError(where, "the rendered value is not valid UTF-8 text")
            if section == "labels" and not valid_label_value(text):
                raise TemplateError(
                    where, f"the rendered value is not a valid label value ({LABEL_VALUE_RULE})"
                )
            getattr(rendered, section)[key] = text
    finally:
        BUDGET.reset(reset)
    return rendered


def _is_utf8(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        # Not re-raised: the codec's message quotes the offending character.
        return False
    return True


def _run(
    where: str, compiled: Compiled, context: Mapping[str, Any], written: int
) -> tuple[str, int]:
    """One template's output, and the bytes written so far for this ProviderToken."""
    parts: list[str] = []
    failure = None
    # A generator (typed as an iterator): closed at once when output stops at the bound.
    stream = cast("Generator[str, None, None]", compiled.template.generate(context))
    try:
        for chunk in stream:
            written += len(chunk) if chunk.isascii() else len(chunk.encode("utf-8", "replace"))
            if written > MAX_OUTPUT_BYTES:
                raise TemplateError(
                    where,
                    f"the rendered output of this ProviderToken exceeds {MAX_OUTPUT_BYTES} bytes",
                )
            parts.append(chunk)
    except TemplateError:
        raise
    except Exception as error:
        failure = _runtime_error(where, error)
    finally:
        stream.close()
    if failure is not None:
        # Raised out here so that it carries no __context__: the original exception's
        # text and traceback locals hold values.
        raise failure
    return "".join(parts), written


def _runtime_error(where: str, error: Exception) -> TemplateError:
    """A message from the exception's class and line only: its text may hold values."""
    line = None
    trace = error.__traceback__
    while trace is not None:
        if trace.tb_frame.f_code.co_filename == FILENAME:
            line = trace.tb_lineno
        trace = trace.tb_next
    return TemplateError(where, _describe(error), line)


def _describe(error: Exception) -> str:
    if isinstance(error, Refused):
        return error.reason
    if isinstance(error, SecurityError):
        return "the sandbox refused an unsafe operation (SecurityError)"
    if isinstance(error, UndefinedError):
        return "an undefined variable, attribute or key was used (UndefinedError)"
    if isinstance(error, ZeroDivisionError):
        return "division by zero (ZeroDivisionError)"
    if isinstance(error, TypeError):
        return "an operation was given a value of the wrong type (TypeError)"
    if isinstance(error, ValueError | ArithmeticError):
        return f"an operation was given an unusable value ({type(error).__name__})"
    if isinstance(error, MemoryError):
        return "the template ran out of memory (MemoryError)"
    return f"the template failed ({type(error).__name__})"
