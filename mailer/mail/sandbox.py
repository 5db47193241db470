"""The sandbox templates render in: Jinja's immutable sandbox with every printed value,
loop, call, literal, `~` and binary operator counted against the render's limits
(mailer.mail.limits, mailer.mail.sizes), bounded filters (mailer.mail.filters),
attribute access that refuses Python internals, missing values that render empty
(Lenient), and what a template reads of the context, found in its source without
rendering it (context_uses: validate's check for unknown names)."""

from __future__ import annotations

import functools
import math
import types
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from markupsafe import Markup

from mailer.mail.context import CONTEXT_SCHEMA
from mailer.mail.filters import install_filters
from mailer.mail.limits import (
    BUDGET,
    HUGE,
    MAX_OUTPUT,
    SEQUENCES,
    TEXT,
    Stopped,
    check_number,
    check_size,
    checked,
    checked_literal,
    checked_operands,
    weight,
)
from mailer.mail.links import SignedOnRead
from mailer.mail.sizes import (
    MeteredEscapeFormatter,
    MeteredFormatter,
    check_percent,
    checked_str_call,
)
from mailer.mail.templates import TemplateFolder, VersionLoader
from mailer.mail.templates import _resolve as resolve_marked  # flatten()'s marked source


def _finalize(value: Any) -> Any:
    """Count every printed value against the budget; runs inside the template's code,
    so a limit hit here is reported with the template line that printed it. Inlined
    (it runs once per printed value: the method call was a fifth of a render). A value
    that is not text is made text here, so its real length is counted: a list printed
    in a loop would otherwise pile up megabytes before the limit saw them."""
    cls = value.__class__
    if cls is not str and cls is not Markup and not hasattr(value, "__html__"):
        if cls is not int and weight(value) > MAX_OUTPUT:  # before str() builds its text
            raise Stopped(HUGE)
        value = str(value)
    budget = BUDGET.get()
    if budget is not None:
        budget.output += len(value)
        budget.prints += 1
        if budget.output > MAX_OUTPUT or not budget.prints & 63:
            budget.spend(0)  # the output limit, and every 64 prints the CPU clock
    return value


def _guarded(iterable: Any) -> Iterator[Any]:
    """What every `{% for %}` iterates: the CPU budget is read every 256 items, so
    nested loops over long strings or lists, which neither print nor call range(),
    are stopped too."""
    for index, item in enumerate(iterable):
        if not index & 255 and (budget := BUDGET.get()) is not None:
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


class _Sandbox(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox with bounded repetition and exponents, loops under the
    CPU budget, and an error (never a silent empty string) for anything it refuses."""

    intercepted_binops = frozenset(["*", "**", "%", "+"])
    code_generator_class = _GuardedLoops
    guarded = staticmethod(_guarded)
    built = staticmethod(checked_literal)
    joinable = staticmethod(checked_operands)

    def getattr(self, obj: Any, attribute: str) -> Any:
        """`customer.first_name` on the context's dicts: the key, at once. Jinja tries the
        Python attribute first and falls back to the key through an AttributeError, once
        per printed value; anything that is not a plain dict key takes the sandbox's path."""
        if type(obj) is dict and attribute in obj:
            return obj[attribute]
        if type(obj) is SignedOnRead and attribute in obj:  # `links.preferences`
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
        if isinstance(owner, TEXT):
            args = checked_str_call(owner, getattr(__obj, "__name__", ""), args, kwargs)
        elif isinstance(owner, int) and getattr(__obj, "__name__", "") == "to_bytes":
            length = args[0] if args else kwargs.get("length", 1)
            if isinstance(length, int):
                check_size(length)
        budget = BUDGET.get()
        if budget is not None:
            budget.calls += 1
            if not budget.calls & 63:
                budget.check()
        return checked(super().call(__context, __obj, *args, **kwargs))

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        """Jinja's sandboxed str.format and format_map (wrapped where they are looked up,
        as Jinja does), through the metered formatter."""
        if not isinstance(value, (types.MethodType, types.BuiltinMethodType)) \
                or value.__name__ not in ("format", "format_map") \
                or not isinstance(value.__self__, str):
            return None
        text: str = value.__self__
        formatter = MeteredEscapeFormatter(self, escape=text.escape) if isinstance(
            text, Markup) else MeteredFormatter(self)
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
            if isinstance(left, SEQUENCES) and isinstance(right, SEQUENCES) \
                    and weight(left) + weight(right) > MAX_OUTPUT:
                raise Stopped("a concatenation over 1 MB")
        elif operator == "*":
            if isinstance(left, int) and isinstance(right, int):
                check_number(left.bit_length() + right.bit_length())
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, SEQUENCES) and isinstance(times, int) and times > 1 \
                        and seq:  # a list's brackets are printed once, not per copy
                    each = weight(seq) - (0 if isinstance(seq, TEXT) else 2)
                    if each * times > MAX_OUTPUT:
                        raise Stopped("a repetition over 1 MB")
        elif operator == "**":
            if isinstance(left, int) and isinstance(right, int) and abs(left) > 1 \
                    and right > 0:
                check_number(right * math.log2(abs(left)))
        elif operator == "%":
            check_percent(left, right)
        return super().call_binop(context, operator, left, right)


