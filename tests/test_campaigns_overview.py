"""`mailer campaigns`: every campaign's state, next due time, last plan, audience and what
its mails did, through the real CLI after a real send and the real service's events."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any

from sqlalchemy import text

from tests.conftest import Workspace
from tests.smtp_server import FaultServer
from tests.test_delivery import send
from tests.test_serve import BASE, ROOMY, TEMPLATE, Service, hrefs, html_of
from tests.test_serve import serving as serve_service

NOW = "2026-11-23T10:00"  # Berlin: 09:00Z
ADDRESSES = ["anna@example.com", "bob@example.com", "chloe@example.com"]
COMMON = "segment: everyone\ntemplate: note.html\n"
CAMPAIGNS = {
    "gone": "name: Autumn note\ntrigger: once\nat: 2026-11-01T09:00\ngrace: 1d\n"
            f"{COMMON}subject: Autumn\n",
    "sale": "name: Winter sale\ntrigger: promotion\nstarts: 2026-11-20T00:00\n"
            f"ends: 2026-11-30T00:00\n{COMMON}subject: 20% off\n",
    "newsletter": "name: December news\ntrigger: schedule\nschedule: 0 9 1 12 *\n"
                  f"{COMMON}subject: News\n",
}


def store(db: Workspace) -> None:
    """The three campaigns above and three customers (ids C0, C1, C2) in one segment."""
    db.write("mailer.yaml", ROOMY)
    db.write("segments/everyone.yaml", "description: all\nall: [{orders: {at_least: 0}}]\n")
    db.write("templates/note.html", TEMPLATE)
    for slug, definition in CAMPAIGNS.items():
        db.write(f"campaigns/{slug}.yaml", definition)
    rows = ["id,email,first_name"] + [f"C{n},{a},Name{n}" for n, a in enumerate(ADDRESSES)]
    db.write("customers.csv", "\n".join(rows) + "\n")
    assert db.run("import", "customers", "customers.csv", "--now", "2026-01-01").code == 0


def send_mails(db: Workspace, campaign: str, now: str = NOW) -> dict[str, EmailMessage]:
    """CAMPAIGN sent through a real SMTP server: each recipient's mail."""
    with FaultServer() as server:
        summary = send(db, server, campaign, now=now)
    assert summary["sent"] == len(server.caught)
    return {c.recipient: c.message() for c in server.caught}


@contextmanager
def serving(db: Workspace) -> Iterator[Service]:
    """`mailer serve` (tests/test_serve.py's serving); leaving stops it cleanly, which
    writes every open and click it still held (they are written in batches a moment after
    the answer), and fails the test if the service failed."""
    with serve_service(db) as service:
        yield service


def link(mail: EmailMessage, path: str) -> str:
    return next(h for h in hrefs(mail) if f"/{path}/" in h)


def pixel(mail: EmailMessage) -> str:
    found = re.search(rf'<img src="({BASE}/o/[^"]+)"', html_of(mail))
    assert found is not None
    return found.group(1)


def unsubscribe_link(mail: EmailMessage) -> str:
    return str(mail["List-Unsubscribe"]).split("<", 1)[1].split(">", 1)[0]


ONE_CLICK = {"Content-Type": "application/x-www-form-urlencoded"}


def overview(db: Workspace, now: str) -> dict[str, dict[str, Any]]:
    result = db.run("campaigns", "--now", now, "--json")
    assert result.code == 0, result.stdout + result.stderr
    found = result.json()["campaigns"]
    assert [line["campaign"] for line in found] == sorted(line["campaign"] for line in found)
    return {line.pop("campaign"): line for line in found}


def near(stamp: str | None, moment: str) -> bool:
    """STAMP (ISO 8601 Z) within a minute after MOMENT: a run records its --now plus the
    seconds it took to start."""
    assert stamp is not None
    at = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    start = datetime.fromisoformat(moment).replace(tzinfo=UTC)
    return start <= at < start + timedelta(minutes=1)


