"""Rendering mails: sandboxed Jinja, CSS inlined once, text parts (DESIGN §4.4).

The only module that imports jinja2 and premailer. A campaign's template is
compiled once: includes and extends are flattened into one source, Jinja tags
are swapped for inert tokens while premailer inlines the CSS (network off),
then restored, and every source line keeps a marker of the file and line it
came from, so an error names `templates/NAME:LINE` even after premailer has
reflowed the HTML. Per recipient only the values are filled in, under limits:
1 MB of output, 2 s of CPU, `range()` up to 10,000, and no value a template builds
over 1 MB (its `weight`), checked before the operation that would build it.
Templates are read only from templates/ (TemplateFolder); a rendering environment
loads only the parts its campaign version carries (VersionLoader).
"""

from __future__ import annotations

import contextlib
import functools
import math
import re
import time
import types
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path, PureWindowsPath
from typing import Any

import jinja2
import markupsafe
from jinja2 import filters as jinja_filters
from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError
from jinja2.sandbox import (
    ImmutableSandboxedEnvironment,
    SandboxedEscapeFormatter,
    SandboxedFormatter,
)
from jinja2.utils import Namespace, generate_lorem_ipsum
from markupsafe import Markup

from mailer.core.errors import Problem, UserError

MAX_OUTPUT = 1_000_000
MAX_CPU_SECONDS = 2.0
MAX_RANGE = 10_000
# Python's own limit for printing an int (sys.get_int_max_str_digits): a bigger number
# cannot be printed anyway, and building one (99 ** 99 ** 99) can take hours
MAX_DIGITS = 4_300
_MAX_INT_BITS = int(MAX_DIGITS * math.log2(10))


class RenderError(UserError):
    """A template that cannot be compiled or rendered; `str()` is `templates/X:LINE: ...`."""

    def problem(self) -> Problem:
        return Problem(self.path or "templates", self.line, None, self.message)


class RenderLimit(RenderError):
    """A render stopped by one of the per-mail limits."""


class TemplateRefused(RenderError):
    """A template name that leads outside the workspace's templates/ folder."""


# --- the one way a template is found ---------------------------------------------------------

ABSOLUTE = "an absolute path"
DOTDOT = "a path with '..'"
SYMLINK = "a symlink that leads out of it"


def refusal(name: str) -> str | None:
    """Why NAME can never name a template of templates/, whatever the folder holds, or None.
    Checked at compile time on the workspace and at render time on the version's parts."""
    if not name or "\x00" in name:
        return "an empty name or one with a NUL byte"
    if name.startswith(("/", "\\")) or PureWindowsPath(name).drive:
        return ABSOLUTE
    if ".." in re.split(r"[/\\]", name):
        return DOTDOT
    return None


def _refused(name: str, reason: str) -> str:
    return f"template {name!r} is outside templates/: {reason}"


