"""Money, dates and numbers in the reader's language (mail/formats, issue 17 item 7)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from mailer.mail.formats import local_date, local_datetime, money, number, reader_locale

MOMENT = datetime(2026, 11, 29, 7, 0, tzinfo=UTC)


def test_money_follows_the_readers_locale_and_the_store_currency() -> None:
    assert money(Decimal("255.5"), "EUR", reader_locale("en", "en")) == "€255.50"
    assert money(Decimal("255.5"), "EUR", reader_locale("de-DE", "en")) == "255,50\xa0€"
    assert money(1234, "USD", reader_locale("en-US", "en")) == "$1,234.00"
    assert money(3, "JPY", reader_locale("ja", "en")) == "￥3"


def test_an_unknown_locale_falls_back_to_the_stores() -> None:
    assert str(reader_locale("xx-YY", "de")) == "de"
    assert str(reader_locale(None, "fr-FR")) == "fr_FR"
    assert str(reader_locale("not a tag", "also not")) == "en"


def test_times_are_in_the_readers_zone_with_its_abbreviation() -> None:
    en = reader_locale("en", "en")
    assert local_datetime(MOMENT, "full", en, "Europe/Berlin") == (
        "Sunday, November 29, 2026, 8:00\u202fAM CET")
    assert local_datetime(MOMENT, "full", en, "America/New_York") == (
        "Sunday, November 29, 2026, 2:00\u202fAM EST")
    de = reader_locale("de", "en")
    assert local_datetime(MOMENT, "long", de, "Europe/Berlin") == "29. November 2026, 08:00 CET"
    # Late on the 29th in New York is already the 30th in Berlin.
    late = datetime(2026, 11, 30, 3, 30, tzinfo=UTC)
    assert local_date(late, "long", en, "America/New_York") == "November 29, 2026"
    assert local_date(date(2026, 12, 24), "EEEE d MMMM", de, "UTC") == "Donnerstag 24 Dezember"


def test_numbers_and_refusals() -> None:
    assert number(12345.5, reader_locale("de", "en")) == "12.345,5"
    with pytest.raises(ValueError, match="not a number"):
        money(float("inf"), "EUR", reader_locale("en", "en"))
    with pytest.raises(ValueError, match="too large to show"):
        money(Decimal("1e30"), "EUR", reader_locale("en", "en"))
    assert money(Decimal("123456789012345678901.5"), "EUR", reader_locale("en", "en")) == (
        "€123,456,789,012,345,678,901.50")
    with pytest.raises(TypeError, match="expected a number"):
        number("12", reader_locale("en", "en"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="CLDR pattern"):
        local_date(date(2026, 1, 1), "d" * 65, reader_locale("en", "en"), "UTC")
