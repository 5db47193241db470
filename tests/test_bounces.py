"""`mailer bounces`: RFC 3464 bounce reports and ARF complaints that arrive later."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from mailer.app.bounces import MAX_REPORT_BYTES, Malformed, Report, parse
from mailer.config.settings import parse_settings
from mailer.core.errors import ConfigError
from mailer.mail.message import message_id
from tests.conftest import SETTINGS, Workspace
from tests.smtp_server import FaultServer
from tests.test_delivery import KEY, NOW, send, shop


def dsn(recipient: str, status: str, action: str, message_id: str) -> bytes:
    """A bounce as Postfix writes it."""
    return f"""\
From: MAILER-DAEMON@mx.example.org (Mail Delivery System)
To: hello@shop.example
Subject: Undelivered Mail Returned to Sender
Message-Id: <20261123101500.ABC@mx.example.org>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
	boundary="B1"

--B1
Content-Description: Notification
Content-Type: text/plain; charset=us-ascii

I'm sorry to have to inform you that your message could not
be delivered to one or more recipients.

--B1
Content-Description: Delivery report
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.org
Arrival-Date: Mon, 23 Nov 2026 10:15:00 +0100 (CET)

Final-Recipient: rfc822; {recipient}
Original-Recipient: rfc822;{recipient}
Action: {action}
Status: {status}
Diagnostic-Code: smtp; 550 {status} <{recipient}>: Recipient address rejected

--B1
Content-Description: Undelivered Message Headers
Content-Type: text/rfc822-headers

From: Pine & Co <hello@shop.example>
To: {recipient}
Subject: A note
Message-ID: {message_id}

--B1--
""".replace("\n", "\r\n").encode()


def arf(recipient: str, *, rcpt_header: bool = True, message_id: str = "<x@shop.example>"
        ) -> bytes:
    """A complaint as a mailbox provider's feedback loop sends it."""
    rcpt = f"Original-Rcpt-To: {recipient}\n" if rcpt_header else ""
    return f"""\
From: fbl@isp.example
To: abuse@shop.example
Subject: Complaint about message from 192.0.2.1
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report; boundary="F1"

--F1
Content-Type: text/plain

This is an email abuse report.

--F1
Content-Type: message/feedback-report

Feedback-Type: abuse
User-Agent: SomeGenerator/1.0
Version: 1
{rcpt}
--F1
Content-Type: message/rfc822

From: Pine & Co <hello@shop.example>
To: {recipient}
Subject: A note
Message-ID: {message_id}

Hello.
--F1--
""".replace("\n", "\r\n").encode()


def sent(db: Workspace, addresses: list[str]) -> dict[str, str]:
    """Send `note` to ADDRESSES; their Message-IDs by address."""
    shop(db, addresses)
    with FaultServer() as server:
        send(db, server, "note")
    return {c.recipient: str(c.message()["Message-ID"]) for c in server.caught}


def consent(db: Workspace, email: str) -> str:
    return str(db.query("SELECT consent FROM customers WHERE email = :e", e=email)[0][0])


def test_a_hard_bounce_suppresses_and_is_tied_to_its_mail_a_delay_changes_nothing(
        db: Workspace, tmp_path: Path) -> None:
    ids = sent(db, ["gone@example.com", "slow@example.com", "fine@example.com"])
    folder = tmp_path / "reports"
    folder.mkdir()
    (folder / "1.eml").write_bytes(dsn("gone@example.com", "5.1.1", "failed",
                                       ids["gone@example.com"]))
    (folder / "2.eml").write_bytes(dsn("slow@example.com", "4.4.1", "delayed",
                                       ids["slow@example.com"]))
    result = db.run("bounces", str(folder), "--json")
    assert result.code == 0, result.stderr
    assert result.json() == {"files": 2, "bounces": 2, "complaints": 0, "suppressed": 1,
                             "set_aside": []}
    assert consent(db, "gone@example.com") == "bounced"
    assert consent(db, "slow@example.com") == "subscribed"
    assert db.query("SELECT reason, source FROM suppressions") == [("bounce 5.1.1", "bounces")]
    events = db.query("SELECT e.kind, e.campaign, e.comment, d.message_id FROM events e "
                      "LEFT JOIN deliveries d ON d.id = e.delivery_id ORDER BY e.id")
    assert [tuple(e) for e in events] == [
        ("bounce", "note", "5.1.1", ids["gone@example.com"]),
        ("bounce", "note", "4.4.1", ids["slow@example.com"])]
    assert sorted(p.name for p in (folder / "done").iterdir()) == ["1.eml", "2.eml"]
    # the next campaign leaves the bounced address out
    db.write("campaigns/next.yaml", (db.root / "campaigns" / "note.yaml").read_text()
             .replace("name: Note", "name: Next"))
    with FaultServer() as server:
        assert send(db, server, "next", now="2026-11-24T10:30")["excluded"] == {"bounced": 1}


