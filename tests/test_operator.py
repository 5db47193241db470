"""Operator actions (issue 23, item 4): pause and resume a campaign, retry its failed rows,
suppress and resubscribe a customer, a test send; each with its audit row. Through the
real CLI and a real SMTP server, on both databases."""

from __future__ import annotations

import asyncio
import getpass
from datetime import UTC, datetime
from typing import Any

from mailer.app import operator
from tests.conftest import SETTINGS, Workspace
from tests.smtp_server import Behaviour, FaultServer
from tests.test_delivery import KEY, NOW, send, shop, states

AT = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)  # NOW (10:00 in Berlin) in UTC


def audit(db: Workspace) -> list[tuple[Any, ...]]:
    return [tuple(row) for row in db.query(
        "SELECT actor, via, action, target, reason FROM operator_audit ORDER BY id")]


def ledger(db: Workspace) -> dict[str, tuple[Any, ...]]:
    """Email -> (status, expires_at, lease_owner, attempts)."""
    return {row[0]: tuple(row[1:]) for row in db.query(
        "SELECT email, status, expires_at, lease_owner, attempts FROM deliveries")}


# --- pause and resume --------------------------------------------------------------------


def test_a_paused_campaign_plans_and_sends_nothing_and_resumed_sends_with_its_expiry(
        db: Workspace) -> None:
    addresses = ["anna@example.com", "bob@example.org", "chloe@example.net"]
    shop(db, addresses)
    db.env["MAILER_SECRET_KEY"] = KEY
    assert db.run("run", "--once", "--no-deliver", "--now", NOW).code == 0  # rows queued
    before = ledger(db)
    assert {row[0] for row in before.values()} == {"queued"}

    paused = db.run("pause", "note", "--reason", "wrong price in the subject", "--yes",
                    "--now", NOW, "--json")
    assert paused.code == 0, paused.stderr
    document = paused.json()
    assert document["campaign"] == "note" and document["paused"] is True
    assert (document["already"], document["paused_by"], document["reason"]) == (
        False, getpass.getuser(), "wrong price in the subject")
    again = db.run("pause", "note", "--yes", "--now", NOW)
    assert again.code == 0 and "note was already paused, since 2026-11-23T09:00:00Z" \
        in again.stdout

    plan = db.run("plan", "note", "--now", NOW, "--json").json()
    assert plan["recipients"] == []
    assert {e["reason"] for e in plan["excluded"]} == {"paused_campaign"}
    overview = {c["campaign"]: c for c in db.run("campaigns", "--now", NOW, "--json")
                .json()["campaigns"]}
    assert overview["note"]["state"] == "paused"
    assert overview["note"]["paused"] == {"at": "2026-11-23T09:00:00Z",
                                          "by": getpass.getuser(),
                                          "reason": "wrong price in the subject"}
    shown = db.run("campaigns", "--now", NOW)
    assert "paused" in shown.stdout
    assert db.run("status", "--json").json()["paused"] == {"note": overview["note"]["paused"]}
    assert (f"paused: note since 2026-11-23 09:00 UTC by {getpass.getuser()}: wrong price "
            "in the subject") in db.run("status").stdout

    with FaultServer() as server:
        held = send(db, server, "note")
        assert server.caught == []
        assert (held["planned"], held["sent"], held["waiting"]) == (0, 0, 3)
        assert held["excluded"] == {"paused_campaign": 3}
        assert ledger(db) == before  # queued, unleased, the same expiry

        resumed = db.run("resume", "note", "--yes", "--now", NOW, "--json")
        assert resumed.code == 0, resumed.stderr
        assert resumed.json() == {"campaign": "note", "paused": False, "already": False,
                                  "paused_at": "2026-11-23T09:00:00Z",
                                  "paused_by": getpass.getuser(), "waiting": 3}
        delivered = send(db, server, "note")
        assert delivered["sent"] == 3
        assert sorted(c.recipient for c in server.caught) == sorted(addresses)
    after = ledger(db)
    assert {email: row[1] for email, row in after.items()} == \
        {email: row[1] for email, row in before.items()}  # expiry kept
    assert {row[0] for row in after.values()} == {"sent"}
    assert audit(db) == [
        (getpass.getuser(), "cli", "pause_campaign", "note", "wrong price in the subject"),
        (getpass.getuser(), "cli", "resume_campaign", "note", None)]
    [(at,)] = db.query("SELECT at FROM operator_audit WHERE action = 'pause_campaign'")
    assert str(at).startswith("2026-11-23 09:00:00")
    not_paused = db.run("resume", "note", "--yes", "--now", NOW)
    assert not_paused.code == 0 and "note was not paused" in not_paused.stdout
    assert len(audit(db)) == 2  # a resume that changed nothing writes no row


