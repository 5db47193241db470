"""Notices, mail that is not marketing (issue 19): queued once per key, delivered by the
senders (`run --once` here) through a real SMTP server, on both databases."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from mailer.config.settings import parse_settings
from mailer.core.clock import Clock
from mailer.delivery.notices import NoticeSender, queue_notice
from mailer.delivery.ratelimit import rate_limit
from mailer.delivery.transport import SmtpTransport, parse_smtp_url
from tests.conftest import SETTINGS, Workspace
from tests.smtp_server import Behaviour, FaultServer
from tests.test_delivery import KEY

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
SETTINGS_TEXT = SETTINGS.replace('sender: {from: "Pine & Co <hello@shop.example>"}',
                                 'sender: {from: "Pine & Co <hello@shop.example>", '
                                 'reply_to: care@shop.example}')


def _queue(db: Workspace, key: str, to: str, *, now: datetime = NOW) -> bool:
    settings = parse_settings(SETTINGS_TEXT)[0]
    engine = db.engine()
    try:
        with engine.begin() as conn:
            return queue_notice(conn, settings, kind="review", key=key, to=to,
                                subject=f"Review {key}", html=f"<p>{key}</p>", text=key,
                                now=now)
    finally:
        engine.dispose()


def _deliver(db: Workspace, server: FaultServer, now: datetime) -> None:
    db.env.update({"MAILER_SMTP_URL": server.url + "?timeout=10", "MAILER_SECRET_KEY": KEY})
    result = db.run("run", "--once", "--now", now.strftime("%Y-%m-%dT%H:%M:%SZ"), "--json")
    assert result.code == 0, result.stdout + result.stderr


def _notices(db: Workspace) -> dict[str, tuple[Any, ...]]:
    return {row[0]: tuple(row[1:]) for row in db.query(
        "SELECT key, status, attempts, reason, next_attempt_at, sent_at, last_reply "
        "FROM notices")}


def test_a_notice_is_queued_once_per_key_and_delivered_once(db: Workspace) -> None:
    db.write("mailer.yaml", SETTINGS_TEXT)
    assert _queue(db, "review:2026-10", "owner@shop.example")
    assert not _queue(db, "review:2026-10", "someone@shop.example")  # the key: once
    with FaultServer() as server:
        _deliver(db, server, NOW)
        _deliver(db, server, NOW + timedelta(hours=1))  # nothing left to send
    assert [c.recipient for c in server.caught] == ["owner@shop.example"]
    mail = server.caught[0].message()
    assert mail["Subject"] == "Review review:2026-10"
    assert mail["From"] == "Pine & Co <hello@shop.example>"
    assert mail["Reply-To"] == "care@shop.example"
    assert mail["List-Unsubscribe"] is None and mail["List-Unsubscribe-Post"] is None
    status, attempts, reason, _, sent_at, reply = _notices(db)["review:2026-10"]
    assert (status, attempts, reason, sent_at is not None) == ("sent", 1, None, True)
    assert reply.startswith("250")
    assert db.query("SELECT message_id FROM notices")[0][0] == mail["Message-ID"]


def test_a_temporary_failure_is_retried_after_the_back_off(db: Workspace) -> None:
    _queue(db, "review:2026-10", "temp451@shop.example")
    with FaultServer(Behaviour(fails=1)) as server:
        _deliver(db, server, NOW)
        status, attempts, _, retry_at, _, reply = _notices(db)["review:2026-10"]
        assert (status, attempts) == ("deferred", 1) and reply.startswith("451")
        retry_at = datetime.fromisoformat(str(retry_at)).replace(tzinfo=UTC)
        # 5 minutes ±10 %, on the logical clock
        assert NOW + timedelta(minutes=4) < retry_at < NOW + timedelta(minutes=6)
        _deliver(db, server, NOW + timedelta(minutes=2))  # not due yet
        assert server.caught == []
        _deliver(db, server, NOW + timedelta(minutes=10))
    assert [c.recipient for c in server.caught] == ["temp451@shop.example"]
    assert _notices(db)["review:2026-10"][:2] == ("sent", 2)


def test_a_permanent_failure_fails_the_notice_and_suppresses_nobody(db: Workspace) -> None:
    _queue(db, "review:2026-10", "bad550@shop.example")
    with FaultServer() as server:
        _deliver(db, server, NOW)
        _deliver(db, server, NOW + timedelta(hours=2))
    status, attempts, reason, retry_at, sent_at, reply = _notices(db)["review:2026-10"]
    assert (status, attempts, reason, retry_at, sent_at) == ("failed", 1, "bad mailbox",
                                                             None, None)
    assert reply.startswith("550 5.1.1")
    assert db.query("SELECT count(*) FROM suppressions")[0][0] == 0


def test_two_senders_at_once_never_send_one_notice_twice(db: Workspace) -> None:
    settings = parse_settings(SETTINGS_TEXT)[0]
    engine = db.engine()
    with FaultServer(Behaviour(delay=0.01)) as server:
        async def both() -> None:
            # recovery runs first and only once: on SQLite it treats every other owner
            # as dead (senders there take turns under the sending lock), so a recovery
            # in the middle would rightly turn the other's in-flight notices `unknown`
            senders = [NoticeSender(engine, SmtpTransport(parse_smtp_url(server.url), 4),
                                    settings, f"sender-{n}", Clock(NOW),
                                    rate_limit(engine, 1000), batch=4,
                                    recover_every=float("inf")) for n in range(2)]
            for sender in senders:
                assert await sender.deliver_due() == 0
            for n in range(40):
                _queue(db, f"alert:{n}", f"care{n}@shop.example")
            try:
                await asyncio.gather(*(sender.deliver_due() for sender in senders))
            finally:
                for sender in senders:
                    await sender.transport.close()
            # between them every notice went once (which sender claims which is the
            # scheduler's and the database's choice: on SQLite one may find all claimed)
            assert sum(sender.tally["sent"] for sender in senders) == 40

        try:
            asyncio.run(both())
        finally:
            engine.dispose()
    assert Counter(c.recipient for c in server.caught) == {
        f"care{n}@shop.example": 1 for n in range(40)}
    assert Counter(row[0] for row in _notices(db).values()) == {"sent": 40}


SURVEY = """\
title: How was your order?
questions:
  - {id: overall,   ask: "How happy are you with your order?", kind: rating, weight: 2}
  - {id: recommend, ask: "How likely are you to recommend us?", kind: nps}
  - {id: comment,   ask: "Anything we could do better?",        kind: text}