def test_complaints_from_a_maildir_suppress_and_are_read_once(
        db: Workspace, tmp_path: Path) -> None:
    ids = sent(db, ["angry@example.com", "quiet@example.com"])
    maildir = tmp_path / "fbl"
    for sub in ("new", "cur", "tmp"):
        (maildir / sub).mkdir(parents=True)
    (maildir / "new" / "a").write_bytes(arf("angry@example.com",
                                            message_id=ids["angry@example.com"]))
    (maildir / "new" / "b").write_bytes(arf("quiet@example.com", rcpt_header=False,
                                            message_id=ids["quiet@example.com"]))
    result = db.run("bounces", str(maildir))
    assert result.code == 0, result.stderr
    assert "a: complaint abuse angry@example.com: suppressed" in result.stdout
    assert "2 files: 0 bounces, 2 complaints, 2 addresses suppressed" in result.stdout
    assert consent(db, "angry@example.com") == "complained"
    assert consent(db, "quiet@example.com") == "complained"  # named only by the quoted To:
    assert sorted(p.name for p in (maildir / "cur").iterdir()) == ["a:2,S", "b:2,S"]
    again = db.run("bounces", str(maildir), "--json")
    assert again.json()["files"] == 0


def test_malformed_reports_are_set_aside_never_a_crash(db: Workspace, tmp_path: Path) -> None:
    ids = sent(db, ["gone@example.com"])
    folder = tmp_path / "reports"
    folder.mkdir()
    good = dsn("gone@example.com", "5.1.1", "failed", ids["gone@example.com"])
    broken = {
        "plain.eml": b"From: a@b.example\r\nSubject: hi\r\n\r\nnot a report\r\n",
        "binary.eml": bytes(range(256)) * 4,
        "mdn.eml": good.replace(b"report-type=delivery-status", b"report-type=disposition"),
        "nostatus.eml": good.replace(b"Status: 5.1.1", b"Status: soon"),
        "noparts.eml": b"Content-Type: multipart/report; report-type=delivery-status; "
                       b"boundary=\"Z\"\r\n\r\nno parts at all\r\n",
        "norecipient.eml": arf("x@example.com", rcpt_header=False).replace(
            b"To: x@example.com", b"X-Nothing: 1"),
    }
    for name, raw in broken.items():
        (folder / name).write_bytes(raw)
    (folder / "good.eml").write_bytes(good)
    result = db.run("bounces", str(folder), "--json")
    assert result.code == 1
    document = result.json()
    assert document["suppressed"] == 1 and document["files"] == 7
    assert sorted(Path(a["file"]).name for a in document["set_aside"]) == sorted(broken)
    assert sorted(p.name for p in (folder / "set-aside").iterdir()) == sorted(broken)
    assert consent(db, "gone@example.com") == "bounced"
    text = db.run("bounces", str(folder / "set-aside" / "mdn.eml"))
    assert text.code == 1
    assert "mdn.eml: set aside: report-type disposition is neither delivery-status nor " \
           "feedback-report" in text.stderr


# --- issue 15 item 5: bounces are about mail we sent -------------------------------------

RETURN_PATH_SETTINGS = SETTINGS.replace(
    'sender: {from: "Pine & Co <hello@shop.example>"}',
    'sender: {from: "Pine & Co <hello@shop.example>", return_path: bounces@shop.example}')
RANDOM_ID = re.compile(r"<[0-9a-f]{32}@shop\.example>")
VERP = re.compile(r"bounces\+(\d+)-([0-9a-f]{20})@shop\.example")


def ledger_ids(db: Workspace) -> dict[str, tuple[int, str | None, str]]:
    """Row id, stored Message-ID and status of each address's row."""
    return {row[0]: (int(row[1]), row[2], row[3]) for row in db.query(
        "SELECT email, id, message_id, status FROM deliveries")}


