"""The marketer's first hour (issue 17): what a new user does in a fresh workspace."""

from __future__ import annotations

import mailbox
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import text

from tests.conftest import Workspace

NOW = ["--now", "2026-11-23T10:00"]
ROOT = Path(__file__).resolve().parent.parent


def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True,
                          text=True).stdout


def test_init_writes_a_gitignore_that_keeps_customer_data_out_of_git(tmp_path: Path) -> None:
    result = Workspace(tmp_path, None).run("init", "shop", "--json")
    assert result.code == 0, result.stderr
    assert ".gitignore" in result.json()["copied"]
    shop = Workspace(tmp_path / "shop", None)
    _git(shop.root, "init", "-q")
    assert shop.run("demo-data", "--customers", "30", "--seed", "2", *NOW).code == 0
    assert shop.run("demo-data", "--customers", "30", "--seed", "2", *NOW,
                    "--out", "export").code == 0
    assert shop.run("preview", "black-friday", "--sample", "2", "--out", "previews",
                    *NOW).code == 0
    sent = shop.run("send", "black-friday", "--dry-run", "--now", "2026-11-27T10:00")
    assert sent.code == 0, sent.stderr
    assert any((shop.root / "outbox").rglob("*.eml"))
    assert (shop.root / "mailer.db").exists()
    untracked = {line[3:].rstrip("/") for line in
                 _git(shop.root, "status", "--porcelain", "--untracked-files=normal").splitlines()}
    assert untracked == {".gitignore", "mailer.yaml", "campaigns", "segments", "surveys",
                         "templates"}


def test_a_forced_init_keeps_the_users_gitignore_and_adds_what_it_lacks(tmp_path: Path) -> None:
    (tmp_path / "shop").mkdir()
    (tmp_path / "shop" / ".gitignore").write_text("notes/\nmailer.db\n")
    assert Workspace(tmp_path, None).run("init", "shop", "--force").code == 0
    lines = (tmp_path / "shop" / ".gitignore").read_text().splitlines()
    assert lines[:2] == ["notes/", "mailer.db"]
    assert lines.count("mailer.db") == 1
    assert "outbox/" in lines and "mailer.db-wal" in lines