class TemplateFolder:
    """The workspace's templates/: every template file is read through `read`, which
    refuses absolute paths, `..` and symlinks that resolve outside the folder."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._real = root.resolve()

    def path(self, name: str, *, where: tuple[str | None, int | None] = (None, None)) -> Path:
        """The file of template NAME; TemplateRefused (at WHERE) when it is outside."""
        reason = refusal(name)
        candidate = self.root / name
        if reason is None:
            try:
                inside = candidate.resolve().is_relative_to(self._real)
            except (OSError, RuntimeError):  # a symlink loop: nothing to read either way
                inside = True
            reason = None if inside else SYMLINK
        if reason is not None:
            raise TemplateRefused(_refused(name, reason), path=where[0], line=where[1])
        return candidate

    def read(self, name: str, *, where: tuple[str | None, int | None] = (None, None)) -> str:
        """The source of template NAME; RenderError at WHERE when it is refused or missing."""
        file = self.path(name, where=where)
        try:
            return file.read_text(encoding="utf-8")
        except (OSError, RuntimeError):
            raise RenderError(f"template {name!r} not found", path=where[0],
                              line=where[1]) from None
        except UnicodeDecodeError as err:
            raise RenderError(f"template {name!r} is not UTF-8 ({err.reason} at byte "
                              f"{err.start})", path=where[0], line=where[1]) from None


class VersionLoader(jinja2.BaseLoader):
    """The loader of a rendering environment: the templates a campaign version carries
    (those its sources name in quotes), never a file. A name known only per mail
    (`{% include customer.page %}`) gets the same refusal as at compile time."""

    def __init__(self, parts: Mapping[str, str] | None = None) -> None:
        self.parts: dict[str, str] = dict(parts or {})

    def get_source(self, environment: jinja2.Environment,
                   template: str) -> tuple[str, str, Callable[[], bool]]:
        reason = refusal(template) if isinstance(template, str) else "not a name"
        if reason is not None:
            raise SecurityError(_refused(str(template), reason))
        if template not in self.parts:
            raise jinja2.TemplateNotFound(template, f"template {template!r} is not part of "
                                          "this campaign version (name templates in quotes)")
        return self.parts[template], f"templates/{template}", lambda: True


_LOADS = (nodes.Include, nodes.Import, nodes.FromImport, nodes.Extends)


def _named(node: nodes.Node) -> list[str]:
    """The template names written in quotes in an include, import, from or extends."""
    target = getattr(node, "template", None)
    items = target.items if isinstance(target, (nodes.List, nodes.Tuple)) else [target]
    return [item.value for item in items
            if isinstance(item, nodes.Const) and isinstance(item.value, str)]


def gather_parts(env: jinja2.Environment, source: str, folder: TemplateFolder,
                 where: Callable[[int], tuple[str | None, int | None]],
                 parts: dict[str, str]) -> None:
    """Add to PARTS every template SOURCE loads by a quoted name that the flattener did
    not pull in (imports, `from`, includes with options or lists, a late extends), and
    theirs in turn, read through FOLDER; WHERE maps a line of SOURCE to its file and line."""
    for node in env.parse(source).find_all(_LOADS):
        names = _named(node)
        # Jinja takes the first of a list that exists, and skips a missing `ignore missing`
        optional = len(names) > 1 or getattr(node, "ignore_missing", False)
        for name in names:
            file = folder.path(name, where=where(node.lineno))  # refused even if missing
            if name in parts or (optional and not file.is_file()):
                continue
            parts[name] = folder.read(name, where=where(node.lineno))
            gather_parts(env, parts[name], folder, lines_of(f"templates/{name}"), parts)


def lines_of(path: str) -> Callable[[int], tuple[str | None, int | None]]:
    """WHERE for a source that is one file as written (not flattened)."""
    return lambda line: (path, line)


# --- the sandbox -------------------------------------------------------------------------


class _Budget:
    """Output and CPU spent by one render."""

    def __init__(self) -> None:
        self.started = time.thread_time()  # this render's thread only
        self.output = 0
        self.prints = 0
        self.calls = 0

    def spend(self, size: int) -> None:
        self.output += size
        if self.output > MAX_OUTPUT:
            raise _Stopped("more than 1 MB of output")
        if self.prints % 64 == 0:  # reading the CPU clock per print would cost more
            self.check()

    def check(self) -> None:
        if time.thread_time() - self.started > MAX_CPU_SECONDS:
            raise _Stopped(f"more than {MAX_CPU_SECONDS:g} s of CPU")


_DEEP = "nesting too deep"


class _Stopped(Exception):
    """Raised inside a render when a limit is hit; turned into RenderLimit with a line."""


# The render under way in this thread (a ContextVar: the daemon's reload validates
# templates in one thread while the sender renders mails in another).
_BUDGET: ContextVar[_Budget | None] = ContextVar("mailer_render_budget", default=None)


# --- sizes, checked before a value is built ------------------------------------------------

HUGE = "a value over 1 MB"
STRING = "a string over 1 MB"
_TEXT = (str, bytes, bytearray)
_SEQUENCES = (str, bytes, bytearray, list, tuple)
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
        if cls is str or cls is Markup or isinstance(item, _TEXT):
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


def _checked(value: Any) -> Any:
    """VALUE, made by a call or a filter, refused when over 1 MB; an iterator is metered."""
    cls = value.__class__
    if cls is str or cls is Markup or isinstance(value, _TEXT):
        if len(value) > MAX_OUTPUT:
            raise _Stopped(STRING)
    elif isinstance(value, (dict, Namespace, *_COLLECTIONS)):
        if weight(value) > MAX_OUTPUT:
            raise _Stopped(HUGE)
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
            raise _Stopped("a filter's items over 1 MB")
        if not index & 255 and (budget := _BUDGET.get()) is not None:
            budget.check()
        yield item


def _built(value: Any) -> Any:
    """A list, tuple or dict literal of the template, refused when over 1 MB: a literal of
    references (`[x, x]`) doubles what it prints at each step of a loop."""
    if weight(value) > MAX_OUTPUT:
        raise _Stopped(HUGE)
    return value


def _joinable(items: tuple[Any, ...]) -> tuple[Any, ...]:
    """The operands of `~`, refused before they are joined when over 1 MB together."""
    total = 0
    for item in items:
        total += weight(item)
        if total > MAX_OUTPUT:
            raise _Stopped("a concatenation over 1 MB")
    return items


FORMAT = "a format over 1 MB"
WIDE = "a format width of a million or more"
_FLOATS = frozenset("eEfFgG%")


def _count(text: str | bytes | bytearray, mark: str) -> int:
    """How often MARK occurs in TEXT, a string or bytes."""
    return text.count(mark) if isinstance(text, str) else text.count(mark.encode())


def _field_size(value: Any, width: int, precision: int | None) -> int:
    """About how many characters VALUE takes formatted in WIDTH with PRECISION: the width,
    or the value's weight when longer. A precision adds digits to a number (`%.999999f`,
    `{:.999999f}`) and cuts text; a float's whole part can have 309 digits."""
    if width >= MAX_OUTPUT or (precision is not None and precision >= MAX_OUTPUT
                               and isinstance(value, (int, float))):
        raise _Stopped(WIDE)
    if isinstance(value, float):
        digits = int(math.log10(abs(value))) + 1 if math.isfinite(value) and abs(value) >= 1 \
            else 1
        body = digits + (17 if precision is None else precision) + 8  # sign, point, exponent
    elif isinstance(value, int):  # a bit a digit covers every base, signs and separators
        body = value.bit_length() + 2 + (precision or 0)
    else:
        body = weight(value)
        if precision is not None and isinstance(value, _TEXT):
            body = min(body, precision)
    return max(width, body)


