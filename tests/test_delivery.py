"""`mailer send` against a real SMTP server with faults (DESIGN §6), on both databases."""

from __future__ import annotations

import base64
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SETTINGS, Workspace
from tests.smtp_server import Behaviour, FaultServer

NOW = "2026-11-23T10:00"
KEY = "test-secret-key-0123456789"
TEMPLATE = """<p>Hello {{ customer.first_name | default('friend') }},
{{ 100 // (customer.attributes.divisor | default(1) | int) }}.</p>
<p>{{ store.address }} · <a href="{{ links.unsubscribe }}">unsubscribe</a></p>
"""
CAMPAIGN = """\
name: Note
trigger: once
at: 2026-11-23T09:00
grace: 2d
segment: everyone
template: note.html
subject: "A note for {{ customer.first_name | default('you') }}"
"""


def shop(db: Workspace, addresses: list[str], *, settings: str = SETTINGS,
         campaign: str = CAMPAIGN) -> Workspace:
    db.write("mailer.yaml", settings)
    db.write("segments/everyone.yaml", "description: all\nall: [{orders: {at_least: 0}}]\n")
    db.write("templates/note.html", TEMPLATE)
    db.write("campaigns/note.yaml", campaign)
    rows = ["id,email,first_name,divisor"]
    rows += [f"C{n:03d},{address},Name{n},{0 if address.startswith('zero') else 1}"
             for n, address in enumerate(addresses)]
    db.write("customers.csv", "\n".join(rows) + "\n")
    assert db.run("import", "customers", "customers.csv", "--now", "2026-01-01").code == 0
    return db


def send(db: Workspace, server: FaultServer, *args: str, now: str = NOW,
         timeout: float = 10.0) -> Any:
    """`mailer send ARGS --now NOW --json` into SERVER. TIMEOUT is the SMTP reply deadline:
    generous, so that a loaded machine never turns a good reply into a deferral."""
    db.env.update({"MAILER_SMTP_URL": f"{server.url}?timeout={timeout:g}",
                   "MAILER_SECRET_KEY": KEY})
    result = db.run("send", *args, "--now", now, "--json")
    assert result.code == 0, result.stdout + result.stderr
    return result.json()


def states(db: Workspace) -> dict[str, str]:
    return {row[0]: row[1] for row in db.query(
        "SELECT c.email, d.status FROM deliveries d JOIN customers c ON c.id = d.customer_id")}


