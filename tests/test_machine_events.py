"""Machine opens and clicks (issue 21 item 5; docs/engagement.md): an open or a click
within 10 s of delivery, an Apple Mail Privacy Protection fetch, and a link scanner's
burst over every link of a mail are stored as machine_open / machine_click and left out
of the report's opens, clicks and A/B winner. Against the real service (`mailer serve
--now`) and mails that really went through SMTP, on both databases."""

from __future__ import annotations

import hmac
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from mailer.core import machines
from tests.conftest import Workspace
from tests.smtp_server import FaultServer
from tests.test_delivery import KEY, send
from tests.test_serve import ROOMY, Service
from tests.test_serve import serving as serve_service

LINKS = ("https://shop.example/boots", "https://shop.example/coats", "https://shop.example/hats")
TEMPLATE = ("<html><body><p>Hello {{ customer.first_name }},</p>"
            + "".join(f'<p><a href="{url}">{url}</a></p>' for url in LINKS)
            + '<p>{{ store.address }} · <a href="{{ links.unsubscribe }}">unsubscribe</a></p>'
            "</body></html>\n")
ADDRESSES = ["anna@example.com", "bob@example.com", "chloe@example.com"]
SAFARI = ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 "
          "(KHTML, like Gecko) Version/17.0 Safari/605.1.15")


def sent(db: Workspace, subjects: str = "Note") -> dict[str, tuple[str, list[str], datetime]]:
    """`note` sent to ADDRESSES: email -> (its open pixel, its click links, sent_at)."""
    db.write("mailer.yaml", ROOMY)
    db.write("segments/everyone.yaml", "description: all\nall: [{orders: {at_least: 0}}]\n")
    db.write("templates/note.html", TEMPLATE)
    db.write("campaigns/note.yaml", "name: Note\ntrigger: once\nat: 2026-11-23T09:00\n"
             f"grace: 2d\nsegment: everyone\ntemplate: note.html\nsubject: {subjects}\n")
    rows = ["id,email,first_name"] + [f"C{n},{a},Name{n}" for n, a in enumerate(ADDRESSES)]
    db.write("customers.csv", "\n".join(rows) + "\n")
    assert db.run("import", "customers", "customers.csv", "--now", "2026-01-01").code == 0
    with FaultServer() as server:
        assert send(db, server, "note")["sent"] == len(ADDRESSES)
    times = {email: _utc(at) for email, at in db.query(
        "SELECT c.email, d.sent_at FROM deliveries d JOIN customers c ON c.id = d.customer_id")}
    found = {}
    for caught in server.caught:
        part = caught.message().get_body(("html",))
        assert part is not None
        hrefs = re.findall(r'(?:href|src)="([^"]+)"', str(part.get_content()))
        pixel = next(h for h in hrefs if "/o/" in h)
        found[caught.recipient] = (pixel, [h for h in hrefs if "/c/" in h],
                                   times[caught.recipient])
    return found


def _utc(at: datetime | str) -> datetime:
    """A stored time (SQLite hands back text, naive) as an aware UTC datetime."""
    moment = datetime.fromisoformat(at) if isinstance(at, str) else at
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@contextmanager
def serving(db: Workspace, now: datetime) -> Iterator[Service]:
    """`mailer serve --now NOW`; on leaving, stopped cleanly (its pending hits written)."""
    with serve_service(db, now.strftime("%Y-%m-%dT%H:%M:%SZ")) as service:
        yield service


def events(db: Workspace) -> list[tuple[Any, ...]]:
    return [tuple(row) for row in db.query(
        "SELECT c.email, e.kind, e.url, e.user_agent, e.ip_hash FROM events e "
        "JOIN customers c ON c.id = e.customer_id ORDER BY e.id")]


def wait_for(db: Workspace, count: int) -> list[tuple[Any, ...]]:
    """The events once COUNT are stored (hits are written in batches)."""
    deadline = time.monotonic() + 10
    while len(events(db)) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    return events(db)


def test_an_open_5_s_after_delivery_is_a_machines_and_11_s_after_a_readers(db: Workspace
                                                                            ) -> None:
    mails = sent(db)
    anna, bob = mails["anna@example.com"], mails["bob@example.com"]
    with serving(db, anna[2] + timedelta(seconds=5)) as service:
        assert service.request("GET", anna[0], headers={"User-Agent": SAFARI})[0] == 200
    with serving(db, bob[2] + timedelta(seconds=11)) as service:
        assert service.request("GET", bob[0], headers={"User-Agent": SAFARI})[0] == 200
    assert [row[:2] for row in wait_for(db, 2)] == [("anna@example.com", "machine_open"),
                                                   ("bob@example.com", "open")]


