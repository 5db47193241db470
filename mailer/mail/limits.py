"""The per-mail limits of a render (DESIGN §4.4): 1 MB of output, 2 s of CPU,
`range()` up to 10,000, and no value a template builds over 1 MB (its `weight`),
checked before the operation that would build it. The budget of the render under
way is a ContextVar; a limit hit inside template code raises Stopped, which
mailer.mail.render turns into RenderLimit with the template's file and line."""

from __future__ import annotations

import math
import time
from collections.abc import Collection, Iterable, Iterator
from contextvars import ContextVar
from typing import Any

from jinja2.utils import Namespace
from markupsafe import Markup

MAX_OUTPUT = 1_000_000
MAX_CPU_SECONDS = 2.0
MAX_RANGE = 10_000
# Python's own limit for printing an int (sys.get_int_max_str_digits): a bigger number
# cannot be printed anyway, and building one (99 ** 99 ** 99) can take hours
MAX_DIGITS = 4_300
_MAX_INT_BITS = int(MAX_DIGITS * math.log2(10))


# A thread's CPU time never runs ahead of the wall clock: a render younger than this
# (wall time) cannot be over its CPU budget, and its thread's CPU clock is not read
# (a system call: 7 µs a read on this project's VMs, 200 µs when they are loaded).
GRACE_SECONDS = 0.05


class Budget:
    """Output and CPU spent by one render."""

    def __init__(self, started: float | None = None) -> None:
        # STARTED (time.monotonic): when the mail's first part began, its parts share
        # the 2 s; the thread's CPU clock is read only past GRACE_SECONDS
        self.started = time.monotonic() if started is None else started
        self.cpu_mark: float | None = None  # the thread's CPU time at the first read
        self.before_mark = 0.0  # wall time before it: at least the CPU spent until then
        self.output = 0
        self.prints = 0
        self.calls = 0

    def spend(self, size: int) -> None:
        self.output += size
        if self.output > MAX_OUTPUT:
            raise Stopped("more than 1 MB of output")
        if self.prints % 64 == 0:  # reading the clock per print would cost more
            self.check()

    def check(self) -> None:
        wall = time.monotonic() - self.started
        if wall < GRACE_SECONDS:
            return
        now = time.thread_time()
        if self.cpu_mark is None:
            self.cpu_mark, self.before_mark = now, wall
        if now - self.cpu_mark + self.before_mark > MAX_CPU_SECONDS:
            raise Stopped(f"more than {MAX_CPU_SECONDS:g} s of CPU")


class Stopped(Exception):
    """Raised inside a render when a limit is hit; turned into RenderLimit with a line."""


# The render under way in this thread (a ContextVar: the daemon's reload validates
# templates in one thread while the sender renders mails in another).
BUDGET: ContextVar[Budget | None] = ContextVar("mailer_render_budget", default=None)


# --- sizes, checked before a value is built ---------------------------------------------

HUGE = "a value over 1 MB"
STRING = "a string over 1 MB"
TEXT = (str, bytes, bytearray)
SEQUENCES = (str, bytes, bytearray, list, tuple)
_VIEWS: tuple[type, ...] = (type({}.keys()), type({}.values()), type({}.items()))
_COLLECTIONS = (list, tuple, set, frozenset, *_VIEWS)


def weight(value: Any, limit: int = MAX_OUTPUT) -> int:
    """About how many characters VALUE prints as, counted until the count passes LIMIT:
    the length of text, the digits of an int, and for containers their items, each
    shared item as often as it is shared (as printing does). Everything a template
    builds is kept under 1 MB of this, so no value can print as gigabytes."""
    total = 0
    stack: list[Any] = [value]
    while stack and total <= limit:
        item = stack.pop()
        cls = item.__class__
        if cls is str or cls is Markup or isinstance(item, TEXT):
            total += len(item)
        elif cls is int:
            total += item.bit_length() * 3 // 10 + 1
        elif isinstance(item, dict):
            total += 2 + 4 * len(item)  # braces, ": " and ", "
            if total <= limit:
                stack.extend(item.keys())
                stack.extend(item.values())
        elif isinstance(item, _COLLECTIONS):
            items: Collection[Any] = item  # type: ignore[assignment]
            total += 2 + 2 * len(items)  # brackets and ", "
            if total <= limit:
                stack.extend(items)
        elif isinstance(item, Namespace):  # prints its attributes
            stack.append(object.__getattribute__(item, "_Namespace__attrs"))
        else:
            total += 1
    return total


def checked(value: Any) -> Any:
    """VALUE, made by a call or a filter, refused when over 1 MB; an iterator is metered."""
    cls = value.__class__
    if cls is str or cls is Markup or isinstance(value, TEXT):
        if len(value) > MAX_OUTPUT:
            raise Stopped(STRING)
    elif isinstance(value, (dict, Namespace, *_COLLECTIONS)):
        if weight(value) > MAX_OUTPUT:
            raise Stopped(HUGE)
    elif isinstance(value, Iterator):
        return _metered(value)
    return value


def _metered(items: Iterable[Any]) -> Iterator[Any]:
    """ITEMS (of a filter like map or select), stopped when what they yield passes 1 MB:
    each item may be small and new (map('center', 100000) over 10,000 numbers), and
    `| list` or `| join` would keep them all."""
    total = 0
    for index, item in enumerate(items):
        total += weight(item) + 1
        if total > MAX_OUTPUT:
            raise Stopped("a filter's items over 1 MB")
        if not index & 255 and (budget := BUDGET.get()) is not None:
            budget.check()
        yield item


def checked_literal(value: Any) -> Any:
    """A list, tuple or dict literal of the template, refused when over 1 MB: a literal of
    references (`[x, x]`) doubles what it prints at each step of a loop."""
    if weight(value) > MAX_OUTPUT:
        raise Stopped(HUGE)
    return value


def checked_operands(items: tuple[Any, ...]) -> tuple[Any, ...]:
    """The operands of `~`, refused before they are joined when over 1 MB together."""
    total = 0
    for item in items:
        total += weight(item)
        if total > MAX_OUTPUT:
            raise Stopped("a concatenation over 1 MB")
    return items


def check_number(bits: float) -> None:
    if bits > _MAX_INT_BITS:
        raise Stopped(f"a number over {MAX_DIGITS:,} digits")


# Strings that grow: checked before Python builds them, since a template could ask
# for gigabytes in one call ('x' | center(10**10)), long before the output limit.
def check_size(size: int) -> None:
    if size > MAX_OUTPUT:
        raise Stopped("a string over 1 MB")


def check_pieces(length: int, pieces: int) -> None:
    """A string of LENGTH cut into PIECES, refused when the list would weigh over 1 MB:
    each piece is a Python object of 50 bytes or more, so the pieces of 1 MB of text
    take 50 MB (80 in euro signs) however few characters they keep."""
    if 2 + 2 * pieces + length > MAX_OUTPUT:
        raise Stopped(HUGE)

