"""`mailer customer ID|EMAIL` (issue 18, item 6): the customer card against answers worked
out by hand, on both databases; the consent history each consent write adds; segment
membership asked for one customer equal to the whole segment's; the pure parts (next
birthday, days between orders, subjects).

The store's clock: now = 2026-11-23 10:00 in Berlin (09:00Z), a Monday.
"""

from __future__ import annotations

import json
import shutil
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert
from sqlalchemy import text as sql

from mailer.app.card import next_birthday, next_holiday, subject_of
from mailer.config.campaign import Campaign
from mailer.core.claims import Claims
from mailer.store import events
from mailer.store.insight.responses import Answer, record_answers
from mailer.store.models import CampaignVersion, Delivery, Recommendation
from tests.conftest import Workspace
from tests.test_bounces import dsn

ROOT = Path(__file__).resolve().parent.parent
NOW = "2026-11-23T10:00"
NOW_UTC = datetime(2026, 11, 23, 9, tzinfo=UTC)

SEGMENTS = {
    "buyers": "description: Bought\norders: {at_least: 1}\n",
    "coffee": "description: Coffee twice\nbought: {category: Coffee, at_least: 2}\n",
    "spenders": "description: 150 or more\nspent: {at_least: 150}\n",
    "lapsed": "description: Gone quiet\nlast_order: {more_than_ago: 60d}\n",
    "vip-active": ("description: VIPs still buying\nall:\n  - tags: {contains: vip}\n"
                   "  - not: {in_segment: lapsed}\n"),
    "referrers": "description: Brought a friend\nreferrals: {at_least: 1}\n",
    "everyone": ("description: Everybody\nany:\n  - subscribed: true\n"
                 "  - subscribed: false\n"),
}
TEMPLATE = ('<p>{{ intro }}</p><a href="{{ links.unsubscribe }}">unsubscribe</a>'
            "<p>{{ store.address }}</p>\n")
CAMPAIGNS = {
    "newsletter": ('name: Newsletter\ntrigger: schedule\nschedule: "0 10 * * 1"\n'
                   "segment: everyone\ntemplate: t.html\nsubject:\n"
                   '  - "Hello {{ customer.first_name }}"\n  - "News for you"\n'),
    "birthday": ("name: Birthday\ntrigger: birthday\nsegment: everyone\ntemplate: t.html\n"
                 'subject: "Happy birthday"\n'),
    "winback": ("name: Win-back\ntrigger: once\nat: 2026-12-01T10:00\nsegment: lapsed\n"
                'template: t.html\nsubject: "We miss you"\n'),
    "promo": ("name: Coffee days\ntrigger: promotion\nstarts: 2026-11-27T08:00\n"
              "ends: 2026-11-30T00:00\nsegment: coffee\ntemplate: t.html\n"
              'subject: "Coffee days"\ntopic: promotions\n'),
    "thanks": ("name: Thanks\ntrigger: after_order\nafter: 2d\nsegment: buyers\n"
               'template: t.html\nsubject: "Thanks"\n'),
}
CUSTOMERS = """\
id,email,first_name,last_name,birth_date,timezone,country,city,signed_up_at,subscribed,tags,referred_by
A,Anna@Example.com,Anna,Berg,1990-12-05,Europe/Berlin,DE,Berlin,2025-01-10,true,vip,
B,bob@example.com,Bob,,,,,,,true,,
C,carla@example.com,Carla,,,,,,,false,,A
"""
ORDERS = """\
order_id,customer_id,placed_at,status,currency,total,sku,product,category,quantity,price
O1,A,2026-01-10T12:00Z,paid,EUR,100.00,K1,Kenya beans,Coffee,1,100.00
O2,A,2026-03-11T12:00Z,paid,EUR,50.00,K2,Espresso,coffee,2,25.00
O3,A,2026-06-01T12:00Z,refunded,EUR,999.00,X,Machine,kitchen,1,999.00
O4,A,2026-11-01T12:00Z,paid,USD,30.00,B1,A novel,books,1,30.00
"""
SOURCE = "\n".join(CAMPAIGNS["newsletter"].splitlines())


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _ledger(ws: Workspace, customer: str, email: str, rows: list[dict[str, Any]]) -> list[int]:
    """Ledger rows of the newsletter for CUSTOMER (the planner's columns), their ids."""
    engine = ws.engine()
    ids = []
    try:
        with engine.begin() as conn:
            version = conn.execute(sql("SELECT id FROM campaign_versions")).scalar()
            if version is None:
                version = conn.execute(insert(CampaignVersion).values(
                    campaign="newsletter", content_hash="h1",
                    definition={"campaign": "newsletter", "campaign_source": SOURCE},
                    created_at=NOW_UTC).returning(CampaignVersion.id)).scalar_one()
            who = conn.execute(sql("SELECT id FROM customers WHERE store_id = :s"),
                               {"s": customer}).scalar_one()
            for row in rows:
                ids.append(conn.execute(insert(Delivery).values(
                    campaign="newsletter", campaign_version_id=version, customer_id=who,
                    email=email, attempts=0, expires_at=_utc(row["planned_at"]).replace(
                        hour=15), send_after=_utc(row["planned_at"]),
                    **{k: _utc(v) if k.endswith("_at") else v for k, v in row.items()})
                    .returning(Delivery.id)).scalar_one())
    finally:
        engine.dispose()
    return ids