def _spend(total: int, size: int) -> int:
    total += size
    if total > MAX_OUTPUT:
        raise _Stopped(FORMAT)
    return total


# One conversion of printf-style formatting (`%`, `| format`), as Python reads it; a key
# with parentheses inside it reads as a field of the whole mapping, which weighs more.
_PERCENT = re.compile(r"%(?:\((?P<key>[^()]*)\))?[-+ #0]*(?P<width>\*|\d+)?"
                      r"(?:\.(?P<precision>\*|\d*))?[hlL]?(?P<type>.)?", re.S)


def _check_percent(text: Any, right: Any) -> None:
    """TEXT % RIGHT, refused before it is built when it would pass 1 MB: the text around
    the conversions plus, for each, its width or its value (`'%999999s' * 50`)."""
    if not isinstance(text, _TEXT):
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
            raise _Stopped(WIDE)
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


class _MeteredFormatter(SandboxedFormatter):
    """Jinja's sandboxed str.format and format_map, with each field's size estimated just
    before it is formatted (its value, width and nested fields known by then) and the
    result kept under 1 MB: `('{0:999999}' * 50).format(1)` stops at its second field."""

    total = 0

    def vformat(self, format_string: str, args: Sequence[Any],
                kwargs: Mapping[str, Any]) -> str:
        self.total = sum(len(literal) for literal, *_ in self.parse(format_string))
        if self.total > MAX_OUTPUT:
            raise _Stopped(FORMAT)
        return super().vformat(format_string, args, kwargs)

    def format_field(self, value: Any, format_spec: str) -> Any:
        spec = _SPEC.fullmatch(format_spec)
        if spec is None:
            size = weight(value) + 16 * len(format_spec)
        else:
            width, precision = spec.group(1), spec.group(2)
            if len(width) > 7 or len(precision or "") > 7:
                raise _Stopped(WIDE)
            size = _field_size(value, int(width or 0),
                               None if precision is None else int(precision))
        self.total = _spend(self.total, size)
        return super().format_field(value, format_spec)


class _MeteredEscapeFormatter(_MeteredFormatter, SandboxedEscapeFormatter):
    """The metered formatter of Markup.format: values are escaped as Jinja escapes them."""


def _check_number(bits: float) -> None:
    if bits > _MAX_INT_BITS:
        raise _Stopped(f"a number over {MAX_DIGITS:,} digits")


def _lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:
    """Jinja's lipsum, refused when it would pass 1 MB (a word is at most 12 characters)."""
    if isinstance(n, int) and isinstance(max, int) and n * max * 12 > MAX_OUTPUT:
        raise _Stopped("lipsum() over 1 MB")
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
            raise _Stopped("sum() over 1 MB")
        result.extend(item)
    return result if kind is list else tuple(result)


def _slice(value: Any, slices: int, fill_with: Any = None) -> Iterator[list[Any]]:
    """Jinja's slice, into at most MAX_RANGE parts (each part is a new list)."""
    if isinstance(slices, int) and slices > MAX_RANGE:
        raise _Stopped(f"slice() into more than {MAX_RANGE:,} parts")
    return jinja_filters.sync_do_slice(value, slices, fill_with)


def _batch(value: Any, linecount: int, fill_with: Any = None) -> Iterator[list[Any]]:
    """Jinja's batch; the last batch is filled to at most MAX_RANGE items."""
    if fill_with is not None and isinstance(linecount, int) and linecount > MAX_RANGE:
        raise _Stopped(f"batch() filled to more than {MAX_RANGE:,} items")
    return jinja_filters.do_batch(value, linecount, fill_with)


def _bounded_range(*args: int) -> Iterator[int]:
    numbers = range(*args)
    if len(numbers) > MAX_RANGE:
        raise _Stopped(f"range() of {len(numbers):,} items (at most {MAX_RANGE:,})")
    for index, number in enumerate(numbers):
        if index % 256 == 0 and (budget := _BUDGET.get()) is not None:
            budget.check()
        yield number


def _finalize(value: Any) -> Any:
    """Count every printed value against the budget; runs inside the template's code,
    so a limit hit here is reported with the template line that printed it. Inlined
    (it runs once per printed value: the method call was a fifth of a render). A value
    that is not text is made text here, so its real length is counted: a list printed
    in a loop would otherwise pile up megabytes before the limit saw them."""
    cls = value.__class__
    if cls is not str and cls is not Markup and not hasattr(value, "__html__"):
        if cls is not int and weight(value) > MAX_OUTPUT:  # before str() builds its text
            raise _Stopped(HUGE)
        value = str(value)
    budget = _BUDGET.get()
    if budget is not None:
        budget.output += len(value)
        budget.prints += 1
        if budget.output > MAX_OUTPUT or not budget.prints & 63:
            budget.spend(0)  # the output limit, and every 64 prints the CPU clock
    return value


def _public_escape(text: str) -> str:
    return str(markupsafe.escape(text))


