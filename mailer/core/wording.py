"""Counts in words for the command line: "1 row", "5 rows", "1 order line"."""

from __future__ import annotations


def counted(n: int, one: str, many: str | None = None) -> str:
    """`n` with the noun in the number it needs (English: singular for exactly one)."""
    return f"{n:,} {one if n == 1 else (many or one + 's')}"