def test_send_delivers_one_personal_compliant_mail_per_customer(db: Workspace) -> None:
    shop(db, ["anna@example.com", "bob@example.org", "chloe@example.net"])
    with FaultServer() as server:
        summary = send(db, server, "note")
    assert summary == {"planned": 3, "sent": 3, "deferred": 0, "failed": 0, "unknown": 0,
                       "skipped": 0, "expired": 0, "waiting": 0, "excluded": {}}
    assert sorted(c.recipient for c in server.caught) == [
        "anna@example.com", "bob@example.org", "chloe@example.net"]
    ledger = {row[0]: row[1:] for row in db.query(
        "SELECT c.email, d.status, d.message_id, d.attempts, d.last_reply, d.sent_at "
        "FROM deliveries d JOIN customers c ON c.id = d.customer_id")}
    for caught in server.caught:
        mail = caught.message()
        status, message_id, attempts, reply, sent_at = ledger[caught.recipient]
        assert (status, attempts, sent_at is not None) == ("sent", 1, True)
        assert reply.startswith("250")
        assert mail["Message-ID"] == message_id
        assert caught.sender == "hello@shop.example"
        assert mail["From"] == "Pine & Co <hello@shop.example>"
        assert len(mail.get_all("To")) == 1 and caught.recipient in mail["To"]
        assert mail["Subject"].startswith("A note for Name")
        assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        https, mailto = (part.strip(" <>") for part in mail["List-Unsubscribe"].split(","))
        assert https.startswith("https://mail.shop.example/u/")
        assert mailto.startswith("mailto:unsubscribe@shop.example")
        html = mail.get_body(("html",)).get_content()
        assert https in html and "1 Market St, Springfield" in html
        assert mail.get_body(("plain",)).get_content().strip()
        assert mail["Date"]
    # nothing is due any more: a second send plans and sends nothing
    again = send(db, server, "note")
    assert (again["planned"], again["sent"], again["excluded"]) == (0, 0, {"already_sent": 3})


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelining", "one-by-one"])
def test_each_fault_ends_in_its_state_and_the_connection_goes_on(db: Workspace,
                                                                 pipelining: bool) -> None:
    addresses = ["ok1@example.com", "temp451@example.com", "ok2@example.com",
                 "bad550@example.com", "ok3@example.com", "rej554@example.com",
                 "ok4@example.com", "cut354@example.com", "ok5@example.com",
                 "cutdot@example.com", "stallrcpt@example.com", "stalldot@example.com",
                 "ok6@example.com"]
    # one connection, so each fault is followed by a good message on the same pool
    shop(db, addresses, settings=SETTINGS + "delivery: {concurrency: 1}\n")
    # the stalls outlast the reply deadline; the deadline outlasts a loaded machine's reply
    # PIPELINING (RFC 2920) or not, each fault ends the same way
    with FaultServer(Behaviour(stall=5.0, pipelining=pipelining)) as server:
        first = send(db, server, "note", timeout=2.5)
        found = states(db)
        # A close right after the 354 is seen as a failure before the dot when it reaches
        # the client before the message is in the socket (then retried), else as a
        # missing reply (`unknown`): the threads of this process decide which.
        cut354 = found.pop("cut354@example.com")
        assert cut354 in ("deferred", "unknown")
        assert found == {
            **{a: "sent" for a in addresses if a.startswith("ok")},
            "temp451@example.com": "deferred", "stallrcpt@example.com": "deferred",
            "bad550@example.com": "failed", "rej554@example.com": "failed",
            "cutdot@example.com": "unknown", "stalldot@example.com": "unknown"}
        retried = 3 if cut354 == "deferred" else 2
        assert (first["sent"], first["deferred"], first["failed"], first["unknown"],
                first["waiting"]) == (6, retried, 2, 5 - retried, retried)
        # 5.1.1 suppresses the address; 5.7.1 does not
        assert [r[0] for r in db.query("SELECT email_key FROM suppressions")] == \
            ["bad550@example.com"]
        assert db.query("SELECT consent FROM customers WHERE email = 'bad550@example.com'")[0][0] \
            == "bounced"
        replies = dict(db.query("SELECT email, last_reply FROM deliveries"))
        assert replies["rej554@example.com"].startswith("554 5.7.1")
        retry_at = db.query("SELECT next_attempt_at, planned_at FROM deliveries "
                            "WHERE email = 'temp451@example.com'")[0]
        assert retry_at[0] is not None
        # The retries are due five minutes later (±10 %): an hour on, they go out once.
        second = send(db, server, "note", now="2026-11-23T11:00")
        assert second["sent"] == retried and second["waiting"] == 0
    delivered = Counter(c.recipient for c in server.caught)
    assert delivered == Counter({a: 1 for a in addresses if a.startswith("ok")}
                                | {"temp451@example.com": 1, "stallrcpt@example.com": 1}
                                | ({"cut354@example.com": 1} if cut354 == "deferred" else {}))
    # `unknown` rows are never resent: the server got neither of them a second time
    assert "cutdot@example.com" not in delivered and "stalldot@example.com" not in delivered
    attempts = dict(db.query("SELECT email, attempts FROM deliveries"))
    assert attempts["temp451@example.com"] == 2 and attempts["cutdot@example.com"] == 1


def test_throttling_defers_and_the_campaign_is_not_finished_while_rows_wait(
        db: Workspace) -> None:
    addresses = [f"storm454-{n}@example.com" for n in range(5)] + ["bye421@example.com"]
    shop(db, addresses, settings=SETTINGS + "delivery: {concurrency: 2}\n")
    with FaultServer(Behaviour(fails=1)) as server:
        summary = send(db, server, "note")
        assert summary["sent"] == 0 and summary["deferred"] == 6 and summary["waiting"] == 6
        assert set(states(db).values()) == {"deferred"}
        report = db.run("report", "note", "--json").json()
        assert report["deferred"] == 6 and report["sent"] == 0
        later = send(db, server, "note", now="2026-11-23T12:00")
    assert later["sent"] == 6 and later["waiting"] == 0
    assert Counter(c.recipient for c in server.caught) == Counter(addresses)


def test_a_server_refusing_at_the_greeting_stops_the_send_with_exit_3(db: Workspace) -> None:
    shop(db, ["anna@example.com"])
    with FaultServer(Behaviour(greeting_421=True)) as server:
        db.env.update({"MAILER_SMTP_URL": server.url, "MAILER_SECRET_KEY": KEY})
        result = db.run("send", "note", "--now", NOW)
    assert result.code == 3
    assert "SMTP server refused at start" in result.stderr and "421" in result.stderr
    # the planned row waits for the next send, untouched
    assert states(db) == {"anna@example.com": "queued"}