_escape_text: Callable[[str], str] = _public_escape
# markupsafe's C escaper, without the Markup object escape() wraps its result in; a
# markupsafe without it keeps the public function
with contextlib.suppress(ImportError):
    from markupsafe._speedups import _escape_inner as _escape_text


def _escape(value: Any) -> Any:
    """The `escape` of compiled HTML templates, for every printed value: escaped text
    as a plain str. markupsafe.escape costs 1.1 µs a value here, most of it making the
    Markup; Jinja only joins printed values, and wraps what a block or macro keeps in
    Markup itself, so the str is as safe. Anything else takes markupsafe's path."""
    if type(value) is str:
        return _escape_text(value)
    return markupsafe.escape(value)


def _guarded(iterable: Any) -> Iterator[Any]:
    """What every `{% for %}` iterates: the CPU budget is read every 256 items, so
    nested loops over long strings or lists, which neither print nor call range(),
    are stopped too."""
    for index, item in enumerate(iterable):
        if not index & 255 and (budget := _BUDGET.get()) is not None:
            budget.check()
        yield item


class _GuardedLoops(CodeGenerator):
    """Jinja's code generator, with each loop's iterable passed through `_guarded`."""

    def visit_For(self, node: nodes.For, frame: Frame) -> None:
        if not (isinstance(node.iter, nodes.Call) and isinstance(
                node.iter.node, nodes.EnvironmentAttribute)):  # once, recursive loops too
            node.iter = nodes.Call(nodes.EnvironmentAttribute("guarded"), [node.iter], [],
                                   None, None, lineno=node.iter.lineno)
        super().visit_For(node, frame)

    def _through(self, name: str, node: nodes.Expr, frame: Frame,
                 visit: Callable[[Any, Frame], None]) -> None:
        """Write the code of NODE passed through the environment's NAME."""
        if getattr(node, "ctx", "load") != "load":  # an assignment target: not a value
            visit(node, frame)
            return
        self.write(f"environment.{name}(")
        visit(node, frame)
        self.write(")")

    def visit_List(self, node: nodes.List, frame: Frame) -> None:
        self._through("built", node, frame, super().visit_List)

    def visit_Tuple(self, node: nodes.Tuple, frame: Frame) -> None:
        self._through("built", node, frame, super().visit_Tuple)

    def visit_Dict(self, node: nodes.Dict, frame: Frame) -> None:
        self._through("built", node, frame, super().visit_Dict)

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        """Jinja's `~`, with its operands weighed before they are joined."""
        if frame.eval_ctx.volatile:
            func_name = "(markup_join if context.eval_ctx.volatile else str_join)"
        elif frame.eval_ctx.autoescape:
            func_name = "markup_join"
        else:
            func_name = "str_join"
        self.write(f"{func_name}(environment.joinable((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write(")))")


# Strings that grow: checked before Python builds them, since a template could ask
# for gigabytes in one call ('x' | center(10**10)), long before the output limit.
def _check_size(size: int) -> None:
    if size > MAX_OUTPUT:
        raise _Stopped("a string over 1 MB")


def _replaced_size(text: Any, old: Any, new: Any, count: Any) -> int:
    found = text.count(old) if old else len(text) + 1
    if isinstance(count, int) and count >= 0:
        found = min(found, count)
    return len(text) + found * (len(new) - len(old))


def _joined_size(separator: str | bytes | bytearray, items: list[Any]) -> int:
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
    if isinstance(sep, _TEXT) and sep:
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


def _check_pieces(length: int, pieces: int) -> None:
    """A string of LENGTH cut into PIECES, refused when the list would weigh over 1 MB:
    each piece is a Python object of 50 bytes or more, so the pieces of 1 MB of text
    take 50 MB (80 in euro signs) however few characters they keep."""
    if 2 + 2 * pieces + length > MAX_OUTPUT:
        raise _Stopped(HUGE)


def _checked_str_call(text: str | bytes | bytearray, name: str, args: tuple[Any, ...],
                      kwargs: dict[str, Any]) -> tuple[Any, ...]:
    """ARGS for TEXT.NAME(...), refused when the result would pass 1 MB (a join's items
    are read into a list first, to be measured)."""
    first = args[0] if args else next(iter(kwargs.values()), None)
    if name in ("center", "ljust", "rjust", "zfill") and isinstance(first, int):
        _check_size(first)
    elif name == "expandtabs" and isinstance(first, int):
        _check_size(len(text) + _count(text, "\t") * first)
    elif name == "replace" and len(args) >= 2 and isinstance(args[0], _TEXT) \
            and isinstance(args[1], _TEXT):
        _check_size(_replaced_size(text, args[0], args[1], args[2] if len(args) > 2 else -1))
    elif name == "join" and args:
        items = list(args[0])
        _check_size(_joined_size(text, items))
        args = (items, *args[1:])
    elif name in ("split", "rsplit", "splitlines"):
        if _split_weight(text, name, args, kwargs) > MAX_OUTPUT:  # pieces of 50 bytes up
            raise _Stopped(HUGE)
    elif name == "translate" and isinstance(first, Mapping):
        longest = max((len(v) for v in first.values() if isinstance(v, _TEXT)), default=1)
        _check_size(len(text) * longest)
    return args


