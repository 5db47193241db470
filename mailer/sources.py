"""Reading import files as records with their physical line numbers.

CSV is comma-separated UTF-8 (a BOM allowed); a record's LINE is the physical
line where it starts, the header being line 1. JSON Lines holds one object per
line. A byte that is not UTF-8 or an unclosed quote stops the file at that line
(`SourceStopped`); everything before it has already been yielded.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from mailer.errors import UserError

FORMATS = ("csv", "jsonl")


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
        for raw in self._stream:
            self.line += 1
            self.bytes_read += len(raw)
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
            try:
                value = json.loads(text)
            except json.JSONDecodeError as err:
                yield Record(self._lines.line, {}, f"not valid JSON: {err.msg}")
                continue
            if not isinstance(value, dict):
                yield Record(self._lines.line, {}, "expected a JSON object")
                continue
            yield Record(self._lines.line, value)


def open_source(stream: BinaryIO, fmt: str) -> CsvSource | JsonLinesSource:
    return CsvSource(stream) if fmt == "csv" else JsonLinesSource(stream)