class Lenient(jinja2.ChainableUndefined):
    """Missing data renders empty and works with `| default(...)`: for sending."""


# The names of the context (DESIGN §4.4, mailer.mail.context's schema); any may be
# missing for a given mail.
CONTEXT_NAMES = frozenset(CONTEXT_SCHEMA)


def environment(*, parts: Mapping[str, str] | None = None) -> jinja2.Environment:
    """A sandboxed environment; HTML autoescapes, subjects, intros and text do not. Its
    loader holds PARTS, the templates a campaign version carries (VersionLoader)."""
    env = _Sandbox(
        autoescape=lambda name: bool(name) and str(name).endswith((".html", ".htm")),
        undefined=Lenient,
        keep_trailing_newline=True,
        finalize=_finalize,
        loader=VersionLoader(parts),
    )
    install_filters(env)
    return env


# --- what a template reads of the context, without rendering it --------------------------------


@dataclass(frozen=True)
class Use:
    """A context value a template reads: the name and the attributes or quoted keys read
    after it (`customer.first_name.upper` is ("customer", "first_name", "upper")), the
    source line, and whether a missing value is handled there: `| default(...)`, `is
    defined`, an `if` or `x if ... else` that tests it, or `or`."""

    path: tuple[str, ...]
    line: int
    guarded: bool


_DEFAULTS = frozenset({"default", "d"})
_DEFINED = frozenset({"defined", "undefined"})
# Names Jinja gives a block and a macro's body itself.
_JINJA_NAMES = frozenset({"loop", "self", "super", "varargs", "kwargs", "caller"})


def _chain(node: nodes.Node) -> tuple[nodes.Name, tuple[str, ...]] | None:
    """`a.b["c"].d` as (the Name a, ("b", "c", "d")); None for anything else."""
    parts: list[str] = []
    while True:
        if isinstance(node, nodes.Getattr):
            parts.append(node.attr)
        elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const) \
                and isinstance(node.arg.value, str):
            parts.append(node.arg.value)
        else:
            break
        node = node.node
    if isinstance(node, nodes.Name) and node.ctx == "load":
        return node, tuple(reversed(parts))
    return None


def _declared(tree: nodes.Template) -> set[str]:
    """Names the template makes itself anywhere: `set`, macros, imports. Taken as known
    everywhere in it (a typo that matches one is missed; none is reported falsely)."""
    found: set[str] = set()
    for node in tree.find_all((nodes.Assign, nodes.AssignBlock)):
        assert isinstance(node, (nodes.Assign, nodes.AssignBlock))
        found |= _targets(node.target)
    for macro in tree.find_all(nodes.Macro):
        found.add(macro.name)
    for imported in tree.find_all(nodes.Import):
        found.add(imported.target)
    for names in tree.find_all(nodes.FromImport):
        found.update(name[1] if isinstance(name, tuple) else name for name in names.names)
    return found


def _targets(node: nodes.Node) -> set[str]:
    return {name.name for name in ([node] if isinstance(node, nodes.Name) else [])
            + list(node.find_all(nodes.Name))}


