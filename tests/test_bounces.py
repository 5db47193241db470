"""`mailer bounces`: RFC 3464 bounce reports and ARF complaints that arrive later."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import Workspace
from tests.smtp_server import FaultServer
from tests.test_delivery import send, shop


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
    (maildir / "new" / "b").write_bytes(arf("quiet@example.com", rcpt_header=False))
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
