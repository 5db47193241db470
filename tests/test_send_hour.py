"""`send_at: best` (issue 21 item 6): each customer's mail at their best local hour, as
the ledger row's send_after says, on both databases."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import Any

import pytest

from mailer.config.settings import QuietHours, parse_settings
from mailer.config.workspace import load_valid_workspace
from mailer.core.clock import parse_local, zone
from mailer.planning.planner import PlanResult, plan_due
from mailer.planning.policy import at_best_hour, at_hour
from mailer.planning.send_hour import Engagement, ranked_hours, store_prior
from mailer.segments.runner import scope_for
from mailer.store import events
from mailer.store.db import upgrade
from tests.conftest import SETTINGS, Workspace

CUSTOMERS = """\
id,email,first_name,timezone,subscribed
A,anna@example.com,Anna,Europe/Berlin,true
B,bob@example.org,Bob,Europe/Berlin,true
C,chloe@example.net,Chloé,Europe/Berlin,true
D,dmitry@example.com,Dmitry,,true
E,emi@example.com,Emi,America/New_York,true
"""
CAMPAIGN = """\
name: Best
trigger: once
at: {at}
grace: {grace}
send_at: best
{extra}segment: everyone
template: mail.html
subject: Hello
"""
QUIET = SETTINGS + 'policy: {quiet_hours: "18:00-08:00"}\n'


@pytest.fixture
def shop(db: Workspace) -> Workspace:
    db.write("segments/everyone.yaml", "description: all\nall: [{orders: {at_least: 0}}]\n")
    db.write("templates/mail.html", "<p>{{ store.address }} <a href='{{ links.unsubscribe }}'>"
                                    "unsubscribe</a></p>\n")
    db.write("customers.csv", CUSTOMERS)
    assert db.run("import", "customers", "customers.csv", "--now", "2026-01-01").code == 0
    return db


def best(shop: Workspace, at: str, *, grace: str = "24h", extra: str = "") -> None:
    shop.write("campaigns/best.yaml", CAMPAIGN.format(at=at, grace=grace, extra=extra))


def engage(shop: Workspace, store_id: str, kind: str, local_hour: int, *, days: int,
           before: str, minute: int = 20) -> None:
    """DAYS events of KIND by the customer, one a day before BEFORE (a local date), at
    LOCAL_HOUR:MINUTE in the customer's zone (the workspace's without one)."""
    engine = shop.engine()
    try:
        with engine.begin() as conn:
            customer_id, tz_name = conn.exec_driver_sql(
                "SELECT id, timezone FROM customers WHERE store_id = '" + store_id + "'").one()
            tz = zone(tz_name or "Europe/Berlin")
            last = datetime.fromisoformat(before)
            for day in range(1, days + 1):
                local = (last - timedelta(days=day)).replace(hour=local_hour, minute=minute)
                events.add(conn, kind, customer_id=customer_id, campaign="old",
                           delivery_id=None, at=local.replace(tzinfo=tz).astimezone(UTC))
    finally:
        engine.dispose()


def run_plan(shop: Workspace, now: str, settings_text: str = SETTINGS) -> PlanResult:
    settings, _ = parse_settings(settings_text)
    specs, campaigns = load_valid_workspace(shop.root)
    engine = shop.engine()
    try:
        upgrade(engine)
        scope = scope_for(settings, parse_local(now, zone(settings.timezone)), engine)
        return plan_due(engine, specs, campaigns, scope=scope, settings=settings,
                        versions={slug: {"campaign": slug} for slug in campaigns})[0]
    finally:
        engine.dispose()


def send_after(shop: Workspace) -> dict[str, str]:
    """Each planned customer's ledger row: its send_after in UTC, as ISO text."""
    rows: list[Any] = shop.query(
        "SELECT c.store_id, d.send_after FROM deliveries d "
        "JOIN customers c ON c.id = d.customer_id ORDER BY c.store_id")
    return {store_id: _iso(at) for store_id, at in rows}