def test_a_pause_during_a_send_stops_further_leases_and_starts(db: Workspace) -> None:
    from mailer.core.clock import Clock
    from mailer.delivery.ratelimit import rate_limit
    from mailer.delivery.transport import SmtpTransport, parse_smtp_url
    from mailer.delivery.worker import Renderer, SendingLoop
    from mailer.store.ledger import new_owner

    addresses = [f"p{n:02d}@example.com" for n in range(8)]
    shop(db, addresses, settings=SETTINGS + "delivery: {concurrency: 1}\n")
    db.env["MAILER_SECRET_KEY"] = KEY
    assert db.run("run", "--once", "--no-deliver", "--now", NOW).code == 0
    before = ledger(db)
    engine = db.engine()
    paused: list[str] = []

    def on_outcome(campaign: str, status: str) -> None:  # the operator acts mid-send
        if not paused:
            paused.append(status)
            operator.pause_campaign(engine, actor="maria", campaign=campaign, root=db.root,
                                    now=AT)

    try:
        with FaultServer() as server:
            transport = SmtpTransport(parse_smtp_url(server.url + "?timeout=10"), 1)
            delivery = SendingLoop(engine, transport, Renderer(engine, KEY), new_owner(),
                                   Clock(AT), concurrency=1, limit=rate_limit(engine, 100),
                                   on_outcome=on_outcome)

            async def deliver() -> Any:
                try:
                    return await delivery.run(asyncio.Event(), until_idle=True)
                finally:
                    await transport.close()

            asyncio.run(deliver())
            went = [c.recipient for c in server.caught]
    finally:
        engine.dispose()
    assert paused == ["sent"]
    # The mail recorded with the pause's first outcome had already started: at most it
    # and the first went out; the rest wait, unleased, with their expiry.
    assert 1 <= len(went) <= 2, went
    after = ledger(db)
    waiting = {email: row for email, row in after.items() if email not in went}
    assert len(waiting) == len(addresses) - len(went)
    assert all(row[0] == "queued" and row[2] is None and row[3] == 0
               and row[1] == before[email][1] for email, row in waiting.items())
    assert audit(db) == [("maria", "console", "pause_campaign", "note", None)]

    with FaultServer() as server:
        assert db.run("resume", "note", "--yes", "--now", NOW).code == 0
        rest = send(db, server, "note")
        assert rest["sent"] == len(waiting)
        assert sorted(c.recipient for c in server.caught) == sorted(waiting)


def test_pause_resume_and_retry_refuse_an_unknown_campaign_and_ask_first(
        db: Workspace) -> None:
    shop(db, ["anna@example.com"])
    for command in ("pause", "resume", "retry"):
        unknown = db.run(command, "nite", "--yes")
        assert unknown.code == 1
        assert unknown.stderr.strip() == "error: unknown campaign 'nite' (did you mean note?)"
        as_json = db.run(command, "nite", "--yes", "--json")
        assert as_json.code == 1
        assert as_json.json()["error"]["message"] == \
            "unknown campaign 'nite' (did you mean note?)"
    # Without --yes the question is asked on stderr; no answer (or "n") changes nothing.
    for answer in (None, "n\n", "\n"):
        asked = db.run("pause", "note", stdin=answer)
        assert asked.code == 1
        assert "Pause note? No mail of it is planned or sent until `mailer resume note`." \
            in asked.stderr and "Aborted." in asked.stderr
    assert db.query("SELECT count(*) FROM paused_campaigns")[0][0] == 0
    assert audit(db) == []
    answered = db.run("pause", "note", stdin="y\n")
    assert answered.code == 0 and "paused note" in answered.stdout
    assert db.query("SELECT campaign, paused_by FROM paused_campaigns") == [
        ("note", getpass.getuser())]
    bad = db.run("pause", "note", "--reason", "a\x07b", "--yes")
    assert bad.code == 1 and "a reason is at most 500 printable characters" in bad.stderr