class _Reader:
    """Walks a template's tree, keeping which names are bound where (loop targets in
    their loop, macro and call-block arguments in their body, `with` targets in theirs)
    and which values an enclosing test has checked."""

    def __init__(self, known: set[str]) -> None:
        self.known = known
        self.uses: list[Use] = []

    def use(self, name: nodes.Name, path: tuple[str, ...], bound: frozenset[str],
            tested: frozenset[tuple[str, ...]], guarded: bool) -> None:
        if name.name in bound or name.name in self.known:
            return
        full = (name.name, *path)
        covered = any(full[:len(t)] == t or t[:len(full)] == full for t in tested)
        self.uses.append(Use(full, name.lineno, guarded or covered))

    def tested(self, test: nodes.Node, bound: frozenset[str]) -> frozenset[tuple[str, ...]]:
        """The values a test reads: each is checked there and in the branch it guards."""
        reader = _Reader(self.known)
        reader.walk(test, bound, frozenset())
        return frozenset(use.path for use in reader.uses)

    def walk(self, node: nodes.Node, bound: frozenset[str],
             tested: frozenset[tuple[str, ...]], guarded: bool = False) -> None:
        chain = _chain(node) if isinstance(node, (nodes.Name, nodes.Getattr,
                                                  nodes.Getitem)) else None
        if chain is not None:
            self.use(chain[0], chain[1], bound, tested, guarded)
        elif isinstance(node, nodes.For):
            self.walk(node.iter, bound, tested)
            inner = bound | _targets(node.target) | {"loop"}
            self.each([node.test, *node.body], inner, tested)
            self.each(node.else_, bound, tested)
        elif isinstance(node, (nodes.Macro, nodes.CallBlock)):
            self.each(node.defaults, bound, tested)
            if isinstance(node, nodes.CallBlock):
                self.walk(node.call, bound, tested)
            inner = bound.union(*(_targets(arg) for arg in node.args))
            self.each(node.body, inner, tested)
        elif isinstance(node, nodes.With):
            self.each(node.values, bound, tested)
            inner = bound.union(*(_targets(target) for target in node.targets))
            self.each(node.body, inner, tested)
        elif isinstance(node, (nodes.If, nodes.CondExpr)):
            checked = tested | self.tested(node.test, bound)
            self.walk(node.test, bound, checked)
            if isinstance(node, nodes.If):
                self.each(node.body, bound, checked)
                self.each([*node.elif_, *node.else_], bound, tested)
            else:
                self.walk(node.expr1, bound, checked)
                self.each([node.expr2], bound, tested)
        elif isinstance(node, (nodes.Filter, nodes.Test)):
            handled = node.name in (_DEFAULTS if isinstance(node, nodes.Filter) else _DEFINED)
            self.each([node.node], bound, tested, guarded=handled)
            self.each([*node.args, *node.kwargs, node.dyn_args, node.dyn_kwargs], bound,
                      tested)
        elif isinstance(node, nodes.Or):
            self.walk(node.left, bound, tested, guarded=True)
            self.walk(node.right, bound, tested)
        else:
            self.each(list(node.iter_child_nodes()), bound, tested)

    def each(self, children: Sequence[nodes.Node | None], bound: frozenset[str],
             tested: frozenset[tuple[str, ...]], guarded: bool = False) -> None:
        for child in children:
            if child is not None:
                self.walk(child, bound, tested, guarded)


def context_uses(env: jinja2.Environment, source: str) -> list[Use]:
    """Every value of the context SOURCE reads, in source order, with its line; names the
    template binds itself (loop variables, `set`, macro arguments, `with`) and Jinja's
    globals (`range`, `namespace`, ...) are not the context's and are left out. A
    dynamic key (`links.rating[score]`) ends a path. A source that does not parse reads
    nothing here: compiling it reports the syntax error."""
    try:
        tree = env.parse(source)
    except jinja2.TemplateSyntaxError:
        return []
    reader = _Reader(_declared(tree) | set(env.globals) | _JINJA_NAMES)
    reader.walk(tree, frozenset(), frozenset())
    return sorted(reader.uses, key=lambda use: use.line)


def marked_template(name: str, folder: TemplateFolder, read: list[str]) -> str:
    """Template NAME with its layouts and includes pulled in, every line marked with the
    file and line it came from (templates.origin reads them); each file read is added
    to READ, also when a later one fails. flatten() also drops the marks of the head and
    of <style> for premailer; validate needs a line there to name its file, so it reads
    this source instead."""
    def load(part: str) -> str:
        source = folder.read(part)
        read.append(f"templates/{part}")
        return source

    return resolve_marked(name, load, ())
