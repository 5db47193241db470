"""`trigger: date` (issue 21 item 2): anniversaries of first_order_at, a date attribute
with an offset, no_date, on both databases."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from tests.conftest import SETTINGS, Workspace
from tests.test_plan import run_plan

# K in Kiritimati (UTC+14) and H in Honolulu (UTC-10) paid their first orders at the same
# instant, 2025-03-10T10:30Z: 00:30 on 11 March for K, 00:30 on 10 March for H; K's
# earlier order was refunded, so it is no first order. L in Berlin first ordered on
# 29 February 2024. R renews on 2027-01-30, N's renewal_date is no date, M has none.
CUSTOMERS = """\
id,email,first_name,timezone,renewal_date,subscribed
K,kai@example.com,Kai,Pacific/Kiritimati,,true
H,hana@example.org,Hana,Pacific/Honolulu,,true
L,lea@example.net,Lea,Europe/Berlin,,true
R,rosa@example.com,Rosa,Europe/Berlin,2027-01-30,true
N,nils@example.com,Nils,Europe/Berlin,next spring,true
M,mia@example.com,Mia,Europe/Berlin,,true
"""
ORDERS = """\
order_id,customer_id,placed_at,status,currency,total,sku,product,category,quantity,price
O0,K,2024-05-01T10:00Z,refunded,EUR,10.00,S,Socks,clothes,1,10.00
O1,K,2025-03-10T10:30Z,paid,EUR,20.00,S,Socks,clothes,1,20.00
O2,H,2025-03-10T10:30Z,paid,EUR,20.00,S,Socks,clothes,1,20.00
O3,L,2024-02-29T12:00Z,paid,EUR,30.00,S,Socks,clothes,1,30.00
O4,L,2024-06-01T12:00Z,paid,EUR,30.00,S,Socks,clothes,1,30.00
"""
BASE = ("name: Dates\ntrigger: date\nsend_at: '09:00'\nsegment: everyone\n"
        "template: mail.html\nsubject: 'Hello {{ first_name }}'\n")
ANNIVERSARY = BASE + "field: first_order_at\nyearly: true\n"
RENEWAL = BASE + "field: attributes.renewal_date\noffset: -60d\n"


@pytest.fixture
def shop(db: Workspace) -> Workspace:
    db.write("mailer.yaml", SETTINGS)
    db.write("segments/everyone.yaml", "description: all\nall: [{orders: {at_least: 0}}]\n")
    db.write("templates/mail.html", "<p>Hi {{ store.address }} "
                                    "<a href='{{ links.unsubscribe }}'>unsubscribe</a></p>\n")
    db.write("customers.csv", CUSTOMERS)
    db.write("orders.csv", ORDERS)
    assert db.run("import", "customers", "customers.csv", "--now", "2024-01-01").code == 0
    assert db.run("import", "orders", "orders.csv", "--now", "2025-03-11").code == 0
    return db


def plan_json(shop: Workspace, text: str, now: str) -> dict[str, Any]:
    shop.write("campaigns/dates.yaml", text)
    out = shop.run("plan", "dates", "--json", "--now", now)
    assert out.code == 0, out.stderr
    document: dict[str, Any] = out.json()
    return document


def planned(shop: Workspace, text: str, now: str) -> list[tuple[str, str]]:
    document = plan_json(shop, text, now)
    return [(r["id"], r["occurrence"]) for r in document["recipients"]]


def as_utc(value: Any) -> datetime:
    """A timestamp column as both databases return it (SQLite: naive UTC text)."""
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def test_first_order_anniversary_in_each_customers_zone(shop: Workspace) -> None:
    # 2026-03-10T20:00Z: 10:00 on 11 March in Kiritimati, 10:00 on 10 March in Honolulu:
    # each one's own local anniversary of the same instant
    assert planned(shop, ANNIVERSARY, "2026-03-10T21:00") == [
        ("H", "date:first_order_at:2026"), ("K", "date:first_order_at:2026")]
    # a day later (Berlin 11 March 21:00): K's 12 March, H's 11 March: neither's day
    assert planned(shop, ANNIVERSARY, "2026-03-11T21:00") == []
    # before send_at in both zones (18:59Z: 08:59 in Honolulu, 08:59 on the 11th in
    # Kiritimati) nothing is due
    assert planned(shop, ANNIVERSARY, "2026-03-10T19:59") == []


def test_year_zero_is_no_anniversary(shop: Workspace) -> None:
    # the first order's own local day, after send_at in both zones
    assert planned(shop, ANNIVERSARY, "2025-03-10T21:00") == []
    assert planned(shop, ANNIVERSARY, "2027-03-10T21:00") == [
        ("H", "date:first_order_at:2027"), ("K", "date:first_order_at:2027")]


def test_29_february_falls_on_28_february_in_other_years(shop: Workspace) -> None:
    assert planned(shop, ANNIVERSARY, "2027-02-28T10:00") == [("L", "date:first_order_at:2027")]
    assert planned(shop, ANNIVERSARY, "2027-03-01T10:00") == []
    assert planned(shop, ANNIVERSARY, "2028-02-28T10:00") == []
    assert planned(shop, ANNIVERSARY, "2028-02-29T10:00") == [("L", "date:first_order_at:2028")]


def test_sixty_days_before_a_renewal_date(shop: Workspace) -> None:
    # 2027-01-30 - 60 days = 2026-12-01; the occurrence has the renewal's year
    assert planned(shop, RENEWAL, "2026-11-30T10:00") == []
    document = plan_json(shop, RENEWAL, "2026-12-01T10:00")
    assert [(r["id"], r["occurrence"]) for r in document["recipients"]] == [
        ("R", "date:attributes.renewal_date:2027")]
    # N's value is no date; M has none, and is no candidate at all
    assert [(e["id"], e["occurrence"], e["reason"]) for e in document["excluded"]] == [
        ("N", "date:attributes.renewal_date:2027", "no_date")]
    assert planned(shop, RENEWAL, "2026-12-02T10:00") == []
    # without yearly, the next year's 1 December is nothing
    assert planned(shop, RENEWAL, "2027-12-01T10:00") == []


def test_the_mail_expires_at_the_end_of_the_local_day_and_is_planned_once(
        shop: Workspace) -> None:
    shop.write("campaigns/dates.yaml", ANNIVERSARY)
    first = run_plan(shop, "dates", "2026-03-10T21:00")[0]
    assert sorted(p.id for p in first.planned) == ["H", "K"]
    rows = shop.query("SELECT c.store_id, d.occurrence, d.expires_at FROM deliveries d "
                      "JOIN customers c ON c.id = d.customer_id ORDER BY c.store_id")
    # midnight after 10 March in Honolulu and after 11 March in Kiritimati: one instant
    assert [(r[0], r[1], as_utc(r[2])) for r in rows] == [
        ("H", "date:first_order_at:2026", datetime(2026, 3, 11, 10, 0, tzinfo=UTC)),
        ("K", "date:first_order_at:2026", datetime(2026, 3, 11, 10, 0, tzinfo=UTC))]
    again = run_plan(shop, "dates", "2026-03-11T08:00")[0]  # both local days still on
    assert again.planned == []
    assert again.counts() == {"already_sent": 2}


def test_a_datetime_attribute_counts_by_its_written_date(shop: Workspace) -> None:
    shop.write("more.csv", "id,email,renewal_date\nM,mia@example.com,2027-01-30T23:30:00Z\n"
                           "N,nils@example.com,2027-02-30\nZ,zoe@example.com,0000-01-30\n")
    assert shop.run("import", "customers", "more.csv", "--now", "2026-01-01").code == 0
    document = plan_json(shop, RENEWAL, "2026-12-01T10:00")
    assert [(r["id"], r["occurrence"]) for r in document["recipients"]] == [
        ("M", "date:attributes.renewal_date:2027"), ("R", "date:attributes.renewal_date:2027")]
    # 30 February and a year 0 (no calendar has one) are no dates, in SQL as in Python
    assert [(e["id"], e["reason"]) for e in document["excluded"]] == [
        ("N", "no_date"), ("Z", "no_date")]


def test_yearly_attribute_and_signed_up_at(shop: Workspace) -> None:
    shop.write("more.csv", "id,email,member_since,signed_up_at\n"
                           "M,mia@example.com,2024-02-29,2025-06-01T21:30:00Z\n")
    assert shop.run("import", "customers", "more.csv", "--now", "2026-01-01").code == 0
    yearly = BASE + "field: attributes.member_since\nyearly: true\noffset: 1d\n"
    assert planned(shop, yearly, "2027-03-01T10:00") == [("M", "date:attributes.member_since:2027")]
    assert planned(shop, yearly, "2024-03-01T10:00") == []  # year 0
    # signed up at 23:30 on 1 June in Berlin; a week later, once
    week = BASE + "field: signed_up_at\noffset: 1w\n"
    assert planned(shop, week, "2025-06-08T10:00") == [("M", "date:signed_up_at:2025")]
    assert planned(shop, week, "2025-06-09T10:00") == []


@pytest.mark.parametrize(("extra", "line", "message"), [
    ("field: first_order\n", 7, "field: expected first_order_at, signed_up_at or "
                                "attributes.NAME (a date attribute), got 'first_order' "
                                "(did you mean first_order_at?)"),
    ("field: first_order_at\noffset: -36h\n", 8,
     "offset: '-36h' is not a whole number of days"),
    ("field: first_order_at\noffset: soon\n", 8,
     "offset: expected an offset in days like -60d or 30d, got 'soon'"),
])
def test_validate_names_the_file_and_line(shop: Workspace, extra: str, line: int,
                                          message: str) -> None:
    shop.write("campaigns/dates.yaml", BASE + extra)
    out = shop.run("validate")
    assert out.code != 0
    assert f"campaigns/dates.yaml:{line}: {message}" in out.stdout + out.stderr


def test_date_keys_belong_to_date_campaigns(shop: Workspace) -> None:
    shop.write("campaigns/dates.yaml", BASE.replace("trigger: date", "trigger: birthday")
               + "yearly: true\n")
    out = shop.run("validate")
    assert out.code != 0
    assert "yearly works with date campaigns only" in out.stdout + out.stderr


def test_the_occasion_in_a_preview(shop: Workspace) -> None:
    shop.write("templates/years.html", "<p>{{ occasion.years }} years on {{ occasion.date }} "
               "{{ store.address }} <a href='{{ links.unsubscribe }}'>unsubscribe</a></p>\n")
    shop.write("campaigns/dates.yaml", ANNIVERSARY.replace("mail.html", "years.html"))
    out = shop.run("preview", "dates", "--customer", "L", "--now", "2027-02-20T10:00")
    assert out.code == 0, out.stderr
    assert "3 years on 2027-02-28" in out.stdout
    shop.write("campaigns/dates.yaml", RENEWAL.replace("mail.html", "years.html"))
    out = shop.run("preview", "dates", "--customer", "R", "--now", "2026-11-20T10:00")
    assert out.code == 0, out.stderr
    assert "0 years on 2027-01-30" in out.stdout


def test_the_card_shows_the_next_date_mail(shop: Workspace) -> None:
    shop.write("campaigns/dates.yaml", ANNIVERSARY)
    shop.write("campaigns/renew.yaml", RENEWAL)
    card = shop.run("customer", "L", "--now", "2026-06-01T10:00", "--json").json()
    # 29 February 2024's next anniversary: 28 February 2027, 09:00 in Berlin
    assert [(u["campaign"], u["occurrence"], u["at"]) for u in card["upcoming"]] == [
        ("dates", "date:first_order_at:2027", "2027-02-28T08:00:00Z")]
    card = shop.run("customer", "R", "--now", "2026-06-01T10:00", "--json").json()
    assert [(u["campaign"], u["occurrence"], u["at"]) for u in card["upcoming"]] == [
        ("renew", "date:attributes.renewal_date:2027", "2026-12-01T08:00:00Z")]
    # once it is planned, a renewal has no next mail; N's value is no date: none either
    run_plan(shop, "renew", "2026-12-01T10:00")
    card = shop.run("customer", "R", "--now", "2026-12-01T10:30", "--json").json()
    assert [(u["campaign"], u["status"]) for u in card["upcoming"]] == [("renew", "queued")]
    card = shop.run("customer", "N", "--now", "2026-06-01T10:00", "--json").json()
    assert card["upcoming"] == []


def test_the_forecasts_fixed_store_skips_only_what_finds_nobody(shop: Workspace) -> None:
    """A forecast's sweeps leave out the date queries FrozenStore says cannot find
    anyone: hour after hour, the candidates are the same with and without it."""
    from mailer.config.settings import parse_settings
    from mailer.config.workspace import load_valid_workspace
    from mailer.planning.frozen import freeze
    from mailer.planning.planner import candidates
    from mailer.segments.runner import scope_for

    shop.write("campaigns/dates.yaml", ANNIVERSARY)
    shop.write("campaigns/renew.yaml", RENEWAL)
    settings, _ = parse_settings(SETTINGS)
    specs, campaigns = load_valid_workspace(shop.root)
    engine = shop.engine()
    try:
        windows = [(datetime(2026, 3, 10, 12, tzinfo=UTC), 24),
                   (datetime(2026, 12, 1, tzinfo=UTC), 24), (datetime(2028, 2, 29, tzinfo=UTC), 12)]
        found = 0
        for start, hours in windows:
            frozen = freeze(engine, settings, campaigns, start=start,
                            end=start + timedelta(hours=hours))
            # what it knows: K's first order on 11 March in Kiritimati, none in Berlin then
            assert frozen.may_have_dates("Pacific/Kiritimati", "first_order_at",
                                         date(2026, 3, 11), yearly=True)
            assert not frozen.may_have_dates("Pacific/Kiritimati", "first_order_at",
                                             date(2025, 3, 11), yearly=True)  # year 0
            assert not frozen.may_have_dates("Europe/Berlin", "first_order_at",
                                             date(2026, 3, 11), yearly=True)
            assert frozen.may_have_undated("Europe/Berlin", "attributes.renewal_date")
            assert not frozen.may_have_undated("Pacific/Honolulu", "attributes.renewal_date")
            for hour in range(hours):
                now = start + timedelta(hours=hour)
                scope = scope_for(settings, now, engine)
                for slug in ("dates", "renew"):
                    every = [c for batch in candidates(engine, specs, slug, campaigns[slug],
                                                       scope, settings) for c in batch]
                    fewer = [c for batch in candidates(engine, specs, slug, campaigns[slug],
                                                       scope, settings, frozen) for c in batch]
                    assert fewer == every, (slug, now)
                    found += len(every)
        assert found > 0  # the windows hold anniversaries, the renewal and a no_date
    finally:
        engine.dispose()