def test_reports_about_mail_we_did_not_send_are_set_aside(
        db: Workspace, tmp_path: Path) -> None:
    ids = sent(db, ["gone@example.com", "other@example.com", "temp451@example.com"])
    folder = tmp_path / "reports"
    folder.mkdir()
    forged = {
        # a Message-ID we never made, for an address we did mail
        "forged.eml": dsn("gone@example.com", "5.1.1", "failed", "<made-up@shop.example>"),
        # our Message-ID, but of the mail to someone else
        "swapped.eml": dsn("gone@example.com", "5.1.1", "failed", ids["other@example.com"]),
        "complaint.eml": arf("gone@example.com", message_id="<elsewhere@isp.example>"),
    }
    deferred = ledger_ids(db)["temp451@example.com"]
    assert deferred[2] == "deferred"  # not sent yet: a report about it cannot be ours
    forged["deferred.eml"] = dsn("temp451@example.com", "5.1.1", "failed", str(deferred[1]))
    for name, raw in forged.items():
        (folder / name).write_bytes(raw)
    result = db.run("bounces", str(folder), "--json")
    assert result.code == 0  # backscatter is set aside, but it is nobody's mistake
    document = result.json()
    assert document["suppressed"] == 0 and document["bounces"] == 0
    assert sorted((Path(a["file"]).name, a["reason"]) for a in document["set_aside"]) == [
        (name, "not about a mail we sent") for name in sorted(forged)]
    assert consent(db, "gone@example.com") == "subscribed"
    assert consent(db, "temp451@example.com") == "subscribed"
    assert db.query("SELECT count(*) FROM suppressions")[0][0] == 0
    assert db.query("SELECT count(*) FROM events")[0][0] == 0
    assert sorted(p.name for p in (folder / "set-aside").iterdir()) == sorted(forged)


def test_a_complaint_suppresses_the_recipient_of_the_mail_it_quotes(
        db: Workspace, tmp_path: Path) -> None:
    ids = sent(db, ["angry@example.com", "bystander@example.com"])
    # the provider redacted the recipient; the quoted Message-ID names the mail
    report = arf("angry@example.com", rcpt_header=False, message_id=ids["angry@example.com"]
                 ).replace(b"To: angry@example.com", b"To: redacted@isp.example")
    # someone who got our mail reports it with another person's address
    blame = arf("bystander@example.com", message_id=ids["angry@example.com"])
    (tmp_path / "a.eml").write_bytes(report)
    (tmp_path / "b.eml").write_bytes(blame)
    result = db.run("bounces", str(tmp_path / "a.eml"), "--json")
    assert result.code == 0, result.stderr
    assert result.json()["suppressed"] == 1
    assert consent(db, "angry@example.com") == "complained"
    assert db.run("bounces", str(tmp_path / "b.eml"), "--json").code == 0
    assert consent(db, "bystander@example.com") == "subscribed"
    assert [tuple(r) for r in db.query("SELECT email_key, reason FROM suppressions")] == [
        ("angry@example.com", "complaint")]


def test_message_ids_are_random_made_at_plan_time_and_kept_by_retries(
        db: Workspace, tmp_path: Path) -> None:
    addresses = ["fine@example.com", "temp451@example.com", "cutdot@example.com"]
    shop(db, addresses)
    with FaultServer() as server:
        send(db, server, "note")
        rows = ledger_ids(db)
        assert {a: rows[a][2] for a in addresses} == {
            "fine@example.com": "sent", "temp451@example.com": "deferred",
            "cutdot@example.com": "unknown"}
        stored = {a: str(rows[a][1]) for a in addresses}
        assert all(RANDOM_ID.fullmatch(mid) for mid in stored.values()), stored
        assert len(set(stored.values())) == 3
        # not derived from the row's key: another installation would make the same one
        assert stored["fine@example.com"] != message_id(
            campaign="note", occurrence="once", customer="C000", domain="shop.example")
        send(db, server, "note", now="2026-11-23T10:20")  # the retry, 5 minutes on
    assert [(c.recipient, str(c.message()["Message-ID"])) for c in server.caught] == [
        ("fine@example.com", stored["fine@example.com"]),
        ("temp451@example.com", stored["temp451@example.com"])]
    # the mail whose fate is unknown has its id too, so its bounce is recognised
    (tmp_path / "cut.eml").write_bytes(dsn("cutdot@example.com", "5.1.1", "failed",
                                           stored["cutdot@example.com"]))
    result = db.run("bounces", str(tmp_path / "cut.eml"), "--json")
    assert result.code == 0, result.stderr
    assert result.json()["suppressed"] == 1
    assert consent(db, "cutdot@example.com") == "bounced"