def _center(value: Any, width: int = 80) -> str:
    if isinstance(width, int):
        _check_size(width)
    return jinja_filters.do_center(value, width)


def _indent(text: Any, width: int | str = 4, first: bool = False, blank: bool = False) -> str:
    lines = str(text).count("\n") + 1
    _check_size(len(str(text)) + lines * (width if isinstance(width, int) else len(str(width))))
    return jinja_filters.do_indent(text, width, first, blank)


@jinja2.pass_environment
def _wordwrap(environment: jinja2.Environment, text: str, width: int = 79,
              break_long_words: bool = True, wrapstring: str | None = None,
              break_on_hyphens: bool = True) -> str:
    if isinstance(width, int) and isinstance(text, str):
        wrap = len(environment.newline_sequence if wrapstring is None else str(wrapstring))
        _check_size(len(text) + (len(text) // max(width, 1) + text.count("\n") + 1) * wrap)
    return jinja_filters.do_wordwrap(environment, text, width, break_long_words, wrapstring,
                                     break_on_hyphens)


@jinja2.pass_eval_context
def _replace(eval_ctx: Any, text: Any, old: Any, new: Any, count: int | None = None) -> str:
    _check_size(_replaced_size(str(text), str(old), str(new), count))
    return jinja_filters.do_replace(eval_ctx, text, old, new, count)


@jinja2.pass_eval_context
def _join(eval_ctx: Any, value: Any, separator: str = "", attribute: Any = None) -> str:
    items = list(value)
    _check_size(_joined_size(str(separator), items))
    return jinja_filters.sync_do_join(eval_ctx, items, separator, attribute)


def _format(value: str, *args: Any, **kwargs: Any) -> str:
    _check_percent(value, kwargs or args)  # what Jinja's format puts right of its `%`
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
            _check_pieces(len(value), len(value))
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
    """FUNCTION with its result checked by _checked (Jinja's pass_* marks are kept)."""
    @functools.wraps(function)
    def checked(*args: Any, **kwargs: Any) -> Any:
        return _checked(function(*args, **kwargs))
    return checked


class _Sandbox(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox with bounded repetition and exponents, loops under the
    CPU budget, and an error (never a silent empty string) for anything it refuses."""

    intercepted_binops = frozenset(["*", "**", "%", "+"])
    code_generator_class = _GuardedLoops
    guarded = staticmethod(_guarded)
    built = staticmethod(_built)
    joinable = staticmethod(_joinable)

    def getattr(self, obj: Any, attribute: str) -> Any:
        """`customer.first_name` on the context's dicts: the key, at once. Jinja tries the
        Python attribute first and falls back to the key through an AttributeError, once
        per printed value; anything that is not a plain dict key takes the sandbox's path."""
        if type(obj) is dict and attribute in obj:
            return obj[attribute]
        return super().getattr(obj, attribute)

    def call(__self, __context: Any, __obj: Any, *args: Any,
             **kwargs: Any) -> Any:
        """A call from a template; a method of a string that could grow it past 1 MB is
        refused first, the result is checked, and every 64 calls the CPU budget is read
        (macros calling macros can spin without printing or looping)."""
        if __obj is _guarded:  # a loop's own iterable: items are not kept, only counted
            return super().call(__context, __obj, *args, **kwargs)
        owner = getattr(__obj, "__self__", None)
        if isinstance(owner, _TEXT):
            args = _checked_str_call(owner, getattr(__obj, "__name__", ""), args, kwargs)
        elif isinstance(owner, int) and getattr(__obj, "__name__", "") == "to_bytes":
            length = args[0] if args else kwargs.get("length", 1)
            if isinstance(length, int):
                _check_size(length)
        budget = _BUDGET.get()
        if budget is not None:
            budget.calls += 1
            if not budget.calls & 63:
                budget.check()
        return _checked(super().call(__context, __obj, *args, **kwargs))

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        """Jinja's sandboxed str.format and format_map (wrapped where they are looked up,
        as Jinja does), through the metered formatter."""
        if not isinstance(value, (types.MethodType, types.BuiltinMethodType)) \
                or value.__name__ not in ("format", "format_map") \
                or not isinstance(value.__self__, str):
            return None
        text: str = value.__self__
        formatter = _MeteredEscapeFormatter(self, escape=text.escape) if isinstance(
            text, Markup) else _MeteredFormatter(self)
        is_map = value.__name__ == "format_map"

        def wrapper(*args: Any, **kwargs: Any) -> str:
            if is_map:
                if kwargs:
                    raise TypeError("format_map() takes no keyword arguments")
                if len(args) != 1:
                    raise TypeError(f"format_map() takes exactly one argument ({len(args)} "
                                    "given)")
                kwargs = args[0]
                args = ()
            return type(text)(formatter.vformat(text, args, kwargs))
        return functools.update_wrapper(wrapper, value)

    def unsafe_undefined(self, obj: Any, attribute: str) -> jinja2.Undefined:
        raise SecurityError(f"access to {attribute!r} of a {type(obj).__name__} is not allowed")

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        """`*`, `**`, `%` and `+`, with the size of the result checked before Python
        builds it: 1 MB for text and containers, MAX_DIGITS for whole numbers."""
        if operator == "+":
            if isinstance(left, _SEQUENCES) and isinstance(right, _SEQUENCES) \
                    and weight(left) + weight(right) > MAX_OUTPUT:
                raise _Stopped("a concatenation over 1 MB")
        elif operator == "*":
            if isinstance(left, int) and isinstance(right, int):
                _check_number(left.bit_length() + right.bit_length())
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, _SEQUENCES) and isinstance(times, int) and times > 1 \
                        and seq:  # a list's brackets are printed once, not per copy
                    each = weight(seq) - (0 if isinstance(seq, _TEXT) else 2)
                    if each * times > MAX_OUTPUT:
                        raise _Stopped("a repetition over 1 MB")
        elif operator == "**":
            if isinstance(left, int) and isinstance(right, int) and abs(left) > 1 \
                    and right > 0:
                _check_number(right * math.log2(abs(left)))
        elif operator == "%":
            _check_percent(left, right)
        return super().call_binop(context, operator, left, right)


class Lenient(jinja2.ChainableUndefined):
    """Missing data renders empty and works with `| default(...)`: for sending."""


# The names of the context (DESIGN §4.4); any may be missing for a given mail.
CONTEXT_NAMES = frozenset({"customer", "stats", "campaign", "intro", "coupon", "referral",
                           "links", "store", "now"})


class Checking(jinja2.ChainableUndefined):
    """For validate: a top-level name outside the context is an error (a typo); missing
    data (no intro, an empty first name) renders empty, as when sending."""

    def __init__(self, hint: str | None = None, obj: Any = jinja2.utils.missing,
                 name: str | None = None,
                 exc: type[jinja2.TemplateRuntimeError] = jinja2.UndefinedError) -> None:
        if obj is jinja2.utils.missing and hint is None and name not in CONTEXT_NAMES:
            raise exc(f"{name!r} is undefined")
        super().__init__(hint, obj, name, exc)


def environment(*, checking: bool = False,
                parts: Mapping[str, str] | None = None) -> jinja2.Environment:
    """A sandboxed environment; HTML autoescapes, subjects, intros and text do not. Its
    loader holds PARTS, the templates a campaign version carries (VersionLoader)."""
    env = _Sandbox(
        autoescape=lambda name: bool(name) and str(name).endswith((".html", ".htm")),
        undefined=Checking if checking else Lenient,
        keep_trailing_newline=True,
        finalize=_finalize,
        loader=VersionLoader(parts),
    )
    env.globals["range"] = _bounded_range
    env.globals["lipsum"] = _lipsum
    env.filters.update(_GROWING_FILTERS)
    env.filters.update({name: _listing(env.filters[name]) for name in _LISTING})
    env.filters.update({"title": _by_chunks(env.filters["title"], _joined_text),
                        "urlize": _by_chunks(env.filters["urlize"], _joined_text),
                        "wordcount": _by_chunks(env.filters["wordcount"], sum)})
    env.filters.update({name: _result_checked(function) for name, function in
                        env.filters.items() if name not in _SAME_SIZE})
    return env


# --- flattening and inlining ---------------------------------------------------------------

_INCLUDE = re.compile(r"{%-?\s*include\s+['\"]([^'\"]+)['\"]\s*-?%}")
_EXTENDS = re.compile(r"^\s*{%-?\s*extends\s+['\"]([^'\"]+)['\"]\s*-?%}")
_BLOCK = re.compile(r"{%-?\s*block\s+(\w+)\s*-?%}(.*?){%-?\s*endblock(?:\s+\w+)?\s*-?%}", re.S)
_MARK = "{#@%s:%d#}"
_MARKER = re.compile(r"{#@([^:#]+):(\d+)#}")
_TAG = re.compile(r"{%.*?%}|{{.*?}}|{#.*?#}", re.S)


def _marked(source: str, name: str) -> str:
    """Prefix every line with a Jinja comment naming its file and line."""
    return "".join(_MARK % (name, number) + line
                   for number, line in enumerate(source.splitlines(keepends=True), 1))


def flatten(name: str, load: Callable[[str], str]) -> str:
    """One source for NAME with extends, blocks and includes resolved, lines marked
    (except inside <style>, where a marker would break the CSS)."""
    source = _BLOCK.sub(lambda m: m.group(2), _resolve(name, load, ()))
    body = re.search(r"<body[^>]*>", source, re.I)
    if body is not None:  # text before <html> would push the head into the body
        source = _MARKER.sub("", source[:body.end()]) + source[body.end():]
    return re.sub(r"(<style[^>]*>)(.*?)(</style>)",
                  lambda m: m.group(1) + _MARKER.sub("", m.group(2)) + m.group(3),
                  source, flags=re.S | re.I)


def _mark_before(source: str, position: int) -> tuple[str | None, int | None]:
    """The file and line of a marked SOURCE that POSITION is on."""
    mark = _MARKER.match(source, max(source.rfind("{#@", 0, position + 1), 0))
    return (mark.group(1), int(mark.group(2))) if mark else (None, None)


def _loaded(name: str, load: Callable[[str], str],
            where: tuple[str | None, int | None]) -> str:
    """LOAD(NAME); an error without a place is given WHERE (the tag that named it)."""
    try:
        return load(name)
    except RenderError as err:
        if err.path is None and err.line is None:
            raise type(err)(err.message, path=where[0], line=where[1]) from None
        raise


def _resolve(name: str, load: Callable[[str], str], seen: tuple[str, ...],
             where: tuple[str | None, int | None] = (None, None)) -> str:
    """NAME with its layout and includes pulled in; block tags are kept for a child."""
    if name in seen:
        raise RenderError(f"templates include each other: {' -> '.join((*seen, name))}",
                          path=f"templates/{name}")
    source = _marked(_loaded(name, load, where), f"templates/{name}")
    chain = (*seen, name)
    parent = _EXTENDS.search(_MARKER.sub("", source.split("\n", 1)[0]))
    if parent is not None:
        blocks = {m.group(1): m.group(2) for m in _BLOCK.finditer(source)}
        layout = _resolve(parent.group(1), load, chain, (f"templates/{name}", 1))

        def fill(match: re.Match[str]) -> str:
            inner = blocks.get(match.group(1), match.group(2))
            return match.group(0).replace(match.group(2), inner, 1)

        source = _BLOCK.sub(fill, layout)
    return _INCLUDE.sub(lambda m: _resolve(m.group(1), load, chain,
                                           _mark_before(source, m.start())), source)


_TOKEN = re.compile(r"MAILERJINJA(\d+)X")


def _parked(source: str, change: Callable[[str], str]) -> str:
    """Apply CHANGE to SOURCE with every Jinja tag swapped for an inert token (letters
    and digits survive HTML parsers and attribute values), then swap the tags back."""
    saved: list[str] = []

    def park(match: re.Match[str]) -> str:
        saved.append(match.group(0))
        return f"MAILERJINJA{len(saved) - 1}X"

    return _TOKEN.sub(lambda m: saved[int(m.group(1))], change(_TAG.sub(park, source)))


def inline_css(source: str) -> str:
    """Inline the CSS of a flattened HTML template once, keeping its Jinja intact; the
    template's own non-ASCII text becomes character references at the same time."""
    return _parked(source, lambda parked: ascii_markup(_premailer(parked)))


_STYLE = re.compile(r"(<style\b.*?</style\s*>)", re.S | re.I)


def ascii_markup(markup: str) -> str:
    """MARKUP with every non-ASCII character outside <style> as a numeric character
    reference (`—` as `&#8212;`): a browser or mail client shows the same, and a mail
    whose HTML is ASCII goes out 7bit, with no per-mail encoding (mailer.mail.message).
    CSS does not read references, so a <style> block keeps its characters."""
    if markup.isascii():
        return markup
    return "".join(part if index % 2 else part.encode("ascii", "xmlcharrefreplace").decode()
                   for index, part in enumerate(_STYLE.split(markup)))


def _premailer(parked: str) -> str:
    """premailer over a parked source (network off); it drops the doctype, so keep it."""
    import logging

    import premailer

    doctype = re.match(r"\s*(?:MAILERJINJA\d+X\s*)*(<!doctype[^>]*>)", parked, re.I)
    inlined: str = premailer.Premailer(
        parked, allow_network=False, allow_loading_external_files=False,
        strip_important=False, keep_style_tags=False, disable_validation=True,
        cssutils_logging_level=logging.CRITICAL,
    ).transform()
    return (doctype.group(1) + "\n" + inlined) if doctype else inlined


def origin(source: str, line: int) -> tuple[str, int]:
    """The file and line that line LINE of a flattened source came from."""
    lines = source.splitlines()
    for index in range(min(line, len(lines)) - 1, -1, -1):
        found = list(_MARKER.finditer(lines[index]))
        if found:
            mark = found[-1]
            return mark.group(1), int(mark.group(2)) + (line - 1 - index)
    return "templates", line


# --- compiled templates and rendering ----------------------------------------------------------


@dataclass(frozen=True)
class CompiledTemplate:
    """A template ready to render: its (flattened, inlined) source and Jinja's code."""

    name: str
    source: str
    template: jinja2.Template
    static: bool = False  # no Jinja syntax at all: the source is the output

    def render(self, context: Mapping[str, Any]) -> str:
        """Render under the per-mail limits; errors name the template file and line."""
        if self.static:  # an intro or subject without a tag: nothing to fill in
            return self.source
        token = _BUDGET.set(_Budget())  # printed values are counted as they are printed
        try:
            output = "".join(self.template.generate(context))
            if len(output) > MAX_OUTPUT:  # literal text repeated by a loop
                raise _Stopped("more than 1 MB of output")
        except _Stopped as stop:
            path, line = self._where()
            raise RenderLimit(f"render stopped: {stop}", path=path, line=line) from None
        except (RecursionError, MemoryError) as err:  # a macro calling itself, say
            path, line = self._where()
            limit = _DEEP if isinstance(err, RecursionError) else "out of memory"
            raise RenderLimit(f"render stopped: {limit}", path=path, line=line) from None
        except SecurityError as err:
            path, line = self._where()
            raise RenderError(f"refused by the sandbox: {err}", path=path, line=line) from None
        except jinja2.UndefinedError as err:
            path, line = self._where()
            raise RenderError(str(err), path=path, line=line) from None
        except (jinja2.TemplateError, ArithmeticError, TypeError, ValueError, LookupError,
                AttributeError) as err:
            path, line = self._where()
            raise RenderError(f"{type(err).__name__}: {err}" if not isinstance(
                err, jinja2.TemplateError) else str(err), path=path, line=line) from None
        finally:
            _BUDGET.reset(token)
        return output

    def _where(self) -> tuple[str, int | None]:
        """The template file and line of the frame that failed (from the traceback)."""
        import sys
        import traceback

        # Jinja rewrites the traceback: frames of template code carry the template's
        # file name and its source line.
        loader = self.template.environment.loader
        parts = {f"templates/{name}" for name in loader.parts} if isinstance(
            loader, VersionLoader) else set()
        line, part = None, None
        for frame, lineno in traceback.walk_tb(sys.exc_info()[2]):  # outermost first
            if frame.f_code.co_filename == self.template.filename:
                line, part = lineno, None
            elif frame.f_code.co_filename in parts:  # a template the version carries
                part = (frame.f_code.co_filename, lineno)
        if part is not None:
            return part
        if line is None:
            return self.name, None
        return origin(self.source, line) if "{#@" in self.source else (self.name, line)


def compile_source(env: jinja2.Environment, source: str, name: str) -> CompiledTemplate:
    """Compile one source; a syntax error names its file and line."""
    try:
        # compile() with the name, so autoescaping follows the file's extension
        code = env.compile(source, name=name, filename=name)
    except jinja2.TemplateSyntaxError as err:
        path, line = origin(source, err.lineno) if "{#@" in source else (name, err.lineno)
        raise RenderError(f"syntax: {err.message}", path=path, line=line) from None
    except (RecursionError, MemoryError, SyntaxError):  # an expression nested thousands deep
        raise RenderLimit(f"render stopped: {_DEEP}", path=name) from None
    template = env.template_class.from_code(env, code, env.make_globals(None))
    template.root_render_func.__globals__["escape"] = _escape  # the template's module
    # Jinja prints text without tags as it is, but for newlines (made "\n") and, without
    # keep_trailing_newline, the last one; a source with none of these renders to itself.
    static = not any(mark in source for mark in ("{", "\r", "\n"))
    return CompiledTemplate(name=name, source=source, template=template, static=static)


def compile_html(env: jinja2.Environment, name: str, templates: Path) -> CompiledTemplate:
    """Flatten, inline and compile an HTML template of the workspace. The templates it
    loads by other tags (import, from) are read now and added to ENV's VersionLoader,
    so a version renders from what it carries; nothing outside TEMPLATES is read."""
    folder = TemplateFolder(templates)
    flat = flatten(name, folder.read)
    compile_source(env, flat, f"templates/{name}")  # syntax errors with the original lines
    add_parts(env, flat, folder, lambda line: origin(flat, line))
    return compile_source(env, inline_css(flat), f"templates/{name}")


def add_parts(env: jinja2.Environment, source: str, folder: TemplateFolder,
              where: Callable[[int], tuple[str | None, int | None]]) -> None:
    """The templates SOURCE loads, added to the parts of ENV's VersionLoader."""
    if isinstance(env.loader, VersionLoader):
        gather_parts(env, source, folder, where, env.loader.parts)


# --- the text part --------------------------------------------------------------------------------


def html_to_text(markup: str) -> str:
    """A plain-text version of an HTML mail: paragraphs kept, links as "text (url)"."""
    from html.parser import HTMLParser

    class _Text(HTMLParser):
        def __init__(self) -> None:
            super().__init__(convert_charrefs=True)
            self.out: list[str] = []
            self.href: list[str | None] = []
            self.skip = 0

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            if tag in ("style", "script", "head", "title"):
                self.skip += 1
            elif tag == "a":
                self.href.append(dict(attrs).get("href"))
                self.out.append("\x00")
            elif tag in ("br",):
                self.out.append("\n")
            elif tag in ("p", "div", "tr", "h1", "h2", "h3", "li", "table"):
                self.out.append("\n\n" if tag in ("p", "h1", "h2", "h3") else "\n")

        def handle_endtag(self, tag: str) -> None:
            if tag in ("style", "script", "head", "title"):
                self.skip = max(0, self.skip - 1)
            elif tag == "a" and self.href:
                href = self.href.pop()
                start = len(self.out) - 1 - self.out[::-1].index("\x00")
                label = "".join(self.out[start + 1:]).strip()
                self.out[start:] = [label if not href or href == label or href.startswith("#")
                                    else f"{label} ({href})" if label else href]
            elif tag in ("p", "h1", "h2", "h3", "tr", "li"):
                self.out.append("\n")

        def handle_data(self, data: str) -> None:
            if not self.skip:
                self.out.append(re.sub(r"\s+", " ", data))

    parser = _Text()
    parser.feed(markup)
    text = "".join(parser.out).replace("\x00", "")
    lines = [line.strip() for line in text.splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip() + "\n"


def text_template(source: str) -> str:
    """The text twin of an HTML template source, made once at compile time: the HTML is
    turned into text with the Jinja tags parked, so per mail only values are filled in
    (converting each rendered mail would cost more than rendering it)."""
    return _parked(source, html_to_text)
