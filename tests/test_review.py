"""`mailer review` against a hand-computed oracle on both databases, and the daemon sending
the previous month's review once at its schedule (issue 19)."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from datetime import UTC, datetime
from typing import Any

from mailer.store.events import add
from mailer.store.insight.responses import Answer, record_answers
from tests.conftest import SETTINGS, Workspace
from tests.smtp_server import FaultServer
from tests.test_crash import _environment, _wait_for
from tests.test_daemon import _stop
from tests.test_delivery import KEY, TEMPLATE
from tests.test_notices import SURVEY

REVIEWED = SETTINGS + 'review: {send_to: owner@shop.example, schedule: "0 8 1 * *"}\n' \
                      "policy: {frequency: []}\n"
NOTE = ("name: Note\ntrigger: once\nat: 2026-11-10T09:00\ngrace: 1d\nsegment: everyone\n"
        "template: note.html\nsubject: A note\n")


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def shop(db: Workspace) -> None:
    """Four customers mailed once on 10 November, with what they did afterwards."""
    db.write("mailer.yaml", REVIEWED)
    db.write("segments/everyone.yaml", "description: all\nall: [{orders: {at_least: 0}}]\n")
    db.write("templates/note.html", TEMPLATE)
    db.write("campaigns/note.yaml", NOTE)
    db.write("surveys/order.yaml", SURVEY)
    db.write("customers.csv", "id,email,first_name\nA,a@example.com,Ann\nB,b@example.com,Bo\n"
                              "C,c@example.com,Cy\nD,d@example.com,Di\n")
    db.write("orders.csv", "order_id,customer_id,placed_at,status,currency,total,sku\n"
             "O1,A,2026-11-13T10:00Z,paid,EUR,30.00,X\n"   # 1 d after A's last click: A's
             "O2,A,2026-11-25T10:00Z,paid,EUR,99.00,X\n"   # 13 d after it: not attributed
             "O3,C,2026-11-18T08:00Z,paid,EUR,12.50,X\n"   # exactly 7 d after C's click
             "O4,C,2026-11-12T08:00Z,refunded,EUR,50.00,X\n"  # not a purchase
             "O5,B,2026-11-11T08:00Z,paid,EUR,20.00,X\n"   # B never clicked
             "O6,D,2026-12-02T08:00Z,paid,EUR,10.00,X\n")  # the next month
    assert db.run("import", "customers", "customers.csv", "--now", "2026-10-01").code == 0
    assert db.run("import", "orders", "orders.csv").code == 0
    with FaultServer() as server:
        db.env.update({"MAILER_SMTP_URL": server.url, "MAILER_SECRET_KEY": KEY})
        sent = db.run("send", "note", "--now", "2026-11-10T10:00", "--json")
        assert sent.json()["sent"] == 4, sent.stdout + sent.stderr
    ids = {store: (customer, delivery) for store, customer, delivery in db.query(
        "SELECT c.store_id, c.id, d.id FROM customers c JOIN deliveries d "
        "ON d.customer_id = c.id")}
    engine = db.engine()
    try:
        with engine.begin() as conn:
            def event(who: str, kind: str, at: str) -> None:
                customer, delivery = ids[who]
                add(conn, kind, customer_id=customer, campaign="note", delivery_id=delivery,
                    at=_at(at))

            event("A", "open", "2026-11-10T11:00")
            event("A", "open", "2026-11-10T11:30")  # one mail opened twice: once
            event("A", "click", "2026-11-10T12:00")
            event("A", "click", "2026-11-12T10:00")  # the last click before O1
            event("B", "open", "2026-11-10T13:00")
            event("B", "unsubscribe", "2026-11-10T13:01")
            event("C", "click", "2026-11-11T08:00")
            event("D", "bounce", "2026-11-20T08:00")
            event("D", "complaint", "2026-11-21T08:00")
            event("D", "bounce", "2026-10-20T08:00")  # October's

            def answer(who: str, at: str, *answers: Answer) -> None:
                record_answers(conn, customer_id=ids[who][0], campaign="note",
                               occurrence="once", survey="order", version_hash="h",
                               answers=list(answers), at=_at(at))

            answer("A", "2026-11-11T09:00", Answer("overall", 5), Answer("recommend", 10))
            answer("B", "2026-11-12T09:00", Answer("overall", 2), Answer("recommend", 6),
                   Answer("comment", text="Late"))
            answer("C", "2026-10-15T09:00", Answer("overall", 4), Answer("recommend", 9),
                   Answer("comment", text="October's"))
    finally:
        engine.dispose()


def test_every_figure_of_the_review_against_a_hand_computed_oracle(db: Workspace) -> None:
    shop(db)
    from mailer.app.surveys.alerts import alert_on_answers
    from mailer.config.settings import parse_settings
    from mailer.config.workspace import parse_survey_source

    engine = db.engine()
    try:
        with engine.begin() as conn:
            bo = int(db.query("SELECT id FROM customers WHERE store_id = 'B'")[0][0])
            assert alert_on_answers(conn, parse_settings(REVIEWED)[0], "order",
                                    parse_survey_source(SURVEY, "surveys/order.yaml"),
                                    customer_id=bo, campaign="note", occurrence="once",
                                    answers=[Answer("overall", 2)],
                                    now=_at("2026-11-12T09:00"))
    finally:
        engine.dispose()
    result = db.run("review", "--month", "2026-11", "--now", "2026-12-05", "--json",
                    "--out", "review.html")
    assert result.code == 0, result.stdout + result.stderr
    review = result.json()
    stages = db.run("stages", "show", "--month", "2026-11", "--now", "2026-12-05",
                    "--json").json()
    assert review == {
        "month": "2026-11",
        "campaigns": [{"campaign": "note", "sent": 4, "open_rate": 50.0, "click_rate": 50.0,
                       "unsubscribe_rate": 25.0}],
        "attributed": {"orders": 2, "revenue": 42.5},  # O1 30.00 + O3 12.50
        # November: mean overall (5 + 2) / 2 = 3.5 -> 100 x 2.5 / 4 = 62.5; NPS one 10 and
        # one 6: 50 - 50 = 0. October: overall 4 -> 75, one 9 -> 100.
        "surveys": [{"survey": "order", "responses": 2, "csi": 62.5, "nps": 0.0,
                     "csi_previous": 75.0, "nps_previous": 100.0}],
        "stages": {"counts": stages["counts"], "moves": stages["moves"]},
        "comments": [{"at": "2026-11-12T09:00:00Z", "survey": "order", "customer": "B",
                      "question": "comment", "text": "Late"}],
        "alerts": 1,
        "bounces": 1,
        "complaints": 1,
    }
    assert sum(stages["counts"].values()) == 4
    page = (db.root / "review.html").read_text(encoding="utf-8")
    assert "<svg" in page and "Pine &amp; Co: the review of 2026-11" in page
    # the default month is the one before --now
    again = db.run("review", "--now", "2026-12-05", "--json").json()
    assert again == review


def test_send_to_queues_the_review_once_per_month_and_address(db: Workspace) -> None:
    shop(db)
    first = db.run("review", "--month", "2026-11", "--now", "2026-12-05",
                   "--send-to", "Owner@Shop.example")
    assert first.code == 0, first.stderr
    assert "queued the review of 2026-11 for Owner@shop.example" in first.stdout
    second = db.run("review", "--month", "2026-11", "--now", "2026-12-05",
                    "--send-to", "Owner@shop.example")
    assert "already queued" in second.stdout
    assert db.query("SELECT kind, key, status FROM notices") == [
        ("review", "review:2026-11:to:Owner@shop.example", "queued")]
    assert db.run("review", "--send-to", "not an address").code == 1


def test_send_to_a_254_character_address_keys_the_notice_by_a_digest(db: Workspace) -> None:
    shop(db)
    to = "o" * 64 + "@" + ".".join(["d" * 63, "d" * 63, "d" * 53]) + ".example"
    assert len(to) == 254
    for _ in range(2):
        result = db.run("review", "--month", "2026-11", "--now", "2026-12-05",
                        "--send-to", to)
        assert result.code == 0, result.stdout + result.stderr
    assert "already queued" in result.stdout
    digest = hashlib.sha256(to.encode()).hexdigest()
    assert db.query("SELECT key, \"to\" FROM notices") == [
        (f"review:2026-11:to:{digest}", to)]


def _daemon(db: Workspace, server: FaultServer, now: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "mailer.cli", "--workspace", str(db.root),
                             "run", "--interval", "1", "--now", now],
                            env=_environment(db, server), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _subjects(server: FaultServer) -> list[Any]:
    return [(c.recipient, c.message()["Subject"]) for c in server.caught
            if c.recipient == "owner@shop.example"]


def test_the_daemon_sends_the_previous_months_review_once_at_its_schedule(
        db: Workspace) -> None:
    shop(db)
    with FaultServer() as server:
        # 3 s before 08:00 on 1 December (Berlin): November's latest fire time (1 November)
        # is a month old, so nothing is caught up; at 08:00 November's review goes out.
        daemon = _daemon(db, server, "2026-12-01T07:59:57")
        try:
            assert _wait_for(lambda: _subjects(server), 60)
        finally:
            _, log = _stop(daemon)
        assert _subjects(server) == [("owner@shop.example",
                                      "Pine & Co: the review of 2026-11")]
        assert "review of 2026-11 queued for owner@shop.example" in log
        # restarted after the fire time: the key says it went out already (the catch-up
        # runs before the first sweep, whose time the daemon writes down)
        daemon = _daemon(db, server, "2026-12-01T09:00")
        try:
            assert _wait_for(lambda: db.query(
                "SELECT count(*) FROM daemon_state "
                "WHERE last_sweep_at >= '2026-12-01 08:00'")[0][0], 60)
        finally:
            _, log = _stop(daemon)
        assert "review of 2026-11 already queued, not again, for owner@shop.example" in log
    assert len(_subjects(server)) == 1
    mail = next(c.message() for c in server.caught if c.recipient == "owner@shop.example")
    assert mail["List-Unsubscribe"] is None and "<svg" in mail.get_body(("html",)).get_content()
    assert db.query("SELECT key, status, attempts FROM notices") == [
        ("review:2026-11", "sent", 1)]


def test_the_hourly_look_catches_up_a_review_its_fire_time_failed_to_queue(
        db: Workspace) -> None:
    import asyncio

    from mailer.app.review.send import due_review
    from mailer.config.settings import parse_settings
    from mailer.core.clock import Clock
    from mailer.daemon.scheduler import Daemon, load

    settings = parse_settings(REVIEWED)[0]
    # 08:00 Berlin on 1 December is 07:00Z: November's is owed for 7 days, not after
    assert due_review("0 8 1 * *", _at("2026-12-01T06:59"), settings) is None  # Nov 1st's
    assert f"{due_review('0 8 1 * *', _at('2026-12-01T07:00'), settings):%Y-%m}" == "2026-11"
    assert f"{due_review('0 8 1 * *', _at('2026-12-08T07:00'), settings):%Y-%m}" == "2026-11"
    assert due_review("0 8 1 * *", _at("2026-12-08T07:01"), settings) is None
    shop(db)
    engine = db.engine()
    try:
        def hourly(now: str) -> None:
            # the stages job of a daemon whose fire time (1 December, 08:00) passed
            # without a review: the database was away then, say
            daemon = Daemon(engine, db.root, Clock(_at(now)), load(db.root), owner="t",
                            delivery=None)

            async def look() -> None:
                daemon._sweep_wanted = asyncio.Event()  # run() makes it
                await daemon._update_stages()

            asyncio.run(look())

        hourly("2026-12-09T09:00")  # 8 days on: past the catch-up
        assert db.query("SELECT key FROM notices") == []
        hourly("2026-12-03T09:00")
        hourly("2026-12-03T10:00")  # once: the key
    finally:
        engine.dispose()
    assert db.query("SELECT kind, key, \"to\", status FROM notices") == [
        ("review", "review:2026-11", "owner@shop.example", "queued")]
