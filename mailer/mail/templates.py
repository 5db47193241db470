"""A template's source, compiled once per campaign version (DESIGN §4.4). Templates
are read only from templates/ (TemplateFolder); a rendering environment loads only
the parts its campaign version carries (VersionLoader). Includes and extends are
flattened into one source, every line keeping a marker of the file and line it came
from, so an error names `templates/NAME:LINE` even after premailer has reflowed the
HTML; Jinja tags are swapped for inert tokens while premailer inlines the CSS
(network off), then restored."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path, PureWindowsPath

import jinja2
from jinja2 import nodes
from jinja2.exceptions import SecurityError

from mailer.core.errors import Problem, UserError


class RenderError(UserError):
    """A template that cannot be compiled or rendered; `str()` is `templates/X:LINE: ...`."""

    def problem(self) -> Problem:
        return Problem(self.path or "templates", self.line, None, self.message)


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


def with_tags_parked(source: str, change: Callable[[str], str]) -> str:
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
    return with_tags_parked(source, lambda parked: ascii_markup(_premailer(parked)))


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
