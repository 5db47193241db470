"""Time: durations, local times, `--now`, and the logical clock (DESIGN §4.0).

Everything here is pure except `Clock`, the one object that reads the real
clock; the rest of the engine is handed `now`.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from mailer.core.errors import InvalidValue
from mailer.core.suggest import did_you_mean

UTC = UTC

_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: object) -> timedelta:
    """`90s`, `15m`, `12h`, `30d`, `2w` as exact elapsed time (1d = 24 h)."""
    match = _DURATION.match(text) if isinstance(text, str) else None
    if match is None:
        raise InvalidValue(f"expected a duration like 7d, 12h or 90s, got {text!r}")
    return timedelta(seconds=int(match.group(1)) * _UNIT_SECONDS[match.group(2)])


def format_duration(span: timedelta) -> str:
    """The shortest exact form of a duration, as parse_duration reads it."""
    seconds = int(span.total_seconds())
    for unit in ("w", "d", "h", "m"):
        if seconds and seconds % _UNIT_SECONDS[unit] == 0:
            return f"{seconds // _UNIT_SECONDS[unit]}{unit}"
    return f"{seconds}s"


def zone(name: str) -> ZoneInfo:
    """The IANA zone of that name; a typo gets a 'did you mean'."""
    try:
        if not name or name != name.strip() or name.startswith("/"):
            raise ValueError(name)
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        hint = did_you_mean(name, sorted(available_timezones()))
        raise InvalidValue(f"unknown time zone {name!r}{hint}") from None


def localize(naive: datetime, tz: ZoneInfo) -> datetime:
    """Attach a zone to a wall time, in UTC.

    A wall time in a daylight-saving gap means the first instant after the gap;
    a wall time that occurs twice means its first instance (DESIGN §4.0).
    """
    first = naive.replace(tzinfo=tz, fold=0)
    as_utc = first.astimezone(UTC)
    if as_utc.astimezone(tz).replace(tzinfo=None) == naive.replace(tzinfo=None):
        return as_utc
    # In a gap: the transition lies between the two readings; find it to the second.
    low = naive.replace(tzinfo=tz, fold=1).astimezone(UTC)
    high = as_utc
    if low > high:
        low, high = high, low
    before = low.astimezone(tz).utcoffset()
    while high - low > timedelta(seconds=1):
        mid = low + (high - low) / 2
        if mid.astimezone(tz).utcoffset() == before:
            low = mid
        else:
            high = mid
    return high.replace(microsecond=0)


def parse_local(text: str, tz: ZoneInfo) -> datetime:
    """An ISO 8601 date-time or date; no offset means `tz`. Returns UTC."""
    stripped = text.strip()
    if re.match(r"\d{4}-\d{2}-\d{2}(?:$|[T ])", stripped):
        try:
            date.fromisoformat(stripped[:10])
        except ValueError:  # the shape is right, the calendar says no: 2026-02-30
            raise InvalidValue(f"{stripped[:10]} is not a date") from None
    try:
        if len(stripped) == 10:
            return localize(datetime.combine(date.fromisoformat(stripped), datetime.min.time()), tz)
        parsed = datetime.fromisoformat(stripped.replace("z", "Z").replace("Z", "+00:00"))
    except ValueError:
        raise InvalidValue(
            f"expected a date-time like 2026-11-27T08:00 or a date like 2026-11-27, got {text!r}"
        ) from None
    if parsed.tzinfo is None:
        return localize(parsed, tz)
    return parsed.astimezone(UTC)


def as_local(value: date | datetime, tz: ZoneInfo) -> datetime:
    """A YAML date or date-time (naive = `tz`) as an aware UTC datetime."""
    if isinstance(value, datetime):
        return localize(value, tz) if value.tzinfo is None else value.astimezone(UTC)
    return localize(datetime.combine(value, datetime.min.time()), tz)


def iso_z(moment: datetime) -> str:
    """ISO 8601 UTC with Z, to the second (the JSON time format of DESIGN §5)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Clock:
    """The logical clock: `--now` plus the wall time elapsed since start, or the real clock."""

    def __init__(self, start: datetime | None = None) -> None:
        self._start = start.astimezone(UTC) if start is not None else None
        self._started = time.monotonic()

    @property
    def simulated(self) -> bool:
        return self._start is not None

    def now(self) -> datetime:
        if self._start is None:
            return datetime.now(UTC)
        return self._start + timedelta(seconds=time.monotonic() - self._started)