@pytest.fixture
def store(db: Workspace) -> Workspace:
    for name, text in SEGMENTS.items():
        db.write(f"segments/{name}.yaml", text)
    for name, text in CAMPAIGNS.items():
        db.write(f"campaigns/{name}.yaml", text)
    db.write("templates/t.html", TEMPLATE)
    db.write("customers.csv", CUSTOMERS)
    db.write("orders.csv", ORDERS)
    assert db.run("import", "customers", "customers.csv", "--now", "2026-01-01T10:00").code == 0
    # The orders import records every stage first, as of its now: Anna had one order then.
    assert db.run("import", "orders", "orders.csv", "--now", "2026-02-01T10:00").code == 0
    assert db.run("unsubscribe", "anna@example.com", "--now", "2026-11-10T10:00").code == 0
    assert db.run("resubscribe", "anna@example.com", "--source", "phone call",
                  "--now", "2026-11-12T10:00").code == 0
    assert db.run("stages", "update", "--now", NOW).code == 0
    sent, _ = _ledger(db, "A", "anna@example.com", [
        {"occurrence": "cron:2026-11-16T09:00:00Z", "subject_variant": 1, "status": "sent",
         "planned_at": "2026-11-16T09:00:00Z", "sent_at": "2026-11-16T09:01:00Z",
         "message_id": "<m1@shop.example>"},
        {"occurrence": "cron:2026-11-23T09:00:00Z", "subject_variant": 0, "status": "queued",
         "planned_at": "2026-11-23T09:00:00Z"}])
    bounced, = _ledger(db, "B", "bob@example.com", [
        {"occurrence": "cron:2026-11-16T09:00:00Z", "subject_variant": 0, "status": "sent",
         "planned_at": "2026-11-16T09:00:00Z", "sent_at": "2026-11-16T09:01:00Z",
         "message_id": "<m2@shop.example>"}])
    engine = db.engine()
    try:
        def claims(purpose: str) -> Claims:
            return Claims(purpose, "A", "newsletter", str(sent))

        events.record(engine, "open", claims("open"), datetime(2026, 11, 16, 10, tzinfo=UTC))
        events.record(engine, "click", claims("click"),
                      datetime(2026, 11, 16, 10, 5, tzinfo=UTC), url="https://shop.example/k")
        events.rate(engine, claims("rating"), 4, datetime(2026, 11, 16, 10, 10, tzinfo=UTC))
        assert events.comment(engine, claims("rating"), "Great beans",
                              datetime(2026, 11, 16, 10, 11, tzinfo=UTC))
        with engine.begin() as conn:
            anna = conn.execute(sql("SELECT id FROM customers WHERE store_id = 'A'")).scalar()
            conn.execute(insert(Recommendation).values(
                customer_id=anna, rank=1, sku="MUG", product="Mug", category="kitchen",
                computed_at=NOW_UTC))
            # the survey page's answers to the mail, the second press replacing overall
            for answers, at in (([Answer("overall", 4), Answer("comment", text="Slow")],
                                 datetime(2026, 11, 16, 11, tzinfo=UTC)),
                                ([Answer("overall", 2)], datetime(2026, 11, 16, 11, 5,
                                                                  tzinfo=UTC))):
                record_answers(conn, customer_id=anna, campaign="newsletter",
                               occurrence="cron:2026-11-16T09:00:00Z", survey="order",
                               version_hash="h", answers=answers, at=at)
    finally:
        engine.dispose()
    db.write("bounce.eml", dsn("bob@example.com", "5.1.1", "failed", "<m2@shop.example>")
             .decode())
    assert db.run("bounces", "bounce.eml", "--now", "2026-11-17T10:00").code == 0
    assert bounced
    return db


