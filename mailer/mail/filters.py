"""Jinja's filters and globals that can build big values, bounded (mailer.mail.limits):
range(), lipsum(), the filters that grow text (center, indent, replace, join, format,
sum...) checked before they build it, those that list a string or split it into words
kept from making millions of objects, and every other filter's result checked."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import jinja2
from jinja2 import filters as jinja_filters
from jinja2.utils import generate_lorem_ipsum

from mailer.mail.formats import FILTERS
from mailer.mail.limits import (
    BUDGET,
    MAX_OUTPUT,
    MAX_RANGE,
    Stopped,
    check_pieces,
    check_size,
    checked,
    weight,
)
from mailer.mail.sizes import check_percent, joined_size, replaced_size


def _lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:
    """Jinja's lipsum, refused when it would pass 1 MB (a word is at most 12 characters)."""
    if isinstance(n, int) and isinstance(max, int) and n * max * 12 > MAX_OUTPUT:
        raise Stopped("lipsum() over 1 MB")
    return str(generate_lorem_ipsum(n=n, html=html, min=min, max=max))


@jinja2.pass_environment
def _sum(environment: jinja2.Environment, iterable: Iterable[Any], attribute: Any = None,
         start: Any = 0) -> Any:
    """Jinja's sum; lists and tuples are joined in linear time (Python's sum copies the
    growing list at every item) and refused when the result would pass 1 MB."""
    if not isinstance(start, (list, tuple)):
        return jinja_filters.sync_do_sum(environment, iterable, attribute, start)
    if attribute is not None:
        iterable = map(jinja_filters.make_attrgetter(environment, attribute), iterable)
    kind = list if isinstance(start, list) else tuple
    total = weight(start)
    result = list(start)
    for item in iterable:
        if not isinstance(item, kind):
            raise TypeError(f'can only concatenate {kind.__name__} (not '
                            f'"{type(item).__name__}") to {kind.__name__}')
        total += weight(item)
        if total > MAX_OUTPUT:
            raise Stopped("sum() over 1 MB")
        result.extend(item)
    return result if kind is list else tuple(result)


def _slice(value: Any, slices: int, fill_with: Any = None) -> Iterator[list[Any]]:
    """Jinja's slice, into at most MAX_RANGE parts (each part is a new list)."""
    if isinstance(slices, int) and slices > MAX_RANGE:
        raise Stopped(f"slice() into more than {MAX_RANGE:,} parts")
    return jinja_filters.sync_do_slice(value, slices, fill_with)


def _batch(value: Any, linecount: int, fill_with: Any = None) -> Iterator[list[Any]]:
    """Jinja's batch; the last batch is filled to at most MAX_RANGE items."""
    if fill_with is not None and isinstance(linecount, int) and linecount > MAX_RANGE:
        raise Stopped(f"batch() filled to more than {MAX_RANGE:,} items")
    return jinja_filters.do_batch(value, linecount, fill_with)


def _bounded_range(*args: int) -> Iterator[int]:
    numbers = range(*args)
    if len(numbers) > MAX_RANGE:
        raise Stopped(f"range() of {len(numbers):,} items (at most {MAX_RANGE:,})")
    for index, number in enumerate(numbers):
        if index % 256 == 0 and (budget := BUDGET.get()) is not None:
            budget.check()
        yield number


def _center(value: Any, width: int = 80) -> str:
    if isinstance(width, int):
        check_size(width)
    return jinja_filters.do_center(value, width)


def _indent(text: Any, width: int | str = 4, first: bool = False, blank: bool = False) -> str:
    lines = str(text).count("\n") + 1
    check_size(len(str(text)) + lines * (width if isinstance(width, int) else len(str(width))))
    return jinja_filters.do_indent(text, width, first, blank)