# --- retrying failed rows ------------------------------------------------------------------


def test_retry_sends_again_what_a_server_refused_but_no_address_error_nor_past_expiry(
        db: Workspace) -> None:
    addresses = ["temp451@example.com", "block571@example.com", "bad550@example.com",
                 "ok@example.com"]
    # retry_for 1m: the first temporary failure already outlasts it (failed, not deferred)
    shop(db, addresses, settings=SETTINGS + "delivery: {retry_for: 1m}\n")
    with FaultServer(Behaviour(fails=1)) as server:
        first = send(db, server, "note")
        assert (first["sent"], first["failed"]) == (1, 3)
        reasons = {row[0]: row[1:] for row in db.query(
            "SELECT email, reason, last_reply FROM deliveries")}
        assert reasons["temp451@example.com"] == (
            "temporary failures for longer than delivery.retry_for",
            "451 4.3.0 try again later")
        assert reasons["block571@example.com"] == ("rejected", "554 5.7.1 refused by policy")
        assert reasons["bad550@example.com"][0] == "bad mailbox"

        # At the expiry (once: at + grace 2d) nothing may be retried any more.
        late = db.run("retry", "note", "--yes", "--now", "2026-11-25T10:00", "--json")
        assert late.code == 0, late.stderr
        assert late.json() == {"campaign": "note", "failed": 3, "retried": 0,
                               "kept": {"past_expiry": 3, "bad_mailbox": 0,
                                        "before_the_wire": 0}}
        assert states(db)["temp451@example.com"] == "failed"

        retried = db.run("retry", "note", "--now", "2026-11-23T10:05", stdin="y\n")
        assert retried.code == 0, retried.stderr
        assert "Retry 2 failed mails of note?" in retried.stderr
        assert retried.stdout.strip() == ("note: 2 failed mails queued again; not retried: "
                                          "1 bad mailbox; the next `mailer send` delivers "
                                          "them")
        found = {row[0]: row[1:] for row in db.query(
            "SELECT email, status, next_attempt_at, expires_at, attempts FROM deliveries")}
        assert found["temp451@example.com"][0] == "deferred"
        assert found["block571@example.com"][0] == "deferred"
        assert found["bad550@example.com"][0] == "failed"

        again = send(db, server, "note", now="2026-11-23T10:05")
        assert again["sent"] == 2
    assert states(db) == {"temp451@example.com": "sent", "block571@example.com": "sent",
                          "bad550@example.com": "failed", "ok@example.com": "sent"}
    went = sorted(c.recipient for c in server.caught)
    assert went == ["block571@example.com", "ok@example.com", "temp451@example.com"]
    [(actor, via, action, target, detail)] = db.query(
        "SELECT actor, via, action, target, detail FROM operator_audit")
    assert (actor, via, action, target) == (getpass.getuser(), "cli", "retry_failed", "note")
    assert '"rows": 2' in str(detail).replace("'", '"')
    nothing = db.run("retry", "note", "--now", "2026-11-23T10:06")  # no question asked
    assert nothing.code == 0 and "0 failed mails queued again" in nothing.stdout


def test_retryable_replies() -> None:
    from mailer.delivery.outcomes import retryable

    too_long = "temporary failures for longer than delivery.retry_for"
    assert retryable(too_long, "451 4.3.0 try again later")
    assert retryable(too_long, "connection lost before the end of the message")
    assert retryable("rejected", "554 5.7.1 refused by policy")
    assert retryable("rejected", "550 mailbox unavailable")  # no enhanced code
    assert retryable("rejected", "552 5.2.2 mailbox full")
    assert not retryable("bad mailbox", "550 5.1.1 no such mailbox")
    assert not retryable("rejected", "553 5.1.3 bad address syntax")
    assert not retryable("rejected", "server does not offer SMTPUTF8")  # before the wire
    assert not retryable("render_error: templates/x.html:3: boom", None)
    assert not retryable(None, "250 2.0.0 Ok")


# --- customers: suppress, resubscribe --------------------------------------------------------