def test_the_card_of_a_customer_with_a_history(store: Workspace) -> None:
    result = store.run("customer", "ANNA@example.com", "--now", NOW, "--json")
    assert result.code == 0, result.stderr
    card = result.json()
    assert list(card)[:16] == ["id", "email", "profile", "consent", "suppressed",
                               "consent_history", "stats", "stage", "stage_history",
                               "predictions", "predictions_reason", "recommendations",
                               "segments", "mails", "upcoming", "events"]
    assert card["id"] == "A" and card["email"] == "Anna@example.com"
    assert card["profile"] == {
        "first_name": "Anna", "last_name": "Berg", "birth_date": "1990-12-05", "age": 35,
        "country": "DE", "city": "Berlin", "locale": None, "timezone": "Europe/Berlin",
        "tags": ["vip"], "attributes": None,
        "signed_up_at": "2025-01-09T23:00:00Z",  # 10 January 00:00 in Berlin
        "referral_code": None}
    imported = {"state": "subscribed", "since": "2026-01-01T09:00:00Z", "source": "import",
                "reason": None}
    out = {"state": "unsubscribed", "since": "2026-11-10T09:00:00Z", "source": "cli",
           "reason": "manual"}
    back = {"state": "subscribed", "since": "2026-11-12T09:00:00Z", "source": "phone call",
            "reason": "opt_in"}
    assert card["consent"] == back and card["suppressed"] is False
    assert card["consent_history"] == [imported, out, back]
    # 3 paid orders (the refund is none); EUR 150 spent over the 2 in EUR; the
    # categories as written (coffee 2, Coffee 1, books 1); gaps of 60 and 235 days.
    assert card["stats"] == {"orders": 3, "spent": 150, "average_order": 75,
                             "first_order_at": "2026-01-10T12:00:00Z",
                             "last_order_at": "2026-11-01T12:00:00Z",
                             "favourite_category": "coffee", "days_between_orders": 147.5}
    assert card["stage"] == "expansion"
    assert card["stage_history"] == [
        {"from": None, "to": "exploration", "detected_at": "2026-02-01T09:00:00Z"},
        {"from": "exploration", "to": "expansion", "detected_at": "2026-11-23T09:00:00Z"}]
    assert card["predictions"] is None
    assert "mailer predict" in card["predictions_reason"]
    assert card["recommendations"] == [{"sku": "MUG", "product": "Mug", "category": "kitchen"}]
    assert card["segments"] == ["buyers", "coffee", "everyone", "referrers", "spenders",
                                "vip-active"]
    assert card["mails"] == [
        {"campaign": "newsletter", "occurrence": "cron:2026-11-16T09:00:00Z",
         "subject": "News for you", "status": "sent", "planned_at": "2026-11-16T09:00:00Z",
         "sent_at": "2026-11-16T09:01:00Z", "opened": True, "clicked": True},
        {"campaign": "newsletter", "occurrence": "cron:2026-11-23T09:00:00Z",
         "subject": "Hello {{ customer.first_name }}", "status": "queued",
         "planned_at": "2026-11-23T09:00:00Z", "sent_at": None, "opened": False,
         "clicked": False}]
    # Today's newsletter is queued, so the next one is a week on; the promotion reads the
    # coffee segment; the birthday is 5 December at 09:00 Berlin; the win-back's segment
    # (lapsed) does not hold Anna; after_order waits for an order.
    assert card["upcoming"] == [
        {"campaign": "newsletter", "trigger": "schedule",
         "occurrence": "cron:2026-11-23T09:00:00Z", "at": "2026-11-23T09:00:00Z",
         "status": "queued"},
        {"campaign": "promo", "trigger": "promotion", "occurrence": "main",
         "at": "2026-11-27T07:00:00Z", "status": "due"},
        {"campaign": "newsletter", "trigger": "schedule",
         "occurrence": "cron:2026-11-30T09:00:00Z", "at": "2026-11-30T09:00:00Z",
         "status": "due"},
        {"campaign": "birthday", "trigger": "birthday", "occurrence": "birthday:2026",
         "at": "2026-12-05T08:00:00Z", "status": "due"}]
    kinds = [(e["kind"], e["at"], e["detail"]) for e in card["events"]]
    assert kinds[0][:2] == ("resubscribe", "2026-11-12T09:00:00Z")
    assert "was unsubscribed" in kinds[0][2]
    assert kinds[1:] == [("open", "2026-11-16T10:00:00Z", None),
                         ("click", "2026-11-16T10:05:00Z", "https://shop.example/k"),
                         ("rating", "2026-11-16T10:10:00Z", "4/5: Great beans"),
                         ("survey", "2026-11-16T11:05:00Z", "order: comment: Slow, overall 2")]
    # The same card by store id, and as text.
    by_id = store.run("customer", "A", "--now", NOW, "--json").json()
    assert by_id == card
    text = store.run("customer", "A", "--now", NOW)
    assert text.code == 0
    for shown in ("Anna Berg <Anna@example.com>", "expansion", "147.5", "Great beans",
                  "cron:2026-11-30T09:00:00Z", "vip-active"):
        assert shown in text.stdout


