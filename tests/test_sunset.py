"""policy.sunset (issue 21): long-silent readers get no marketing mail (reason `sunset`) but
the `trigger: sunset` campaign's re-permission mail, whose "keep me subscribed" POST is a
sign of life; on both databases, through the real CLI and a real `mailer serve`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import insert, select
from sqlalchemy import text as sql

from mailer.config.settings import parse_settings
from mailer.config.workspace import load_valid_workspace
from mailer.core.clock import parse_local, zone
from mailer.mail.links import Claims, sign, signed_url
from mailer.planning.planner import PlanResult, plan_due
from mailer.segments.runner import scope_for
from mailer.store.models import CampaignVersion, Customer, Delivery, Event
from tests.conftest import SETTINGS, Workspace
from tests.test_delivery import KEY
from tests.test_serve import serving

SUNSET_SETTINGS = SETTINGS + "policy: {frequency: [], sunset: {after: 180d, min_mails: 5}}\n"
NOW = "2026-07-01T12:00"  # Berlin, CEST: 10:00Z
NOW_UTC = datetime(2026, 7, 1, 10, tzinfo=UTC)
EDGE = NOW_UTC - timedelta(days=180)  # 2026-01-02T10:00:00Z
BASE = "https://mail.shop.example"
TEMPLATE = ("<p>{{ store.address }} <a href='{{ links.unsubscribe }}'>unsubscribe</a> "
            "<a href='{{ links.keep_subscribed }}'>Keep me subscribed</a></p>\n")
# Long ago, every customer but EDGE, OVER and NEW signed up (the sign-up is a sign of life).
CUSTOMERS = """\
id,email,first_name,signed_up_at,subscribed
EDGE,edge@example.com,Edda,2026-01-02T10:00:00Z,true
OVER,over@example.com,Otto,2026-01-02T09:59:59Z,true
FOUR,four@example.com,Fay,2025-06-01T00:00:00Z,true
FIVE,five@example.com,Finn,2025-06-01T00:00:00Z,true
CLICK,click@example.com,Cleo,2025-06-01T00:00:00Z,true
MACHINE,machine@example.com,Max,2025-06-01T00:00:00Z,true
BUYER,buyer@example.com,Bea,2025-06-01T00:00:00Z,true
REFUND,refund@example.com,Rolf,2025-06-01T00:00:00Z,true
NEW,new@example.com,Nina,2026-06-01T00:00:00Z,true
OPTIN,optin@example.com,Olga,2025-06-01T00:00:00Z,false
"""
ONCE = ("name: Note\ntrigger: once\nat: 2026-07-01T09:00\ngrace: 30d\nsegment: everyone\n"
        "template: mail.html\nsubject: A note\n")
SUNSET = ("name: Still with us?\ntrigger: sunset\nsegment: everyone\ntemplate: mail.html\n"
          "subject: Do you still want to hear from us?\n")


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def ids(shop: Workspace) -> dict[str, int]:
    return {store_id: customer_id for customer_id, store_id
            in shop.query("SELECT id, store_id FROM customers")}


def sent_mails(shop: Workspace, store_id: str, times: list[datetime],
               status: str = "sent") -> None:
    """Past marketing mails of another campaign to STORE_ID, as the ledger holds them."""
    engine = shop.engine()
    try:
        with engine.begin() as conn:
            version = conn.execute(select(CampaignVersion.id).where(
                CampaignVersion.campaign == "history")).scalar()
            if version is None:
                version = conn.execute(insert(CampaignVersion).values(
                    campaign="history", content_hash="history", definition={},
                    created_at=times[0]).returning(CampaignVersion.id)).scalar_one()
            customer = conn.execute(select(Customer.id, Customer.email).where(
                Customer.store_id == store_id)).one()
            conn.execute(insert(Delivery), [
                {"campaign": "history", "campaign_version_id": version,
                 "occurrence": f"cron:{store_id}:{at.isoformat()}", "customer_id": customer.id,
                 "email": customer.email, "subject_variant": 0, "status": status,
                 "attempts": 1, "planned_at": at, "send_after": at,
                 "expires_at": at + timedelta(hours=6),
                 "sent_at": at if status == "sent" else None} for at in times])
    finally:
        engine.dispose()


def event(shop: Workspace, store_id: str, kind: str, at: datetime) -> None:
    engine = shop.engine()
    try:
        with engine.begin() as conn:
            conn.execute(insert(Event).values(kind=kind, customer_id=ids(shop)[store_id],
                                              campaign="history", at=at))
    finally:
        engine.dispose()


FIVE_IN_JUNE = [datetime(2026, 6, day, 9, tzinfo=UTC) for day in range(2, 7)]


@pytest.fixture
def shop(db: Workspace) -> Workspace:
    db.write("mailer.yaml", SUNSET_SETTINGS)
    db.write("segments/everyone.yaml", "description: all\nall: [{orders: {at_least: 0}}]\n")
    db.write("templates/mail.html", TEMPLATE)
    db.write("campaigns/note.yaml", ONCE)
    db.write("customers.csv", CUSTOMERS)
    assert db.run("import", "customers", "customers.csv", "--now", "2025-06-01").code == 0
    # OPTIN opts in (the store's file says so) a month ago: a new subscriber
    db.write("optin.csv", "id,email,subscribed\nOPTIN,optin@example.com,true\n")
    assert db.run("import", "customers", "optin.csv", "--now", "2026-06-01").code == 0
    db.write("orders.csv", "order_id,customer_id,placed_at,status,currency,total\n"
                           "O1,BUYER,2026-06-01T12:00:00Z,paid,EUR,10.00\n"
                           "O2,REFUND,2026-06-01T12:00:00Z,refunded,EUR,10.00\n")
    assert db.run("import", "orders", "orders.csv", "--now", "2026-06-02").code == 0
    for store_id in ("EDGE", "OVER", "FIVE", "CLICK", "MACHINE", "BUYER", "REFUND", "NEW",
                     "OPTIN"):
        sent_mails(db, store_id, FIVE_IN_JUNE)
    sent_mails(db, "FOUR", FIVE_IN_JUNE[:4])
    event(db, "CLICK", "click", datetime(2026, 6, 10, tzinfo=UTC))
    event(db, "MACHINE", "machine_click", datetime(2026, 6, 10, tzinfo=UTC))
    event(db, "MACHINE", "open", datetime(2026, 6, 11, tzinfo=UTC))
    event(db, "MACHINE", "machine_open", datetime(2026, 6, 12, tzinfo=UTC))
    return db


def reasons(shop: Workspace, slug: str = "note", now: str = NOW) -> dict[str, str | None]:
    """Each customer's fate in `plan SLUG --json`: None planned, else the reason."""
    result = shop.run("plan", slug, "--now", now, "--json")
    assert result.code == 0, result.stdout + result.stderr
    document = result.json()
    found: dict[str, str | None] = {r["id"]: None for r in document["recipients"]}
    found.update({e["id"]: e["reason"] for e in document["excluded"]})
    return found