def forget(shop: Workspace) -> None:
    """No rows in the ledger: the next plan starts afresh."""
    engine = shop.engine()
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("DELETE FROM deliveries")
    finally:
        engine.dispose()


def _iso(at: Any) -> str:
    moment = at if isinstance(at, datetime) else datetime.fromisoformat(str(at))
    return moment.replace(tzinfo=None).isoformat(timespec="minutes")


def test_clicks_at_19_local_are_planned_at_19_local_opens_else_the_store_hour(
        shop: Workspace) -> None:
    engage(shop, "A", "click", 19, days=6, before="2026-06-10")
    engage(shop, "B", "open", 12, days=6, before="2026-06-10")  # no clicks: opens count
    engage(shop, "C", "machine_click", 15, days=8, before="2026-06-10")  # a scanner's
    engage(shop, "C", "machine_open", 11, days=8, before="2026-06-10")
    best(shop, "2026-06-10T09:00")
    result = run_plan(shop, "2026-06-10T09:00")
    assert result.planned_count == 5
    assert send_after(shop) == {
        "A": "2026-06-10T17:00",  # 19:00 in Berlin (CEST)
        "B": "2026-06-10T10:00",  # 12:00 in Berlin: the opens' hour
        "C": "2026-06-10T17:00",  # machine hits ignored: the store's hour, A's 19:00
        "D": "2026-06-10T17:00",  # nothing at all: the store's hour (in the workspace zone)
        "E": "2026-06-10T23:00",  # the store's 19:00, in New York (EDT)
    }


def test_an_old_click_counts_no_more_than_the_lookback(shop: Workspace) -> None:
    engage(shop, "A", "click", 19, days=3, before="2026-06-10")
    engage(shop, "A", "click", 14, days=5, before="2025-11-01")  # over 180 days ago
    best(shop, "2026-06-10T09:00")
    run_plan(shop, "2026-06-10T09:00")
    assert send_after(shop)["A"] == "2026-06-10T17:00"


def test_two_zones_each_at_their_own_local_hour(shop: Workspace) -> None:
    engage(shop, "A", "click", 19, days=6, before="2026-06-10")
    engage(shop, "E", "click", 10, days=6, before="2026-06-10")
    best(shop, "2026-06-10T09:00")
    run_plan(shop, "2026-06-10T09:00")
    found = send_after(shop)
    assert found["A"] == "2026-06-10T17:00"  # 19:00 CEST
    assert found["E"] == "2026-06-10T14:00"  # 10:00 EDT


def test_a_preferred_hour_in_quiet_hours_or_outside_the_window_is_never_chosen(
        shop: Workspace) -> None:
    engage(shop, "A", "click", 19, days=6, before="2026-06-10")
    engage(shop, "A", "click", 16, days=2, before="2026-06-10")
    best(shop, "2026-06-10T09:00")
    run_plan(shop, "2026-06-10T09:00", QUIET)  # quiet from 18:00
    assert send_after(shop)["A"] == "2026-06-10T14:00"  # 16:00 CEST, the next best
    # outside the window (hours 09 to 16): the same
    forget(shop)
    best(shop, "2026-06-10T09:00", extra='window: "09:00-17:00"\n')
    run_plan(shop, "2026-06-10T09:00")
    assert send_after(shop)["A"] == "2026-06-10T14:00"


def test_the_best_hour_after_the_expiry_gives_way_to_the_next_then_to_none(
        shop: Workspace) -> None:
    engage(shop, "A", "click", 19, days=6, before="2026-06-10")
    engage(shop, "A", "click", 16, days=2, before="2026-06-10")
    best(shop, "2026-06-10T09:00", grace="8h")  # expires 17:00 local: 19:00 is too late
    run_plan(shop, "2026-06-10T09:00")
    assert send_after(shop)["A"] == "2026-06-10T14:00"
    forget(shop)
    best(shop, "2026-06-10T09:00", grace="8h", extra='window: "17:00-20:00"\n')
    # no window hour before the expiry: never outside the window
    result = shop.run("plan", "best", "--now", "2026-06-10T09:00", "--json").json()
    assert result["recipients"] == []
    assert {e["id"]: e["reason"] for e in result["excluded"]}["A"] == "outside_window"


