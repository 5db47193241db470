"""Planning and policy (DESIGN §4.2, §4.3) against the real ledger, on both databases."""

from __future__ import annotations

import re
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from mailer.config.settings import parse_settings
from mailer.config.workspace import load_valid_workspace
from mailer.core.clock import parse_local, zone
from mailer.planning.planner import PlanResult, plan_due
from mailer.segments.runner import scope_for
from tests.conftest import SETTINGS, Workspace

CUSTOMERS = """\
id,email,first_name,timezone,subscribed,birth_date
A,anna@example.com,Anna,Europe/Berlin,true,1990-11-23
B,bob@example.org,Bob,America/New_York,false,
C,chloe@example.net,Chloé,Asia/Tokyo,true,
D,dmitry@example.com,Dmitry,,true,2000-02-29
E,emi@example.com,Emi,Pacific/Kiritimati,true,1985-11-24
"""
ONCE = """\
name: {name}
trigger: once
at: {at}
grace: {grace}
segment: everyone
template: mail.html
subject: ["One {{{{ customer.first_name }}}}", "Two"]
priority: {priority}
"""


@pytest.fixture
def shop(db: Workspace) -> Workspace:
    db.write("segments/everyone.yaml", "description: all\nall: [{orders: {at_least: 0}}]\n")
    db.write("templates/mail.html", "<p>{{ store.address }} <a href='{{ links.unsubscribe }}'>"
                                    "unsubscribe</a></p>\n")
    db.write("customers.csv", CUSTOMERS)
    assert db.run("import", "customers", "customers.csv", "--now", "2026-01-01").code == 0
    assert db.run("unsubscribe", "chloe@example.net").code == 0
    return db


def once(shop: Workspace, slug: str, at: str, *, grace: str = "6h", priority: int = 0) -> None:
    shop.write(f"campaigns/{slug}.yaml", ONCE.format(name=slug, at=at, grace=grace,
                                                     priority=priority))


def run_plan(shop: Workspace, slug: str | None, now: str, *, write: bool = True,
             settings_text: str = SETTINGS) -> list[PlanResult]:
    settings, _ = parse_settings(settings_text)
    specs, campaigns = load_valid_workspace(shop.root)
    engine = shop.engine()
    try:
        from mailer.store.db import upgrade

        upgrade(engine)
        scope = scope_for(settings, parse_local(now, zone(settings.timezone)), engine)
        chosen = {slug: campaigns[slug]} if slug else campaigns
        versions = {s: {"campaign": s} for s in chosen} if write else None
        return plan_due(engine, specs, chosen, scope=scope, settings=settings,
                        versions=versions)
    finally:
        engine.dispose()


def ledger(shop: Workspace) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in shop.query(
        "SELECT d.campaign, c.store_id, d.occurrence, d.subject_variant, d.status "
        "FROM deliveries d JOIN customers c ON c.id = d.customer_id ORDER BY d.id")]


def test_plan_is_a_dry_run_with_reasons(shop: Workspace) -> None:
    once(shop, "hello", "2026-12-01T10:00")
    result = shop.run("plan", "hello", "--now", "2026-12-01T10:30", "--json")
    assert result.code == 0, result.stderr
    document = result.json()
    assert document["now"] == "2026-12-01T09:30:00Z"
    assert [(r["id"], r["occurrence"], r["variant"], r["subject"])
            for r in document["recipients"]] == [
        ("A", "once", 1, "One Anna"), ("D", "once", 2, "Two"), ("E", "once", 1, "One Emi")]
    assert [(e["id"], e["reason"]) for e in document["excluded"]] == [
        ("B", "not_subscribed"), ("C", "unsubscribed")]
    assert shop.run("plan", "hello", "--now", "2026-12-01T10:30", "--json").json() == document
    assert ledger(shop) == []
    assert shop.query("SELECT count(*) FROM plan_runs")[0][0] == 0


