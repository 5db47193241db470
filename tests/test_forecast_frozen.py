"""The forecast's fixed store data (mailer.planning.frozen): which per-zone trigger queries
a sweep may leave out. A "no" must be certain (the query would find nobody), so each
window's edges are checked as the queries draw them: [start, end), detected by now."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from mailer.planning.frozen import FrozenStore

AT = datetime(2026, 11, 23, 9, tzinfo=UTC)
HOUR = timedelta(hours=1)


def frozen() -> FrozenStore:
    return FrozenStore(
        zones=["Asia/Tokyo", "Europe/Berlin"], since=AT - timedelta(days=20),
        until=AT + timedelta(days=10),
        birthdays=frozenset({("Europe/Berlin", "11-23"), ("Asia/Tokyo", "02-29")}),
        orders={"Europe/Berlin": [AT - timedelta(days=10), AT]},
        changes={("Europe/Berlin", "termination"): [(AT, "lapsed"), (AT + HOUR, "lapsed")],
                 ("Asia/Tokyo", "termination"): [(AT, "committed")]})


def test_a_birthday_counts_in_its_own_zone_only_and_29_february_by_its_key() -> None:
    store = frozen()
    assert store.may_have_birthdays("Europe/Berlin", ["11-23"])
    assert not store.may_have_birthdays("Asia/Tokyo", ["11-23"])
    assert not store.may_have_birthdays("Europe/Berlin", ["11-24"])
    assert store.may_have_birthdays("Asia/Tokyo", ["02-28", "02-29"])  # 28 Feb, no leap year


def test_an_order_window_includes_its_start_and_excludes_its_end() -> None:
    store = frozen()
    assert store.may_have_orders("Europe/Berlin", AT, AT + HOUR)
    assert not store.may_have_orders("Europe/Berlin", AT - HOUR, AT)
    assert store.may_have_orders("Europe/Berlin", AT - timedelta(days=10), AT - HOUR)
    assert not store.may_have_orders("Europe/Berlin", AT - timedelta(days=9), AT)
    assert not store.may_have_orders("Asia/Tokyo", AT - timedelta(days=1), AT + HOUR)


def test_a_window_outside_what_was_read_is_always_maybe() -> None:
    store = frozen()
    assert store.may_have_orders("Asia/Tokyo", AT - timedelta(days=30), AT)
    assert store.may_have_orders("Asia/Tokyo", AT, AT + timedelta(days=11))
    assert store.may_have_changes("Asia/Tokyo", "champion", None, AT - timedelta(days=21),
                                  AT, AT)


def test_a_stage_change_counts_from_its_detection_and_with_its_from_stage() -> None:
    store = frozen()
    day = (AT - timedelta(hours=9), AT + timedelta(hours=15))
    assert store.may_have_changes("Europe/Berlin", "termination", None, *day, AT)
    assert not store.may_have_changes("Europe/Berlin", "termination", None, *day, AT - HOUR)
    assert store.may_have_changes("Europe/Berlin", "termination", "lapsed", *day, AT)
    assert not store.may_have_changes("Europe/Berlin", "termination", "committed", *day,
                                      AT + HOUR)
    assert store.may_have_changes("Asia/Tokyo", "termination", "committed", *day, AT)
    assert not store.may_have_changes("Europe/Berlin", "champion", None, *day, AT)
    assert not store.may_have_changes("Europe/Berlin", "termination", None, AT + 2 * HOUR,
                                      AT + timedelta(days=1), AT + timedelta(days=1))


def test_a_holiday_query_may_find_someone_only_in_a_zone_with_its_countries() -> None:
    store = FrozenStore(zones=["Asia/Tokyo", "Europe/Berlin"], since=AT, until=AT,
                        birthdays=frozenset(), orders={}, changes={},
                        countries={"Europe/Berlin": frozenset({"de", None}),
                                   "Asia/Tokyo": frozenset({"jp"})})
    known = frozenset({"de", "jp", "us"})
    assert store.may_have_holidays(["Europe/Berlin"], ["de"], known, others=False)
    assert not store.may_have_holidays(["Europe/Berlin"], ["us", "jp"], known, others=False)
    assert store.may_have_holidays(["Asia/Tokyo", "Europe/Berlin"], ["jp"], known, False)
    # others: a customer with no country, or one the calendar does not know
    assert store.may_have_holidays(["Europe/Berlin"], [], known, others=True)
    assert not store.may_have_holidays(["Asia/Tokyo"], [], known, others=True)
    assert store.may_have_holidays(["Asia/Tokyo"], [], frozenset({"de"}), others=True)
    assert not store.may_have_holidays(["America/Lima"], ["de"], known, others=True)
