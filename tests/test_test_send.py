"""`mailer send CAMPAIGN --test-to ADDRESS` (issue 17, item 9) and the summary tables of
`send` and `run --once` (item 12): through the real CLI and a real SMTP server, on both
databases."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import text

from mailer.mail.links import PREVIEW_KEY, InvalidLink, verify
from tests.conftest import SETTINGS, Workspace
from tests.smtp_server import FaultServer
from tests.test_serve import TEMPLATE, Service, consent
from tests.test_serve import service as service  # the fixture: `mailer serve` running

NOW = "2026-11-23T10:00"
KEY = "test-secret-key-0123456789"
CAPPED = SETTINGS + "policy: {frequency: [{max: 1, per: 1d}]}\n"
NOTE = """\
name: Note
trigger: once
at: 2026-11-23T09:00
grace: 2d
segment: everyone
template: note.html
subject: "A note for {{ customer.first_name }}"
coupon: {prefix: NT, value: 10%, valid_for: 3d}
"""
TABLE_COLUMNS = ["campaign", "planned", "sent", "deferred", "failed", "unknown", "skipped",
                 "expired", "waiting", "capped", "suppressed", "other exclusions"]


def shop(db: Workspace, rows: list[str], *, settings: str = CAPPED,
         campaign: str = NOTE) -> Workspace:
    db.write("mailer.yaml", settings)
    db.write("segments/everyone.yaml", "description: all\nall: [{orders: {at_least: 0}}]\n")
    db.write("templates/note.html", TEMPLATE)
    db.write("campaigns/note.yaml", campaign)
    db.write("customers.csv", "\n".join(["id,email,first_name,subscribed,timezone", *rows])
             + "\n")
    assert db.run("import", "customers", "customers.csv", "--now", "2026-01-01").code == 0
    db.env["MAILER_SECRET_KEY"] = KEY
    return db


STORE = ["C1,anna@example.com,Anna,true,", "C2,bob@example.com,Bob,true,",
         "C3,chloe@example.com,Chloe,false,"]


def counts(db: Workspace) -> tuple[int, ...]:
    return tuple(db.query(f"SELECT count(*) FROM {table}")[0][0]
                 for table in ("deliveries", "coupons", "events", "plan_runs"))


def send_note(db: Workspace, server: FaultServer, *args: str) -> tuple[int, str, str]:
    db.env["MAILER_SMTP_URL"] = server.url + "?timeout=2"
    result = db.run("send", "note", "--now", NOW, *args)
    return result.code, result.stdout, result.stderr


# --- the test send ---------------------------------------------------------------------


def test_a_test_send_is_that_customers_mail_for_another_address_and_nothing_else(
        db: Workspace) -> None:
    shop(db, STORE)
    with FaultServer() as server:
        code, out, err = send_note(db, server, "--test-to", "marketer@shop.example",
                                   "--customer", "bob@example.com", "--json")
        assert code == 0, out + err
        assert server.behaviour.connections == 1
        (caught,) = server.caught
    document = json.loads(out)
    mail = caught.message()
    assert set(document) == {"campaign", "to", "customer", "subject", "message_id"}
    assert document == {"campaign": "note", "to": "marketer@shop.example", "customer": "C2",
                        "subject": "[TEST] A note for Bob",
                        "message_id": mail["Message-ID"]}
    assert caught.recipient == "marketer@shop.example"
    assert caught.sender == "hello@shop.example"
    assert mail["To"] == "marketer@shop.example"
    assert mail["Subject"] == "[TEST] A note for Bob"
    assert "Hello Bob," in mail.get_body(("html",)).get_content()
    # its links are the preview key's: the real key refuses them
    https = mail["List-Unsubscribe"].split(",")[0].strip(" <>")
    token = https.rsplit("/", 1)[1]
    claims = verify(token, "unsubscribe", [PREVIEW_KEY])
    assert (claims.customer, claims.campaign, claims.message) == ("C2", "note", "preview")
    with pytest.raises(InvalidLink):
        verify(token, "unsubscribe", [KEY])
    # no ledger row, coupon, event or plan run; so no cap counted it: a real send mails Bob
    assert counts(db) == (0, 0, 0, 0)
    with FaultServer() as server:
        code, out, err = send_note(db, server, "--json")
        assert code == 0, out + err
        assert sorted(c.recipient for c in server.caught) == ["anna@example.com",
                                                              "bob@example.com"]
    assert db.query("SELECT count(*) FROM coupons")[0][0] == 2


def test_without_customer_the_first_preview_sample_and_its_reason_in_text(
        db: Workspace) -> None:
    shop(db, STORE)
    assert db.run("unsubscribe", "anna@example.com", "--now", NOW).code == 0
    with FaultServer() as server:
        code, out, err = send_note(db, server, "--test-to", "marketer@shop.example")
        assert code == 0, out + err
        assert [c.message()["Subject"] for c in server.caught] == ["[TEST] A note for Bob"]
        mid = server.caught[0].message()["Message-ID"]
        # a customer the plan would not mail still gets a test, which says why not
        code, out2, err = send_note(db, server, "--test-to", "marketer@shop.example",
                                    "--customer", "C1")
        assert code == 0, out2 + err
        assert server.caught[1].message()["Subject"] == "[TEST] A note for Anna"
    assert out.splitlines() == [
        "sent a test of note to marketer@shop.example",
        "  subject:    [TEST] A note for Bob",
        "  customer:   C2's mail",
        f"  message id: {mid}",
        "  nothing was planned or recorded; its links are signed with the preview key"]
    assert "  customer:   C1's mail (the plan would not mail C1 now: unsubscribed)" in \
        out2.splitlines()
    assert db.query("SELECT consent FROM customers WHERE store_id = 'C1'")[0][0] == \
        "unsubscribed"


def test_a_click_on_a_test_mails_unsubscribe_link_unsubscribes_nobody(
        db: Workspace, service: Service) -> None:
    db.env["MAILER_SECRET_KEY"] = KEY  # the service's key; its fixture wrote `note`
    with FaultServer() as server:
        code, out, err = send_note(db, server, "--test-to", "marketer@shop.example",
                                   "--customer", "anna@example.com")
        assert code == 0, out + err
        mail = server.caught[0].message()
    https = mail["List-Unsubscribe"].split(",")[0].strip(" <>")
    status, _, body = service.request("POST", https, body="List-Unsubscribe=One-Click")
    assert status == 400 and b"Link not valid" in body
    assert service.request("GET", https)[0] == 400
    assert consent(db, "anna@example.com")[0] == "subscribed"


def test_test_to_goes_alone_with_one_campaign(db: Workspace) -> None:
    shop(db, STORE)
    db.write("campaigns/other.yaml", NOTE)
    usage = [db.run("send", "note", "--test-to", "m@shop.example", "--dry-run"),
             db.run("send", "note", "other", "--test-to", "m@shop.example"),
             db.run("send", "note", "--customer", "C1")]
    assert [r.code for r in usage] == [2, 2, 2]
    assert "--test-to sends one real mail; it cannot go with --dry-run" in usage[0].stderr
    assert "--test-to sends the mail of one campaign: name only one" in usage[1].stderr
    assert "--customer goes with --test-to" in usage[2].stderr
    assert counts(db) == (0, 0, 0, 0)


def test_a_bad_address_is_exit_1_and_a_refusing_server_as_the_transport_says(
        db: Workspace) -> None:
    shop(db, STORE)
    with FaultServer() as server:
        code, out, _ = send_note(db, server, "--test-to", "not an address", "--json")
        assert code == 1
        assert "invalid email 'not an address'" in out
        code, out, _ = send_note(db, server, "--test-to", "bad550@shop.example", "--json")
        assert code == 1  # the server says the mailbox does not exist: the user's value
        assert "the SMTP server refused bad550@shop.example: 550 5.1.1" in out
        code, out, _ = send_note(db, server, "--test-to", "rej554@shop.example", "--json")
        assert code == 3
        assert "the SMTP server did not take the test mail: 554 5.7.1" in out
        assert server.caught == []
    db.env["MAILER_SMTP_URL"] = "smtp://127.0.0.1:9?timeout=2"  # nobody listens there
    result = db.run("send", "note", "--test-to", "m@shop.example", "--now", NOW, "--json")
    assert result.code == 3
    assert "cannot connect to smtp://127.0.0.1:9" in result.stdout
    # a refused test suppresses nothing and records nothing
    assert counts(db) == (0, 0, 0, 0)
    assert db.query("SELECT count(*) FROM suppressions")[0][0] == 0


def test_a_test_send_never_carries_the_real_customers_referral_code(db: Workspace) -> None:
    referral = NOTE.replace("coupon: {prefix: NT, value: 10%, valid_for: 3d}\n",
                            "referral: {deadline: 2026-12-31, reward: 20%}\n").replace(
        '"A note for {{ customer.first_name }}"', '"Your code {{ referral.code }}"')
    shop(db, STORE, campaign=referral)
    with db.engine().begin() as conn:
        conn.execute(text("UPDATE customers SET referral_code = 'BOB-REAL' "
                          "WHERE store_id = 'C2'"))
    with FaultServer() as server:
        code, out, err = send_note(db, server, "--test-to", "marketer@shop.example",
                                   "--customer", "C2", "--json")
        assert code == 0, out + err
        (caught,) = server.caught
    assert json.loads(out)["subject"] == "[TEST] Your code PREVIEW"
    assert b"BOB-REAL" not in caught.data


def test_a_secret_key_equal_to_the_preview_key_is_refused(db: Workspace) -> None:
    shop(db, STORE)
    db.env["MAILER_SECRET_KEY"] = PREVIEW_KEY
    refusal = ("MAILER_SECRET_KEY (or an old key) is the public preview key: "
               "choose another secret")
    result = db.run("send", "note", "--test-to", "m@shop.example", "--now", NOW, "--json")
    assert result.code == 1
    assert result.json()["error"]["message"] == refusal
    # every command that signs or honours links refuses it: serve, send, run, worker
    db.env["MAILER_SMTP_URL"] = "smtp://127.0.0.1:9"
    for command in (["serve", "--port", "0"], ["send", "note", "--now", NOW],
                    ["worker", "--now", NOW]):
        refused = db.run(*command)
        assert refused.code == 1, command
        assert refusal in refused.stderr, command


# --- the summary tables ------------------------------------------------------------------


def table(stdout: str) -> dict[str, dict[str, str]]:
    """The rows of a summary table by campaign, each by column."""
    found = {}
    for line in stdout.splitlines():
        cells = [cell.strip() for cell in line.split("│")[1:-1]]
        if len(cells) == len(TABLE_COLUMNS):
            found[cells[0]] = dict(zip(TABLE_COLUMNS, cells, strict=True))
    return found


QUIET = SETTINGS + 'policy: {quiet_hours: "21:00-08:00"}\n'
SHORT = NOTE.replace("grace: 2d", "grace: 2h")  # expires at 11:00 Berlin, 10:00Z


def test_other_exclusions_are_spelled_out_by_reason(db: Workspace) -> None:
    # at 10:00 in Berlin it is 04:00 in New York: quiet until 08:00 there, after the expiry
    shop(db, [*STORE, "C4,dan@example.com,Dan,true,America/New_York"], settings=QUIET,
         campaign=SHORT)
    result = db.run("run", "--once", "--no-deliver", "--now", NOW)
    assert result.code == 0, result.stderr
    row = table(result.stdout)["note"]
    assert (row["planned"], row["capped"], row["suppressed"]) == ("2", "0", "0")
    assert row["other exclusions"] == "1 not_subscribed, 1 quiet_hours"


def test_a_second_sweep_counts_no_customer_again(db: Workspace) -> None:
    shop(db, STORE)
    first = db.run("run", "--once", "--no-deliver", "--now", NOW)
    assert first.code == 0, first.stderr
    assert table(first.stdout)["note"]["other exclusions"] == "1 not_subscribed"
    second = db.run("run", "--once", "--no-deliver", "--now", "2026-11-23T10:05")
    assert second.code == 0, second.stderr
    row = table(second.stdout)["note"]
    # Anna and Bob were planned by the first sweep: not excluded again by this one
    assert (row["planned"], row["waiting"], row["other exclusions"]) == \
        ("0", "2", "1 not_subscribed")
    assert "note: 2 planned by an earlier run, not counted again" in second.stdout
    # the JSON keeps the planner's counts
    again = db.run("run", "--once", "--no-deliver", "--now", "2026-11-23T10:06", "--json")
    assert again.json()["campaigns"]["note"]["excluded"] == {"already_sent": 2,
                                                              "not_subscribed": 1}


def test_sent_above_planned_says_it_includes_mails_planned_earlier(db: Workspace) -> None:
    shop(db, STORE)
    assert db.run("run", "--once", "--no-deliver", "--now", NOW).code == 0
    with FaultServer() as server:
        code, out, err = send_note(db, server)
        assert code == 0, out + err
    row = table(out)["note"]
    assert (row["planned"], row["sent"]) == ("0", "2")
    assert "note: sent includes 2 planned earlier" in out.splitlines()
    assert "note: 2 planned by an earlier run, not counted again" in out.splitlines()


def test_a_sweep_with_nothing_new_is_idle(db: Workspace, tmp_path: Path) -> None:
    shop(db, STORE[:2])
    with FaultServer() as server:
        db.env["MAILER_SMTP_URL"] = server.url
        assert db.run("run", "--once", "--now", NOW).code == 0
        later = db.run("run", "--once", "--now", "2026-11-23T10:05")
    assert later.code == 0, later.stderr
    assert "(1 campaign had nothing due)" in later.stdout
    assert "note" not in table(later.stdout)