def test_writing_a_plan_then_planning_again(shop: Workspace) -> None:
    once(shop, "hello", "2026-12-01T10:00")
    first = run_plan(shop, "hello", "2026-12-01T10:30")[0]
    assert [p.id for p in first.planned] == ["A", "D", "E"]
    assert ledger(shop) == [("hello", "A", "once", 0, "queued"),
                            ("hello", "D", "once", 1, "queued"),
                            ("hello", "E", "once", 0, "queued")]
    again = run_plan(shop, "hello", "2026-12-01T11:00")[0]
    assert again.planned == []
    assert again.counts() == {"not_subscribed": 1, "unsubscribed": 1, "already_sent": 3}
    runs = shop.query("SELECT planned FROM plan_runs ORDER BY id")
    assert [r[0] for r in runs] == [3, 0]


def test_not_due_outside_at_plus_grace(shop: Workspace) -> None:
    once(shop, "hello", "2026-12-01T10:00")
    assert run_plan(shop, "hello", "2026-12-01T09:59")[0].planned == []
    assert run_plan(shop, "hello", "2026-12-01T16:00")[0].planned == []


def test_caps_count_planned_time_in_the_half_open_window(shop: Workspace) -> None:
    once(shop, "first", "2026-12-01T10:00")
    once(shop, "second", "2026-12-02T09:59", grace="2h")
    run_plan(shop, "first", "2026-12-01T10:00")
    # 23:59:59 later the daily cap is full; exactly 24 h later the first mail no longer counts
    held = run_plan(shop, "second", "2026-12-02T09:59:59")[0]
    assert held.counts()["frequency_cap"] == 3
    freed = run_plan(shop, "second", "2026-12-02T10:00:00")[0]
    assert [p.id for p in freed.planned] == ["A", "D", "E"]


def test_priority_decides_who_gets_the_one_mail_a_day(shop: Workspace) -> None:
    once(shop, "low", "2026-12-01T10:00", priority=10)
    once(shop, "high", "2026-12-01T10:00", priority=90)
    results = run_plan(shop, None, "2026-12-01T10:30")
    by_campaign = {r.campaign: r for r in results}
    assert [p.id for p in by_campaign["high"].planned] == ["A", "D", "E"]
    assert by_campaign["low"].planned == []
    assert by_campaign["low"].counts()["frequency_cap"] == 3
    # the dry run sees the same: caps count what this run planned before
    dry = run_plan(shop, None, "2026-12-03T10:30", write=False)
    assert all(r.planned == [] for r in dry)


def test_cooldown(shop: Workspace) -> None:
    shop.write("campaigns/weekly.yaml", "name: w\ntrigger: schedule\nschedule: '0 10 * * 1'\n"
                                        "segment: everyone\ntemplate: mail.html\nsubject: Hi\n"
                                        "cooldown: 30d\n")
    assert [p.occurrence for p in run_plan(shop, "weekly", "2026-11-30T10:05")[0].planned] == [
        "cron:2026-11-30T09:00:00Z"] * 3
    later = run_plan(shop, "weekly", "2026-12-07T10:05")[0]
    assert later.counts()["cooldown"] == 3
    assert [p.id for p in run_plan(shop, "weekly", "2027-01-04T10:05")[0].planned] == [
        "A", "D", "E"]


def test_quiet_hours_delay_or_exclude_near_the_expiry(shop: Workspace) -> None:
    quiet = SETTINGS + "policy: {quiet_hours: '21:00-08:00'}\n"
    once(shop, "late", "2026-12-01T22:00", grace="6h")
    result = run_plan(shop, "late", "2026-12-01T22:30", write=False, settings_text=quiet)[0]
    # Berlin releases at 08:00 > expiry 04:00 Berlin; Kiritimati (UTC+14) is at 11:30 already
    reasons = {e.id: e.reason for e in result.excluded}
    assert reasons["A"] == "quiet_hours" and reasons["D"] == "quiet_hours"
    assert [p.id for p in result.planned] == ["E"]
    once(shop, "late", "2026-12-01T22:00", grace="12h")
    result = run_plan(shop, "late", "2026-12-01T22:30", write=False, settings_text=quiet)[0]
    release = {p.id: p.send_after for p in result.planned}
    assert release["A"] == datetime(2026, 12, 2, 7, 0, tzinfo=UTC)  # 08:00 Berlin
    assert release["E"] == datetime(2026, 12, 1, 21, 30, tzinfo=UTC)  # now