@pytest.mark.parametrize(("now", "planned"), [
    ("2026-03-28T20:00", "2026-03-29T17:00"),  # into summer time: 19:00 CEST
    ("2026-10-24T20:00", "2026-10-25T18:00"),  # into winter time: 19:00 CET
])
def test_across_a_daylight_saving_change_the_local_hour_holds(
        shop: Workspace, now: str, planned: str) -> None:
    engage(shop, "A", "click", 19, days=40, before=now[:10])
    best(shop, now, grace="48h")
    run_plan(shop, now)
    assert send_after(shop)["A"] == planned


def test_a_best_hour_that_does_not_exist_that_day_is_the_first_instant_after(
        shop: Workspace) -> None:
    engage(shop, "A", "click", 2, days=10, before="2026-03-28")
    best(shop, "2026-03-28T22:00", extra='window: "00:00-06:00"\n')
    run_plan(shop, "2026-03-28T22:00")
    # 02:00 is skipped on 29 March in Berlin: 03:00 CEST, 01:00 UTC
    assert send_after(shop)["A"] == "2026-03-29T01:00"


def test_plan_json_shows_each_mails_chosen_time(shop: Workspace) -> None:
    engage(shop, "A", "click", 19, days=6, before="2026-06-10")
    best(shop, "2026-06-10T09:00")
    document = shop.run("plan", "best", "--now", "2026-06-10T09:00", "--json").json()
    assert {r["id"]: r["send_after"] for r in document["recipients"]}["A"] == \
        "2026-06-10T17:00:00Z"


def test_preview_says_when_each_mail_would_leave(shop: Workspace) -> None:
    engage(shop, "A", "click", 19, days=6, before="2026-06-10")
    best(shop, "2026-06-10T09:00")
    result = shop.run("preview", "best", "--customer", "A", "--now", "2026-06-10T09:00",
                      "--json")
    assert result.code == 0, result.stderr
    assert [(s["id"], s["mailable"], s["send_after"]) for s in result.json()["samples"]] == \
        [("A", True, "2026-06-10T17:00:00Z")]
    text = shop.run("preview", "best", "--customer", "A", "--now", "2026-06-10T09:00")
    assert "yes, from 2026-06-10T17:00:00Z" in text.stdout


def test_forecast_counts_the_mails_by_the_hour_they_leave(shop: Workspace) -> None:
    engage(shop, "A", "click", 19, days=6, before="2026-06-10")
    engage(shop, "B", "click", 12, days=6, before="2026-06-10")
    best(shop, "2026-06-10T09:00")
    document = shop.run("forecast", "--days", "1", "--from", "2026-06-10T09:00",
                        "--json").json()
    # A at 19:00, B at 12:00, C, D (nothing: the store's hours, A's 6 clicks at 19
    # against B's 6 at 12: a tie, so the sooner 12:00) in Berlin; E in New York at
    # 12:00 EDT, 18:00 in Berlin
    assert document["hours"] == {"12:00": 3, "18:00": 1, "19:00": 1}


def test_best_on_a_birthday_campaign_and_a_bad_window_are_refused(shop: Workspace) -> None:
    shop.write("campaigns/bday.yaml", "name: B\ntrigger: birthday\nsegment: everyone\n"
                                      "template: mail.html\nsubject: Hi\nsend_at: best\n")
    best(shop, "2026-06-10T09:00", extra='window: "9am-8pm"\n')
    result = shop.run("validate")
    assert result.code == 1
    assert "campaigns/bday.yaml:6: send_at: best works with once, promotion and schedule " \
        "campaigns only" in result.stderr + result.stdout
    assert "campaigns/best.yaml:6: window: expected a span of whole local hours like " \
        "09:00-20:00, got '9am-8pm'" in result.stderr + result.stdout