def test_rows_planned_before_random_ids_keep_their_derived_id(db: Workspace) -> None:
    shop(db, ["old@example.com"])
    db.env["MAILER_SECRET_KEY"] = KEY
    assert db.run("run", "--once", "--no-deliver", "--now", NOW).code == 0
    engine = db.engine()
    with engine.begin() as conn:  # as a row planned by an older version was
        conn.execute(text("UPDATE deliveries SET message_id = NULL"))
    engine.dispose()
    with FaultServer() as server:
        send(db, server, "note")
    derived = message_id(campaign="note", occurrence="once", customer="C000",
                         domain="shop.example")
    assert [str(c.message()["Message-ID"]) for c in server.caught] == [derived]
    assert ledger_ids(db)["old@example.com"][1:] == (derived, "sent")


def test_the_envelope_sender_names_the_row_and_a_bounce_to_it_is_recognised(
        db: Workspace, tmp_path: Path) -> None:
    shop(db, ["gone@example.com", "kept@example.com", "angry@example.com"],
         settings=RETURN_PATH_SETTINGS)
    with FaultServer() as server:
        send(db, server, "note")
    rows = ledger_ids(db)
    envelope = {c.recipient: c.sender for c in server.caught}
    for address, sender in envelope.items():
        match = VERP.fullmatch(sender)
        assert match is not None, sender
        assert int(match.group(1)) == rows[address][0]
        assert server.caught[0].message()["From"] == "Pine & Co <hello@shop.example>"
    # a bounce that quotes nothing of the mail, only sent back to its return path
    headless = dsn("gone@example.com", "5.1.1", "failed", "<unknown@mx.example.org>") \
        .replace(b"To: hello@shop.example", f"To: {envelope['gone@example.com']}".encode())
    tampered_sender = envelope["kept@example.com"][:-len("@shop.example") - 1] + (
        "a" if envelope["kept@example.com"][-len("@shop.example") - 1] != "a" else "b")
    tampered = dsn("kept@example.com", "5.1.1", "failed", "<unknown@mx.example.org>") \
        .replace(b"To: hello@shop.example", f"To: {tampered_sender}@shop.example".encode())
    complaint = arf("angry@example.com", message_id="<rewritten@isp.example>").replace(
        b"Version: 1", f"Version: 1\r\nOriginal-Mail-From: <{envelope['angry@example.com']}>"
        .encode())
    folder = tmp_path / "reports"
    folder.mkdir()
    (folder / "headless.eml").write_bytes(headless)
    (folder / "tampered.eml").write_bytes(tampered)
    (folder / "complaint.eml").write_bytes(complaint)
    result = db.run("bounces", str(folder), "--json")
    assert result.code == 0
    document = result.json()
    assert (document["suppressed"], document["bounces"], document["complaints"]) == (2, 1, 1)
    assert [(Path(a["file"]).name, a["reason"]) for a in document["set_aside"]] == [
        ("tampered.eml", "not about a mail we sent")]
    assert consent(db, "gone@example.com") == "bounced"
    assert consent(db, "angry@example.com") == "complained"
    assert consent(db, "kept@example.com") == "subscribed"
    events = db.query("SELECT kind, delivery_id FROM events ORDER BY kind")
    assert [tuple(e) for e in events] == [("bounce", rows["gone@example.com"][0]),
                                          ("complaint", rows["angry@example.com"][0])]


def test_a_return_path_signed_with_an_old_key_is_still_recognised(
        db: Workspace, tmp_path: Path) -> None:
    shop(db, ["gone@example.com"], settings=RETURN_PATH_SETTINGS)
    with FaultServer() as server:
        send(db, server, "note")
    db.env.update({"MAILER_SECRET_KEY": "a-new-key-after-rotation",
                   "MAILER_SECRET_KEY_OLD": f"something-else,{KEY}"})
    report = dsn("gone@example.com", "5.1.1", "failed", "<unknown@mx.example.org>").replace(
        b"To: hello@shop.example", f"To: {server.caught[0].sender}".encode())
    (tmp_path / "r.eml").write_bytes(report)
    result = db.run("bounces", str(tmp_path / "r.eml"), "--json")
    assert result.code == 0, result.stderr
    assert consent(db, "gone@example.com") == "bounced"