SILENT = {"OVER", "FIVE", "MACHINE", "REFUND"}


def test_who_is_sunset_at_the_edges(shop: Workspace) -> None:
    fates = reasons(shop)
    assert {store_id for store_id, reason in fates.items() if reason == "sunset"} == SILENT
    # EDGE's sign-up is exactly now − 180d: not before it; FOUR had 4 mails, not 5; CLICK
    # clicked, BUYER paid, NEW signed up and OPTIN opted in a month ago
    assert {store_id for store_id, reason in fates.items() if reason is None} == {
        "EDGE", "FOUR", "CLICK", "BUYER", "NEW", "OPTIN"}
    # one second later EDGE's sign-up is before now − 180d too
    assert reasons(shop, now="2026-07-01T12:00:01")["EDGE"] == "sunset"


def test_an_unknown_mail_counts_and_a_failed_one_does_not(shop: Workspace) -> None:
    sent_mails(shop, "FOUR", [datetime(2026, 6, 20, tzinfo=UTC)], status="failed")
    assert reasons(shop)["FOUR"] is None
    sent_mails(shop, "FOUR", [datetime(2026, 6, 21, tzinfo=UTC)], status="unknown")
    assert reasons(shop)["FOUR"] == "sunset"


def test_consent_and_suppression_come_before_sunset(shop: Workspace) -> None:
    assert shop.run("unsubscribe", "over@example.com").code == 0
    assert reasons(shop)["OVER"] == "unsubscribed"


def test_a_resubscribe_is_a_sign_of_life(shop: Workspace) -> None:
    assert shop.run("unsubscribe", "five@example.com").code == 0
    resubscribed = shop.run("resubscribe", "five@example.com", "--source", "phone call",
                            "--now", "2026-06-30T12:00")
    assert resubscribed.code == 0, resubscribed.stdout + resubscribed.stderr
    assert reasons(shop)["FIVE"] is None


