"""The environment templates run in: Jinja's sandbox, with every way to allocate bounded.

Jinja's SandboxedEnvironment already refuses unsafe attributes; this one also intercepts
the operators, calls and lookups that can build large values, charges what they build and
read to the render (bounds), allows only the methods a Secret template needs, bounds every
filter and test (filters), and has no globals: a template sees its context and nothing
else.
"""

from __future__ import annotations

import types
from typing import Any, Final

from jinja2 import StrictUndefined, Undefined, pass_context
from jinja2.runtime import Context, LoopContext
from jinja2.sandbox import SandboxedEnvironment

from tokensync.templating.bounds import (
    MAX_INT_BITS,
    Refused,
    account,
    check_length,
    spend,
    weigh,
)
from tokensync.templating.filters import filter_table, replace, str_join, test_table

_STR_METHODS: Final = frozenset({
    "capitalize", "casefold", "count", "endswith", "find", "isalnum", "isalpha", "isascii",
    "isdecimal", "isdigit", "islower", "isnumeric", "isspace", "istitle", "isupper", "lower",
    "lstrip", "partition", "removeprefix", "removesuffix", "rfind", "rpartition", "rsplit",
    "rstrip", "split", "splitlines", "startswith", "strip", "swapcase", "title", "upper",
})  # fmt: skip
# Each reads its whole string; replace and join are sized before they build (filters).
_STR_CALLS: Final = _STR_METHODS | {"replace", "join"}
# Each is a lookup or a view: no cost that grows with the dict.
_DICT_METHODS: Final = frozenset({"get", "items", "keys", "values"})
_SEQUENCE_METHODS: Final = frozenset({"count", "index"})
_LOOP_METHODS: Final = frozenset({"cycle", "changed"})
# Only these are shown in a refusal: fixed identifiers, never a value.
_KNOWN_METHODS: Final = frozenset(dir(str)) | frozenset(dir(dict)) | frozenset(dir(list))


class Sandbox(SandboxedEnvironment):
    """Jinja's sandbox, with the operators, calls and lookups that can allocate bounded."""

    intercepted_binops = frozenset({"+", "*", "**", "%"})

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "**":
            _check_power(left, right)
        elif operator == "*":
            _check_product(left, right)
        elif operator == "+":
            if isinstance(left, str | list | tuple) and isinstance(right, str | list | tuple):
                check_length(weigh(left) + weigh(right))
        elif operator == "%" and isinstance(left, str):
            raise Refused("'%' string formatting is not allowed; use '~' and filters")
        return account(self.binop_table[operator](left, right))

    def call(self, context: Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        # The compiler adds these for callables that take a context; none allowed here does.
        kwargs.pop("_loop_vars", None)
        kwargs.pop("_block_vars", None)
        if isinstance(obj, Undefined):
            return obj(*args, **kwargs)  # StrictUndefined raises UndefinedError
        for argument in (*args, *kwargs.values()):
            weigh(argument)
        owner = getattr(obj, "__self__", None)
        name = getattr(obj, "__name__", None)
        if isinstance(obj, types.BuiltinMethodType) and isinstance(name, str):
            if isinstance(owner, str) and name in _STR_CALLS:
                weigh(owner)  # charged as read: every one of them scans the string
                if name == "replace":
                    return account(replace(owner, *args, **kwargs))
                if name == "join":
                    return account(str_join(owner, *args, **kwargs))
                return account(obj(*args, **kwargs))
            if isinstance(owner, list | tuple) and name in _SEQUENCE_METHODS:
                weigh(owner)  # charged as read: count and index compare every item
                return account(obj(*args, **kwargs))
            if isinstance(owner, dict) and name in _DICT_METHODS:
                return account(obj(*args, **kwargs))
        if (
            isinstance(obj, types.MethodType)
            and isinstance(owner, LoopContext)
            and name in _LOOP_METHODS
        ):
            return account(obj(*args, **kwargs))
        if isinstance(name, str) and name in _KNOWN_METHODS:
            raise Refused(f"calling {name}() is not allowed in a Secret template")
        raise Refused("calling that is not allowed in a Secret template")

    def getitem(self, obj: Any, argument: Any) -> Any:
        value = super().getitem(obj, argument)
        # A slice is a fresh copy: charge it like any other value built.
        if isinstance(argument, slice):
            return account(value)
        spend(1)
        return value


def _check_power(base: Any, exponent: Any) -> None:
    if (
        isinstance(base, int)
        and isinstance(exponent, int)
        and exponent > 0
        and abs(base) > 1
        and (abs(base).bit_length() - 1) * exponent > MAX_INT_BITS
    ):
        raise Refused(f"an integer would be larger than {MAX_INT_BITS} bits")


def _check_product(left: Any, right: Any) -> None:
    if isinstance(left, int) and isinstance(right, int):
        if left.bit_length() + right.bit_length() > MAX_INT_BITS + 1:
            raise Refused(f"an integer would be larger than {MAX_INT_BITS} bits")
        return
    sequence, times = (left, right) if isinstance(right, int) else (right, left)
    if isinstance(sequence, str | list | tuple) and isinstance(times, int):
        check_length(weigh(sequence) * max(times, 0))


@pass_context
def _finalize(context: Context, value: Any) -> Any:
    # pass_context keeps Jinja from finalizing constants at compile time, where no render's
    # budget applies.
    del context
    if not isinstance(value, str):
        weigh(value)
    return value


def _environment() -> Sandbox:
    env = Sandbox(
        undefined=StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        # The optimizer evaluates constant expressions at compile time, outside every bound.
        optimized=False,
        finalize=_finalize,
    )
    # No range, dict, lipsum, cycler, joiner or namespace: a template sees its context only.
    env.globals.clear()
    env.filters = filter_table(env.filters)
    # Replaced in place: Jinja's annotation of tests is inferred from its own table of plain
    # functions, a type our wrappers (callables of the same signature) cannot have.
    tests: dict[str, Any] = env.tests
    tests.update(test_table(tests))
    return env


# One environment for every template: compiled templates are cached and shared by source.
ENV: Final = _environment()
