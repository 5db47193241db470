"""`trigger: holiday` (issue 21 item 1) against the holidays package, on both databases."""

from __future__ import annotations

from datetime import UTC, date, datetime

import holidays as package
import pytest

from tests.conftest import SETTINGS, Workspace
from tests.test_plan import run_plan

# A in Kiritimati (UTC+14, Germany), B in Honolulu (UTC-10, the US), C in Berlin without a
# country (the workspace's when it has one), D in Berlin with a country the package
# does not know (also the workspace's).
CUSTOMERS = """\
id,email,first_name,timezone,country,locale,subscribed
A,anna@example.com,Anna,Pacific/Kiritimati,DE,de_DE,true
B,bob@example.org,Bob,Pacific/Honolulu,us,en_US,true
C,chloe@example.net,Chloé,Europe/Berlin,,fr,true
D,dmitry@example.com,Dmitry,Europe/Berlin,Narnia,,true
"""
CAMPAIGN = ("name: Holidays\ntrigger: holiday\nsend_at: '09:00'\nsegment: everyone\n"
            "template: mail.html\nsubject: 'Happy {{ holiday.name }}'\n")
WITH_FR = SETTINGS + "holidays: {country: fr}\n"


@pytest.fixture
def shop(db: Workspace) -> Workspace:
    db.write("segments/everyone.yaml", "description: all\nall: [{orders: {at_least: 0}}]\n")
    db.write("templates/mail.html", "<p>{{ holiday.name }} {{ store.address }} "
                                    "<a href='{{ links.unsubscribe }}'>unsubscribe</a></p>\n")
    db.write("customers.csv", CUSTOMERS)
    assert db.run("import", "customers", "customers.csv", "--now", "2026-01-01").code == 0
    return db


def campaign(shop: Workspace, extra: str) -> None:
    shop.write("campaigns/hol.yaml", CAMPAIGN + extra)


def planned(shop: Workspace, now: str, settings: str = SETTINGS) -> list[tuple[str, str]]:
    result = run_plan(shop, "hol", now, write=False, settings_text=settings)[0]
    return sorted((p.id, p.occurrence) for p in result.planned)


def test_the_package_knows_the_days_we_check() -> None:
    # the oracle: what the package itself says
    assert date(2026, 10, 3) in package.country_holidays("DE", years=2026)  # Unity Day
    assert date(2026, 7, 4) in package.country_holidays("US", years=2026)
    assert date(2026, 7, 14) in package.country_holidays("FR", years=2026)
    assert date(2026, 10, 3) not in package.country_holidays("US", years=2026)


def test_each_countrys_holiday_in_each_customers_zone(shop: Workspace) -> None:
    campaign(shop, "country: true\n")
    # 2026-10-02 19:30Z: already 09:30 on 3 October in Kiritimati (A's Unity Day)
    result = run_plan(shop, "hol", "2026-10-02T21:30", write=False)[0]
    assert [(p.id, p.occurrence, p.expires) for p in result.planned] == [
        ("A", "holiday:DE:2026-10-03", datetime(2026, 10, 3, 10, 0, tzinfo=UTC))]
    # Berlin's own 3 October, 12:30 (00:30 on the 4th in Kiritimati: A's day is over); C
    # and D have no calendar at all
    result = run_plan(shop, "hol", "2026-10-03T12:30", write=False)[0]
    assert result.planned == []
    assert sorted((e.id, e.occurrence, e.reason) for e in result.excluded) == [
        ("C", "holiday:ZZ:2026-10-03", "no_holidays"),
        ("D", "holiday:ZZ:2026-10-03", "no_holidays")]
    # 4 July: Honolulu's 09:00 is 19:00Z; before it, nothing
    assert planned(shop, "2026-07-04T20:59") == []  # 18:59Z
    assert planned(shop, "2026-07-04T21:00") == [("B", "holiday:US:2026-07-04")]


def test_without_a_country_the_workspace_calendar(shop: Workspace) -> None:
    campaign(shop, "country: true\n")
    assert planned(shop, "2026-07-14T10:00", WITH_FR) == [
        ("C", "holiday:FR:2026-07-14"), ("D", "holiday:FR:2026-07-14")]
    assert planned(shop, "2026-10-03T12:30", WITH_FR) == []  # not French; A's is over


def test_plan_json_names_no_holidays(shop: Workspace) -> None:
    campaign(shop, "country: true\n")
    shop.write("mailer.yaml", SETTINGS)
    out = shop.run("plan", "hol", "--json", "--now", "2026-10-03T12:30")
    assert out.code == 0, out.stderr
    assert "no_holidays" in out.stdout


def test_only_and_except_match_english_names_case_insensitively(shop: Workspace) -> None:
    campaign(shop, "country: true\nonly: ['INDEPENDENCE day']\n")
    assert planned(shop, "2026-07-04T21:00") == [("B", "holiday:US:2026-07-04")]
    assert planned(shop, "2026-10-03T00:00") == []  # 10:00 on 3 Oct in Kiritimati
    campaign(shop, "country: true\nexcept: ['german unity day']\n")
    assert planned(shop, "2026-10-03T00:00") == []
    assert planned(shop, "2026-07-04T21:00") == [("B", "holiday:US:2026-07-04")]


