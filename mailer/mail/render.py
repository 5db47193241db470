"""Rendering mails (DESIGN §4.4): a campaign's templates compiled once (compile_html,
compile_source) and each mail rendered from them (CompiledTemplate.render) in the
sandbox, under the per-mail limits, every error naming `templates/NAME:LINE`.
The parts: mailer.mail.templates (finding, flattening, CSS inlining), .sandbox (the
environment), .limits, .sizes and .filters (what a render may spend and build),
.text (the text part).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import markupsafe
from jinja2.exceptions import SecurityError

from mailer.mail.limits import BUDGET, MAX_OUTPUT, Budget, Stopped
from mailer.mail.templates import RenderError as RenderError
from mailer.mail.templates import (
    TemplateFolder,
    VersionLoader,
    flatten,
    gather_parts,
    inline_css,
    origin,
)

_DEEP = "nesting too deep"


class RenderLimit(RenderError):
    """A render stopped by one of the per-mail limits."""


# --- the escaping of printed values ----------------------------------------------------------


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


# --- compiled templates and rendering ----------------------------------------------------------


@dataclass(frozen=True)
class CompiledTemplate:
    """A template ready to render: its (flattened, inlined) source and Jinja's code."""

    name: str
    source: str
    template: jinja2.Template
    static: bool = False  # no Jinja syntax at all: the source is the output

    def render(self, context: Mapping[str, Any], started: float | None = None) -> str:
        """Render under the per-mail limits; errors name the template file and line.
        STARTED: time.monotonic() when the mail's first part began rendering."""
        if self.static:  # an intro or subject without a tag: nothing to fill in
            return self.source
        token = BUDGET.set(Budget(started))  # printed values are counted as printed
        try:
            output = "".join(self.template.generate(context))
            if len(output) > MAX_OUTPUT:  # literal text repeated by a loop
                raise Stopped("more than 1 MB of output")
        except Stopped as stop:
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
            BUDGET.reset(token)
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