def test_a_bounced_customer_is_suppressed_and_expects_nothing_new(store: Workspace) -> None:
    card = store.run("customer", "B", "--now", NOW, "--json").json()
    assert card["consent"]["state"] == "bounced" and card["suppressed"] is True
    assert [entry["state"] for entry in card["consent_history"]] == ["subscribed", "bounced"]
    assert card["stats"] == {"orders": 0, "spent": 0, "average_order": None,
                             "first_order_at": None, "last_order_at": None,
                             "favourite_category": None, "days_between_orders": None}
    assert card["stage"] == "awareness" and card["segments"] == ["everyone"]
    assert card["upcoming"] == []  # in the newsletter's segment, but not mailable
    assert [(e["kind"], e["detail"]) for e in card["events"]] == [("bounce", "5.1.1")]


def test_an_unknown_customer_exits_1_with_near_emails(store: Workspace) -> None:
    result = store.run("customer", "ana@example.com", "--now", NOW)
    assert result.code == 1
    assert "no customer with email 'ana@example.com'" in result.stderr
    assert "did you mean anna@example.com?" in result.stderr
    failed = store.run("customer", "Z", "--json")
    assert failed.code == 1 and "no customer with id 'Z'" in failed.json()["error"]["message"]



@pytest.mark.parametrize("asked", ["\U0010ffff", "C\udcff", "x\udcff@a.example", "a\x01b",
                                   "a" * 321 + "@x.example", " "])
def test_what_no_customer_can_be_is_a_clear_error_not_a_traceback(store: Workspace,
                                                                   asked: str) -> None:
    """A shell passes undecodable bytes as surrogates; the last code point has nothing
    above it for the near-id range."""
    result = store.run("customer", asked, "--json")
    assert result.code == 1, result.stderr
    assert result.json()["error"]["message"].startswith("no customer with ")

def _history(ws: Workspace, customer: str) -> list[tuple[str, str | None, str | None]]:
    return [(row[0], row[1], row[2]) for row in ws.query(
        "SELECT h.state, h.source, h.reason FROM consent_history h "
        "JOIN customers c ON c.id = h.customer_id WHERE c.store_id = :s ORDER BY h.id",
        s=customer)]


