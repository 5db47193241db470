"""Reading import files as records with their physical line numbers.

CSV is comma-separated UTF-8 (a BOM allowed); a record's LINE is the physical
line where it starts, the header being line 1. JSON Lines holds one object per
line. A byte that is not UTF-8, an unclosed quote or a line longer than
MAX_LINE stops the file at that line (`SourceStopped`); everything before it
has already been yielded.

JSON is read as RFC 8259 has it: `NaN` and `Infinity` are not numbers, a number
beyond a double's range (`1e400`) or an integer of more than 19 digits is not
read as infinity or as a giant, and a record nests at most MAX_DEPTH levels.
A byte-order mark after the start of the file (two exports joined with `cat`)
makes its record bad rather than part of an id.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from mailer.core.errors import UserError

FORMATS = ("csv", "jsonl")
MAX_LINE = 1 << 20  # bytes in one physical line; no customer or order needs more
MAX_DEPTH = 16  # nesting of a JSON record: an order's items' objects are at level 3
MAX_DIGITS = 19  # an integer beyond int64 is an id that belongs in a string
BOM = "\ufeff"
BOM_MID_FILE = ("a byte-order mark (U+FEFF) in the middle of the file, where two files were "
                "joined: remove it and import again")


@dataclass(frozen=True)
class Record:
    """One record of an import file: its fields, or why it could not be read."""

    line: int
    fields: dict[str, Any]
    error: str | None = None


class SourceStopped(UserError):
    """The file cannot be read past this line."""


def format_for(name: str, override: str | None) -> str:
    """The import format from --format or the file's extension."""
    if override:
        chosen = {"ndjson": "jsonl"}.get(override.lower(), override.lower())
    elif name.lower().endswith(".csv"):
        chosen = "csv"
    elif name.lower().endswith((".jsonl", ".ndjson")):
        chosen = "jsonl"
    elif name == "-":
        chosen = "csv"
    else:
        raise UserError(f"{name}: cannot tell the format from the extension: "
                        "use .csv, .jsonl or .ndjson, or --format")
    if chosen not in FORMATS:
        raise UserError(f"unknown format {chosen!r}: use csv or jsonl")
    return chosen


class _Lines:
    """Decode a binary stream line by line, counting lines and bytes read."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self.line = 0
        self.bytes_read = 0

    def __iter__(self) -> Iterator[str]:
        # readline with a limit: a file without line breaks is never read into memory whole.
        for raw in iter(lambda: self._stream.readline(MAX_LINE + 1), b""):
            self.line += 1
            self.bytes_read += len(raw)
            if len(raw) > MAX_LINE:
                raise SourceStopped(f"a line longer than {MAX_LINE >> 20} MiB is not a record; "
                                    "the import stops here", line=self.line)
            if self.line == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise SourceStopped(
                    f"not UTF-8 text: byte 0x{raw[err.start]:02X} at column {err.start + 1}; "
                    "save the file as UTF-8 and import again", line=self.line) from None


class CsvSource:
    """Records of a CSV file; `header` is read on construction."""

    def __init__(self, stream: BinaryIO) -> None:
        self._lines = _Lines(stream)
        self._reader = csv.reader(iter(self._lines), strict=True)
        self.header = [name.strip() for name in self._next_row() or []]

    @property
    def bytes_read(self) -> int:
        return self._lines.bytes_read

    def _next_row(self) -> list[str] | None:
        start = self._lines.line + 1
        try:
            return next(self._reader)
        except StopIteration:
            return None
        except csv.Error as err:
            reason = str(err)
            if "unexpected end of data" in reason or "EOF" in reason:
                reason = "a quoted value is never closed"
            elif "field larger than field limit" in reason:
                reason = f"a value longer than {csv.field_size_limit()} characters"
            raise SourceStopped(f"broken CSV: {reason}", line=start) from None

    def __iter__(self) -> Iterator[Record]:
        width = len(self.header)
        while True:
            start = self._lines.line + 1
            row = self._next_row()
            if row is None:
                return
            if not row or row == [""]:
                continue
            if len(row) != width:
                yield Record(start, {}, f"has {len(row)} values, the header has {width} columns")
                continue
            if any(BOM in value for value in row):
                yield Record(start, {}, BOM_MID_FILE)
                continue
            yield Record(start, dict(zip(self.header, row, strict=True)))


class JsonLinesSource:
    """Records of a JSON Lines file: one object per line."""

    header: list[str] | None = None

    def __init__(self, stream: BinaryIO) -> None:
        self._lines = _Lines(stream)

    @property
    def bytes_read(self) -> int:
        return self._lines.bytes_read

    def __iter__(self) -> Iterator[Record]:
        for text in self._lines:
            if not text.strip():
                continue
            if BOM in text:
                yield Record(self._lines.line, {}, BOM_MID_FILE)
                continue
            try:
                value = json.loads(text, parse_constant=_no_constant, parse_float=_float,
                                   parse_int=_int)
                if _depth(value) > MAX_DEPTH:
                    raise _NotJson(f"nested deeper than {MAX_DEPTH} levels")
            except json.JSONDecodeError as err:
                yield Record(self._lines.line, {}, f"not valid JSON: {err.msg}")
                continue
            except _NotJson as err:
                yield Record(self._lines.line, {}, f"not valid JSON: {err}")
                continue
            except RecursionError:
                yield Record(self._lines.line, {},
                             f"not valid JSON: nested deeper than {MAX_DEPTH} levels")
                continue
            if not isinstance(value, dict):
                yield Record(self._lines.line, {}, "expected a JSON object")
                continue
            yield Record(self._lines.line, value)


class _NotJson(ValueError):
    """A JSON text Python's json module would accept but RFC 8259 or our columns do not."""


def _no_constant(name: str) -> Any:
    raise _NotJson(f"{name} is not a JSON number")


def _shown(literal: str) -> str:
    return literal if len(literal) <= 20 else literal[:20] + "…"


def _float(literal: str) -> float:
    value = float(literal)
    if math.isinf(value):  # 1e400 would become inf, and an id "inf"
        raise _NotJson(f"the number {_shown(literal)} is out of range")
    return value


def _int(literal: str) -> int:
    # Checked before int(): Python refuses to convert more than 4,300 digits with a
    # ValueError of its own, and a 25-digit id is only exact as a string anyway.
    if len(literal.lstrip("-")) > MAX_DIGITS:
        raise _NotJson(f"the number {_shown(literal)} has more than {MAX_DIGITS} digits "
                       "(write long ids as strings)")
    return int(literal)


def _depth(value: Any) -> int:
    """How many levels of objects and lists VALUE nests (a flat object is 1); iterative,
    so a deep value cannot exhaust the stack here."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(
            item, list) else None
        if children is None:
            continue
        deepest = max(deepest, level)
        if deepest > MAX_DEPTH:
            break
        stack.extend((child, level + 1) for child in children)
    return deepest


def open_source(stream: BinaryIO, fmt: str) -> CsvSource | JsonLinesSource:
    return CsvSource(stream) if fmt == "csv" else JsonLinesSource(stream)