def test_fixed_dates_reach_everyone(shop: Workspace) -> None:
    campaign(shop, "dates: ['12-24']\n")
    # 10:00 in Berlin: 23:00 on the 24th in Kiritimati, still the 23rd in Honolulu
    assert planned(shop, "2026-12-24T10:00") == [
        ("A", "holiday:DE:2026-12-24"), ("C", "holiday:ZZ:2026-12-24"),
        ("D", "holiday:ZZ:2026-12-24")]
    assert planned(shop, "2026-12-24T10:00", WITH_FR) == [
        ("A", "holiday:DE:2026-12-24"), ("C", "holiday:FR:2026-12-24"),
        ("D", "holiday:FR:2026-12-24")]
    # 21:00 in Berlin: 11:00 in Honolulu; A's 24th is over, C and D still have theirs
    assert planned(shop, "2026-12-24T21:00") == [
        ("B", "holiday:US:2026-12-24"), ("C", "holiday:ZZ:2026-12-24"),
        ("D", "holiday:ZZ:2026-12-24")]


def test_days_before(shop: Workspace) -> None:
    campaign(shop, "country: true\ndays_before: 2\n")
    # 1 October in Kiritimati, 10:00: two days before Unity Day; it expires that night
    result = run_plan(shop, "hol", "2026-10-01T00:00", write=False)[0]
    assert [(p.id, p.occurrence, p.expires) for p in result.planned] == [
        ("A", "holiday:DE:2026-10-03", datetime(2026, 10, 1, 10, 0, tzinfo=UTC))]


def test_holiday_name_in_a_preview_in_the_customers_language(shop: Workspace) -> None:
    campaign(shop, "country: true\n")
    shop.write("mailer.yaml", SETTINGS)
    out = shop.run("preview", "hol", "--customer", "A", "--now", "2026-10-02T21:30")
    assert out.code == 0, out.stderr
    german = package.country_holidays("DE", years=2026, language="de")[date(2026, 10, 3)]
    assert german in out.stdout


def test_a_campaign_needs_an_occasion(shop: Workspace) -> None:
    shop.write("mailer.yaml", SETTINGS)
    campaign(shop, "only: [Christmas Day]\n")
    out = shop.run("validate")
    assert out.code != 0
    assert "campaigns/hol.yaml" in out.stdout + out.stderr
    assert "country: true or dates" in out.stdout + out.stderr


def test_a_customer_who_moves_zone_gets_the_holiday_once(shop: Workspace) -> None:
    campaign(shop, "country: true\n")
    first = run_plan(shop, "hol", "2026-10-02T21:30")[0]  # written: Kiritimati's 3 October
    assert [(p.id, p.occurrence) for p in first.planned] == [("A", "holiday:DE:2026-10-03")]
    shop.write("moved.csv", "id,email,timezone\nA,anna@example.com,Pacific/Honolulu\n")
    assert shop.run("import", "customers", "moved.csv", "--now", "2026-10-03").code == 0
    # 3 October 09:30 in Honolulu: the same occurrence, already planned
    again = run_plan(shop, "hol", "2026-10-03T21:30")[0]
    assert again.planned == []
    assert [(e.id, e.occurrence, e.reason) for e in again.excluded if e.id == "A"] == [
        ("A", "holiday:DE:2026-10-03", "already_sent")]
    rows = shop.query("SELECT occurrence FROM deliveries")
    assert [tuple(r) for r in rows] == [("holiday:DE:2026-10-03",)]


def test_the_forecast_with_the_held_store_is_the_full_sweeps(shop: Workspace) -> None:
    """The forecast leaves out the holiday queries no customer of a zone group can meet
    (mailer.planning.frozen): across 3 October (A's Unity Day, C and D without a
    calendar) and 4 July (B, and its observed day) it counts what the full sweep counts."""
    from mailer.app.forecast import run_forecast
    from mailer.config.settings import parse_settings
    from mailer.config.workspace import load_valid_workspace
    from mailer.mail.version import compile_version, definition

    campaign(shop, "country: true\n")
    specs, campaigns = load_valid_workspace(shop.root)
    settings = parse_settings(SETTINGS)[0]
    versions = {slug: definition(compile_version(slug, spec, shop.root / "templates"),
                                 shop.root) for slug, spec in campaigns.items()}
    engine = shop.engine()
    try:
        # 4 July 2026 is a Saturday: the package also has its observed day, Friday 3 July
        for start, mails in ((datetime(2026, 10, 2, tzinfo=UTC), 1),
                             (datetime(2026, 7, 3, 12, tzinfo=UTC), 2)):
            held, full = (run_forecast(engine, specs, campaigns, settings=settings,
                                       start=start, days=2, versions=versions, steady=steady)
                          for steady in (True, False))
            assert sum(held.mails[day]["hol"] for day in held.days) == mails
            assert held.as_json(["hol"]) == full.as_json(["hol"])
    finally:
        engine.dispose()
