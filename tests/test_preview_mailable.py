"""`mailer preview` samples customers the plan would mail, and says why not of the others
(issue 17, item 8): through the real CLI, on both databases."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SETTINGS, Workspace
from tests.smtp_server import FaultServer

ROOT = Path(__file__).resolve().parent.parent
DUE = "2026-11-27T10:00"  # black-friday runs from 27 November 08:00 to 29 November 08:00
EARLY = "2026-11-23T10:00"
KEY = "test-secret-key-0123456789"
CUSTOMERS = """\
id,email,first_name,tags,subscribed
C1,anna@example.com,Anna,vip,true
C2,bob@example.org,Bob,,false
C3,chloe@example.net,Chloe,,true
C4,dan@example.com,Dan,,true
C5,eve@example.com,Eve,,true
"""
ORDERS = """\
order_id,customer_id,placed_at,total,sku,category,quantity,price
O1,C1,2026-11-01T10:00,120.00,CO-1,coffee,2,60.00
O2,C2,2026-10-01T10:00,15.50,BO-1,books,1,15.50
O3,C3,2026-09-01T10:00,10,SH-1,shoes,1,10
O5,C5,2026-09-02T10:00,30,SH-2,shoes,1,30
"""
SAMPLE_KEYS = {"id", "email", "intro", "variant", "subject", "mailable", "reason",
               "send_after"}


@pytest.fixture
def shop(db: Workspace) -> Workspace:
    """The demo's campaigns over five customers: C1 (vip) and C3 may be mailed, C2 is not
    subscribed, C4 has no order (outside active-buyers), C5 unsubscribed."""
    for part in ("campaigns", "segments", "surveys", "templates"):
        shutil.copytree(ROOT / part, db.root / part)
    db.write("mailer.yaml", SETTINGS + "policy: {frequency: [{max: 1, per: 1d}]}\n")
    db.write("customers.csv", CUSTOMERS)
    db.write("orders.csv", ORDERS)
    assert db.run("import", "customers", "customers.csv", "--now", EARLY).code == 0
    assert db.run("import", "orders", "orders.csv", "--now", EARLY).code == 0
    assert db.run("unsubscribe", "eve@example.com", "--now", EARLY).code == 0
    return db


def preview(shop: Workspace, *args: str, now: str = DUE) -> dict[str, Any]:
    result = shop.run("preview", "black-friday", *args, "--now", now, "--json")
    assert result.code == 0, result.stdout + result.stderr
    document = result.json()
    assert set(document) == {"campaign", "now", "out", "samples"}
    assert all(set(sample) == SAMPLE_KEYS for sample in document["samples"])
    return document


def marks(document: dict[str, Any]) -> list[tuple[str, bool, str | None]]:
    return [(s["id"], s["mailable"], s["reason"]) for s in document["samples"]]


def test_samples_are_the_customers_the_plan_would_mail(shop: Workspace, tmp_path: Path) -> None:
    document = preview(shop, "--sample", "5", "--out", str(tmp_path / "out"))
    # not C2 (not subscribed), C4 (no order) or C5 (unsubscribed), though asked for five
    assert marks(document) == [("C1", True, None), ("C3", True, None)]
    assert [s["intro"] for s in document["samples"]] == ["vip", "default"]
    index = (tmp_path / "out" / "index.html").read_text()
    assert "<th>mailable</th>" in index and index.count("<td>yes</td>") == 2
    plan = shop.run("plan", "black-friday", "--now", DUE, "--json").json()
    assert sorted(r["id"] for r in plan["recipients"]) == ["C1", "C3"]  # the same judge
    text = shop.run("preview", "black-friday", "--now", DUE)
    assert text.code == 0, text.stderr
    assert "mailable" in text.stdout and "would mail nobody" not in text.stdout
    rows = [line for line in text.stdout.splitlines() if "@" in line]
    assert len(rows) == 2 and all("yes" in row for row in rows)


def test_a_customer_asked_for_says_whether_and_why_not(shop: Workspace) -> None:
    assert marks(preview(shop, "--customer", "C3")) == [("C3", True, None)]
    assert marks(preview(shop, "--customer", "chloe@example.net")) == [("C3", True, None)]
    assert marks(preview(shop, "--customer", "bob@example.org")) == \
        [("C2", False, "not_subscribed")]
    assert marks(preview(shop, "--customer", "C4")) == [("C4", False, "not_in_segment")]
    assert marks(preview(shop, "--customer", "eve@example.com")) == \
        [("C5", False, "unsubscribed")]
    # the mail is still rendered: the marketer sees what they would have got
    text = shop.run("preview", "black-friday", "--customer", "bob@example.org", "--now", DUE)
    assert text.code == 0, text.stderr
    assert "C2 would not get this mail at 2026-11-27T09:00:00Z: not_subscribed" in text.stdout
    assert "no: not_subscribed" in text.stdout
    assert "30% off" in text.stdout  # the mail's text follows the table
    unknown = shop.run("preview", "black-friday", "--customer", "C9", "--json")
    assert unknown.code == 1
    assert unknown.json()["error"]["message"] == "no customer with the id or address C9"


def test_when_the_plan_would_mail_nobody_segment_members_stand_in(shop: Workspace) -> None:
    early = preview(shop, "--sample", "3", now=EARLY)
    assert marks(early) == [("C1", False, "not_due"), ("C2", False, "not_due"),
                            ("C3", False, "not_due")]
    text = shop.run("preview", "black-friday", "--sample", "3", "--now", EARLY)
    assert ("the plan at 2026-11-23T09:00:00Z would mail nobody of black-friday: these "
            "members of its segment stand in, with the reason each would not get it") \
        in text.stdout
    assert text.stdout.count("no: not_due") == 3


def test_caps_and_mails_already_planned_are_the_planners_reasons(shop: Workspace) -> None:
    # another campaign mailed C1 and C3 an hour ago: the cap (1 a day) holds them back
    shop.write("segments/everyone.yaml", "description: all\nall: [{orders: {at_least: 0}}]\n")
    shop.write("campaigns/note.yaml", "name: Note\ntrigger: once\nat: 2026-11-27T08:00\n"
               "grace: 1d\nsegment: everyone\ntemplate: newsletter.html\nsubject: A note\n")
    shop.env.update({"MAILER_SECRET_KEY": KEY})
    with FaultServer() as server:
        shop.env["MAILER_SMTP_URL"] = server.url
        sent = shop.run("send", "note", "--now", "2026-11-27T09:00", "--json")
        assert sent.code == 0, sent.stdout + sent.stderr
        assert sent.json()["sent"] == 3  # C1, C3, C4
        capped = preview(shop, "--sample", "3")
        assert marks(capped) == [("C1", False, "frequency_cap"), ("C2", False, "not_subscribed"),
                                 ("C3", False, "frequency_cap")]
        # a day later the cap has room; once black-friday went out, nobody is due it again
        later = "2026-11-28T10:00"
        assert marks(preview(shop, "--customer", "C1", now=later)) == [("C1", True, None)]
        assert shop.run("send", "black-friday", "--now", later, "--json").json()["sent"] == 2
        assert marks(preview(shop, "--customer", "C1", now=later)) == \
            [("C1", False, "already_sent")]
