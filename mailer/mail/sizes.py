"""The size of what a string operation of a template would build, estimated before
Python builds it: `%` and `| format` (printf style), str.format through a metered
formatter, and the str methods that grow or cut text (center, replace, join,
split...). Each is refused (Stopped) when it would pass 1 MB (mailer.mail.limits)."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from jinja2.sandbox import SandboxedEscapeFormatter, SandboxedFormatter

from mailer.mail.limits import HUGE, MAX_OUTPUT, TEXT, Stopped, check_size, weight

# --- `%`, `| format`, str.format ----------------------------------------------------------

FORMAT = "a format over 1 MB"
WIDE = "a format width of a million or more"


def _count(text: str | bytes | bytearray, mark: str) -> int:
    """How often MARK occurs in TEXT, a string or bytes."""
    return text.count(mark) if isinstance(text, str) else text.count(mark.encode())


def _field_size(value: Any, width: int, precision: int | None) -> int:
    """About how many characters VALUE takes formatted in WIDTH with PRECISION: the width,
    or the value's weight when longer. A precision adds digits to a number (`%.999999f`,
    `{:.999999f}`) and cuts text; a float's whole part can have 309 digits."""
    if width >= MAX_OUTPUT or (precision is not None and precision >= MAX_OUTPUT
                               and isinstance(value, (int, float))):
        raise Stopped(WIDE)
    if isinstance(value, float):
        digits = int(math.log10(abs(value))) + 1 if math.isfinite(value) and abs(value) >= 1 \
            else 1
        body = digits + (17 if precision is None else precision) + 8  # sign, point, exponent
    elif isinstance(value, int):  # a bit a digit covers every base, signs and separators
        body = value.bit_length() + 2 + (precision or 0)
    else:
        body = weight(value)
        if precision is not None and isinstance(value, TEXT):
            body = min(body, precision)
    return max(width, body)


def _spend(total: int, size: int) -> int:
    total += size
    if total > MAX_OUTPUT:
        raise Stopped(FORMAT)
    return total


# One conversion of printf-style formatting (`%`, `| format`), as Python reads it; a key
# with parentheses inside it reads as a field of the whole mapping, which weighs more.
_PERCENT = re.compile(r"%(?:\((?P<key>[^()]*)\))?[-+ #0]*(?P<width>\*|\d+)?"
                      r"(?:\.(?P<precision>\*|\d*))?[hlL]?(?P<type>.)?", re.S)


def check_percent(text: Any, right: Any) -> None:
    """TEXT % RIGHT, refused before it is built when it would pass 1 MB: the text around
    the conversions plus, for each, its width or its value (`'%999999s' * 50`)."""
    if not isinstance(text, TEXT):
        return
    source = text if isinstance(text, str) else text.decode("latin-1")
    if "%" not in source:
        return
    items = right if isinstance(right, tuple) else (right,)
    mapping = right if isinstance(right, Mapping) else None
    taken = 0

    def next_value() -> Any:
        nonlocal taken
        taken += 1
        return items[taken - 1] if taken <= len(items) else None

    def number(field: str | None) -> int | None:
        if field == "*":
            value = next_value()
            return abs(value) if isinstance(value, int) else 0
        if field is None or field == "":
            return None if field is None else 0
        if len(field) > 7:  # int() of a million digits is slow, and refused anyway
            raise Stopped(WIDE)
        return int(field)

    total = len(source)
    for match in _PERCENT.finditer(source):
        total -= match.end() - match.start()
        if match.group() == "%%":
            total = _spend(total, 1)
            continue
        width = number(match["width"]) or 0
        precision = number(match["precision"])
        key = match["key"]
        if key is None:
            value = next_value()
        else:
            name: Any = key if isinstance(text, str) else key.encode("latin-1")
            value = mapping[name] if mapping is not None and name in mapping else None
        total = _spend(total, _field_size(value, width, precision))


# A standard format spec (format-spec mini-language); anything else is the value's own
# (a date's strftime), which writes at most a few characters per character of the spec.
_SPEC = re.compile(r"(?:.?[<>=^])?[-+ ]?z?#?0?(\d*)[,_]?(?:\.(\d+))?[a-zA-Z%]?", re.S)


