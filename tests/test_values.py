"""Addresses and money: identity keys and exact minor units (DESIGN §3)."""

from __future__ import annotations

import pytest

from mailer.core.addresses import parse_address
from mailer.core.errors import InvalidValue
from mailer.core.money import format_minor, to_minor


def test_address_key_folds_case_and_unicode_forms() -> None:
    composed = parse_address("J\u00f6rg@Example.com")
    decomposed = parse_address("jo\u0308rg@example.COM")
    assert composed.key == decomposed.key == "j\u00f6rg@example.com"
    assert composed.email == "J\u00f6rg@example.com"


def test_idn_domain_is_accepted() -> None:
    assert parse_address("info@bücher.example.com").key == "info@bücher.example.com"


@pytest.mark.parametrize(("raw", "reason"), [
    ("no-at-sign", "must have an @-sign"),
    ("two words@example.com", "invalid characters"),
    ("x@shop.test", "special-use or reserved name"),
    ("evil@example.com\r\nBcc: all@example.com", "control character"),
])
def test_hostile_addresses_are_refused(raw: str, reason: str) -> None:
    with pytest.raises(InvalidValue, match=reason):
        parse_address(raw)


def test_minor_units_are_exact() -> None:
    assert to_minor("0.1", "EUR") + to_minor("0.2", "EUR") == to_minor("0.3", "EUR") == 30
    assert to_minor("1500", "JPY") == 1500
    assert to_minor("1.234", "KWD") == 1234
    assert format_minor(400_00, "EUR") == "400.00"
    with pytest.raises(InvalidValue, match="more than 0 decimals for JPY"):
        to_minor("1.5", "JPY")


def test_did_you_mean_names_the_closest_choice_or_falls_back() -> None:
    from mailer.core.suggest import did_you_mean

    assert did_you_mean("segmnt", ["segment", "subject"]) == " (did you mean segment?)"
    assert did_you_mean("zzz", ["segment"], otherwise="; known: segment") == "; known: segment"
    assert did_you_mean("Europe/Berln", {"Europe/Berlin": 1, "Asia/Tokyo": 2}) == \
        " (did you mean Europe/Berlin?)"