def test_every_consent_write_adds_its_history_row(db: Workspace) -> None:
    db.write("customers.csv", "id,email,subscribed\nA,a@example.com,\nB,b@example.com,false\n"
                              "C,c@example.com,\n")
    assert db.run("import", "customers", "customers.csv", "--now", "2026-11-01").code == 0
    assert _history(db, "A") == [("subscribed", "import", None)]
    assert _history(db, "B") == [("not_subscribed", "import", None)]
    # Re-importing moves B up and leaves A as it was: one row for the move only.
    db.write("again.csv", "id,email,subscribed\nA,a@example.com,true\nB,b@example.com,true\n")
    assert db.run("import", "customers", "again.csv", "--now", "2026-11-02").code == 0
    assert _history(db, "A") == [("subscribed", "import", None)]
    assert _history(db, "B") == [("not_subscribed", "import", None),
                                 ("subscribed", "import", None)]
    # An unsubscribe by hand; a replay changes nothing and adds nothing.
    for _ in range(2):
        assert db.run("unsubscribe", "a@example.com", "--now", "2026-11-03").code == 0
    assert _history(db, "A")[1:] == [("unsubscribed", "cli", "manual")]
    # The one-click link of a mail (what `mailer serve` calls), twice.
    engine = db.engine()
    try:
        for _ in range(2):
            events.unsubscribe(engine, Claims("unsubscribe", "C", "news", "7"),
                               datetime(2026, 11, 4, tzinfo=UTC))
    finally:
        engine.dispose()
    assert _history(db, "C") == [("subscribed", "import", None),
                                 ("unsubscribed", "link", "one-click (news)")]
    assert db.run("resubscribe", "a@example.com", "--source", "form",
                  "--now", "2026-11-05").code == 0
    assert _history(db, "A")[2:] == [("subscribed", "form", "opt_in")]
    # The history row's time is the consent's own.
    since = db.query("SELECT h.since, c.consent_at FROM consent_history h JOIN customers c "
                     "ON c.id = h.customer_id WHERE c.store_id = 'A' ORDER BY h.id DESC")[0]
    assert since[0] == since[1]


def test_one_customers_memberships_equal_the_whole_segments(db: Workspace) -> None:
    from mailer.config.settings import parse_settings
    from mailer.config.workspace import load_segments
    from mailer.segments.runner import member_ids, memberships_of, scope_for

    shutil.copytree(ROOT / "segments", db.root / "segments")
    for name, text in SEGMENTS.items():
        db.write(f"segments/{name}.yaml", text)
    assert db.run("demo-data", "--customers", "80", "--seed", "5", "--now", NOW).code == 0
    settings, _ = parse_settings((db.root / "mailer.yaml").read_text(encoding="utf-8"))
    specs, problems = load_segments(db.root)
    assert not problems
    engine = db.engine()
    try:
        scope = scope_for(settings, NOW_UTC, engine)
        everyone = [row[0] for row in db.query("SELECT id FROM customers ORDER BY id")]
        members = {name: set(member_ids(engine, specs, name, scope, limit=len(everyone)))
                   for name in specs}
        assert any(members.values()) and not all(len(m) == len(everyone)
                                                 for m in members.values())
        for customer in everyone:
            expected = sorted(name for name, ids in members.items() if customer in ids)
            assert memberships_of(engine, specs, customer, scope) == expected, customer
    finally:
        engine.dispose()


def test_one_customers_segment_reads_orders_through_the_customer_index(ws: Workspace) -> None:
    """SQLite's plan: the restricted aggregations search ix_orders_customer_placed for the
    customer; none scans orders or order lines (bench/card.py prints both databases')."""
    from mailer.config.settings import parse_settings
    from mailer.config.workspace import load_segments
    from mailer.segments.compiler import CUSTOMERS, compile_segment, members_query
    from mailer.segments.runner import scope_for

    shutil.copytree(ROOT / "segments", ws.root / "segments")
    assert ws.run("db", "upgrade").code == 0
    settings, _ = parse_settings((ws.root / "mailer.yaml").read_text(encoding="utf-8"))
    specs, _ = load_segments(ws.root)
    engine = ws.engine()
    try:
        scope = scope_for(settings, NOW_UTC, engine)
        with engine.connect() as conn:
            for name, spec in specs.items():
                query = members_query(compile_segment(spec, specs, scope, among=[1]),
                                      CUSTOMERS.c.id)
                compiled = query.compile(dialect=engine.dialect,
                                         compile_kwargs={"literal_binds": True})
                plan = [row[-1] for row in conn.execute(sql(f"EXPLAIN QUERY PLAN {compiled}"))]
                assert not any(step.startswith(("SCAN orders", "SCAN order_lines",
                                                "SCAN customers")) for step in plan), (name, plan)
    finally:
        engine.dispose()


