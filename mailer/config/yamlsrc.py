"""Load YAML while keeping the line of every key and list item.

The only module that imports the YAML parser. Mappings come back as `YamlMap`
(a dict) and sequences as `YamlList` (a list), each knowing the 1-based line of
its own start and of each of its entries, so a schema error can be reported as
`path:line: field: message` (the habit of dbt's yaml_helper and cloud-init's
safeyaml).

Resolvers follow YAML 1.2's core schema where YAML 1.1 surprises marketers:
`NO` (Norway) stays a string, `yes`/`on` are strings, and `21:00` stays a
string instead of becoming the sexagesimal number 1260.

Limits, so that no file can hang or exhaust a command or the daemon's reload:
at most MAX_DEPTH levels of nesting (the composer recurses per level), aliases
that together expand to at most MAX_ALIAS_NODES values (a "billion laughs"
file is a few lines that expand to 10^9), no alias inside the node it names,
and no NUL character in any value (no database stores one in text).
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from mailer.core.errors import ConfigError, Problem


class YamlMap(dict[Any, Any]):
    """A mapping with the line of the mapping and of each key."""

    line: int = 1
    key_lines: dict[Any, int]


class YamlList(list[Any]):
    """A sequence with the line of the sequence and of each item."""

    line: int = 1
    item_lines: list[int]


MAX_DEPTH = 50
MAX_ALIAS_NODES = 10_000


class _Limit(yaml.MarkedYAMLError):
    """A file over one of the loader's limits (reported without "YAML syntax")."""


class _Loader(yaml.SafeLoader):
    yaml_implicit_resolvers = {  # noqa: RUF012 - PyYAML reads this class attribute
        first: [r for r in resolvers if r[0] not in (
            "tag:yaml.org,2002:bool", "tag:yaml.org,2002:int", "tag:yaml.org,2002:float")]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._open: list[str] = []  # anchors of the nodes being composed
        self._sizes: dict[int, int] = {}  # expanded size of each finished node, by id
        self._expanded = 0  # values brought in by aliases so far

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        """PyYAML's compose_node, counting depth and what every alias expands to."""
        if self.check_event(yaml.AliasEvent):
            event: Any = self.peek_event()  # type: ignore[no-untyped-call]
            if event.anchor in self._open:
                raise _Limit(None, None, f"the alias *{event.anchor} is inside the node it "
                                         "names", event.start_mark)
            node = super().compose_node(parent, index)
            if node is not None:
                self._expanded += _expanded_size(node, self._sizes)
            if self._expanded > MAX_ALIAS_NODES:
                raise _Limit(None, None, f"aliases expand to more than {MAX_ALIAS_NODES:,} "
                                         "values; write the values out or use fewer aliases",
                             event.start_mark)
            return node
        event = self.peek_event()  # type: ignore[no-untyped-call]
        if self._depth >= MAX_DEPTH:
            raise _Limit(None, None, f"nested deeper than {MAX_DEPTH} levels",
                         event.start_mark)
        self._depth += 1
        anchor = getattr(event, "anchor", None)
        if anchor is not None:
            self._open.append(anchor)
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
            if anchor is not None:
                self._open.pop()
        return node

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        """PyYAML's construct_object; a value its constructors cannot make (a date such as
        2026-02-30, `!!float x`, an integer of thousands of digits) is a problem at its
        line, never a ValueError escaping to the command or the daemon's reload."""
        try:
            return super().construct_object(node, deep)
        except (ValueError, OverflowError, TypeError) as err:
            shown = node.value if isinstance(node, yaml.ScalarNode) else node.tag
            reason = str(err).split(";")[0]  # not Python's advice on its own settings
            raise _Limit(None, None, f"cannot read {str(shown)[:40]!r}: {reason}",
                         node.start_mark) from None

    def construct_scalar(self, node: yaml.ScalarNode) -> Any:  # type: ignore[override]
        value = super().construct_scalar(node)
        if isinstance(value, str) and "\x00" in value:
            raise _Limit(None, None, "a value holds a NUL character (\\0), which cannot be "
                                     "stored", node.start_mark)
        return value


def _expanded_size(node: yaml.Node, sizes: dict[int, int]) -> int:
    """How many values NODE stands for with every alias in it written out (memoised:
    one visit per node however often aliases repeat it; depth is bounded by MAX_DEPTH)."""
    known = sizes.get(id(node))
    if known is not None:
        return known
    size = 1
    if isinstance(node, yaml.SequenceNode):
        size += sum(_expanded_size(child, sizes) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        size += sum(_expanded_size(key, sizes) + _expanded_size(value, sizes)
                    for key, value in node.value)
    sizes[id(node)] = size
    return size


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:int",
    re.compile(r"^(?:[-+]?[0-9][0-9_]*|0o[0-7]+|0x[0-9a-fA-F]+)$"), list("-+0123456789"))
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^(?:[-+]?(?:\.[0-9]+|[0-9][0-9_]*(?:\.[0-9_]*)?)(?:[eE][-+]?[0-9]+)?"
               r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+0123456789."))


def _construct_map(loader: _Loader, node: yaml.MappingNode) -> YamlMap:
    result = YamlMap()
    result.line = node.start_mark.line + 1
    result.key_lines = {}
    loader.flatten_mapping(node)
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, (str, int, float, bool)) or key is None:
            raise yaml.constructor.ConstructorError(
                None, None, "a key must be a plain value", key_node.start_mark)
        if key in result:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark)
        result[key] = loader.construct_object(value_node, deep=True)
        result.key_lines[key] = key_node.start_mark.line + 1
    return result