def test_the_rate_limit_holds_in_every_one_second_window(db: Workspace) -> None:
    addresses = [f"r{n}@example.com" for n in range(45)]
    shop(db, addresses, settings=SETTINGS + "delivery: {concurrency: 8, rate_per_second: 15}\n")
    with FaultServer() as server:
        assert send(db, server, "note")["sent"] == 45
    times = sorted(c.at for c in server.caught)
    # no 16 mails within one second at the server, wherever the window starts
    assert all(times[i + 15] - times[i] > 1.0 for i in range(len(times) - 15))
    assert times[-1] - times[0] > 2.0



def test_a_rate_limited_send_waits_for_permits_instead_of_asking_again_and_again(
        db: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    """A turn that finds no free permit makes the next wait until one may be free: the
    sender does not spin on the database (thousands of turns for 45 mails, once)."""
    from mailer.delivery.worker import SendingLoop

    turns = [0]
    original = SendingLoop._turn_in_database

    def counted(self: SendingLoop, *args: Any) -> Any:
        turns[0] += 1
        return original(self, *args)

    monkeypatch.setattr(SendingLoop, "_turn_in_database", counted)
    shop(db, [f"r{n}@example.com" for n in range(45)],
         settings=SETTINGS + "delivery: {concurrency: 8, rate_per_second: 15}\n")
    with FaultServer() as server:
        assert send(db, server, "note")["sent"] == 45
    assert turns[0] < 100  # about 16: a group of 4 or so a turn, a wait when starved

def test_never_more_mails_at_the_server_at_once_than_the_concurrency(db: Workspace) -> None:
    """However the sender's turns overlap (on PostgreSQL two may be under way), the
    server never has more of its mails between DATA and the reply than `concurrency`."""
    addresses = [f"c{n}@example.com" for n in range(60)]
    shop(db, addresses, settings=SETTINGS + "delivery: {concurrency: 6, rate_per_second: 1000}\n")
    with FaultServer(Behaviour(delay=0.03)) as server:
        assert send(db, server, "note")["sent"] == 60
        most = server.behaviour.most_accepting
    assert 3 < most <= 6

# The note as a promotion that ends at 10:30, half an hour after the first send.
PROMOTION = CAMPAIGN.replace("trigger: once\nat: 2026-11-23T09:00\ngrace: 2d\n",
                             "trigger: promotion\nstarts: 2026-11-23T09:00\n"
                             "ends: 2026-11-23T10:30\n")


def test_a_promotion_that_ends_while_rows_are_deferred_sends_nothing_after_its_end(
        db: Workspace) -> None:
    promotion = PROMOTION
    shop(db, ["temp451@example.com", "ok@example.com"], campaign=promotion)
    with FaultServer(Behaviour(fails=100)) as server:
        assert send(db, server, "note")["deferred"] == 1
        after_end = send(db, server, "note", now="2026-11-23T11:00")
    assert (after_end["sent"], after_end["expired"]) == (0, 1)
    assert states(db) == {"temp451@example.com": "expired", "ok@example.com": "sent"}
    assert [c.recipient for c in server.caught] == ["ok@example.com"]


def test_an_opt_out_between_attempts_stops_the_retry(db: Workspace) -> None:
    shop(db, ["temp451@example.com", "ok@example.com"])
    with FaultServer() as server:
        send(db, server, "note")
        assert db.run("unsubscribe", "temp451@example.com").code == 0
        later = send(db, server, "note", now="2026-11-23T11:00")
    assert later["skipped"] == 1 and later["sent"] == 0
    assert states(db)["temp451@example.com"] == "skipped"
    assert db.query("SELECT reason FROM deliveries WHERE email = 'temp451@example.com'")[0][0] \
        == "unsubscribed"
    assert [c.recipient for c in server.caught] == ["ok@example.com"]


def test_a_render_error_fails_only_its_row(db: Workspace) -> None:
    shop(db, ["zero@example.com", "ok@example.com"])
    with FaultServer() as server:
        summary = send(db, server, "note")
    assert (summary["sent"], summary["failed"]) == (1, 1)
    reason = db.query("SELECT reason FROM deliveries WHERE status = 'failed'")[0][0]
    assert reason.startswith("render_error: templates/note.html:2:") and "division" in reason
    assert [c.recipient for c in server.caught] == ["ok@example.com"]


def test_hostile_addresses_never_reach_the_smtp_command_line() -> None:
    import asyncio

    from mailer.delivery.transport import SmtpTransport, parse_smtp_url

    with FaultServer() as server:
        async def attempt(address: str) -> Any:
            transport = SmtpTransport(parse_smtp_url(server.url), 1)
            try:
                return await transport.send("hello@shop.example", address, b"Subject: x\r\n\r\nx")
            finally:
                await transport.close()

        for hostile in ("evil@example.com>\r\nRCPT TO:<victim@example.org",
                        "a>b@example.com", "x@example.com\nDATA", "no-at-sign"):
            outcome = asyncio.run(attempt(hostile))
            assert outcome.kind == "permanent", hostile
    assert server.behaviour.attempts == Counter() and server.behaviour.connections == 0


def test_lines_starting_with_a_dot_arrive_as_they_were_written() -> None:
    import asyncio

    from mailer.delivery.transport import SmtpTransport, parse_smtp_url

    # A lone "." line would end the DATA early without dot-stuffing (RFC 5321 §4.5.2).
    message = b"Subject: dots\r\n\r\n.first\r\n.\r\n..two\r\nmid.dle\r\n.last"
    with FaultServer() as server:
        async def attempt() -> Any:
            transport = SmtpTransport(parse_smtp_url(server.url), 1)
            try:
                return await transport.send("hello@shop.example", "ok@example.com", message)
            finally:
                await transport.close()

        assert asyncio.run(attempt()).kind == "sent"
    assert [caught.data for caught in server.caught] == [message + b"\r\n"]


def test_a_second_sender_on_sqlite_exits_3_at_once(ws: Workspace) -> None:
    from mailer.store.ledger import sending_lock

    shop(ws, ["anna@example.com"])
    engine = ws.engine()
    try:
        with FaultServer() as server, sending_lock(engine, "someone-else"):
            ws.env.update({"MAILER_SMTP_URL": server.url, "MAILER_SECRET_KEY": KEY})
            result = ws.run("send", "note", "--now", NOW)
    finally:
        engine.dispose()
    assert result.code == 3
    import os

    assert f"another mailer process (pid {os.getpid()}) is sending from mailer.db" in \
        result.stderr


def test_send_without_a_secret_key_exits_1_and_says_so(ws: Workspace) -> None:
    shop(ws, ["anna@example.com"])
    result = ws.run("send", "note", "--now", NOW)
    assert result.code == 1 and "MAILER_SECRET_KEY" in result.stderr
    assert ws.query("SELECT count(*) FROM deliveries")[0][0] == 0


def test_dry_run_writes_eml_files_and_nothing_to_the_ledger(db: Workspace,
                                                            tmp_path: Path) -> None:
    shop(db, ["anna@example.com", "bob@example.org"])
    result = db.run("send", "note", "--dry-run", "--out", str(tmp_path / "out"), "--now", NOW,
                    "--json")
    assert result.code == 0, result.stderr
    assert result.json()["planned"] == 2 and result.json()["sent"] == 2
    files = sorted((tmp_path / "out" / "note").glob("*.eml"))
    assert len(files) == 2
    assert b"List-Unsubscribe-Post: List-Unsubscribe=One-Click" in files[0].read_bytes()
    assert db.query("SELECT count(*) FROM deliveries")[0][0] == 0


def test_dkim_signatures_verify(ws: Workspace) -> None:
    import dkim
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.DER,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)
    shop(ws, ["anna@example.com"], settings=SETTINGS + "dkim: {domain: shop.example, "
                                                       "selector: mail}\n")
    ws.env["MAILER_DKIM_KEY"] = pem
    with FaultServer() as server:
        assert send(ws, server, "note")["sent"] == 1
    data = server.caught[0].data
    assert data.startswith(b"DKIM-Signature: v=1;")
    assert dkim.verify(data, dnsfunc=lambda name, timeout=5: record)
    signed = dkim.DKIM(data)
    assert signed.verify(dnsfunc=lambda name, timeout=5: record)
    header = server.caught[0].message()["DKIM-Signature"]
    for name in ("from", "subject", "date", "message-id", "list-unsubscribe",
                 "list-unsubscribe-post"):
        assert name in header.split("h=")[1].split(";")[0].split(":")
    # a changed subject breaks the signature
    assert not dkim.verify(data.replace(b"A note for", b"A n0te for"),
                           dnsfunc=lambda name, timeout=5: record)


