"""Bar charts without a plotting library: inline SVG in a self-contained HTML page, and a
PNG drawn and encoded here (bars only; the HTML carries labels and legend). Pure.

A chart is a list of columns, each a stack of segments; a segment's series picks its
colour. The forecast stacks campaigns per day; the report puts one bar per metric.
"""

from __future__ import annotations

import html
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

PALETTE = ["#24553d", "#d9822b", "#3b7dd8", "#b04a7a", "#7a9a2b", "#8a5a2b", "#2ba3a3",
           "#a33b3b", "#6b5bb0", "#888888"]


@dataclass(frozen=True)
class Segment:
    series: int  # the colour's index
    value: float
    title: str  # shown on hover in the HTML


@dataclass(frozen=True)
class Column:
    label: str  # under the bar ("" for none)
    segments: tuple[Segment, ...]


def svg(columns: Sequence[Column], *, caption: str, step: int = 24) -> str:
    """Stacked bars as inline SVG, scaled to the tallest column."""
    peak = max((sum(s.value for s in c.segments) for c in columns), default=0) or 1
    width, height, bar = max(600, step * len(columns) + 80), 320, step - 6
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + 60}" '
             'font-family="sans-serif" font-size="11">',
             f'<text x="8" y="16">{html.escape(caption)}</text>']
    for index, column in enumerate(columns):
        x, y = 60 + index * step, float(height)
        for segment in column.segments:
            if not segment.value:
                continue
            size = segment.value / peak * (height - 40)
            y -= size
            parts.append(f'<rect x="{x}" y="{y:.1f}" width="{bar}" height="{size:.1f}" '
                         f'fill="{PALETTE[segment.series % len(PALETTE)]}">'
                         f"<title>{html.escape(segment.title)}</title></rect>")
        if column.label:
            parts.append(f'<text x="{x}" y="{height + 14}">{html.escape(column.label)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def page(title: str, chart: str, legend: Sequence[str], notes: Sequence[str]) -> str:
    """A self-contained HTML page around an SVG chart."""
    key = "".join(f'<span style="color:{PALETTE[n % len(PALETTE)]}">■</span> '
                  f"{html.escape(name)} &nbsp; " for n, name in enumerate(legend))
    text = "".join(f"<p>{html.escape(note)}</p>" for note in notes)
    return (f'<!doctype html><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f'<body style="font-family:sans-serif"><h1>{html.escape(title)}</h1>{chart}'
            f"<p>{key}</p>{text}</body>\n")


def png(columns: Sequence[Column]) -> bytes:
    """The same stacked bars as a PNG."""
    colours = [bytes.fromhex(c[1:]) for c in PALETTE]
    width, height, bar, gap, margin = max(200, len(columns) * 20 + 40), 240, 14, 6, 20
    pixels = [bytearray(b"\xff\xff\xff" * width) for _ in range(height)]
    peak = max((sum(s.value for s in c.segments) for c in columns), default=0) or 1
    for x in range(margin - 2, width - margin + 2):  # the base line
        pixels[height - margin][x * 3:x * 3 + 3] = b"\x44\x44\x44"
    for index, column in enumerate(columns):
        left, top = margin + index * (bar + gap), height - margin
        for segment in column.segments:
            size = round(segment.value / peak * (height - 2 * margin))
            colour = colours[segment.series % len(colours)]
            for y in range(max(top - size, 0), top):
                pixels[y][left * 3:(left + bar) * 3] = colour * bar
            top -= size
    raw = b"".join(b"\x00" + bytes(row) for row in pixels)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    return (b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))