def test_birthdays_in_each_customers_zone(shop: Workspace) -> None:
    shop.write("campaigns/bday.yaml", "name: b\ntrigger: birthday\nsend_at: '09:00'\n"
                                      "segment: everyone\ntemplate: mail.html\nsubject: Hi\n")
    # 2026-11-23 20:30Z: 21:30 on the 23rd in Berlin (A's day), 10:30 on the 24th in
    # Kiritimati (E's day)
    result = run_plan(shop, "bday", "2026-11-23T21:30", write=False)[0]
    assert sorted((p.id, p.occurrence, p.expires) for p in result.planned) == [
        ("A", "birthday:2026", datetime(2026, 11, 23, 23, 0, tzinfo=UTC)),
        ("E", "birthday:2026", datetime(2026, 11, 24, 10, 0, tzinfo=UTC))]
    # D (no zone: the workspace's, Berlin) was born on 29 February: 28 February in 2027
    leap = run_plan(shop, "bday", "2027-02-28T09:00", write=False)[0]
    assert [p.id for p in leap.planned] == ["D"]


def test_two_planners_at_once_write_each_mail_once(shop: Workspace) -> None:
    once(shop, "race", "2026-12-01T10:00")
    results: list[PlanResult] = []
    errors: list[BaseException] = []

    def planner() -> None:
        try:
            results.extend(run_plan(shop, "race", "2026-12-01T10:30"))
        except BaseException as err:  # surfaced below
            errors.append(err)

    threads = [threading.Thread(target=planner) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert sorted(row[1] for row in ledger(shop)) == ["A", "D", "E"]
    assert sum(len(r.planned) for r in results) == 3


def test_unknown_campaign(shop: Workspace) -> None:
    once(shop, "hello", "2026-12-01T10:00")
    result = shop.run("plan", "helo", "--json")
    assert result.code == 1
    assert result.json()["error"]["message"] == "unknown campaign 'helo' (did you mean hello?)"



def test_coupons_and_referral_codes_are_written_with_the_plan(shop: Workspace) -> None:
    shop.write("campaigns/gift.yaml", ONCE.format(name="gift", at="2026-12-01T10:00", grace="6h",
                                                  priority=0)
               + "coupon: {prefix: bf, value: 30%, valid_for: 3d}\n"
               + "referral: {deadline: 2026-12-31, reward: '20% for both'}\n")
    run_plan(shop, "gift", "2026-12-01T10:30")
    coupons = shop.query("SELECT c.code, c.value, c.expires_at, d.id = c.delivery_id "
                         "FROM coupons c JOIN deliveries d ON d.customer_id = c.customer_id")
    assert len(coupons) == 3 and len({row[0] for row in coupons}) == 3
    assert all(row[0].startswith("BF-") and len(row[0]) == 13 for row in coupons)
    assert all(row[1] == "30%" and row[3] for row in coupons)
    assert str(coupons[0][2]).startswith("2026-12-04 09:30")
    codes = dict(shop.query("SELECT store_id, referral_code FROM customers"))
    assert codes["B"] is None and codes["C"] is None  # not planned, no code
    assert len({codes["A"], codes["D"], codes["E"]}) == 3
    run_plan(shop, "gift", "2026-12-01T11:00")  # stable: a second plan changes nothing
    assert dict(shop.query("SELECT store_id, referral_code FROM customers")) == codes


def test_a_coupon_or_referral_code_drawn_twice_is_drawn_again(
        shop: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    import itertools

    from mailer.planning import planner

    # every customer first draws the same code, then a distinct one
    draws = itertools.chain(["SAMECODE22"] * 6, (f"FRESH{n:05d}" for n in itertools.count()))
    monkeypatch.setattr(planner, "_codes", lambda count: [next(draws) for _ in range(count)])
    shop.write("campaigns/gift.yaml", ONCE.format(name="gift", at="2026-12-01T10:00", grace="6h",
                                                  priority=0)
               + "coupon: {prefix: bf, value: 30%, valid_for: 3d}\n"
               + "referral: {deadline: 2026-12-31, reward: '20% for both'}\n")
    [result] = run_plan(shop, "gift", "2026-12-01T10:30")
    assert result.planned_count == 3
    coupons = [row[0] for row in shop.query("SELECT code FROM coupons")]
    assert len(coupons) == 3 and len(set(coupons)) == 3 and "BF-SAMECODE22" in coupons
    referrals = [c for (c,) in shop.query("SELECT referral_code FROM customers") if c]
    assert len(referrals) == 3 and len(set(referrals)) == 3


def test_forecast_simulates_hourly_sweeps_and_writes_nothing(shop: Workspace,
                                                            tmp_path: Path) -> None:
    once(shop, "first", "2026-12-01T10:00", priority=90)
    once(shop, "second", "2026-12-01T11:00", grace="48h")
    chart = tmp_path / "forecast.html"
    result = shop.run("forecast", "--days", "3", "--from", "2026-12-01", "--chart", str(chart),
                      "--json")
    assert result.code == 0, result.stderr
    document = result.json()
    assert document["from"] == "2026-11-30T23:00:00Z"
    # day 1: "first" to A, D, E; "second" is capped (1 per day) until 24 h after the first
    assert [d["campaigns"] for d in document["days"]] == [
        {"first": 3, "second": 0}, {"first": 0, "second": 3}, {"first": 0, "second": 0}]
    assert document["caps_hit"] == {"1 per 1d": 3}
    assert document["max_per_customer_7d"] == 2
    assert "<svg" in chart.read_text()
    assert ledger(shop) == []
    assert shop.query("SELECT count(*) FROM plan_runs")[0][0] == 0


def test_forecast_chart_formats(shop: Workspace, tmp_path: Path) -> None:
    once(shop, "first", "2026-12-01T10:00")
    png = tmp_path / "forecast.png"
    assert shop.run("forecast", "--days", "2", "--from", "2026-12-01", "--chart", str(png)
                    ).code == 0
    from PIL import Image

    from mailer.app.charts import campaign_colour

    with Image.open(png) as image:
        assert (image.format, image.size) == ("PNG", (1200, 600))
        colours = {colour[:3] for _, colour in image.getcolors(1200 * 600)}
    assert tuple(bytes.fromhex(campaign_colour("first")[1:])) in colours  # its bars are drawn
    result = shop.run("forecast", "--days", "1", "--chart", "out.gif", "--json")
    assert result.code == 1
    assert result.json()["error"]["message"] == (
        "out.gif: charts are written as .png, .html or .svg")


def test_promotion_then_reminder_to_those_who_got_the_main_mail(shop: Workspace) -> None:
    shop.write("orders.csv", "order_id,customer_id,placed_at,total\nO1,D,2026-11-27T12:00,20\n")
    assert shop.run("import", "orders", "orders.csv", "--now", "2026-11-28").code == 0
    shop.write("campaigns/sale.yaml", "name: s\ntrigger: promotion\nstarts: 2026-11-27T08:00\n"
                                      "ends: 2026-11-29T08:00\nsegment: everyone\n"
                                      "template: mail.html\nsubject: Sale\n"
                                      "reminder: {before_end: 12h, subject: Last hours, "
                                      "unless: ordered_since_start}\n")
    main = run_plan(shop, "sale", "2026-11-27T09:00")[0]
    assert [(p.id, p.occurrence) for p in main.planned] == [("A", "main"), ("D", "main"),
                                                             ("E", "main")]
    engine = shop.engine()  # delivery (a later issue) marks rows sent; here SQL does
    with engine.begin() as conn:
        from sqlalchemy import text

        conn.execute(text("UPDATE deliveries SET status = 'sent' WHERE customer_id IN "
                          "(SELECT id FROM customers WHERE store_id IN ('A', 'D'))"))
    engine.dispose()
    assert run_plan(shop, "sale", "2026-11-28T19:59")[0].planned == []  # before ends - 12h
    reminder = run_plan(shop, "sale", "2026-11-28T20:00", write=False)[0]
    # E's main mail is still queued: no reminder; D ordered since the start
    assert [(p.id, p.occurrence) for p in reminder.planned] == [("A", "reminder")]
    assert [(e.id, e.reason) for e in reminder.excluded if e.occurrence == "reminder"] == [
        ("D", "ordered_since_start")]


def test_after_order_on_the_customers_local_day(shop: Workspace) -> None:
    shop.write("orders.csv", "order_id,customer_id,placed_at,total,status\n"
                             "O1,A,2026-11-13T10:00,20,paid\nO2,E,2026-11-13T10:00,20,paid\n"
                             "O3,D,2026-11-13T10:00,20,refunded\n")
    assert shop.run("import", "orders", "orders.csv", "--now", "2026-11-20").code == 0
    shop.write("campaigns/ask.yaml", "name: a\ntrigger: after_order\nafter: 10d\n"
                                     "send_at: '18:00'\nsegment: everyone\n"
                                     "template: mail.html\nsubject: How was it?\n")
    result = run_plan(shop, "ask", "2026-11-23T18:30", write=False)[0]
    # A's order (13 Nov, Berlin) + 10 days is 23 Nov in Berlin, after 18:00 there.
    # E lives in Kiritimati (UTC+14): it is already 24 Nov there, the wrong day.
    assert [(p.id, p.occurrence) for p in result.planned] == [("A", "order:O1")]
    assert run_plan(shop, "ask", "2026-11-23T17:30", write=False)[0].planned == []


def test_variants_go_round_robin_in_store_id_order_across_runs(shop: Workspace) -> None:
    shop.write("late.csv", "id,email\n0-first,first@example.com\n")  # imported last, sorts first
    assert shop.run("import", "customers", "late.csv").code == 0
    once(shop, "hello", "2026-12-01T10:00")
    planned = run_plan(shop, "hello", "2026-12-01T10:30")[0].planned
    assert [(p.id, p.variant) for p in planned] == [("0-first", 0), ("A", 1), ("D", 0), ("E", 1)]
    shop.write("later.csv", "id,email\nF,f@example.com\n")
    assert shop.run("import", "customers", "later.csv").code == 0
    # the count continues from the four earlier rows: F gets the first subject
    assert [(p.id, p.variant) for p in run_plan(shop, "hello", "2026-12-01T11:00")[0].planned] == [
        ("F", 0)]


def test_large_audiences_are_paged_through_a_temporary_table(shop: Workspace,
                                                             monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    monkeypatch.setattr("mailer.planning.planner.BATCH", 2)  # five candidates: three pages
    once(shop, "hello", "2026-12-01T10:00")
    result = run_plan(shop, "hello", "2026-12-01T10:30")[0]
    assert [(p.id, p.variant) for p in result.planned] == [("A", 0), ("D", 1), ("E", 0)]
    assert result.counts() == {"not_subscribed": 1, "unsubscribed": 1}
    assert sorted(row[1] for row in ledger(shop)) == ["A", "D", "E"]


def test_each_planned_row_gets_a_random_message_id_no_other_installation_makes(
        shop: Workspace, tmp_path: Path) -> None:
    once(shop, "hello", "2026-12-01T10:00")
    run_plan(shop, "hello", "2026-12-01T10:30")
    ours = {r[0]: r[1] for r in shop.query(
        "SELECT c.store_id, d.message_id FROM deliveries d "
        "JOIN customers c ON c.id = d.customer_id")}
    assert sorted(ours) == ["A", "D", "E"]
    assert all(re.fullmatch(r"<[0-9a-f]{32}@shop\.example>", str(m)) for m in ours.values())
    assert len(set(ours.values())) == 3
    # the same store, campaign and customers in another installation: other ids
    other = Workspace(tmp_path / "other", None)
    other.root.mkdir()
    for name in ("mailer.yaml", "segments/everyone.yaml", "templates/mail.html",
                 "customers.csv", "campaigns/hello.yaml"):
        other.write(name, (shop.root / name).read_text(encoding="utf-8"))
    assert other.run("import", "customers", "customers.csv", "--now", "2026-01-01").code == 0
    assert other.run("unsubscribe", "chloe@example.net").code == 0
    run_plan(other, "hello", "2026-12-01T10:30")
    theirs = {r[0]: r[1] for r in other.query(
        "SELECT c.store_id, d.message_id FROM deliveries d "
        "JOIN customers c ON c.id = d.customer_id")}
    assert sorted(theirs) == sorted(ours)
    assert not set(theirs.values()) & set(ours.values())