@pytest.mark.parametrize("reply,kind,suppress,throttle", [
    ((250, "2.0.0 ok"), "sent", False, False),
    ((451, "4.3.0 later"), "temporary", False, False),
    ((421, "4.7.0 closing"), "temporary", False, True),
    ((450, "4.7.1 greylisted"), "temporary", False, True),
    ((550, "5.1.1 no such user"), "permanent", True, False),
    ((553, "5.1.3 bad address syntax"), "permanent", True, False),
    ((550, "5.7.1 policy"), "permanent", False, False),
    ((554, "transaction failed"), "permanent", False, False),
])
def test_replies_are_classified(reply: tuple[int, str], kind: str, suppress: bool,
                                throttle: bool) -> None:
    from mailer.delivery.outcomes import from_reply

    outcome = from_reply(*reply)
    assert (outcome.kind, outcome.suppress, outcome.throttle) == (kind, suppress, throttle)


def test_back_off_doubles_to_an_hour_with_jitter_until_expiry_or_retry_for() -> None:
    import random
    from datetime import UTC, datetime, timedelta

    from mailer.delivery.outcomes import Outcome, retry_delay, settle

    rng = random.Random(3)
    minutes = [retry_delay(n, rng).total_seconds() / 60 for n in range(1, 8)]
    for got, base in zip(minutes, [5, 10, 20, 40, 60, 60, 60], strict=True):
        assert base * 0.9 <= got <= base * 1.1
    now = datetime(2026, 11, 23, 10, tzinfo=UTC)
    temporary = Outcome("temporary", "451 later")
    common: dict[str, Any] = {"attempts": 1, "now": now, "send_after": now,
                              "retry_for": timedelta(days=2), "rng": rng}
    assert settle(temporary, expires_at=now + timedelta(days=3), **common)["status"] == \
        "deferred"
    assert settle(temporary, expires_at=now + timedelta(minutes=4), **common)["status"] == \
        "expired"
    common["send_after"] = now - timedelta(days=2)
    assert settle(temporary, expires_at=now + timedelta(days=3), **common)["status"] == "failed"