def test_an_apple_privacy_proxy_open_is_a_machines_and_the_ip_is_never_stored(
        db: Workspace) -> None:
    mails = sent(db)
    anna, bob = mails["anna@example.com"], mails["bob@example.com"]
    with serving(db, anna[2] + timedelta(minutes=5)) as service:
        service.request("GET", anna[0], headers={"User-Agent": "Mozilla/5.0"})
        service.request("GET", bob[0], headers={"User-Agent": SAFARI})
    rows = wait_for(db, 2)
    digest = hmac.new(KEY.encode(), b"127.0.0.1", "sha256").hexdigest()
    assert rows == [("anna@example.com", "machine_open", None, "Mozilla/5.0", digest),
                    ("bob@example.com", "open", None, SAFARI, digest)]
    every = db.query("SELECT * FROM events")
    assert not any("127.0.0.1" in str(value) for row in every for value in row)


def test_a_scanner_burst_over_every_link_is_machine_clicks_a_readers_click_is_not(
        db: Workspace) -> None:
    mails = sent(db)
    anna, bob = mails["anna@example.com"], mails["bob@example.com"]
    assert len(anna[1]) == len(LINKS)
    with serving(db, anna[2] + timedelta(minutes=5)) as service:
        # the scanner's first click is stored as a reader's, then reclassified
        assert service.request("GET", anna[1][0])[0] == 302
        assert [row[1] for row in wait_for(db, 1)] == ["click"]
        for url in anna[1][1:]:
            assert service.request("GET", url)[0] == 302
        assert service.request("GET", bob[1][1])[0] == 302
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and sum(
                row[1] == "machine_click" for row in events(db)) < len(LINKS):
            time.sleep(0.05)
    rows = sorted(row[:3] for row in events(db))
    assert rows == sorted([("anna@example.com", "machine_click", url) for url in LINKS]
                          + [("bob@example.com", "click", LINKS[1])])


def test_the_report_and_the_winner_count_readers_only(db: Workspace) -> None:
    # variants by plan order: C0 anna 1, C1 bob 2, C2 chloe 1
    mails = sent(db, subjects='["Subject A", "Subject B"]')
    anna, bob = mails["anna@example.com"], mails["bob@example.com"]
    with serving(db, anna[2] + timedelta(seconds=30)) as service:
        service.request("GET", anna[1][0])  # a reader's click on variant 1
        service.request("GET", anna[0], headers={"User-Agent": SAFARI})
        service.request("GET", bob[0], headers={"User-Agent": "Mozilla/5.0"})
        for url in bob[1]:  # a scanner on variant 2's only sent mail
            service.request("GET", url)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and sum(
                row[1] == "machine_click" for row in events(db)) < len(LINKS):
            time.sleep(0.05)
    report = db.run("report", "note", "--json").json()
    assert report["opens"] == {"mails": 1, "total": 1}
    assert report["clicks"] == {"mails": 1, "total": 1}
    assert report["machine_opens"] == {"mails": 1, "total": 1}
    assert report["machine_clicks"] == {"mails": 1, "total": 3}
    assert [(v["variant"], v["opened"], v["clicked"]) for v in report["variants"]] == [
        (1, 1, 1), (2, 0, 0)]
    assert report["winner"]["variant"] == 1
    text = db.run("report", "note").stdout
    assert "machine opens" in text and "machine clicks" in text


def test_a_burst_is_every_link_within_2_s_and_needs_two_links() -> None:
    t = datetime(2026, 11, 23, 10, tzinfo=UTC)
    s = timedelta(seconds=1)
    clicks = [(t, "a"), (t + s, "b"), (t + 2 * s, "c"), (t + 10 * s, "a")]
    assert machines.bursts(clicks, 3) == {0, 1, 2}
    assert machines.bursts([*clicks[:2], (t + 2.5 * s, "c")], 3) == set()
    assert machines.bursts([(t, "a")], 1) == set()
    assert machines.kind_of("click", at=t + 9 * s, sent_at=t) == "machine_click"
    assert machines.kind_of("click", at=t + 10 * s, sent_at=t) == "click"
    assert machines.kind_of("open", at=t + 60 * s, sent_at=t, user_agent="Mozilla/5.0") \
        == "machine_open"
    assert machines.kind_of("open", at=t + 60 * s, sent_at=t, ip="17.58.1.2") == "machine_open"
    assert machines.kind_of("open", at=t + 60 * s, sent_at=t, user_agent=SAFARI,
                            ip="203.0.113.9") == "open"
