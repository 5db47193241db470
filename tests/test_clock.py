"""Durations, local times and daylight-saving rules (DESIGN §4.0)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from mailer.core.clock import format_duration, iso_z, localize, parse_duration, parse_local, zone
from mailer.core.errors import InvalidValue

BERLIN = zone("Europe/Berlin")
NEW_YORK = zone("America/New_York")


@pytest.mark.parametrize(("text", "expected"), [
    ("90s", timedelta(seconds=90)), ("15m", timedelta(minutes=15)), ("12h", timedelta(hours=12)),
    ("30d", timedelta(days=30)), ("2w", timedelta(days=14)),
])
def test_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected
    assert parse_duration(format_duration(expected)) == expected


@pytest.mark.parametrize("text", ["seven", "7", "7 days", "-1d", "1.5h", ""])
def test_bad_durations(text: str) -> None:
    with pytest.raises(InvalidValue, match="expected a duration like 7d"):
        parse_duration(text)


def test_a_time_in_the_spring_gap_is_the_first_instant_after_it() -> None:
    # Berlin skips 02:00-03:00 on 2026-03-29; New York skips 02:00-03:00 on 2026-03-08.
    assert localize(datetime(2026, 3, 29, 2, 30), BERLIN) == datetime(2026, 3, 29, 1, 0, tzinfo=UTC)
    assert localize(datetime(2026, 3, 8, 2, 15), NEW_YORK) == datetime(2026, 3, 8, 7, 0, tzinfo=UTC)


def test_a_time_that_occurs_twice_is_its_first_instance() -> None:
    assert localize(datetime(2026, 10, 25, 2, 30), BERLIN) == datetime(
        2026, 10, 25, 0, 30, tzinfo=UTC)
    assert localize(datetime(2026, 11, 1, 1, 30), NEW_YORK) == datetime(
        2026, 11, 1, 5, 30, tzinfo=UTC)


def test_parse_local() -> None:
    assert parse_local("2026-11-27", BERLIN) == datetime(2026, 11, 26, 23, 0, tzinfo=UTC)
    assert parse_local("2026-11-27T08:00", BERLIN) == datetime(2026, 11, 27, 7, 0, tzinfo=UTC)
    assert parse_local("2026-11-27T08:00Z", BERLIN) == datetime(2026, 11, 27, 8, 0, tzinfo=UTC)
    assert parse_local("2026-11-27T08:00+05:30", BERLIN) == datetime(
        2026, 11, 27, 2, 30, tzinfo=UTC)
    with pytest.raises(InvalidValue):
        parse_local("27.11.2026", BERLIN)


def test_iso_z() -> None:
    assert iso_z(datetime(2026, 11, 27, 9, 0, 5, 999, tzinfo=BERLIN)) == "2026-11-27T08:00:05Z"


def test_unknown_zone_suggests_the_closest() -> None:
    with pytest.raises(InvalidValue, match=r"did you mean America/New_York\?"):
        zone("America/NewYork")