def test_suppress_and_resubscribe_with_a_reason_write_their_audit_rows(
        db: Workspace) -> None:
    shop(db, ["anna@example.com", "bob@example.org"])
    engine = db.engine()
    try:
        done = operator.suppress_customer(engine, actor="maria", customer="C000",
                                          reason="asked by phone to stop", now=AT)
        assert (done.outcome, done.email, done.consent) == (
            "suppressed", "anna@example.com", "subscribed")
        twice = operator.suppress_customer(engine, actor="maria",
                                           customer="ANNA@example.com",
                                           reason="asked again", now=AT)
        assert twice.outcome == "already"
        for bad_reason in ("", "   "):
            try:
                operator.suppress_customer(engine, actor="maria", customer="C001",
                                           reason=bad_reason, now=AT)
            except Exception as err:
                assert "give a reason" in str(err)
            else:
                raise AssertionError("an empty reason was taken")
        try:
            operator.suppress_customer(engine, actor="maria", customer="C00",
                                       reason="x", now=AT)
        except Exception as err:
            assert str(err).startswith("no customer with id 'C00'")
        else:
            raise AssertionError("an unknown customer was taken")
    finally:
        engine.dispose()
    [(consent, source, reason)] = db.query(
        "SELECT consent, consent_source, consent_reason FROM customers WHERE store_id = 'C000'")
    assert (consent, source, reason) == ("unsubscribed", "operator", "asked by phone to stop")
    assert db.query("SELECT email_key, reason, source FROM suppressions") == [
        ("anna@example.com", "manual", "operator")]
    with FaultServer() as server:
        sent = send(db, server, "note")
        assert [c.recipient for c in server.caught] == ["bob@example.org"]
        assert sent["excluded"] == {"unsubscribed": 1}

    engine = db.engine()
    try:
        back = operator.resubscribe_customer(engine, actor="maria", customer="C000",
                                             reason="signed up again at the counter",
                                             now=AT)
    finally:
        engine.dispose()
    assert (back.outcome, back.consent) == ("resubscribed", "unsubscribed")
    [(consent, source, reason)] = db.query(
        "SELECT consent, consent_source, consent_reason FROM customers WHERE store_id = 'C000'")
    assert (consent, source, reason) == ("subscribed", "operator",
                                         "signed up again at the counter")
    assert db.query("SELECT count(*) FROM suppressions")[0][0] == 0
    history = [tuple(row) for row in db.query(
        "SELECT h.state, h.reason FROM consent_history h JOIN customers c "
        "ON c.id = h.customer_id WHERE c.store_id = 'C000' ORDER BY h.id")]
    assert history[-2:] == [("unsubscribed", "asked by phone to stop"),
                            ("subscribed", "signed up again at the counter")]
    rows = db.query("SELECT actor, via, action, target, reason, at FROM operator_audit "
                    "ORDER BY id")
    assert [tuple(row[:5]) for row in rows] == [
        ("maria", "console", "suppress_customer", "C000", "asked by phone to stop"),
        ("maria", "console", "suppress_customer", "C000", "asked again"),
        ("maria", "console", "resubscribe_customer", "C000", "signed up again at the counter")]
    assert all(str(row[5]).startswith("2026-11-23 09:00:00") for row in rows)


def test_a_test_send_goes_out_and_leaves_its_audit_row(db: Workspace) -> None:
    from mailer.delivery.transport import SmtpTransport, parse_smtp_url

    shop(db, ["anna@example.com"])
    engine = db.engine()
    try:
        with FaultServer() as server:
            transport = SmtpTransport(parse_smtp_url(server.url + "?timeout=10"), 1)
            sent = operator.test_send(engine, actor="maria", root=db.root, campaign="note",
                                      to="qa@shop.example", now=AT, transport=transport)
            assert [c.recipient for c in server.caught] == ["qa@shop.example"]
            assert server.caught[0].message()["Subject"].startswith("[TEST] ")
            db.env.update({"MAILER_SMTP_URL": server.url, "MAILER_SECRET_KEY": KEY})
            by_cli = db.run("send", "note", "--test-to", "qa2@shop.example", "--now", NOW)
            assert by_cli.code == 0, by_cli.stderr
    finally:
        engine.dispose()
    assert db.query("SELECT count(*) FROM deliveries")[0][0] == 0  # nothing planned
    rows = db.query("SELECT actor, via, action, target, detail FROM operator_audit ORDER BY id")
    assert [tuple(row[:4]) for row in rows] == [
        ("maria", "console", "test_send", "note"),
        (getpass.getuser(), "cli", "test_send", "note")]
    assert sent.to in str(rows[0][4]) and "qa2@shop.example" in str(rows[1][4])
