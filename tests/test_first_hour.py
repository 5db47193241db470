"""The marketer's first hour (issue 17): what a new user does in a fresh workspace."""

from __future__ import annotations

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
    assert untracked == {".gitignore", "mailer.yaml", "campaigns", "segments", "templates"}


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
    assert "500 customers" in done.stdout
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