def test_without_policy_sunset_nobody_is_sunset(shop: Workspace) -> None:
    shop.write("mailer.yaml", SETTINGS + "policy: {frequency: []}\n")
    assert "sunset" not in reasons(shop).values()


def run_plan(shop: Workspace, slug: str, now: str) -> PlanResult:
    settings, _ = parse_settings(SUNSET_SETTINGS)
    specs, campaigns = load_valid_workspace(shop.root)
    engine = shop.engine()
    try:
        scope = scope_for(settings, parse_local(now, zone(settings.timezone)), engine)
        return plan_due(engine, specs, {slug: campaigns[slug]}, scope=scope,
                        settings=settings, versions={slug: {"campaign": slug}})[0]
    finally:
        engine.dispose()


def test_the_sunset_campaign_mails_each_silence_once(shop: Workspace) -> None:
    shop.write("campaigns/sunset.yaml", SUNSET)
    first = run_plan(shop, "sunset", NOW)
    assert sorted(p.id for p in first.planned) == sorted(SILENT)
    assert {(p.occurrence, p.expires) for p in first.planned} == {
        ("sunset:2026-07-01", NOW_UTC + timedelta(days=7))}
    assert first.excluded == []  # the others are no candidates at all
    # later that day EDGE's sign-up passes the edge: EDGE first meets the rule then; the
    # others, mailed since their last sign of life, are no candidates (not already_sent)
    evening = run_plan(shop, "sunset", "2026-07-01T18:00")
    assert ([(p.id, p.occurrence) for p in evening.planned], evening.excluded) == (
        [("EDGE", "sunset:2026-07-01")], [])
    for later in ("2026-07-02T12:00", "2026-07-20T12:00"):
        again = run_plan(shop, "sunset", later)
        assert (again.planned, again.excluded) == ([], []), later
    # the sunset mail is the one exception: other campaigns still say sunset
    assert reasons(shop)["OVER"] == "sunset"
    # OVER clicks; half a year and five mails later OVER is silent again: a new sunset mail
    event(shop, "OVER", "click", datetime(2026, 7, 3, tzinfo=UTC))
    assert reasons(shop, now="2026-07-04T12:00")["OVER"] is None
    later = [datetime(2026, 8, day, tzinfo=UTC) for day in range(1, 6)]
    sent_mails(shop, "OVER", later)
    again = run_plan(shop, "sunset", "2027-01-05T12:00")
    # BUYER, NEW and OPTIN's June signs of life are over 180 days old by then too (their
    # five June mails came after them); CLICK clicked after its mails: none since
    assert [(p.id, p.occurrence) for p in again.planned] == [
        (store_id, "sunset:2027-01-05") for store_id in ("BUYER", "NEW", "OPTIN", "OVER")]


def test_a_sunset_mail_obeys_consent_like_any_other(shop: Workspace) -> None:
    shop.write("campaigns/sunset.yaml", SUNSET)
    assert shop.run("unsubscribe", "five@example.com").code == 0
    assert reasons(shop, "sunset")["FIVE"] == "unsubscribed"
    assert reasons(shop, "sunset")["OVER"] is None


def test_preview_says_sunset(shop: Workspace) -> None:
    result = shop.run("preview", "note", "--customer", "OVER", "--now", NOW, "--json")
    assert result.code == 0, result.stdout + result.stderr
    assert [(s["id"], s["mailable"], s["reason"]) for s in result.json()["samples"]] == [
        ("OVER", False, "sunset")]


def test_validate_refuses_a_sunset_campaign_without_the_keep_link(shop: Workspace) -> None:
    shop.write("templates/plain.html", "<p>{{ store.address }} "
                                       "<a href='{{ links.unsubscribe }}'>unsubscribe</a></p>\n")
    shop.write("campaigns/sunset.yaml", SUNSET.replace("mail.html", "plain.html"))
    result = shop.run("validate")
    assert result.code == 1
    assert "lacks the \"keep me subscribed\" link ({{ links.keep_subscribed }})" in \
        result.stdout + result.stderr
    shop.write("campaigns/sunset.yaml", SUNSET)
    assert shop.run("validate").code == 0


# --- the "keep me subscribed" page, through a real `mailer serve` ---------------------------