@pytest.mark.parametrize("timing", [
    "trigger: promotion\nstarts: 2026-06-10T09:00\nends: 2026-06-12T09:00\n",
    "trigger: schedule\nschedule: \"0 9 * * *\"\ngrace: 24h\n",
])
def test_promotions_and_schedules_wait_for_the_best_hour_too(shop: Workspace,
                                                             timing: str) -> None:
    engage(shop, "A", "click", 19, days=6, before="2026-06-10")
    shop.write("campaigns/best.yaml", "name: Best\n" + timing + "send_at: best\n"
               "segment: everyone\ntemplate: mail.html\nsubject: Hello\n")
    run_plan(shop, "2026-06-10T09:30")
    assert send_after(shop)["A"] == "2026-06-10T17:00"


def test_within_the_best_hour_the_mail_leaves_at_once_unless_quiet() -> None:
    tz = zone("Europe/Berlin")
    now = datetime(2026, 6, 10, 17, 40, tzinfo=UTC)  # 19:40 in Berlin
    assert at_hour(now, tz, 19, None) == now
    quiet = QuietHours(time(19, 30), time(8, 0))
    assert at_hour(now, tz, 19, quiet) == datetime(2026, 6, 11, 17, 0, tzinfo=UTC)
    assert at_best_hour(now, tz, ((19,), (12,)), None, expires=now) is None
    assert at_best_hour(now, tz, ((19,), (12,)), quiet,
                        expires=now + timedelta(hours=23)) == \
        datetime(2026, 6, 11, 10, 0, tzinfo=UTC)  # tomorrow's 19:00 is past the expiry


def test_validate_warns_of_a_window_inside_the_quiet_hours(shop: Workspace) -> None:
    shop.write("mailer.yaml", QUIET)
    best(shop, "2026-06-10T09:00", extra='window: "19:00-22:00"\n')
    result = shop.run("validate")
    assert result.code == 0, result.stderr
    assert "campaigns/best.yaml:6: warning: window: every hour of the window 19:00-22:00 is " \
        "in the quiet hours (18:00-08:00): mails leave when they end" in result.stderr


def test_hours_that_tie_go_together_and_the_soonest_of_them_wins() -> None:
    flat = store_prior(Engagement())
    assert ranked_hours(Engagement(), flat, (22, 23, 0, 1)) == ((22, 23, 0, 1),)
    evening = Engagement(clicks=tuple(1 if hour == 19 else 0 for hour in range(24)))
    assert ranked_hours(Engagement(), store_prior(evening), (9, 19, 20)) == ((19,), (9, 20))
    tz = zone("Europe/Berlin")
    morning = datetime(2026, 6, 10, 4, 0, tzinfo=UTC)  # 06:00 in Berlin
    assert at_best_hour(morning, tz, ((9, 10, 11),), None, expires=morning + timedelta(
        days=1)) == datetime(2026, 6, 10, 7, 0, tzinfo=UTC)  # 09:00, the soonest
    late = datetime(2026, 6, 10, 8, 30, tzinfo=UTC)  # 10:30: 10 is now, 9 tomorrow
    assert at_best_hour(late, tz, ((9, 10, 11),), None,
                        expires=late + timedelta(days=1)) == late


def test_a_store_without_engagement_sends_as_soon_as_the_window_allows(
        shop: Workspace) -> None:
    best(shop, "2026-06-10T07:00")
    run_plan(shop, "2026-06-10T07:00")
    found = send_after(shop)
    assert found["A"] == "2026-06-10T07:00"  # 09:00 in Berlin, the window's start
    assert found["E"] == "2026-06-10T13:00"  # 09:00 in New York
    forget(shop)
    run_plan(shop, "2026-06-10T10:30")
    assert send_after(shop)["A"] == "2026-06-10T08:30"  # at once: 10:30 is in the window
