""""View in your browser" (issue 17): `GET /b/TOKEN` on the real service shows the mail that
went through SMTP, as its reader got it, and counts one open; every other link is 404."""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from email.message import EmailMessage
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from mailer.mail.links import Claims, recipient_links, sign, signed_url
from tests.conftest import Workspace
from tests.smtp_server import FaultServer
from tests.test_delivery import KEY, send
from tests.test_delivery import shop as note_shop
from tests.test_serve import Service, events, html_of
from tests.test_serve import serving as serve_service

ROOT = Path(__file__).resolve().parent.parent
BASE = "https://mail.shop.example"
SETTINGS = """\
store: {name: Pine & Co, address: "1 Market St, Springfield", url: "https://shop.example",
        currency: EUR}
sender: {from: "Pine & Co <hello@shop.example>"}
timezone: Europe/Berlin
tracking: {base_url: https://mail.shop.example}
"""
SALE_OPEN = "2026-11-27T09:00"  # black-friday runs from 2026-11-27T08:00, Berlin
# a 1×1 PNG: the browser view must show a mail's data: images too
LOGO = ("data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4"
        "2mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")


def demo_shop(db: Workspace) -> None:
    """The demo's Black Friday promotion (A/B subjects, intros by segment, a coupon per
    mail, the footer's browser link) for four customers: anna (vip), bob, chloe, and a
    temp451 address the test server defers (a row never sent)."""
    for part in ("segments", "templates"):
        shutil.copytree(ROOT / part, db.root / part)
    db.write("campaigns/black-friday.yaml",
             (ROOT / "campaigns" / "black-friday.yaml").read_text(encoding="utf-8"))
    layout = (db.root / "templates" / "layout.html").read_text(encoding="utf-8")
    db.write("templates/layout.html", layout.replace(
        '{{ store.name }}</a>', f'<img src="{LOGO}" alt="" width="8" height="8"> '
                                '{{ store.name }}</a>', 1))
    db.write("mailer.yaml", SETTINGS)
    db.write("customers.csv", "id,email,first_name,tags,timezone\n"
                              "C1,anna@example.com,Anna,vip,Europe/Berlin\n"
                              "C2,bob@example.org,Bob,,America/New_York\n"
                              "C3,chloe@example.net,Chloë,,\n"
                              "C4,temp451@example.com,Tom,,\n")
    db.write("orders.csv", "order_id,customer_id,placed_at,total,category\n"
                           "O1,C1,2026-11-01,120,coffee\nO2,C2,2026-10-01,15,books\n"
                           "O3,C3,2026-09-01,40,tea\nO4,C4,2026-09-02,10,tea\n")
    assert db.run("import", "customers", "customers.csv", "--now", "2026-11-20").code == 0
    assert db.run("import", "orders", "orders.csv", "--now", "2026-11-20").code == 0


def sent_sale(db: Workspace) -> dict[str, EmailMessage]:
    """The promotion sent into the test SMTP server: the caught mails by recipient."""
    demo_shop(db)
    with FaultServer() as server:
        summary = send(db, server, "black-friday", now=SALE_OPEN)
    assert (summary["sent"], summary["deferred"]) == (3, 1), summary
    return {c.recipient: c.message() for c in server.caught}


class Served(Service):
    """The service of `mailer serve` (tests/test_serve.py's serving); `stop()` ends it and
    returns its log."""

    def __init__(self, service: Service, stop: Callable[[], None]) -> None:
        super().__init__(service.port, service.log)
        self._stop = stop

    def stop(self) -> str:
        self._stop()
        return self.log()


@contextmanager
def serving(db: Workspace) -> Iterator[Served]:
    with ExitStack() as running:
        yield Served(running.enter_context(serve_service(db)), running.close)


def browser_link(mail: EmailMessage) -> str:
    """The footer's "View in your browser" link."""
    found = re.search(r'<a href="([^"]+)"[^>]*>View in your browser</a>', html_of(mail))
    assert found is not None and found.group(1).startswith(f"{BASE}/b/")
    return found.group(1)


def row_of(db: Workspace, email: str) -> int:
    return int(db.query("SELECT d.id FROM deliveries d JOIN customers c ON c.id = "
                        "d.customer_id WHERE c.email = :e", e=email)[0][0])