def _construct_seq(loader: _Loader, node: yaml.SequenceNode) -> YamlList:
    result = YamlList(loader.construct_object(child, deep=True) for child in node.value)
    result.line = node.start_mark.line + 1
    result.item_lines = [child.start_mark.line + 1 for child in node.value]
    return result


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_map)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_seq)


def load_yaml(text: str, path: str) -> Any:
    """Parse one YAML document; a syntax error raises ConfigError naming path and line."""
    try:
        return yaml.load(text, Loader=_Loader)
    except _Limit as err:
        line = err.problem_mark.line + 1 if err.problem_mark is not None else None
        raise ConfigError([Problem(path, line, None, str(err.problem))]) from None
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line = mark.line + 1 if mark is not None else None
        message = " ".join(str(part) for part in (err.context, err.problem) if part)
        raise ConfigError([Problem(path, line, None, f"YAML syntax: {message}")]) from None
    except yaml.YAMLError as err:
        raise ConfigError([Problem(path, None, None, f"YAML syntax: {err}")]) from None


def line_of(data: Any, loc: tuple[str | int, ...]) -> int | None:
    """The line of the deepest entry of `loc` that exists in `data`."""
    line: int | None = getattr(data, "line", None)
    node = data
    for part in loc:
        if isinstance(node, YamlMap) and part in node:
            line = node.key_lines.get(part, line)
            node = node[part]
        elif isinstance(node, YamlList) and isinstance(part, int) and 0 <= part < len(node):
            line = node.item_lines[part]
            node = node[part]
        else:
            break
    return line


Loc = tuple[str | int, ...]


def iter_keys(data: Any, prefix: Loc = ()) -> list[tuple[Loc, int]]:
    """Every (key path, line) in the document, depth first."""
    found: list[tuple[Loc, int]] = []
    if isinstance(data, YamlMap):
        for key, value in data.items():
            path = (*prefix, str(key))
            found.append((path, data.key_lines[key]))
            found.extend(iter_keys(value, path))
    elif isinstance(data, YamlList):
        for index, value in enumerate(data):
            found.extend(iter_keys(value, (*prefix, index)))
    return found


def flow(value: Any) -> str:
    """A value written back in YAML flow style, for messages and the reference:
    {at_least: 3, within: 365d}, [a, b], true, null."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{key}: {flow(item)}" for key, item in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(flow(item) for item in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    return "null" if value is None else str(value)
