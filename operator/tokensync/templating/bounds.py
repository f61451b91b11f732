"""The bounds on one render: sizes, loop iterations and work, counted, never timed.

One ProviderToken's template runs in the same process as the other 4,999, so every way a
template could spend memory or CPU is capped. The caps are counts, not a clock: whether a
template is refused depends on the template and its values alone, never on machine load.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from contextvars import ContextVar
from typing import Any, Final, TypeVar

from jinja2 import Undefined

MAX_SOURCE_BYTES: Final = 16 * 1024
# Per ProviderToken, data, labels and annotations together: a Secret holds at most 1 MiB,
# and the operator keeps thousands of rendered bodies in memory.
MAX_OUTPUT_BYTES: Final = 256 * 1024
# No value a template builds may be larger than what it could ever write out.
MAX_VALUE: Final = MAX_OUTPUT_BYTES
# Everything a render builds, summed: bounds the memory and time of templates that build
# many values none of which is too large on its own.
MAX_WORK: Final = 4 * MAX_VALUE
# Loop iterations per render, all loops together: nested loops over a short string are
# otherwise quadratic (or worse) without producing anything the other bounds would see.
MAX_ITERATIONS: Final = 65_536
# Template nodes run by loop bodies per render, all loops together: the iteration bound
# alone would let a loop whose body fills the 16 KiB source run 65,536 times. At about a
# microsecond for the costliest nodes (sandboxed calls and lookups), a render stays well
# under a second; a loop of a few dozen nodes over each character of a long token stays
# well within.
MAX_LOOP_NODES: Final = 8 * MAX_ITERATIONS
# Characters of values read per render by comparisons, tests, filters and method calls:
# comparing, searching and counting build nothing the bound on building would see. The
# slowest readers (a regular expression, a search for a short needle) take tens of
# nanoseconds a character.
MAX_READ: Final = 16 * MAX_VALUE
# Larger integers only come from arithmetic meant to exhaust memory or CPU.
MAX_INT_BITS: Final = 4096


class Refused(Exception):
    """A bound or rule of the sandbox; its reason is fixed text, never a value."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Budget:
    """What one render has spent; reached through BUDGET by hooks that get no context."""

    __slots__ = ("chars_read", "iterations", "loop_nodes", "work")

    def __init__(self) -> None:
        self.chars_read = 0
        self.iterations = 0
        self.loop_nodes = 0
        self.work = 0

    def spend(self, units: int) -> None:
        self.work += units
        if self.work > MAX_WORK:
            raise Refused(f"the template builds more than {MAX_WORK} characters of values")

    def read(self, chars: int) -> None:
        self.chars_read += chars
        if self.chars_read > MAX_READ:
            raise Refused(f"the template reads more than {MAX_READ} characters of values")

    def iterate(self, nodes: int) -> None:
        """One loop iteration, whose body (and loop filter) has this many template nodes."""
        self.iterations += 1
        if self.iterations > MAX_ITERATIONS:
            raise Refused(f"the template's loops ran more than {MAX_ITERATIONS} times")
        self.loop_nodes += nodes
        if self.loop_nodes > MAX_LOOP_NODES:
            raise Refused(f"the template's loops run more than {MAX_LOOP_NODES} template nodes")
        self.spend(1)


# Set for the length of one render() (None outside one: compile time charges nothing).
# A context variable, not a global, so that renders in other threads or tasks each count
# their own.
BUDGET: ContextVar[Budget | None] = ContextVar("tokensync_template_budget", default=None)

_V = TypeVar("_V")


def spend(units: int) -> None:
    budget = BUDGET.get()
    if budget is not None:
        budget.spend(units)


def too_large() -> Refused:
    return Refused(f"a value would be larger than {MAX_VALUE} characters")


def check_length(length: int) -> None:
    if length > MAX_VALUE:
        raise too_large()


def weigh(value: Any) -> int:
    """About the characters str() or JSON makes of a value; refuses it past the bound.

    A list can hold one long string many times over: its size says nothing, its text does.
    Each walk is charged to the render, so many values weighed many times stay bounded, and
    so is the value's size as characters read: whatever weighs a value is about to read it
    (compare, search, convert or copy it), which costs up to its size however little it
    builds.
    """
    total = steps = 0
    pending = [value]
    while pending:
        item = pending.pop()
        steps += 1
        kind = type(item)
        # Exact types first: the ABC checks below cost several times more per item.
        if kind is str or kind is bytes:
            total += len(item)
        elif kind is list or kind is tuple:
            total += 2 + len(item)
            pending.extend(item)
        elif isinstance(item, str | bytes):
            total += len(item)
        elif isinstance(item, Undefined):
            total += 1
        elif isinstance(item, int):
            total += item.bit_length() // 3 + 1
        elif isinstance(item, Mapping):
            total += 2 + 2 * len(item)
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, Collection):
            total += 2 + len(item)
            pending.extend(item)
        else:
            total += 1
        if total > MAX_VALUE:
            raise too_large()
    budget = BUDGET.get()
    if budget is not None:
        budget.spend(steps)
        budget.read(total)
    return total


def account(result: _V) -> _V:
    """Charge a value just built to the render, refusing it when too large."""
    if isinstance(result, str | bytes | list | tuple | dict | set | frozenset):
        if len(result) > MAX_VALUE:
            raise too_large()
        spend(len(result) + 1)
    elif isinstance(result, int) and result.bit_length() > MAX_INT_BITS:
        raise Refused(f"an integer would be larger than {MAX_INT_BITS} bits")
    else:
        spend(1)
    return result


def text(value: Any) -> str:
    """str(value), weighed first unless it is one already."""
    if isinstance(value, str):
        return value
    weigh(value)
    return str(value)