class _Text(HTMLParser):
    """A page's visible text and the hrefs of its links."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.words: list[str] = []
        self.hrefs: set[str] = set()
        self._hidden = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._hidden += tag in ("style", "title")
        self.hrefs |= {value for name, value in attrs if name == "href" and value}

    def handle_endtag(self, tag: str) -> None:
        self._hidden -= tag in ("style", "title")

    def handle_data(self, data: str) -> None:
        if not self._hidden:
            self.words += data.split()


def read(html: str) -> tuple[str, set[str]]:
    parser = _Text()
    parser.feed(html)
    return " ".join(parser.words), parser.hrefs


def opens(db: Workspace, count: int) -> list[tuple[Any, ...]]:
    """The open events once COUNT are written (the service writes them in batches, in
    the order the requests came: once a later request's open is there, an earlier one's
    would be too)."""
    deadline = time.monotonic() + 10
    while len(events(db, "open")) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    return events(db, "open")


def test_the_browser_link_shows_the_mail_its_reader_got_and_counts_one_open(
        db: Workspace) -> None:
    mails = sent_sale(db)
    with serving(db) as service:
        pages = {}
        for email, mail in mails.items():
            status, headers, body = service.request("GET", browser_link(mail))
            assert status == 200, body
            pages[email] = body.decode("utf-8")
            assert headers["content-type"] == "text/html; charset=utf-8"
        for email, mail in mails.items():
            sent = html_of(mail).replace("\r\n", "\n")
            # what the mail carried, but its open pixel (the view is the open), written
            # in 7 bits as the mail was
            pixel = re.search(rf'<img src="{BASE}/o/[^"]+"[^>]*>', sent)
            assert pixel is not None
            page = pages[email].replace("\r\n", "\n")  # line ends are the wire's choice
            assert page.encode("ascii", "xmlcharrefreplace").decode() == \
                sent.replace(pixel.group(0), "")
            text, links = read(pages[email])
            assert (text, links) == read(sent)
            assert sum(h.startswith(f"{BASE}/c/") for h in links) == 2  # brand, the button
            assert browser_link(mail) in links
        anna, bob = pages["anna@example.com"], pages["bob@example.org"]
        assert "As one of our best customers" in anna and "Here is something" in bob
        anna_code = db.query("SELECT code FROM coupons WHERE delivery_id = :r",
                             r=row_of(db, "anna@example.com"))[0][0]
        assert anna_code in anna and anna_code not in bob
        # the sale's end in each reader's zone, as their mail said it
        assert "8:00\u202fAM CET" in anna and "2:00\u202fAM EST" in bob

        url = browser_link(mails["anna@example.com"])
        status, headers, body = service.request("GET", url)
        assert status == 200
        assert headers["cache-control"] == "private, no-store"
        assert headers["x-robots-tag"] == "noindex"
        assert headers["referrer-policy"] == "no-referrer"
        assert headers["x-frame-options"] == "DENY" and headers["server"] == "mailer"
        assert headers["content-security-policy"] == (
            "default-src 'none'; img-src * data:; style-src 'unsafe-inline' https:; "
            "font-src https: data:; form-action 'none'; base-uri 'none'; "
            "frame-ancestors 'none'")
        assert "set-cookie" not in headers
        head_status, head_headers, head_body = service.request("HEAD", url)
        assert (head_status, head_body) == (200, b"")
        assert {k: v for k, v in head_headers.items() if k != "date"} == \
            {k: v for k, v in headers.items() if k != "date"}
        # three views, one more of anna's, a HEAD: four opens, the HEAD none
        status, _, _ = service.request("GET", url)
        assert status == 200
        recorded = opens(db, 5)
    assert sorted(recorded) == sorted(
        [(email, "black-friday", row_of(db, email), None, None, None) for email in mails]
        + [("anna@example.com", "black-friday", row_of(db, "anna@example.com"), None, None,
            None)] * 2)
    assert db.run("report", "black-friday", "--json").json()["opens"] == {
        "mails": 3, "total": 5}


def test_links_that_name_no_sent_mail_are_not_valid(db: Workspace) -> None:
    mails = sent_sale(db)
    anna = browser_link(mails["anna@example.com"])
    token = anna.rsplit("/", 1)[1]
    anna_row = row_of(db, "anna@example.com")
    never_sent = row_of(db, "temp451@example.com")
    assert db.query("SELECT status FROM deliveries WHERE id = :r", r=never_sent)[0][0] == \
        "deferred"
    payload, signature = token.split(".")
    unsubscribe = next(h for h in re.findall(r'href="([^"]+)"', html_of(
        mails["anna@example.com"])) if h.startswith(f"{BASE}/u/"))
    refused = {
        "a row never sent": recipient_links(BASE, customer="C4", campaign="black-friday",
                                            message=str(never_sent), key=KEY)["browser"],
        "no such row": signed_url(BASE, "browser", "C1", "black-friday", "999999", KEY),
        "another customer's row": signed_url(BASE, "browser", "C2", "black-friday",
                                             str(anna_row), KEY),
        "another campaign": signed_url(BASE, "browser", "C1", "birthday", str(anna_row), KEY),
        "a preview's link": signed_url(BASE, "browser", "C1", "black-friday", "preview", KEY),
        "a forged token": "/b/" + sign(Claims("browser", "C1", "black-friday", str(anna_row)),
                                       "a-guessed-key"),
        "a tampered token": f"/b/{payload[:-2]}AA.{signature}",
        "a cut token": f"/b/{payload}.",
        "an unsubscribe token": "/b/" + unsubscribe.rsplit("/", 1)[1],
        "an open token": "/b/" + signed_url(BASE, "open", "C1", "black-friday",
                                            str(anna_row), KEY).rsplit("/", 1)[1],
    }
    with serving(db) as service:
        for why, url in refused.items():
            status, _, body = service.request("GET", url)
            assert status == 404 and b"This link does not work" in body, why
            assert service.request("HEAD", url)[0] == 404, why
        # and the browser link is no unsubscribe link
        status, _, _ = service.request("POST", f"/u/{token}", body="")
        assert status == 400
        assert db.query("SELECT consent FROM customers WHERE store_id = 'C1'")[0][0] == \
            "subscribed"
        assert service.request("GET", anna)[0] == 200
        recorded = opens(db, 1)  # written after any the refused links would have made
    assert recorded == [("anna@example.com", "black-friday", anna_row, None, None, None)]


def test_a_mail_that_no_longer_renders_is_a_plain_500_and_a_log_line(db: Workspace) -> None:
    """The note divides by the customer's `divisor`: 1 when it was sent, 0 now."""
    note_shop(db, ["anna@example.com"])
    with FaultServer() as server:
        assert send(db, server, "note")["sent"] == 1
    db.write("changed.csv", "id,email,divisor\nC000,anna@example.com,0\n")
    assert db.run("import", "customers", "changed.csv", "--now", "2026-12-01").code == 0
    row = row_of(db, "anna@example.com")
    url = recipient_links(BASE, customer="C000", campaign="note", message=str(row),
                          key=KEY)["browser"]
    with serving(db) as service:
        status, headers, body = service.request("GET", url)
        assert status == 500 and b"This mail cannot be shown here" in body
        assert b"Traceback" not in body and b"Division" not in body
        assert headers["content-security-policy"].startswith("default-src 'none'; style-src")
        log = service.stop()
    assert f"browser view of row {row}: render_error: templates/note.html:2: " \
           "ZeroDivisionError" in log
    assert "Traceback" not in log
    assert events(db, "open") == []