alert: {question: overall, at_most: 2}
"""


def _answer(db: Workspace, answers: list[Any], *, campaign: str = "feedback",
            occurrence: str = "order:O2") -> bool:
    """One press of the survey page's button, as mailer.app.surveys.answers.record makes
    it: the answers recorded, then the alert looked at, in one transaction."""
    from mailer.app.surveys.alerts import alert_on_answers
    from mailer.config.workspace import parse_survey_source
    from mailer.store.insight.responses import record_answers

    survey = parse_survey_source(SURVEY, "surveys/order.yaml")
    settings = parse_settings(SETTINGS_TEXT)[0]
    engine = db.engine()
    try:
        with engine.begin() as conn:
            customer = conn.exec_driver_sql(
                "SELECT id FROM customers WHERE store_id = 'C1'").scalar_one()
            record_answers(conn, customer_id=customer, campaign=campaign,
                           occurrence=occurrence, survey="order", version_hash="h",
                           answers=answers, at=NOW)
            return alert_on_answers(conn, settings, "order", survey, customer_id=customer,
                                    campaign=campaign, occurrence=occurrence,
                                    answers=answers, now=NOW)
    finally:
        engine.dispose()


def test_a_low_score_alerts_reply_to_once_per_mail_naming_customer_order_and_answers(
        db: Workspace) -> None:
    from mailer.store.insight.responses import Answer

    _ann(db)
    fine = [Answer("overall", 3), Answer("recommend", 9)]
    assert not _answer(db, fine)  # 3 is above at_most: no alert
    low = [Answer("overall", 2), Answer("recommend", 4),
           Answer("comment", text="The box <was> crushed")]
    assert _answer(db, low)  # the same mail answered again, lower: one alert
    assert not _answer(db, [Answer("overall", 1)])  # replaced again: still one
    with FaultServer() as server:
        _deliver(db, server, NOW)
    assert [c.recipient for c in server.caught] == ["care@shop.example"]  # sender.reply_to
    mail = server.caught[0].message()
    assert mail["Subject"] == "Low score from Ann Lee: overall 2 (order)"
    assert mail["List-Unsubscribe"] is None
    text = mail.get_body(("plain",)).get_content().replace("\r\n", "\n")
    # the order the mail asked about (order:O2), every answer of the mail by then
    assert "Customer: Ann Lee <ann@example.com> (id C1)" in text
    assert "Order: order O2 of 2026-11-10 10:00, 40.00 EUR" in text
    assert "How happy are you with your order?\n  2 of 5" in text
    assert "How likely are you to recommend us?\n  4 of 10" in text
    assert "The box <was> crushed" in text
    html = mail.get_body(("html",)).get_content()
    assert "The box &lt;was&gt; crushed" in html
    assert db.query("SELECT kind, key FROM notices") == [
        ("alert", f"alert:order:{_customer_id(db)}:feedback:order:O2")]


def _customer_id(db: Workspace) -> int:
    return int(db.query("SELECT id FROM customers WHERE store_id = 'C1'")[0][0])


def _ann(db: Workspace) -> None:
    db.write("mailer.yaml", SETTINGS_TEXT)
    db.write("customers.csv", "id,email,first_name,last_name\n"
                              "C1,ann@example.com,Ann,Lee\n"
                              "C2,bo@example.com,Bo,\n")
    db.write("orders.csv", "order_id,customer_id,placed_at,status,currency,total,sku\n"
                           "O1,C1,2026-11-01T10:00,paid,EUR,12.50,A\n"
                           "O2,C1,2026-11-10T10:00,paid,EUR,40.00,B\n"
                           "O3,C1,2026-11-12T10:00,refunded,EUR,99.00,C\n"
                           "O4,C1,2026-12-01T10:00,paid,EUR,7.00,D\n"
                           "O9,C2,2026-11-20T10:00,paid,EUR,5.00,E\n")
    assert db.run("import", "customers", "customers.csv", "--now", "2026-11-01").code == 0
    assert db.run("import", "orders", "orders.csv").code == 0


def _alert_text(db: Workspace) -> str:
    with FaultServer() as server:
        _deliver(db, server, NOW)
    assert [c.recipient for c in server.caught] == ["care@shop.example"]
    body = server.caught[0].message().get_body(("plain",))
    return str(body.get_content()).replace("\r\n", "\n")


def test_the_alert_names_the_order_the_mail_asked_about_not_a_later_one(
        db: Workspace) -> None:
    from mailer.store.insight.responses import Answer

    _ann(db)  # Ann ordered O2 after O1: the mail asked about O1
    assert _answer(db, [Answer("overall", 1)], occurrence="order:O1")
    text = _alert_text(db)
    assert "Order: order O1 of 2026-11-01 10:00, 12.50 EUR" in text
    assert "O2" not in text


def test_without_an_order_of_the_customers_the_alert_names_the_latest_paid_one(
        db: Workspace) -> None:
    from mailer.store.insight.responses import Answer

    _ann(db)
    # O9 is Bo's: never named in Ann's alert; her latest paid order by then is O2 (O3
    # refunded, O4 after NOW)
    assert _answer(db, [Answer("overall", 2)], occurrence="order:O9")
    text = _alert_text(db)
    assert "Latest order: order O2 of 2026-11-10 10:00, 40.00 EUR" in text
    assert "O9" not in text


def test_the_alert_lists_the_answers_of_earlier_presses(db: Workspace) -> None:
    from mailer.store.insight.responses import Answer

    _ann(db)
    # the comment first (no alert), then a low overall on its own: the alert has both
    assert not _answer(db, [Answer("comment", text="The lid was cracked")])
    assert _answer(db, [Answer("overall", 1)])
    text = _alert_text(db)
    assert "How happy are you with your order?\n  1 of 5" in text
    assert "Anything we could do better?\n  The lid was cracked" in text


def test_a_notice_that_cannot_be_built_fails_and_campaign_mail_still_goes(
        db: Workspace) -> None:
    from tests.test_delivery import TEMPLATE

    db.write("mailer.yaml", SETTINGS_TEXT + "policy: {frequency: []}\n")
    db.write("segments/everyone.yaml", "description: all\nall: [{orders: {at_least: 0}}]\n")
    db.write("templates/note.html", TEMPLATE)
    db.write("campaigns/note.yaml", "name: Note\ntrigger: once\nat: 2026-11-10T09:00\n"
             "grace: 1d\nsegment: everyone\ntemplate: note.html\nsubject: A note\n")
    db.write("customers.csv", "id,email,first_name\nA,a@example.com,Ann\n")
    assert db.run("import", "customers", "customers.csv", "--now", "2026-10-01").code == 0
    # a domain with no ASCII form (a label of 64 letters): the builder refuses the To
    bad = "care@" + "ü" * 64 + ".example"
    assert _queue(db, "alert:bad", bad, now=datetime(2026, 11, 10, 9, 0, tzinfo=UTC))
    assert _queue(db, "alert:good", "care@shop.example",
                  now=datetime(2026, 11, 10, 9, 0, tzinfo=UTC))
    with FaultServer() as server:
        db.env.update({"MAILER_SMTP_URL": server.url + "?timeout=10", "MAILER_SECRET_KEY": KEY})
        sent = db.run("send", "note", "--now", "2026-11-10T10:00", "--json")
        assert sent.code == 0, sent.stdout + sent.stderr
        assert sent.json()["sent"] == 1
    assert sorted(c.recipient for c in server.caught) == ["a@example.com",
                                                          "care@shop.example"]
    notices = _notices(db)
    status, attempts, reason, retry_at, sent_at, _ = notices["alert:bad"]
    assert (status, attempts, retry_at, sent_at) == ("failed", 0, None, None)
    assert reason.startswith("cannot build the message: ")
    assert "no ASCII form" in reason
    assert notices["alert:good"][0] == "sent"
    assert db.query("SELECT lease_owner FROM notices WHERE key = 'alert:bad'") == [(None,)]