def test_each_state_with_its_next_due_time_audience_and_what_the_mails_did(
        db: Workspace) -> None:
    store(db)
    mails = send_mails(db, "sale")
    assert sorted(mails) == ADDRESSES
    with serving(db) as service:
        anna, bob, chloe = (mails[address] for address in ADDRESSES)
        for url in (pixel(anna), pixel(bob), link(anna, "c"), link(anna, "c")):
            assert service.request("GET", url)[0] in (200, 302)
        status, _, _ = service.request("POST", unsubscribe_link(chloe),
                                       body="List-Unsubscribe=One-Click", headers=ONE_CLICK)
        assert status == 200
    # Two files that do not validate: a YAML error, and a promotion without its end.
    db.write("campaigns/broken.yaml", "name: [Spring\n")
    db.write("campaigns/half.yaml", f"name: Spring sale\ntrigger: promotion\n"
                                    f"starts: 2026-03-01\n{COMMON}subject: Spring\n")

    found = overview(db, NOW)
    last_planned = found["sale"].pop("last_planned")
    assert near(last_planned, "2026-11-23T09:00:00")
    counts = {"sent": 0, "opened": 0, "clicked": 0, "unsubscribed": 0, "paused": None}
    assert found == {
        "broken": {"name": None, "trigger": None, "state": "draft", "next_due": None,
                   "last_planned": None, "audience": None, **counts},
        "gone": {"name": "Autumn note", "trigger": "once", "state": "ended", "next_due": None,
                 "last_planned": None, "audience": 3, **counts},
        "half": {"name": "Spring sale", "trigger": "promotion", "state": "draft",
                 "next_due": None, "last_planned": None, "audience": None, **counts},
        "newsletter": {"name": "December news", "trigger": "schedule", "state": "scheduled",
                       "next_due": "2026-12-01T08:00:00Z", "last_planned": None,
                       "audience": 3, **counts},
        # due now: its next due time is now
        "sale": {"name": "Winter sale", "trigger": "promotion", "state": "running",
                 "next_due": "2026-11-23T09:00:00Z", "audience": 3, "sent": 3, "opened": 2,
                 "clicked": 1, "unsubscribed": 1, "paused": None}}

    shown = db.run("campaigns", "--now", NOW)
    assert shown.code == 0, shown.stderr
    rows = {line.split("│")[1].strip(): [cell.strip() for cell in line.split("│")[2:-1]]
            for line in shown.stdout.splitlines() if line.startswith("│")
            and line.split("│")[1].strip()}
    assert rows["sale"] == ["Winter sale", "promotion", "running", "now",
                            rows["sale"][4], "3", "3", "2", "1", "1"]
    assert rows["sale"][4].startswith("2026-11-23 09:0")
    assert rows["newsletter"][2:5] == ["scheduled", "2026-12-01 08:00Z", "-"]
    assert rows["gone"][2:4] == ["ended", "-"]
    assert rows["broken"][:3] == ["?", "?", "draft"] and rows["half"][2] == "draft"
    assert "campaigns at 2026-11-23T09:00:00Z" in shown.stdout
    assert "draft half: campaigns/half.yaml:1: a promotion campaign needs ends" in shown.stdout
    assert "draft broken: campaigns/broken.yaml:2: YAML syntax: " in shown.stdout

    # After the sale's end nothing of it can go out any more: ended, its counts kept.
    later = overview(db, "2026-12-05T10:00")
    assert later["sale"]["state"] == "ended" and later["sale"]["next_due"] is None
    assert later["sale"]["sent"] == 3 and later["sale"]["opened"] == 2
    assert later["newsletter"]["state"] == "scheduled"
    assert later["newsletter"]["next_due"] == "2027-12-01T08:00:00Z"


def test_a_mail_still_in_flight_keeps_an_ended_campaign_running(db: Workspace) -> None:
    store(db)
    send_mails(db, "sale")
    # A sender that died mid-send leaves its row `sending` until recovery resolves it.
    engine = db.engine()
    try:
        with engine.begin() as conn:
            conn.execute(text("UPDATE deliveries SET status = 'sending' WHERE id = "
                              "(SELECT MIN(id) FROM deliveries)"))
    finally:
        engine.dispose()
    assert overview(db, "2026-12-05T10:00")["sale"]["state"] == "running"


def test_a_queued_mail_keeps_an_ended_campaign_running_until_its_expiry(db: Workspace) -> None:
    from sqlalchemy import update

    from mailer.store.models import Delivery

    store(db)
    send_mails(db, "sale")
    engine = db.engine()
    try:
        with engine.begin() as conn:  # a mail deferred by its server, to retry until the 6th
            conn.execute(update(Delivery).where(Delivery.id == conn.execute(
                text("SELECT MIN(id) FROM deliveries")).scalar_one()).values(
                status="deferred", expires_at=datetime(2026, 12, 6, 9, tzinfo=UTC)))
    finally:
        engine.dispose()
    assert overview(db, "2026-12-05T10:00")["sale"]["state"] == "running"
    assert overview(db, "2026-12-06T11:00")["sale"]["state"] == "ended"  # past its expiry


def test_a_schedule_due_within_its_grace_is_running_and_a_workspace_without_campaigns_is_empty(
        db: Workspace) -> None:
    store(db)
    found = overview(db, "2026-12-01T10:00")  # fired at 09:00 Berlin, 6 h of grace
    assert found["newsletter"]["state"] == "running"
    assert found["newsletter"]["next_due"] == "2026-12-01T09:00:00Z"
    assert found["sale"]["state"] == "ended" and found["gone"]["state"] == "ended"
    for slug in CAMPAIGNS:
        (db.root / "campaigns" / f"{slug}.yaml").unlink()
    assert db.run("campaigns", "--json").json() == {"campaigns": []}
    empty = db.run("campaigns")
    assert empty.code == 0 and "no campaigns yet" in empty.stdout