class MeteredFormatter(SandboxedFormatter):
    """Jinja's sandboxed str.format and format_map, with each field's size estimated just
    before it is formatted (its value, width and nested fields known by then) and the
    result kept under 1 MB: `('{0:999999}' * 50).format(1)` stops at its second field."""

    total = 0

    def vformat(self, format_string: str, args: Sequence[Any],
                kwargs: Mapping[str, Any]) -> str:
        self.total = sum(len(literal) for literal, *_ in self.parse(format_string))
        if self.total > MAX_OUTPUT:
            raise Stopped(FORMAT)
        return super().vformat(format_string, args, kwargs)

    def format_field(self, value: Any, format_spec: str) -> Any:
        spec = _SPEC.fullmatch(format_spec)
        if spec is None:
            size = weight(value) + 16 * len(format_spec)
        else:
            width, precision = spec.group(1), spec.group(2)
            if len(width) > 7 or len(precision or "") > 7:
                raise Stopped(WIDE)
            size = _field_size(value, int(width or 0),
                               None if precision is None else int(precision))
        self.total = _spend(self.total, size)
        return super().format_field(value, format_spec)


class MeteredEscapeFormatter(MeteredFormatter, SandboxedEscapeFormatter):
    """The metered formatter of Markup.format: values are escaped as Jinja escapes them."""


# --- str methods ---------------------------------------------------------------------------


def replaced_size(text: Any, old: Any, new: Any, count: Any) -> int:
    found = text.count(old) if old else len(text) + 1
    if isinstance(count, int) and count >= 0:
        found = min(found, count)
    return len(text) + found * (len(new) - len(old))


def joined_size(separator: str | bytes | bytearray, items: list[Any]) -> int:
    return len(separator) * max(len(items) - 1, 0) + sum(weight(item) for item in items)


_LINE_BREAKS = "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"  # what str.splitlines cuts at


def _split_weight(text: str | bytes | bytearray, name: str, args: tuple[Any, ...],
                  kwargs: dict[str, Any]) -> int:
    """About what the list of TEXT.NAME(...) weighs (split, rsplit, splitlines), found
    without building it: 2 per piece and the characters that are not cut away."""
    if name == "splitlines":
        breaks = _LINE_BREAKS if isinstance(text, str) else "\n\r"
        found = sum(_count(text, mark) for mark in breaks)
        return 2 + 2 * (found + 1) + len(text)
    sep = args[0] if args else kwargs.get("sep")
    most = args[1] if len(args) > 1 else kwargs.get("maxsplit", -1)
    if isinstance(sep, TEXT) and sep:
        found = text.count(sep)  # type: ignore[arg-type]  # str and bytes: split raises too
    elif len(text) < 600_000:  # a piece and a space at least: 1.5 a character at most
        return 0
    else:  # runs of non-space, counted without building them
        words = _WORD.finditer(text) if isinstance(text, str) else _WORD_BYTES.finditer(text)
        found = sum(1 for _ in words) - 1
        sep = " "
    if isinstance(most, int) and most >= 0:
        found = min(found, most)
    return 2 + 2 * (found + 1) + len(text) - found * len(sep)


_WORD = re.compile(r"\S+")  # re's \s is str.isspace, what str.split() splits at
_WORD_BYTES = re.compile(rb"\S+")


def checked_str_call(text: str | bytes | bytearray, name: str, args: tuple[Any, ...],
                     kwargs: dict[str, Any]) -> tuple[Any, ...]:
    """ARGS for TEXT.NAME(...), refused when the result would pass 1 MB (a join's items
    are read into a list first, to be measured)."""
    first = args[0] if args else next(iter(kwargs.values()), None)
    if name in ("center", "ljust", "rjust", "zfill") and isinstance(first, int):
        check_size(first)
    elif name == "expandtabs" and isinstance(first, int):
        check_size(len(text) + _count(text, "\t") * first)
    elif name == "replace" and len(args) >= 2 and isinstance(args[0], TEXT) \
            and isinstance(args[1], TEXT):
        check_size(replaced_size(text, args[0], args[1], args[2] if len(args) > 2 else -1))
    elif name == "join" and args:
        items = list(args[0])
        check_size(joined_size(text, items))
        args = (items, *args[1:])
    elif name in ("split", "rsplit", "splitlines"):
        if _split_weight(text, name, args, kwargs) > MAX_OUTPUT:  # pieces of 50 bytes up
            raise Stopped(HUGE)
    elif name == "translate" and isinstance(first, Mapping):
        longest = max((len(v) for v in first.values() if isinstance(v, TEXT)), default=1)
        check_size(len(text) * longest)
    return args