@jinja2.pass_environment
def _wordwrap(environment: jinja2.Environment, text: str, width: int = 79,
              break_long_words: bool = True, wrapstring: str | None = None,
              break_on_hyphens: bool = True) -> str:
    if isinstance(width, int) and isinstance(text, str):
        wrap = len(environment.newline_sequence if wrapstring is None else str(wrapstring))
        check_size(len(text) + (len(text) // max(width, 1) + text.count("\n") + 1) * wrap)
    return jinja_filters.do_wordwrap(environment, text, width, break_long_words, wrapstring,
                                     break_on_hyphens)


@jinja2.pass_eval_context
def _replace(eval_ctx: Any, text: Any, old: Any, new: Any, count: int | None = None) -> str:
    check_size(replaced_size(str(text), str(old), str(new), count))
    return jinja_filters.do_replace(eval_ctx, text, old, new, count)


@jinja2.pass_eval_context
def _join(eval_ctx: Any, value: Any, separator: str = "", attribute: Any = None) -> str:
    items = list(value)
    check_size(joined_size(str(separator), items))
    return jinja_filters.sync_do_join(eval_ctx, items, separator, attribute)


def _format(value: str, *args: Any, **kwargs: Any) -> str:
    check_percent(value, kwargs or args)  # what Jinja's format puts right of its `%`
    return jinja_filters.do_format(value, *args, **kwargs)


def _listing(function: Callable[..., Any]) -> Callable[..., Any]:
    """FUNCTION, a filter that first makes a list of what it is given (list, sort, join,
    batch, slice, groupby), with a string refused when the list of its characters would
    weigh over 1 MB: each character becomes its own object of up to 80 bytes."""
    offset = 1 if hasattr(function, "jinja_pass_arg") else 0  # environment or context

    @functools.wraps(function)
    def listing(*args: Any, **kwargs: Any) -> Any:
        value = args[offset] if len(args) > offset else None
        if isinstance(value, str):
            check_pieces(len(value), len(value))
        return function(*args, **kwargs)
    return listing


_CHUNK = 65_536
_SPACE = re.compile(r"\s")


def _chunks(text: str) -> Iterator[str]:
    """TEXT in pieces of about _CHUNK characters or more, each cut just after a space (re's
    \\s), so a filter that works word by word never sees a word cut in two."""
    start = 0
    while len(text) - start > _CHUNK:
        space = _SPACE.search(text, start + _CHUNK)
        if space is None:
            break
        yield text[start:space.end()]
        start = space.end()
    yield text[start:]


def _by_chunks(function: Callable[..., Any],
               join: Callable[[list[Any]], Any]) -> Callable[..., Any]:
    """FUNCTION, a filter that splits its text into a list of words (title, urlize,
    wordcount: 68 MB to 120 MB for 1 MB of text), run on _chunks of a long text and the
    results joined by JOIN: what a word becomes does not depend on the other words."""
    offset = 1 if hasattr(function, "jinja_pass_arg") else 0

    @functools.wraps(function)
    def chunked(*args: Any, **kwargs: Any) -> Any:
        value = args[offset] if len(args) > offset else None
        if not isinstance(value, str) or len(value) <= _CHUNK:
            return function(*args, **kwargs)
        before, after = args[:offset], args[offset + 1:]
        return join([function(*before, chunk, *after, **kwargs) for chunk in _chunks(value)])
    return chunked


def _joined_text(parts: list[str]) -> str:
    """PARTS joined as the type they are (Markup parts make Markup, not escaped again)."""
    return parts[0][:0].join(parts)


_GROWING_FILTERS = {"center": _center, "indent": _indent, "wordwrap": _wordwrap,
                    "replace": _replace, "join": _join, "format": _format, "sum": _sum,
                    "slice": _slice, "batch": _batch}
_LISTING = ("list", "sort", "join", "batch", "slice", "groupby")
# Filters whose result is never much bigger than their input, and that a mail uses
# most; every other filter's result is checked (tojson of tojson doubles each time).
_SAME_SIZE = frozenset({"default", "d", "e", "escape", "safe", "length", "count", "first",
                        "last", "lower", "upper", "trim", "int", "float", "abs", "round",
                        "striptags", "truncate", "wordcount", "title", "capitalize"})


def _result_checked(function: Callable[..., Any]) -> Callable[..., Any]:
    """FUNCTION with its result checked by `checked` (Jinja's pass_* marks are kept)."""
    @functools.wraps(function)
    def result_checked(*args: Any, **kwargs: Any) -> Any:
        return checked(function(*args, **kwargs))
    return result_checked


def install_filters(env: jinja2.Environment) -> None:
    """ENV's range, lipsum and filters made bounded: those that grow text replaced, those
    that list a string or split it into words wrapped, and every result checked but
    those of the filters that keep about the size of their input."""
    env.globals["range"] = _bounded_range
    env.globals["lipsum"] = _lipsum
    env.filters.update(_GROWING_FILTERS)
    env.filters.update({name: _listing(env.filters[name]) for name in _LISTING})
    env.filters.update({"title": _by_chunks(env.filters["title"], _joined_text),
                        "urlize": _by_chunks(env.filters["urlize"], _joined_text),
                        "wordcount": _by_chunks(env.filters["wordcount"], sum)})
    env.filters.update({name: _result_checked(function) for name, function in
                        env.filters.items() if name not in _SAME_SIZE})
    # money, number, date, datetime: short text whatever the input (a CLDR pattern is
    # capped), so unchecked; they take the render's context for the reader's locale.
    env.filters.update(FILTERS)
