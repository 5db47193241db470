"""`mailer forecast`: the daemon's hourly sweep over a simulated clock (DESIGN §5).

Every hour from the start, every campaign is planned in priority order, exactly
as a daemon sweep would, on a scratch ledger: a backup copy of the SQLite file,
or on PostgreSQL one transaction that is rolled back at the end. Store data
stays as it was at the start; planned mails count as sent. Nothing the forecast
plans reaches the real ledger.
"""

from __future__ import annotations

import html
import sqlite3
import tempfile
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, cast

from sqlalchemy import Connection, Engine, select, update

from mailer.audience import scope_for
from mailer.campaign import Campaign
from mailer.clock import zone
from mailer.conditions import SegmentSpec
from mailer.db import create
from mailer.models import Delivery
from mailer.planner import plan_due
from mailer.settings import Settings


@dataclass
class Forecast:
    start: datetime
    days: list[date]
    mails: dict[date, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    caps_hit: dict[str, set[int]] = field(default_factory=lambda: defaultdict(set))
    max_per_customer_7d: int = 0

    def as_json(self, campaigns: list[str]) -> dict[str, Any]:
        return {"days": [{"date": day.isoformat(),
                          "campaigns": {slug: self.mails[day][slug] for slug in campaigns}}
                         for day in self.days],
                "caps_hit": {label: len(ids) for label, ids in sorted(self.caps_hit.items())},
                "max_per_customer_7d": self.max_per_customer_7d}


class _Nested:
    """A connection whose begin() opens a savepoint inside the scratch transaction."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def begin(self) -> Any:
        return self._conn.begin_nested()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    def __enter__(self) -> _Nested:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


class _Scratch:
    """An engine stand-in: every connection is the one scratch connection."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self.dialect = conn.dialect
        self.url = conn.engine.url

    def connect(self) -> _Nested:
        return _Nested(self._conn)

    @contextmanager
    def begin(self) -> Iterator[_Nested]:
        with self._conn.begin_nested():
            yield _Nested(self._conn)


@contextmanager
def scratch(engine: Engine) -> Iterator[Engine]:
    """A ledger to plan into and throw away."""
    if engine.dialect.name == "sqlite":
        with tempfile.TemporaryDirectory(prefix="mailer-forecast-") as folder:
            copy = Path(folder) / "forecast.db"
            source = sqlite3.connect(str(engine.url.database))
            target = sqlite3.connect(str(copy))
            try:
                source.backup(target)
            finally:
                source.close()
                target.close()
            scratch_engine = create(engine.url.set(database=str(copy)))
            try:
                yield scratch_engine
            finally:
                scratch_engine.dispose()
        return
    with engine.connect() as conn:
        outer = conn.begin()
        try:
            yield cast(Engine, _Scratch(conn))
        finally:
            outer.rollback()


def run_forecast(engine: Engine, specs: dict[str, SegmentSpec], campaigns: dict[str, Campaign],
                 *, settings: Settings, start: datetime, days: int,
                 versions: dict[str, dict[str, Any]]) -> Forecast:
    """Sweep every hour of DAYS days from START and count what would be sent."""
    tz = zone(settings.timezone)
    first = start.astimezone(tz).date()
    result = Forecast(start=start, days=[first + timedelta(days=n) for n in range(days)])
    with scratch(engine) as ledger:
        for hour in range(days * 24):
            now = start + timedelta(hours=hour)
            scope = scope_for(settings, now, ledger)
            day = now.astimezone(tz).date()
            for plan in plan_due(ledger, specs, campaigns, scope=scope, settings=settings,
                                 versions=versions, choose_intros=False):
                result.mails[day][plan.campaign] += plan.planned_count
                for excluded in plan.excluded:
                    if excluded.reason == "frequency_cap":
                        result.caps_hit[excluded.cap].add(excluded.customer_id)
            with ledger.begin() as conn:  # planned mails count as sent
                conn.execute(update(Delivery).where(Delivery.status == "queued")
                             .values(status="sent", sent_at=Delivery.planned_at))
        with ledger.connect() as conn:
            rows = conn.execute(select(Delivery.customer_id, Delivery.planned_at)
                                .where(Delivery.planned_at >= start)
                                .order_by(Delivery.customer_id, Delivery.planned_at))
            result.max_per_customer_7d = _busiest_week(rows)
    return result


def _busiest_week(rows: Any) -> int:
    """The most mails any one customer gets in any 7-day window."""
    best, current = 0, None
    window: list[datetime] = []
    for customer_id, planned in rows:
        if customer_id != current:
            current, window = customer_id, []
        window.append(planned)
        while window[0] <= planned - timedelta(days=7):
            window.pop(0)
        best = max(best, len(window))
    return best


def chart_html(forecast: Forecast, campaigns: list[str]) -> str:
    """A self-contained HTML page with a stacked bar chart (inline SVG) per day."""
    palette = ["#24553d", "#d9822b", "#3b7dd8", "#b04a7a", "#7a9a2b", "#8a5a2b", "#2ba3a3",
               "#a33b3b", "#6b5bb0", "#888888"]
    days = forecast.days
    peak = max((sum(forecast.mails[d].values()) for d in days), default=0) or 1
    width, height, bar = max(600, 24 * len(days) + 80), 320, 18
    y: float
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + 60}" '
             'font-family="sans-serif" font-size="11">',
             f'<text x="8" y="16">mails per day (peak {peak})</text>']
    for index, day in enumerate(days):
        x, y = 60 + index * 24, height
        for number, slug in enumerate(campaigns):
            count = forecast.mails[day][slug]
            if not count:
                continue
            size = count / peak * (height - 40)
            y -= size
            parts.append(f'<rect x="{x}" y="{y:.1f}" width="{bar}" height="{size:.1f}" '
                         f'fill="{palette[number % len(palette)]}">'
                         f"<title>{html.escape(slug)} {day}: {count}</title></rect>")
        if index % max(1, len(days) // 10) == 0:
            parts.append(f'<text x="{x}" y="{height + 14}">{day:%d %b}</text>')
    parts.append("</svg>")
    legend = "".join(f'<span style="color:{palette[n % len(palette)]}">■</span> '
                     f"{html.escape(slug)} &nbsp; " for n, slug in enumerate(campaigns))
    caps = ", ".join(f"{label}: {len(ids)} customers" for label, ids in
                     sorted(forecast.caps_hit.items())) or "none"
    return ("<!doctype html><meta charset=\"utf-8\"><title>mailer forecast</title>"
            "<body style=\"font-family:sans-serif\"><h1>Forecast from "
            f"{days[0]} to {days[-1]}</h1>{''.join(parts)}<p>{legend}</p>"
            f"<p>Caps hit: {caps}. The most mails one customer gets in 7 days: "
            f"{forecast.max_per_customer_7d}.</p></body>\n")


def chart_png(forecast: Forecast, campaigns: list[str]) -> bytes:
    """The same stacked bars as a PNG, drawn and encoded here (no plotting library is a
    dependency); the HTML chart carries the labels and the legend."""
    import struct
    import zlib

    colours = [(0x24, 0x55, 0x3D), (0xD9, 0x82, 0x2B), (0x3B, 0x7D, 0xD8), (0xB0, 0x4A, 0x7A),
               (0x7A, 0x9A, 0x2B), (0x8A, 0x5A, 0x2B), (0x2B, 0xA3, 0xA3), (0xA3, 0x3B, 0x3B),
               (0x6B, 0x5B, 0xB0), (0x88, 0x88, 0x88)]
    days = forecast.days
    width, height, bar, gap, margin = max(200, len(days) * 20 + 40), 240, 14, 6, 20
    pixels = [bytearray(b"\xff\xff\xff" * width) for _ in range(height)]
    peak = max((sum(forecast.mails[d].values()) for d in days), default=0) or 1
    for x in range(margin - 2, width - margin + 2):  # the base line
        pixels[height - margin][x * 3:x * 3 + 3] = b"\x44\x44\x44"
    for index, day in enumerate(days):
        left, top = margin + index * (bar + gap), height - margin
        for number, slug in enumerate(campaigns):
            size = round(forecast.mails[day][slug] / peak * (height - 2 * margin))
            colour = bytes(colours[number % len(colours)])
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