def test_report_counts_every_state_and_exclusion_and_knows_its_campaigns(db: Workspace) -> None:
    shop(db, ["ok@example.com", "bad550@example.com", "temp451@example.com"])
    assert db.run("unsubscribe", "temp451@example.com").code == 0
    fresh = db.run("report", "note", "--json").json()
    assert fresh["planned"] == 0 and fresh["sent"] == 0 and fresh["excluded"] == {}
    with FaultServer() as server:
        send(db, server, "note")
    report = db.run("report", "note", "--json").json()
    assert report == {"campaign": "note", "planned": 2, "queued": 0, "sending": 0, "sent": 1,
                      "deferred": 0, "failed": 1, "unknown": 0, "skipped": 0, "expired": 0,
                      "excluded": {"unsubscribed": 1},
                      "opens": {"mails": 0, "total": 0}, "clicks": {"mails": 0, "total": 0},
                      "machine_opens": {"mails": 0, "total": 0},
                      "machine_clicks": {"mails": 0, "total": 0},
                      "unsubscribes": 0,
                      "ratings": {"count": 0, "mean": None, "csat": None,
                                  "scores": {"1": 0, "2": 0, "3": 0, "4": 0, "5": 0},
                                  "by_week": [], "by_segment": {}},
                      "variants": [{"variant": 1, "planned": 2, "sent": 1, "opened": 0,
                                    "clicked": 0, "unsubscribed": 0}],
                      "winner": None, "comments": []}
    unknown = db.run("report", "nte", "--json")
    assert unknown.code == 1 and "did you mean note?" in unknown.json()["error"]["message"]


def test_a_group_of_rows_all_opted_out_since_planning_does_not_stall_the_sender(
        ws: Workspace) -> None:
    """Regression: when every row of a group was skipped at start and nothing was in
    flight, the sender waited for an outcome that could never come."""
    import os
    import subprocess
    import sys

    addresses = [f"p{n}@example.com" for n in range(7)]
    shop(ws, addresses, settings=SETTINGS + "delivery: {concurrency: 2}\n")
    ws.env.update({"MAILER_SECRET_KEY": KEY})
    assert ws.run("run", "--once", "--no-deliver", "--now", NOW).code == 0
    assert ws.run("unsubscribe", *addresses[:6]).code == 0
    with FaultServer() as server:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
        env.update(ws.env)
        env["MAILER_SMTP_URL"] = server.url
        done = subprocess.run([sys.executable, "-m", "mailer.cli", "--workspace", str(ws.root),
                               "send", "note", "--now", NOW, "--json"], env=env, timeout=60,
                              capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["sent"] == 1 and summary["skipped"] == 6
    assert [c.recipient for c in server.caught] == ["p6@example.com"]
