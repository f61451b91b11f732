"""The filters a template may use: Jinja's that stay small, ours, each bounded.

Every filter's arguments are weighed before it runs and its result is charged, so a filter
is never the way around the bounds; so is every test, since a test reads its arguments.
Three internal filters carry what the sandbox cannot intercept: ``~`` (concatenation),
the iterable of a ``for`` and the operands of a comparison (analysis inserts them).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from functools import wraps
from typing import Any, Final
from urllib.parse import quote

from jinja2 import Undefined, pass_context
from jinja2.runtime import Context

from tokensync.templating.bounds import BUDGET, Refused, account, check_length, text, weigh

# Filters no template may name (analysis refuses them): analysis inserts them.
CONCAT_FILTER: Final = "_tokensync_concat"
ITERATE_FILTER: Final = "_tokensync_iterate"
READ_FILTER: Final = "_tokensync_read"
INTERNAL_FILTERS: Final = frozenset({CONCAT_FILTER, ITERATE_FILTER, READ_FILTER})

# Jinja's builtins that cannot grow a value beyond a small multiple of their arguments;
# left out are those sized by an argument (center, indent, format, wordwrap, batch), those
# of no use here (pprint, random, urlize, xmlattr, escape, safe) and attr (getattr by a
# computed name).
_BUILTIN_FILTERS: Final = (
    "abs", "capitalize", "count", "d", "default", "dictsort", "first", "float", "int",
    "items", "last", "length", "list", "lower", "map", "max", "min", "reject", "rejectattr",
    "reverse", "round", "select", "selectattr", "sort", "string", "sum", "title", "tojson",
    "trim", "truncate", "unique", "upper", "urlencode", "wordcount",
)  # fmt: skip


def filter_table(builtin: Mapping[str, Callable[..., Any]]) -> dict[str, Callable[..., Any]]:
    """Every filter a template may use, by name, from Jinja's ``builtin`` ones and ours."""
    table = {name: _bounded(builtin[name]) for name in _BUILTIN_FILTERS}
    table.update(
        {
            "b64enc": _bounded(_b64enc),
            "b64dec": _bounded(_b64dec),
            "json": _bounded(_json),
            "urlquery": _bounded(_urlquery),
            "join": _bounded(_join),
            "replace": _bounded(replace),
            CONCAT_FILTER: _concat,
            ITERATE_FILTER: _iterate,
            READ_FILTER: _read,
        }
    )
    return table


def test_table(builtin: Mapping[str, Callable[..., Any]]) -> dict[str, Callable[..., Any]]:
    """Jinja's tests, each bounded: a test reads its arguments (``s is eq t``, ``s is lower``),
    and ``select`` and ``reject`` run one per item."""
    return {name: _bounded(test) for name, test in builtin.items()}


def _b64enc(value: Any) -> str:
    return base64.b64encode(text(value).encode("utf-8")).decode("ascii")


def _b64dec(value: Any) -> str:
    try:
        raw = base64.b64decode(text(value), validate=True)
    except (binascii.Error, ValueError):
        raise Refused("b64dec: the value is not valid base64") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise Refused("b64dec: the decoded bytes are not UTF-8 text") from None


def _json_default(value: Any) -> Any:
    if isinstance(value, Undefined):
        return str(value)  # StrictUndefined raises UndefinedError here
    raise TypeError("not JSON serializable")


def _json(value: Any) -> str:
    # The arguments were weighed (_bounded), so the encoding is at most a small multiple.
    return json.dumps(value, separators=(",", ":"), default=_json_default)


def _urlquery(value: Any) -> str:
    return quote(text(value), safe="")


def _join(value: Iterable[Any], separator: Any = "") -> str:
    items = list(value)
    between = text(separator)
    check_length(sum(weigh(i) for i in items) + len(between) * max(len(items) - 1, 0))
    return between.join(text(i) for i in items)


def str_join(separator: str, *args: Any, **kwargs: Any) -> str:
    """``separator.join(items)`` as a template calls it, sized before it is built."""
    if kwargs or len(args) != 1:
        raise TypeError("join() takes exactly one argument")
    return _join(args[0], separator)


def replace(value: Any, old: Any, new: Any, count: int | None = None) -> str:
    """``str.replace``, the filter and the method, sized before it is built."""
    subject, old, new = text(value), text(old), text(new)
    hits = subject.count(old) if old else len(subject) + 1
    if count is not None and count >= 0:
        hits = min(hits, count)
    check_length(len(subject) + hits * (len(new) - len(old)))
    return subject.replace(old, new, -1 if count is None else count)


@pass_context
def _concat(context: Context, items: list[Any]) -> str:
    del context  # pass_context only keeps the compiler from evaluating it at compile time
    check_length(sum(weigh(item) for item in items))
    return account("".join(str(item) for item in items))


@pass_context
def _iterate(context: Context, value: Any, nodes: int) -> Iterator[Any]:
    """The items of a loop, each charged as an iteration of a body of ``nodes`` nodes."""
    del context
    budget = BUDGET.get()
    for item in value:
        if budget is not None:
            budget.iterate(nodes)
        yield item


@pass_context
def _read(context: Context, value: Any) -> Any:
    """A comparison's operand, charged as read: comparing long values costs their length."""
    del context
    weigh(value)
    return value


def _bounded(function: Callable[..., Any]) -> Callable[..., Any]:
    """A filter whose arguments are weighed before it runs and whose result is charged.

    Always marked pass_context, whatever the filter takes: Jinja never calls such a filter
    at compile time (jinja2.meta's analysis folds constants), where no budget applies.
    """
    # What the filter itself asked for (Jinja marks it with this attribute); no value.
    wants = getattr(getattr(function, "jinja_pass_arg", None), "name", None)

    def bounded(context: Context, *args: Any, **kwargs: Any) -> Any:
        for argument in (*args, *kwargs.values()):
            weigh(argument)
        if wants == "context":
            args = (context, *args)
        elif wants == "eval_context":
            args = (context.eval_ctx, *args)
        elif wants == "environment":
            args = (context.environment, *args)
        return account(function(*args, **kwargs))

    return pass_context(wraps(function)(bounded))