def _block_after(heading: str) -> str:
    """The first ```sh block after a README heading."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index(heading):]
    start = section.index("```sh\n") + len("```sh\n")
    return section[start:section.index("```", start)]


def test_the_readme_tour_runs_verbatim(tmp_path: Path) -> None:
    tour = _block_after("## A five-minute tour")
    assert "mailer init shop" in tour and "mailer send" in tour
    env = {key: value for key, value in os.environ.items() if not key.startswith("MAILER_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", tour], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    shop = tmp_path / "shop"
    assert "200 customers" in done.stdout
    assert len(list((shop / "previews").glob("*.html"))) >= 4
    assert (shop / "forecast.html").exists()
    assert any((shop / "outbox" / "dry-run" / "black-friday").glob("*.eml"))


def test_resubscribe_records_a_new_opt_in_and_needs_force_after_a_bounce(
        db: Workspace) -> None:
    db.write("c.csv", "id,email\nU1,u1@example.com\nB1,b1@example.com\nS1,s1@example.com\n")
    assert db.run("import", "customers", "c.csv", *NOW).code == 0
    assert db.run("unsubscribe", "u1@example.com", *NOW).code == 0
    with db.engine().begin() as conn:
        conn.execute(text("UPDATE customers SET consent = 'bounced' WHERE store_id = 'B1'"))
        conn.execute(text("INSERT INTO suppressions (email_key, reason, source, created_at) "
                          "VALUES ('b1@example.com', 'bounce', 'smtp', :at)"),
                     {"at": datetime(2026, 11, 1, tzinfo=UTC)})
    result = db.run("resubscribe", "u1@example.com", "b1@example.com", "s1@example.com",
                    "nobody@example.com", "--source", "phone call", "--json", *NOW)
    assert result.code == 1
    assert result.json() == {
        "resubscribed": ["u1@example.com"], "already": ["s1@example.com"],
        "refused": [{"email": "b1@example.com", "consent": "bounced",
                     "reason": "the address bounced: mail to it failed or was reported as "
                               "spam; use --force if the person asked again"}],
        "unknown": ["nobody@example.com"], "invalid": []}
    rows = {r.store_id: tuple(r)[1:] for r in db.query(
        "SELECT store_id, consent, consent_source, consent_reason FROM customers")}
    assert rows["U1"] == ("subscribed", "phone call", "opt_in")
    assert rows["B1"][0] == "bounced"
    forced = db.run("resubscribe", "b1@example.com", "--source", "asked at the till",
                    "--force", *NOW)
    assert forced.code == 0, forced.stderr
    assert forced.stdout == ("b1@example.com: subscribed again (was bounced), "
                             "source 'asked at the till'\n")
    assert db.query("SELECT consent FROM customers WHERE store_id = 'B1'")[0][0] == "subscribed"
    assert db.query("SELECT count(*) FROM suppressions")[0][0] == 0
    refused = db.run("resubscribe", "u1@example.com", "--source", " ", *NOW)
    assert refused.code == 2
    assert "--source" in refused.stderr
    # What each opt-in replaced stays on record as an event.
    history = [r.comment for r in db.query(
        "SELECT comment FROM events WHERE kind = 'resubscribe' ORDER BY id")]
    assert history[0].startswith("was unsubscribed since 2026-11-23 09:00 UTC (source cli, "
                                 "reason manual); new source phone call")
    assert "was bounced" in history[1] and "suppression lifted: bounce" in history[1]


def test_a_bounced_address_needs_force_even_when_its_customer_unsubscribed_first(
        db: Workspace) -> None:
    """An unsubscribe recorded while the mail was in flight keeps consent `unsubscribed`
    when the bounce comes back; the suppression still says the address failed."""
    db.write("c.csv", "id,email\nU1,u1@example.com\n")
    assert db.run("import", "customers", "c.csv", *NOW).code == 0
    assert db.run("unsubscribe", "u1@example.com", *NOW).code == 0
    with db.engine().begin() as conn:
        conn.execute(text("INSERT INTO suppressions (email_key, reason, source, created_at) "
                          "VALUES ('u1@example.com', 'bounced', 'smtp', :at)"),
                     {"at": datetime(2026, 11, 1, tzinfo=UTC)})
    refused = db.run("resubscribe", "u1@example.com", "--source", "form", "--json", *NOW)
    assert refused.code == 1
    assert refused.json()["refused"] == [{
        "email": "u1@example.com", "consent": "unsubscribed",
        "reason": "the address is suppressed (bounced): mail to it failed or was reported "
                  "as spam; use --force if the person asked again"}]
    assert db.query("SELECT count(*) FROM suppressions")[0][0] == 1


def test_the_promotion_example_sends_into_the_sink(db: Workspace, tmp_path: Path) -> None:
    """docs/examples/promotion.yaml, copied into a fresh workspace as the reference says,
    is planned and delivered into `mailer sink` (a real SMTP server in its own process)."""
    from mailer.config.workspace import init_workspace

    init_workspace(db.root, force=True)
    (db.root / "campaigns" / "spring-sale.yaml").write_text(
        (ROOT / "docs" / "examples" / "promotion.yaml").read_text(encoding="utf-8"))
    assert db.run("validate").code == 0
    assert db.run("demo-data", "--customers", "120", "--seed", "5",
                  "--now", "2026-04-10T10:00").code == 0
    maildir = tmp_path / "caught"
    sink = subprocess.Popen([sys.executable, "-m", "mailer.cli", "sink", "--port", "0",
                             "--maildir", str(maildir)], stdout=subprocess.PIPE, text=True)
    try:
        assert sink.stdout is not None
        first = sink.stdout.readline()  # waits for the server: its first line is the port
        assert first.startswith("listening on "), first
        db.env = {**db.env, "MAILER_SMTP_URL": f"smtp://{first.split()[-1]}",
                  "MAILER_SECRET_KEY": "a-test-key-of-enough-length-0123456789"}
        sent = db.run("send", "spring-sale", "--now", "2026-04-17T10:00", "--json")
        assert sent.code == 0, sent.stderr
        summary = sent.json()
        assert summary["sent"] > 0 and summary["failed"] == 0
    finally:
        sink.terminate()
        sink.wait(timeout=30)
    mails = [mailbox.MaildirMessage(path.read_bytes())
             for path in (maildir / "new").iterdir()]
    assert len(mails) == summary["sent"]
    subjects = {str(mail["Subject"]) for mail in mails}
    assert "Our spring sale: 25% until Sunday" in subjects
    assert any(subject.endswith(", 48 hours only: 25% off") for subject in subjects)
    assert all("SPRING-" in mail.get_payload(0).get_payload(decode=True).decode()
               for mail in mails if mail.is_multipart())


def test_money_and_dates_are_written_in_each_readers_language_and_zone(
        db: Workspace, tmp_path: Path) -> None:
    from mailer.config.workspace import init_workspace

    init_workspace(db.root, force=True)
    db.write("c.csv", "id,email,first_name,locale,timezone\n"
                      "D1,d1@example.com,Dora,de-DE,Europe/Berlin\n"
                      "N1,n1@example.com,Ned,en-US,America/New_York\n"
                      "X1,x1@example.com,Xena,xx-XX,\n")
    db.write("o.csv", "order_id,customer_id,placed_at,total\n"
                      "O1,D1,2026-10-01T10:00,255.50\nO2,N1,2026-10-02T10:00,1234\n"
                      "O3,X1,2026-10-03T10:00,12.5\n")
    assert db.run("import", "customers", "c.csv", *NOW).code == 0
    assert db.run("import", "orders", "o.csv", *NOW).code == 0
    texts = {}
    for customer in ("d1@example.com", "n1@example.com", "x1@example.com"):
        out = tmp_path / customer
        result = db.run("preview", "black-friday", "--customer", customer, "--out", str(out),
                        "--now", "2026-11-27T10:00")
        assert result.code == 0, result.stderr
        texts[customer] = next(out.glob("*.txt")).read_text(encoding="utf-8")
    # The sale ends 2026-11-29T08:00 on the workspace's clock (Europe/Berlin).
    assert "Sonntag, 29. November 2026, 08:00 CET" in texts["d1@example.com"]
    assert "Sunday, November 29, 2026, 2:00\u202fAM EST" in texts["n1@example.com"]
    # An unknown locale falls back to store.locale (en); no zone of their own: the store's.
    assert "Sunday, November 29, 2026, 8:00\u202fAM CET" in texts["x1@example.com"]
    spent = {}
    for customer in ("d1@example.com", "n1@example.com"):
        out = tmp_path / f"thanks-{customer}"
        assert db.run("preview", "big-spender-thanks", "--customer", customer, "--out",
                      str(out), "--now", "2026-11-27T10:00").code == 0
        spent[customer] = next(out.glob("*.txt")).read_text(encoding="utf-8")
    assert "for 255,50\xa0€ with us" in spent["d1@example.com"]
    assert "for €1,234.00 with us" in spent["n1@example.com"]