def keep_events(shop: Workspace) -> list[tuple[str, str]]:
    return [tuple(row) for row in shop.query(
        "SELECT c.store_id, e.campaign FROM events e JOIN customers c ON c.id = e.customer_id "
        "WHERE e.kind = 'keep_subscribed' ORDER BY e.id")]


def test_keep_me_subscribed_get_changes_nothing_and_post_is_a_sign_of_life(
        shop: Workspace) -> None:
    shop.write("campaigns/sunset.yaml", SUNSET)
    run_plan(shop, "sunset", NOW)
    row = shop.query("SELECT d.id FROM deliveries d JOIN customers c ON c.id = d.customer_id "
                     "WHERE d.campaign = 'sunset' AND c.store_id = 'OVER'")[0][0]
    url = signed_url(BASE, "keep_subscribed", "OVER", "sunset", str(row), KEY)
    assert url.startswith(f"{BASE}/k/")
    with serving(shop, "2026-07-02T12:00") as service:
        status, _, body = service.request("GET", url)
        assert status == 200
        assert b'<button type="submit" id="keep-subscribed">Keep me subscribed</button>' in body
        assert b"ov\xe2\x80\xa2\xe2\x80\xa2@example.com" in body  # the address, masked
        assert keep_events(shop) == []
        assert reasons(shop, now="2026-07-02T13:00")["OVER"] == "sunset"
        status, _, body = service.request("POST", url, body="")
        assert status == 200 and b"Thank you" in body
    assert keep_events(shop) == [("OVER", "sunset")]
    assert reasons(shop, now="2026-07-02T13:00")["OVER"] is None
    assert "OVER" not in reasons(shop, "sunset", now="2026-07-03T12:00")


def test_a_forged_or_borrowed_keep_token_is_refused_and_writes_nothing(
        shop: Workspace) -> None:
    forged = signed_url(BASE, "keep_subscribed", "OVER", "sunset", "1", "not-the-key")
    borrowed = f"{BASE}/k/" + sign(Claims("unsubscribe", "OVER", "sunset", "1"), KEY)
    nobody = signed_url(BASE, "keep_subscribed", "NOBODY", "sunset", "1", KEY)
    with serving(shop, "2026-07-02T12:00") as service:
        for url in (forged, borrowed, f"{BASE}/k/garbage"):
            for method in ("GET", "POST"):
                status, _, body = service.request(method, url, body="")
                assert status == 400 and b"does not work" in body, (url, method)
        assert service.request("POST", nobody, body="")[0] == 404
    assert keep_events(shop) == []
    assert reasons(shop)["OVER"] == "sunset"


def test_keep_me_subscribed_records_nothing_for_a_customer_not_subscribed(
        shop: Workspace) -> None:
    """Mailed while subscribed, then imported as not subscribed: the button is no opt-in."""
    url = signed_url(BASE, "keep_subscribed", "OVER", "sunset", "1", KEY)
    with shop.engine().begin() as conn:
        conn.execute(sql("UPDATE customers SET consent = 'not_subscribed' "
                         "WHERE store_id = 'OVER'"))
    with serving(shop, "2026-07-02T12:00") as service:
        status, _, body = service.request("POST", url, body="")
        assert status == 200 and b"Thank you" not in body
        assert b"no more marketing mail" in body
    assert keep_events(shop) == []


def test_the_demo_store_has_one_long_silent_reader(db: Workspace) -> None:
    db.write("mailer.yaml", SUNSET_SETTINGS)
    assert db.run("demo-data", "--customers", "150", "--seed", "2",
                  "--now", "2026-11-23T10:00").code == 0
    status = db.run("status", "--json").json()
    assert (status["customers"], status["deliveries"]["sent"]) == (150, 8)
    db.write("segments/everyone.yaml", "description: all\nall: [{orders: {at_least: 0}}]\n")
    db.write("templates/mail.html", TEMPLATE)
    db.write("campaigns/sunset.yaml", SUNSET)
    db.write("campaigns/note.yaml", ONCE.replace("2026-07-01T09:00", "2026-11-23T09:00"))
    fates = reasons(db, "sunset", now="2026-11-23T11:00")
    assert fates == {"C000001": None}
    note = reasons(db, "note", now="2026-11-23T11:00")
    assert [store_id for store_id, reason in note.items() if reason == "sunset"] == ["C000001"]