def test_the_next_birthday() -> None:
    never: Any = lambda occurrence: False  # noqa: E731
    now = datetime(2026, 11, 23, 9, tzinfo=UTC)
    nine = time(9)
    # Today, all day long in the customer's zone: due now even after send_at.
    assert next_birthday(date(1990, 11, 23), nine, "Europe/Berlin", now, never) == (
        "birthday:2026", datetime(2026, 11, 23, 8, tzinfo=UTC))
    # Planned already this year: next year's.
    assert next_birthday(date(1990, 11, 23), nine, "Europe/Berlin", now,
                         lambda occurrence: occurrence == "birthday:2026") == (
        "birthday:2027", datetime(2027, 11, 23, 8, tzinfo=UTC))
    # The 22nd ended in Berlin at 23:00Z: next year's.
    assert next_birthday(date(1990, 11, 22), nine, "Europe/Berlin", now, never)[0] == \
        "birthday:2027"
    # 29 February: on 28 February in 2027, on the 29th in 2028.
    assert next_birthday(date(2000, 2, 29), nine, "UTC", now, never) == (
        "birthday:2027", datetime(2027, 2, 28, 9, tzinfo=UTC))
    assert next_birthday(date(2000, 2, 29), nine, "UTC", datetime(2027, 3, 1, tzinfo=UTC),
                         never) == ("birthday:2028", datetime(2028, 2, 29, 9, tzinfo=UTC))


def test_the_next_holiday_by_the_planners_rules() -> None:
    def holiday(**extra: Any) -> Campaign:
        return Campaign.model_validate({"name": "H", "trigger": "holiday", "send_at": "09:00",
                                        "segment": "s", "template": "t.html",
                                        "subject": "Hi", **extra})

    never: Any = lambda occurrence: False  # noqa: E731
    now = datetime(2026, 11, 23, 9, tzinfo=UTC)
    public = holiday(country=True)
    # a German customer: Christmas Day at 09:00 Berlin (the package's first after today)
    assert next_holiday(public, country="de", workspace_country=None, tz_name="Europe/Berlin",
                        now=now, planned=never) == (
        "holiday:DE:2026-12-25", datetime(2026, 12, 25, 8, tzinfo=UTC))
    # a Japanese customer on Labor Thanksgiving Day: today, due already; planned: the next
    assert next_holiday(public, country="JP", workspace_country=None, tz_name="Asia/Tokyo",
                        now=now, planned=never) == (
        "holiday:JP:2026-11-23", datetime(2026, 11, 23, 0, tzinfo=UTC))
    assert next_holiday(public, country="JP", workspace_country=None, tz_name="Asia/Tokyo",
                        now=now, planned="holiday:JP:2026-11-23".__eq__)[0] == \
        "holiday:JP:2027-01-01"  # the package's next Japanese holiday
    # no country of their own: the workspace's calendar; neither: nothing is coming
    assert next_holiday(public, country="Narnia", workspace_country="US",
                        tz_name="America/New_York", now=now, planned=never)[0] == \
        "holiday:US:2026-11-26"
    assert next_holiday(public, country=None, workspace_country=None, tz_name="UTC",
                        now=now, planned=never) is None
    # a fixed date, two days ahead: due on 22 December under the customer's code (ZZ: none)
    eve = holiday(dates=["12-24"], days_before=2)
    assert next_holiday(eve, country=None, workspace_country=None, tz_name="UTC", now=now,
                        planned=never) == ("holiday:ZZ:2026-12-24",
                                           datetime(2026, 12, 22, 9, tzinfo=UTC))


def test_subjects_as_the_campaign_wrote_them() -> None:
    source = 'subject: ["A {{ x }}", "B"]\nreminder: {subject: "Last hours"}\n'
    assert [subject_of(source, n, "main") for n in (0, 1, 2)] == ["A {{ x }}", "B", "A {{ x }}"]
    assert subject_of(source, 0, "reminder") == "Last hours"
    assert subject_of('subject: "One"\n', 3, "once") == "One"
    assert subject_of(None, 0, "main") is None
    assert subject_of("subject: [", 0, "main") is None  # a broken file: no subject
    assert json.dumps(subject_of("a: 1\n", 0, "main")) == "null"


def test_a_broken_segment_leaves_the_card_without_it(store: Workspace) -> None:
    store.write("segments/broken.yaml", "description: Typo\norders: {at_lest: 1}\n")
    store.write("segments/refers.yaml", "description: Refers\nin_segment: broken\n")
    store.write("segments/buyers-too.yaml", "description: Also\nin_segment: buyers\n")
    result = store.run("customer", "A", "--now", NOW, "--json")
    assert result.code == 0, result.stderr
    assert result.json()["segments"] == ["buyers", "buyers-too", "coffee", "everyone",
                                         "referrers", "spenders", "vip-active"]