@pytest.mark.parametrize("db", ["sqlite"], indirect=True)
def test_the_browser_view_shows_the_mail_in_chromium_under_its_policy(db: Workspace) -> None:
    from tests.test_preview_browser import ARTIFACTS
    from tests.test_serve_browser import chromium

    mails = sent_sale(db)
    url = browser_link(mails["anna@example.com"])
    with serving(db) as service, chromium() as browser:
        page = browser.new_page(viewport={"width": 680, "height": 900})
        problems: list[str] = []
        # (the browser's own ask for /favicon.ico is answered 404: not the mail's)
        page.on("console", lambda message: problems.append(message.text)
                if message.type in ("error", "warning")
                and not message.location.get("url", "").endswith("/favicon.ico") else None)
        page.on("pageerror", lambda error: problems.append(str(error)))
        local = f"http://127.0.0.1:{service.port}" + re.sub(r"^https?://[^/]+", "", url)
        response = page.goto(local)
        assert response is not None and response.status == 200
        heading = page.locator("h1")
        assert heading.is_visible()
        assert heading.inner_text() == "30% off everything \u2014 for 48 hours"
        code = db.query("SELECT code FROM coupons WHERE delivery_id = :r",
                        r=row_of(db, "anna@example.com"))[0][0]
        assert page.locator(".code").inner_text() == code
        # the mail's own styles and its data: image are let in, nothing is refused
        assert page.locator("h1").evaluate("e => getComputedStyle(e).color") == \
            "rgb(36, 85, 61)"
        assert page.locator(f'img[src="{LOGO}"]').evaluate("e => e.naturalWidth") == 1
        assert page.locator("a", has_text="Shop the sale").get_attribute(
            "href").startswith(f"{BASE}/c/")
        page.screenshot(path=str(ARTIFACTS / "browser-view.png"), full_page=True)
        assert problems == []
        assert browser.contexts[0].cookies() == []
        recorded = opens(db, 1)
    assert (ARTIFACTS / "browser-view.png").stat().st_size > 5_000
    assert recorded == [("anna@example.com", "black-friday", row_of(db, "anna@example.com"),
                         None, None, None)]