@pytest.mark.parametrize("value", ["Bounces <bounces@shop.example>", "bounces+x@shop.example",
                                   "not an address"])
def test_return_path_must_be_a_plain_address(value: str) -> None:
    text_ = RETURN_PATH_SETTINGS.replace("bounces@shop.example", f'"{value}"')
    with pytest.raises(ConfigError) as caught:
        parse_settings(text_)
    [problem] = caught.value.problems
    assert (problem.path, problem.line, problem.field) == (
        "mailer.yaml", 2, "sender.return_path")
    assert settings_of(RETURN_PATH_SETTINGS).sender.return_path == "bounces@shop.example"


def settings_of(text_: str) -> Any:
    return parse_settings(text_)[0]


def test_a_malformed_report_before_good_ones_is_set_aside_and_the_rest_are_read(
        db: Workspace, tmp_path: Path) -> None:
    ids = sent(db, ["gone@example.com", "angry@example.com"])
    good = dsn("gone@example.com", "5.1.1", "failed", ids["gone@example.com"])
    complaint = arf("angry@example.com", message_id=ids["angry@example.com"])
    malformed = {  # each named to be read before the good ones
        "0-blank-folded-status.eml": good.replace(b"Status: 5.1.1\r\n", b"Status:\r\n \r\n"),
        "0-8bit-final-recipient.eml": good.replace(
            b"Final-Recipient: rfc822; gone@example.com",
            "Final-Recipient: rfc822; jörg@example.com".encode()),
        "0-8bit-action.eml": good.replace(b"Action: failed", "Action: fäiled".encode()),
        "0-8bit-message-id.eml": good.replace(ids["gone@example.com"].encode(),
                                              "<gön@shop.example>".encode()),
        "0-8bit-feedback-type.eml": complaint.replace(b"Feedback-Type: abuse",
                                                      "Feedback-Type: abüse".encode()),
        "0-undecodable-status-part.eml": good.replace(
            b"Content-Type: message/delivery-status\r\n",
            b"Content-Type: message/delivery-status\r\nContent-Transfer-Encoding: base64\r\n"
        ).replace(b"Reporting-MTA", b"%%%%Reporting-MTA"),
    }
    folder = tmp_path / "reports"
    folder.mkdir()
    for name, raw in malformed.items():
        (folder / name).write_bytes(raw)
    (folder / "1-good.eml").write_bytes(good)
    (folder / "2-complaint.eml").write_bytes(complaint)
    result = db.run("bounces", str(folder), "--json")
    assert result.code == 1, result.stderr
    document = result.json()
    assert (document["files"], document["suppressed"]) == (8, 2)
    assert sorted(Path(a["file"]).name for a in document["set_aside"]) == sorted(malformed)
    assert all(a["reason"] for a in document["set_aside"])
    assert consent(db, "gone@example.com") == "bounced"
    assert consent(db, "angry@example.com") == "complained"
    assert sorted(p.name for p in (folder / "done").iterdir()) == ["1-good.eml",
                                                                  "2-complaint.eml"]
    text_run = db.run("bounces", str(folder / "set-aside" / "0-8bit-final-recipient.eml"))
    assert text_run.code == 1
    assert "0-8bit-final-recipient.eml: set aside: Final-Recipient: 8-bit bytes" \
        in text_run.stderr


GOOD_DSN = dsn("gone@example.com", "5.1.1", "failed", "<a@shop.example>")
GOOD_ARF = arf("angry@example.com", message_id="<b@shop.example>")


@settings(max_examples=300, deadline=None)
@given(base=st.sampled_from([GOOD_DSN, GOOD_ARF]), at=st.floats(0, 1),
       cut=st.integers(0, 40), junk=st.binary(max_size=40))
def test_any_damage_to_a_report_reads_as_a_report_or_is_malformed(
        base: bytes, at: float, cut: int, junk: bytes) -> None:
    """The parser is total: a damaged file (bytes cut out, others put in) is a Report or
    Malformed, never another exception that would stop the files after it."""
    start = int(at * len(base))
    damaged = base[:start] + junk + base[start + cut:]
    try:
        report = parse(damaged)
    except Malformed:
        return
    assert isinstance(report, Report)


def test_a_file_too_large_to_be_a_report_is_malformed() -> None:
    with pytest.raises(Malformed, match="larger than 10 MB"):
        parse(GOOD_DSN + b" " * MAX_REPORT_BYTES)
