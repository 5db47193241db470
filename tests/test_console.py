"""`mailer console` (issue 23) through the real server: no data without a session, forged
and other-purpose cookies refused, CSRF refused, failed logins slowed and logged, the
security headers, escaping, the customer search; and in headless Chromium every page at
phone and desk widths (screenshots in test-artifacts/), answering "how did Black Friday do,
who is customer C000123, and what did unhappy readers write" from the pages alone.

One store built like the demo (demo-data, a Black Friday sweep into a real SMTP server,
readers' opens, clicks and survey answers) and one console process serve every test of
the module, on each database."""

from __future__ import annotations

import http.client
import json
import mailbox
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from sqlalchemy import text

from mailer.mail.links import Claims, sign
from mailer.store.events import add
from mailer.store.insight.responses import Answer, record_answers
from mailer.web.console.auth import hash_password
from tests.conftest import Workspace, _scratch_database
from tests.smtp_server import FaultServer
from tests.test_preview_browser import ARTIFACTS, CHROMIUM, _chromium

KEY = "console-test-secret-key"
PASSWORD = "correct horse battery"
HASH = hash_password(PASSWORD, n=2**14)  # the smallest N accepted: a fast test
NOW = "2026-12-01T12:00"
XSS_NAME = '<img src=x onerror="document.title=\'pwned\'">Eve'
XSS_COMMENT = "<script>document.title='pwned'</script>Arrived a week late, box crushed."
XSS_SUBJECT = "<b>Bold</b> <script>document.title='pwned'</script> deal"
PAGES = ["/campaigns", "/audit", "/campaigns/black-friday", "/customers?q=c0001",
         "/customers/C000123", "/segments", "/forecast", "/surveys", "/preview",
         "/preview/black-friday", "/preview/black-friday/1", "/outbox", "/outbox?q=30%25"]


def _at(value: str) -> datetime:
    return datetime.fromisoformat(value).replace(tzinfo=UTC)


def _build(shop: Workspace, outbox: Path) -> None:
    """A store like the demo's: 150 customers, Black Friday sent (the mails also in the
    Maildir OUTBOX, as `mailer sink` keeps them, with one hostile mail), what readers did."""
    assert shop.run("db", "upgrade").code == 0
    made = shop.run("demo-data", "--customers", "150", "--seed", "7", "--now",
                    "2026-11-23T10:00")
    assert made.code == 0, made.stderr
    shop.write("campaigns/xss-note.yaml", (
        f"name: {json.dumps(XSS_SUBJECT)}\ntrigger: once\nat: 2027-01-10T09:00\n"
        f"segment: active-buyers\ntemplate: promotion.html\nsubject: {json.dumps(XSS_SUBJECT)}\n"
        "topic: promotions\n"))
    with FaultServer() as server:
        shop.env.update({"MAILER_SMTP_URL": server.url, "MAILER_SECRET_KEY": KEY})
        swept = shop.run("run", "--once", "--now", "2026-11-27T10:00")
        assert swept.code == 0, swept.stderr
        box = mailbox.Maildir(str(outbox), create=True)
        for caught in server.caught:
            box.add(caught.data)
    hostile = EmailMessage()
    hostile["From"], hostile["To"], hostile["Subject"] = ("a@shop.example", "b@example.com",
                                                          XSS_SUBJECT)
    hostile["Date"] = "Sat, 28 Nov 2026 09:00:00 +0000"
    hostile.set_content("Hello https://shop.example/only-in-text\n")
    hostile.add_alternative("<p>Hi<script>document.title='pwned'</script>"
                            '<img src="https://tracker.example/p.gif" id="remote"></p>',
                            subtype="html")
    box.add(bytes(hostile))
    engine = shop.engine()
    try:
        with engine.begin() as conn:
            mails = list(conn.execute(text(
                "SELECT d.id, d.customer_id FROM deliveries d WHERE d.campaign = "
                "'black-friday' AND d.status = 'sent' ORDER BY d.id")))
            assert len(mails) > 20
            for number, (delivery, customer) in enumerate(mails[:30]):
                add(conn, "open", customer_id=customer, campaign="black-friday",
                    delivery_id=delivery, at=_at("2026-11-27T12:00"))
                if number % 3 == 0:
                    add(conn, "click", customer_id=customer, campaign="black-friday",
                        delivery_id=delivery, at=_at("2026-11-27T12:05"))
            ids = {str(row[0]): int(row[1]) for row in conn.execute(text(
                "SELECT store_id, id FROM customers"))}
            conn.execute(text("UPDATE customers SET first_name = :name WHERE store_id = "
                              "'C000050'"), {"name": XSS_NAME})

            def answered(who: str, at: str, *answers: Answer) -> None:
                record_answers(conn, customer_id=ids[who], campaign="feedback",
                               occurrence="O-" + who, survey="feedback", version_hash="h",
                               answers=list(answers), at=_at(at))

            answered("C000010", "2026-11-28T09:00", Answer("overall", 5),
                     Answer("recommend", 9), Answer("comment", text="Quick delivery, lovely."))
            answered("C000050", "2026-11-29T09:00", Answer("overall", 2),
                     Answer("recommend", 3), Answer("comment", text=XSS_COMMENT))
            answered("C000077", "2026-11-30T09:00", Answer("overall", 1),
                     Answer("recommend", 0), Answer("comment", text="Never again: wrong size."))
    finally:
        engine.dispose()


@dataclass
class Console:
    base: str
    port: int
    log: Path
    shop: Workspace
    smtp: FaultServer  # the console's MAILER_SMTP_URL: where its test sends go

    def request(self, method: str, path: str, *, cookie: str | None = None,
                body: dict[str, str] | None = None, headers: dict[str, str] | None = None
                ) -> tuple[int, dict[str, str], str, list[str]]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        sent = dict(headers or {})
        if cookie:
            sent["Cookie"] = cookie
        data = None
        if body is not None:
            data = urlencode(body)
            sent["Content-Type"] = "application/x-www-form-urlencoded"
        conn.request(method, path, body=data, headers=sent)
        response = conn.getresponse()
        text_ = response.read().decode()
        cookies = response.headers.get_all("Set-Cookie") or []
        found = {k.lower(): v for k, v in response.getheaders()}
        conn.close()
        return response.status, found, text_, cookies

    def login(self) -> str:
        """A session cookie, by the login form as a browser sends it."""
        status, _, page, cookies = self.request("GET", "/login")
        assert status == 200
        nonce = next(c for c in cookies if c.startswith("mailer_console_login="))
        token = page.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        status, headers, _, cookies = self.request(
            "POST", "/login", cookie=nonce.split(";")[0],
            body={"csrf": token, "user": "ann", "password": PASSWORD, "next": "/surveys"})
        assert status == 303 and headers["location"] == "/surveys"
        return next(c for c in cookies if c.startswith("mailer_console=")).split(";")[0]


# One worker a database builds its store and runs its tests (make test: --dist loadgroup):
# spread over every worker, each would build the same store again.
@pytest.fixture(scope="module", params=[
    pytest.param(kind, marks=pytest.mark.xdist_group(f"console-{kind}"))
    for kind in ("sqlite", "postgresql")])
def console(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[Console]:
    folder = tmp_path_factory.mktemp("console")
    with _database(request.param) as database:
        created = Workspace(folder, None).run("init", "shop")
        assert created.code == 0, created.stderr
        shop = Workspace(folder / "shop", database)
        _build(shop, folder / "outbox")
        # the segment sizes stored ahead, as the daemon or `mailer console refresh` does
        refreshed = shop.run("console", "refresh", "--only", "segments", "--now", NOW)
        assert refreshed.code == 0, refreshed.stderr
        with _serving(shop, folder) as served:
            yield served


# The campaigns the forecast's small store keeps: each of the example's campaigns costs
# the simulation of 720 hours a sweep's worth of work.
FORECAST_CAMPAIGNS = ("newsletter", "win-back", "birthday")


@pytest.fixture(params=["sqlite", "postgresql"])
def small_console(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Console]:
    """A console on a store of its own, nothing stored ahead: ten demo customers and three
    of the example campaigns. Its forecast takes seconds; on the module's store (150
    customers, fifteen campaigns) it took 100 s, the suite's slowest test."""
    with _database(request.param) as database:
        created = Workspace(tmp_path, None).run("init", "shop")
        assert created.code == 0, created.stderr
        shop = Workspace(tmp_path / "shop", database)
        assert shop.run("db", "upgrade").code == 0
        made = shop.run("demo-data", "--customers", "10", "--seed", "7", "--now",
                        "2026-11-23T10:00")
        assert made.code == 0, made.stderr
        for path in (shop.root / "campaigns").glob("*.yaml"):
            if path.stem not in FORECAST_CAMPAIGNS:
                path.unlink()
        (tmp_path / "outbox").mkdir()  # nothing sent: an empty Maildir
        with _serving(shop, tmp_path) as served:
            yield served


@contextmanager
def _serving(shop: Workspace, folder: Path) -> Iterator[Console]:
    """`mailer console --now NOW` on SHOP (its outbox and log in FOLDER), sending into a
    test SMTP server, until the block ends."""
    log = folder / "console.log"
    with FaultServer() as smtp:
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("MAILER_")},
               **shop.env,  # its database; the SMTP server and key are the console's
               "MAILER_SECRET_KEY": KEY, "MAILER_CONSOLE_USERS": f"ann:{HASH}",
               "MAILER_SMTP_URL": smtp.url}
        with log.open("w") as errors:
            process = subprocess.Popen(
                [sys.executable, "-m", "mailer.cli", "--workspace", str(shop.root), "console",
                 "--port", "0", "--now", NOW, "--outbox", str(folder / "outbox")],
                stdout=subprocess.PIPE, stderr=errors, text=True, env=env)
            assert process.stdout is not None
            first = process.stdout.readline()
            assert first.startswith("listening on 127.0.0.1:"), log.read_text()
            port = int(first.rsplit(":", 1)[1])
            try:
                yield Console(f"http://127.0.0.1:{port}", port, log, shop, smtp)
            finally:
                process.terminate()
                process.wait(timeout=30)


class _database:
    """No URL for SQLite (the workspace's file); a scratch PostgreSQL database else."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._context: Any = None

    def __enter__(self) -> str | None:
        if self.kind == "sqlite":
            return None
        self._context = _scratch_database()
        url: str = self._context.__enter__()
        return url

    def __exit__(self, *exc: object) -> None:
        if self._context is not None:
            self._context.__exit__(*exc)


def test_no_page_and_no_json_without_a_session(console: Console) -> None:
    for path in PAGES:
        status, headers, _, _ = console.request("GET", path)
        assert status == 303 and headers["location"].startswith("/login?next=/"), path
        status, _, body, _ = console.request("GET", path, headers={"Accept": "application/json"})
        assert status == 401 and json.loads(body)["error"]["message"] == "log in first", path
        joined = "&" if "?" in path else "?"
        status, _, body, _ = console.request("GET", f"{path}{joined}format=json")
        assert status == 401, path
    status, _, _, _ = console.request("POST", "/forecast/refresh", body={"csrf": "x"})
    assert status == 403


def test_forged_expired_and_other_purpose_cookies_are_refused(console: Console) -> None:
    later = str(int(time.time()) + 3600)
    forged = {
        "another purpose": sign(Claims("unsubscribe", "ann", later, "n0nce"), KEY),
        "a form token": sign(Claims("console_form", "", "", "n0nce"), KEY),
        "another key": sign(Claims("console_session", "ann", later, "n0nce"), "not-the-key"),
        "expired": sign(Claims("console_session", "ann", str(int(time.time()) - 1), "n"), KEY),
        "garbage": "eyJ4Ijox.fake",
        # signed right, for a user taken out of MAILER_CONSOLE_USERS (only ann is in)
        "a removed user": sign(Claims("console_session", "bob", later, "n0nce"), KEY),
    }
    for what, token in forged.items():
        status, _, _, _ = console.request("GET", "/campaigns?format=json",
                                          cookie=f"mailer_console={token}")
        assert status == 401, what
    good = sign(Claims("console_session", "ann", later, "n0nce"), KEY)
    status, _, body, _ = console.request("GET", "/campaigns?format=json",
                                         cookie=f"mailer_console={good}")
    assert status == 200 and "black-friday" in body


def test_the_session_cookie_is_httponly_strict_and_expires(console: Console) -> None:
    _, _, page, cookies = console.request("GET", "/login")
    nonce = next(c for c in cookies if c.startswith("mailer_console_login="))
    token = page.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    _, headers, _, cookies = console.request(
        "POST", "/login", cookie=nonce.split(";")[0],
        body={"csrf": token, "user": "ann", "password": PASSWORD, "next": "//evil.example/"})
    assert headers["location"] == "/campaigns"  # never somewhere else
    session = next(c for c in cookies if c.startswith("mailer_console="))
    assert "HttpOnly" in session and "SameSite=Strict" in session
    assert "Max-Age=28800" in session and "Path=/" in session


def test_csrf_is_refused_and_nothing_is_done(console: Console) -> None:
    cookie = console.login()
    for body in ({}, {"csrf": ""}, {"csrf": console_form_token("another-nonce")}):
        status, _, text_, _ = console.request("POST", "/forecast/refresh", cookie=cookie,
                                              body=body)
        assert status == 403 and "Nothing was changed" in text_
        status, _, _, _ = console.request("POST", "/logout", cookie=cookie, body=body)
        assert status == 403
    # the login form: its token belongs to the nonce of its own cookie
    status, _, page, _ = console.request("GET", "/login")
    token = page.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    status, _, _, cookies = console.request(
        "POST", "/login", body={"csrf": token, "user": "ann", "password": PASSWORD})
    assert status == 403 and not any(c.startswith("mailer_console=") for c in cookies)


def console_form_token(nonce: str) -> str:
    return sign(Claims("console_form", "", "", nonce), KEY)


def test_a_failed_login_is_slowed_and_logged_and_gives_no_session(console: Console) -> None:
    status, _, page, cookies = console.request("GET", "/login")
    nonce = next(c for c in cookies if c.startswith("mailer_console_login="))
    token = page.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    began = time.monotonic()
    status, _, page, cookies = console.request(
        "POST", "/login", cookie=nonce.split(";")[0],
        body={"csrf": token, "user": "mallory", "password": "guess"})
    assert status == 401 and "do not match" in page
    assert time.monotonic() - began >= 1.0  # the throttle's first wait
    assert not any(c.startswith("mailer_console=") for c in cookies)
    assert "failed login for 'mallory'" in console.log.read_text()


def test_every_response_carries_the_security_headers(console: Console) -> None:
    cookie = console.login()
    for path, who in [("/login", None), ("/campaigns", None), ("/campaigns", cookie),
                      ("/customers/C000123?format=json", cookie), ("/nowhere", cookie)]:
        _, headers, _, _ = console.request("GET", path, cookie=who)
        csp = headers["content-security-policy"]
        assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp, path
        assert "script-src" not in csp  # no script at all
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["x-frame-options"] == "DENY"
        assert headers["referrer-policy"] == "no-referrer"
        assert headers["cache-control"] == "no-store"
        assert headers["server"] == "mailer"
    _, headers, _, _ = console.request("GET", "/preview/black-friday/1/html", cookie=cookie)
    assert "sandbox" in headers["content-security-policy"]
    assert "img-src data:" in headers["content-security-policy"]  # remote images off


def test_the_search_finds_by_id_email_and_name_prefix_in_any_case(console: Console) -> None:
    cookie = console.login()

    def found(q: str) -> list[str]:
        status, _, body, _ = console.request("GET", "/customers?" + urlencode(
            {"q": q, "format": "json"}), cookie=cookie)
        assert status == 200
        return [c["id"] for c in json.loads(body)["customers"]]

    assert found("c00012") == [f"C0001{n:02d}" for n in range(20, 30)]
    card = json.loads(console.request("GET", "/customers/C000123?format=json",
                                      cookie=cookie)[2])
    email, first = card["email"], card["profile"]["first_name"]
    assert "C000123" in found(email[:8].upper())
    assert "C000123" in found(first[:3].lower())
    assert found("%") == [] and found("_") == []  # LIKE's wildcards are letters here
    assert "C000050" in found("<IMG")


def test_the_search_reads_the_indexes(console: Console) -> None:
    engine = console.shop.engine()
    try:
        with engine.connect() as conn:
            if engine.dialect.name == "sqlite":
                plan = " ".join(str(row[-1]) for row in conn.execute(text(
                    "EXPLAIN QUERY PLAN SELECT id FROM customers WHERE lower(first_name) "
                    ">= 'ab' AND lower(first_name) < 'ac'")))
                assert "ix_customers_first_name_lower" in plan
            else:
                conn.execute(text("SET enable_seqscan = off"))
                plan = " ".join(str(row[0]) for row in conn.execute(text(
                    "EXPLAIN SELECT id FROM customers WHERE lower(last_name) LIKE 'ab%'")))
                assert "ix_customers_last_name_lower" in plan
    finally:
        engine.dispose()


def test_every_page_answers_json_with_a_session(console: Console) -> None:
    cookie = console.login()
    for path in PAGES:
        joined = "&" if "?" in path else "?"
        status, headers, body, _ = console.request("GET", f"{path}{joined}format=json",
                                                   cookie=cookie)
        assert status == 200 and headers["content-type"].startswith("application/json"), path
        json.loads(body)
    report = json.loads(console.request("GET", "/campaigns/black-friday?format=json",
                                        cookie=cookie)[2])
    assert report["sent"] > 20 and report["opens"]["mails"] == 30
    assert [v["subject"] for v in report["variants"]][1] == "Black Friday: your 30% ends Sunday"
    assert sum(day["sent"] for day in report["timeline"]) == report["sent"]
    status, _, body, _ = console.request("GET", "/campaigns/no-such?format=json", cookie=cookie)
    assert status == 404 and "no-such" in json.loads(body)["error"]["message"]


def test_the_outbox_lists_searches_shows_and_checks_caught_mails(console: Console) -> None:
    cookie = console.login()

    def get(path: str) -> Any:
        status, _, body, _ = console.request("GET", path, cookie=cookie)
        assert status == 200, path
        return json.loads(body)

    listed = get("/outbox?format=json")
    assert listed["total"] > 20 and listed["mails"][0]["subject"] == XSS_SUBJECT  # newest
    friday = get("/outbox?format=json&q=ends+sunday")["mails"]
    assert friday and all("ends Sunday" in m["subject"] for m in friday)
    mail = get(f"/outbox/{friday[0]['id']}?format=json")
    checks = {c["check"]: c for c in mail["checks"]}
    assert checks["List-Unsubscribe-Post"]["ok"] and checks["DKIM-Signature"]["ok"] is False
    # the demo's links are http://127.0.0.1:8080/…: a check a real store must pass
    assert not checks["List-Unsubscribe"]["ok"]
    assert checks["List-Unsubscribe"]["detail"].startswith("no https URL: <http://127.0.0.1")
    hostile = get(f"/outbox/{listed['mails'][0]['id']}?format=json")
    links = {c["check"]: c for c in hostile["checks"]}["links in HTML and text"]
    assert links["only_text"] == ["https://shop.example/only-in-text"]
    status, headers, body, _ = console.request("GET", f"/outbox/{hostile['id']}/html",
                                               cookie=cookie)
    assert status == 200 and "sandbox" in headers["content-security-policy"]
    assert "img-src data:" in headers["content-security-policy"]
    status, headers, body, _ = console.request("GET", f"/outbox/{hostile['id']}/raw",
                                               cookie=cookie)
    assert headers["content-type"].startswith("text/plain") and "Subject:" in body
    for bad in ("..%2F..%2Fmailer.yaml", "nothing", "%2Fetc%2Fpasswd"):
        assert console.request("GET", f"/outbox/{bad}?format=json", cookie=cookie)[0] == 404


# --- in the browser -----------------------------------------------------------------------

WIDTHS = {"phone": (390, 844), "desk": (1280, 900)}


def test_a_marketer_answers_three_questions_from_the_pages(console: Console) -> None:
    _chromium()
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    database = "pg" if console.shop.database else "sqlite"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"])
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            page = context.new_page()
            dialogs: list[str] = []
            page.on("dialog", lambda dialog: (dialogs.append(dialog.message),
                                              dialog.dismiss()))
            page.goto(console.base + "/campaigns")
            assert page.url.startswith(console.base + "/login?next=")
            page.fill("#name", "ann")
            page.fill("#password", PASSWORD)
            page.click("#login")
            page.wait_for_selector("#campaigns")
            # how did Black Friday do?
            row = page.locator("#campaign-black-friday")
            assert "Black Friday, 48 hours" in row.inner_text()
            assert XSS_SUBJECT in page.locator("#campaigns").inner_text()  # text, not markup
            row.locator("a").first.click()
            page.wait_for_selector("#variants")
            assert page.locator("#title").inner_text() == "Black Friday, 48 hours"
            assert "Counted" in page.locator("#computed").inner_text()  # kept, with its time
            variants = page.locator("#variants").inner_text()
            assert "Black Friday: your 30% ends Sunday" in variants and "%" in variants
            assert "confidence" in page.locator("#winner").inner_text()
            assert page.locator("#chart svg").count() == 1
            assert "30" in page.locator("#opened").inner_text()
            # who is customer C000123?
            page.click("text=Customers")
            page.fill("#q", "c000123")
            page.click("#search")
            page.locator("#results a", has_text="C000123").click()
            page.wait_for_selector("#profile")
            assert "C000123" in page.locator("#who").inner_text()
            assert page.locator("#stats").inner_text().strip()
            # what did unhappy readers write?
            page.click("text=Surveys")
            unhappy = page.locator("blockquote.unhappy")
            said = unhappy.all_inner_texts()
            assert any("Never again: wrong size." in text_ for text_ in said)
            assert any(XSS_COMMENT in text_ for text_ in said)  # shown as text
            assert not any("lovely" in text_ for text_ in said)  # a happy reader's
            unhappy.filter(has_text="Never again").locator("a").click()
            page.wait_for_selector("#profile")
            assert "C000077" in page.locator("#who").inner_text()
            # the XSS customer's card: the name is text
            page.goto(console.base + "/customers/C000050")
            assert XSS_NAME in page.locator("#name").inner_text()
            page.goto(console.base + "/preview/xss-note")
            page.wait_for_selector("#samples")
            assert XSS_SUBJECT in page.locator("#samples").inner_text()
            # a hostile caught mail: its subject is text, its HTML sandboxed, no remote image
            remote: list[str] = []  # what got past the CSP to the network

            def reached(route: Any) -> None:
                remote.append(route.request.url)
                route.abort()

            context.route("https://tracker.example/**", reached)
            page.goto(console.base + "/outbox")
            page.locator("#mails a", has_text="deal").first.click()
            page.wait_for_selector("#checks")
            assert XSS_SUBJECT in page.locator("#subject").inner_text()
            assert page.locator("iframe#html").get_attribute("sandbox") == ""
            page.frame_locator("iframe#html").locator("#remote").wait_for(state="attached")
            framed = next(f for f in page.frames if f.url.endswith("/html"))
            framed.wait_for_load_state("load")  # after its images were fetched or refused
            assert remote == []
            assert page.title() != "pwned" and dialogs == []
            # every page at both widths
            for label, (width, height) in WIDTHS.items():
                page.set_viewport_size({"width": width, "height": height})
                for path in PAGES:
                    page.goto(console.base + path)
                    assert page.title() != "pwned"
                    name = path.strip("/").replace("/", "-").replace("?", "-").replace("=", "-")
                    page.screenshot(path=str(ARTIFACTS / f"console-{database}-{label}-"
                                                         f"{name}.png"), full_page=True)
            page.click("#logout")
            page.wait_for_selector("#login")
            page.goto(console.base + "/surveys")
            assert page.url.startswith(console.base + "/login")
        finally:
            browser.close()
    assert (ARTIFACTS / f"console-{database}-phone-surveys.png").stat().st_size > 5_000


# --- operator actions -----------------------------------------------------------------------
# They change the module's one store: each action test puts back what it changed (resume
# what it pauses, resubscribe whom it suppresses) or changes rows no other test reads.

XSS_REASON = "<script>document.title='pwned'</script>asked by phone & mail"


def _token(console: Console, path: str, cookie: str) -> str:
    """The CSRF token of the confirmation page PATH (which must show)."""
    status, _, page, _ = console.request("GET", path, cookie=cookie)
    assert status == 200, page
    return page.split('name="csrf" value="', 1)[1].split('"', 1)[0]


def _audit(console: Console, cookie: str) -> list[dict[str, Any]]:
    status, _, body, _ = console.request("GET", "/audit?format=json", cookie=cookie)
    assert status == 200
    entries: list[dict[str, Any]] = json.loads(body)["entries"]
    return entries


def _json(console: Console, path: str, cookie: str) -> Any:
    status, _, body, _ = console.request("GET", path, cookie=cookie)
    assert status == 200, body
    return json.loads(body)


def _unused_customer(console: Console, cookie: str) -> str:
    """A subscribed customer no other test reads."""
    found = _json(console, "/customers?q=c00014&format=json", cookie)["customers"]
    return next(c["id"] for c in found if c["consent"] == "subscribed")


def test_pause_and_resume_a_campaign_with_an_audit_row_each(console: Console) -> None:
    cookie = console.login()
    status, _, page, _ = console.request("GET", "/campaigns/black-friday/pause", cookie=cookie)
    assert status == 200 and "Pause black-friday?" in page and "keep their expiry" in page
    token = _token(console, "/campaigns/black-friday/pause", cookie)
    status, headers, _, _ = console.request("POST", "/campaigns/black-friday/pause",
                                            cookie=cookie,
                                            body={"csrf": token, "reason": "wrong price"})
    assert status == 303
    assert headers["location"] == "/campaigns/black-friday?done=pause_campaign"
    report = _json(console, "/campaigns/black-friday?format=json", cookie)
    assert report["paused"]["paused_by"] == "ann" and report["paused"]["reason"] == "wrong price"
    row = next(c for c in _json(console, "/campaigns?format=json", cookie)["campaigns"]
               if c["campaign"] == "black-friday")
    assert row["state"] == "paused"
    status, _, page, _ = console.request("GET", "/campaigns/black-friday?done=pause_campaign",
                                         cookie=cookie)
    assert "Paused: no mail of this campaign" in page and 'id="resume"' in page
    # resumed as JSON: the action's document
    status, _, body, _ = console.request(
        "POST", "/campaigns/black-friday/resume?format=json", cookie=cookie,
        body={"csrf": _token(console, "/campaigns/black-friday/resume", cookie)})
    assert status == 200
    resumed = json.loads(body)
    assert resumed["paused"] is False and resumed["paused_by"] == "ann"
    assert _json(console, "/campaigns/black-friday?format=json", cookie)["paused"] is None
    newest = _audit(console, cookie)[:2]
    assert [(e["action"], e["actor"], e["via"], e["target"]) for e in newest] == [
        ("resume_campaign", "ann", "console", "black-friday"),
        ("pause_campaign", "ann", "console", "black-friday")]
    assert newest[1]["reason"] == "wrong price" and newest[0]["at"].startswith("2026-12-01T")


def test_an_action_without_csrf_or_session_is_refused_and_does_nothing(console: Console
                                                                        ) -> None:
    cookie = console.login()
    who = _unused_customer(console, cookie)
    before = _audit(console, cookie)
    for path, body in [("/campaigns/black-friday/pause", {}),
                       (f"/customers/{who}/suppress", {"reason": "spam"}),
                       ("/campaigns/black-friday/test-send", {"to": "qa@example.com"}),
                       ("/campaigns/black-friday/retry", {})]:
        for csrf in ({}, {"csrf": ""}, {"csrf": console_form_token("another-nonce")}):
            status, _, text_, _ = console.request("POST", path, cookie=cookie,
                                                  body={**body, **csrf})
            assert status == 403 and "Nothing was changed" in text_, path
        token = _token(console, path, cookie)
        status, _, _, _ = console.request("POST", path, body={**body, "csrf": token})
        assert status == 403, path  # a token without its session
        assert console.request("GET", path)[0] == 303  # the confirmation page: log in first
    assert _audit(console, cookie) == before
    assert _json(console, "/campaigns/black-friday?format=json", cookie)["paused"] is None
    card = _json(console, f"/customers/{who}?format=json", cookie)
    assert card["consent"]["state"] == "subscribed" and not card["suppressed"]


def test_a_missing_reason_or_address_is_400_naming_the_field(console: Console) -> None:
    cookie = console.login()
    who = _unused_customer(console, cookie)
    before = _audit(console, cookie)
    path = f"/customers/{who}/suppress"
    token = _token(console, path, cookie)
    status, _, page, _ = console.request("POST", path, cookie=cookie,
                                         body={"csrf": token, "reason": "   "})
    assert status == 400 and 'id="problem"' in page and "reason: give a reason" in page
    assert 'id="confirm"' in page  # the form again, to type one in
    status, _, body, _ = console.request("POST", path + "?format=json", cookie=cookie,
                                         body={"csrf": token})
    assert status == 400 and json.loads(body)["error"]["field"] == "reason"
    status, _, body, _ = console.request(
        "POST", f"/customers/{who}/resubscribe?format=json", cookie=cookie,
        body={"csrf": token, "reason": ""})
    assert status == 400 and json.loads(body)["error"]["field"] == "reason"
    for to in ("", "not an address"):
        status, _, body, _ = console.request(
            "POST", "/campaigns/black-friday/test-send?format=json", cookie=cookie,
            body={"csrf": token, "to": to})
        assert status == 400 and json.loads(body)["error"]["field"] == "to", to
    assert _audit(console, cookie) == before
    assert all(c.recipient != "not an address" for c in console.smtp.caught)
    assert _json(console, f"/customers/{who}?format=json", cookie)["consent"]["state"] == \
        "subscribed"


def test_suppress_and_resubscribe_with_a_typed_reason_escaped_on_the_audit_page(
        console: Console) -> None:
    cookie = console.login()
    who = _unused_customer(console, cookie)
    path = f"/customers/{who}/suppress"
    status, _, page, _ = console.request("GET", path, cookie=cookie)
    assert status == 200 and "consent is subscribed" in page
    status, headers, _, _ = console.request(
        "POST", path, cookie=cookie, body={"csrf": _token(console, path, cookie),
                                           "reason": XSS_REASON})
    assert status == 303 and headers["location"] == f"/customers/{who}?done=suppress_customer"
    card = _json(console, f"/customers/{who}?format=json", cookie)
    assert card["suppressed"] and card["consent"]["state"] == "unsubscribed"
    assert card["consent"]["reason"] == XSS_REASON and card["consent"]["source"] == "operator"
    path = f"/customers/{who}/resubscribe"
    status, headers, _, _ = console.request(
        "POST", path, cookie=cookie, body={"csrf": _token(console, path, cookie),
                                           "reason": "called to opt in again"})
    assert status == 303
    card = _json(console, f"/customers/{who}?format=json", cookie)
    assert not card["suppressed"] and card["consent"]["state"] == "subscribed"
    newest = _audit(console, cookie)[:2]
    assert [(e["action"], e["actor"], e["target"], e["reason"]) for e in newest] == [
        ("resubscribe_customer", "ann", who, "called to opt in again"),
        ("suppress_customer", "ann", who, XSS_REASON)]
    status, _, page, _ = console.request("GET", "/audit", cookie=cookie)
    assert status == 200 and "<script>document.title" not in page
    assert "&lt;script&gt;document.title=&#39;pwned&#39;&lt;/script&gt;asked by phone &amp; mail" \
        in page


def test_retry_failed_rows_shows_how_many_qualify_first(console: Console) -> None:
    cookie = console.login()
    engine = console.shop.engine()
    try:
        with engine.begin() as conn:  # two of Black Friday's last sent rows failed instead
            rows = [r[0] for r in conn.execute(text(
                "SELECT id FROM deliveries WHERE campaign = 'black-friday' AND status = "
                "'sent' ORDER BY id DESC LIMIT 2"))]
            for row, (reason, reply) in zip(rows, [
                    ("rejected", "554 5.7.1 message refused as spam"),
                    ("bad mailbox", "550 5.1.1 no such user")], strict=True):
                conn.execute(text(
                    "UPDATE deliveries SET status = 'failed', reason = :reason, last_reply = "
                    ":reply, expires_at = :expires WHERE id = :id"),
                    {"reason": reason, "reply": reply, "id": row,
                     "expires": _at("2026-12-05T00:00")})
        plan = _json(console, "/campaigns/black-friday/retry?format=json", cookie)
        assert plan["failed"] >= 2 and plan["retried"] == 1 and plan["kept"]["bad_mailbox"] >= 1
        status, _, page, _ = console.request("GET", "/campaigns/black-friday/retry",
                                             cookie=cookie)
        assert "1 qualify for a retry" in page and "Retry 1 rows" in page
        status, headers, _, _ = console.request(
            "POST", "/campaigns/black-friday/retry", cookie=cookie,
            body={"csrf": _token(console, "/campaigns/black-friday/retry", cookie)})
        assert status == 303 and headers["location"].endswith("?done=retry_failed")
        with engine.connect() as conn:
            states = dict(conn.execute(text(
                "SELECT id, status FROM deliveries WHERE id IN (:a, :b)"),
                {"a": rows[0], "b": rows[1]}).all())
        assert states == {rows[0]: "deferred", rows[1]: "failed"}
        entry = _audit(console, cookie)[0]
        assert (entry["action"], entry["actor"], entry["detail"]["ids"]) == (
            "retry_failed", "ann", [rows[0]])
        # nothing qualifies now: the page says so and offers no form
        status, _, page, _ = console.request("GET", "/campaigns/black-friday/retry",
                                             cookie=cookie)
        assert "0 qualify" in page and 'id="confirm"' not in page
    finally:
        engine.dispose()


def test_a_test_send_goes_out_as_mailer_send_test_to_does(console: Console) -> None:
    cookie = console.login()
    path = "/campaigns/black-friday/test-send"
    status, _, page, _ = console.request("GET", path + "?to=qa%40example.com", cookie=cookie)
    assert status == 200 and 'value="qa@example.com"' in page and "[TEST]" in page
    status, headers, _, _ = console.request(
        "POST", path, cookie=cookie,
        body={"csrf": _token(console, path, cookie), "to": "qa@example.com",
              "customer": "C000123"})
    assert status == 303 and headers["location"].endswith("?done=test_send")
    mail = next(c for c in console.smtp.caught if c.recipient == "qa@example.com")
    message = mail.message()
    assert str(message["Subject"]).startswith("[TEST] ") and message["To"] == "qa@example.com"
    entry = _audit(console, cookie)[0]
    assert (entry["action"], entry["actor"], entry["via"]) == ("test_send", "ann", "console")
    assert entry["detail"]["to"] == "qa@example.com" and entry["detail"]["customer"] == "C000123"
    assert entry["detail"]["message_id"] in message["Message-ID"]


def test_pause_then_resume_through_the_pages_in_chromium(console: Console) -> None:
    _chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"])
        try:
            page = browser.new_page()
            page.goto(console.base + "/campaigns/black-friday")
            page.fill("#name", "ann")
            page.fill("#password", PASSWORD)
            page.click("#login")
            page.wait_for_selector("#actions")
            assert "not paused" in page.locator("#state").inner_text()
            page.click("#pause")
            page.wait_for_selector("#confirm")
            assert "Pause black-friday?" in page.locator("#title").inner_text()
            page.fill("#field-reason", "checking the <b>price</b>")
            page.click("#do")
            page.wait_for_selector("#notice")
            assert "Paused" in page.locator("#notice").inner_text()
            state = page.locator("#state").inner_text()
            assert "paused" in state and "ann" in state and "checking the <b>price</b>" in state
            page.click("#resume")
            page.wait_for_selector("#confirm")
            page.click("#do")
            page.wait_for_selector("#notice")
            assert "Resumed" in page.locator("#notice").inner_text()
            assert "not paused" in page.locator("#state").inner_text()
            page.click("text=Audit")
            page.wait_for_selector("#audit")
            rows = page.locator("#audit tbody tr")
            assert "resume campaign" in rows.nth(0).inner_text()
            assert "checking the <b>price</b>" in rows.nth(1).inner_text()
        finally:
            browser.close()


# --- the command line ---------------------------------------------------------------------

def test_no_user_configured_the_console_refuses_to_start(ws: Workspace) -> None:
    ws.env.update({"MAILER_SECRET_KEY": KEY})
    result = ws.run("console", "--port", "0")
    assert result.code == 1
    assert "MAILER_CONSOLE_USERS" in result.stderr and "hash-password" in result.stderr
    ws.env["MAILER_CONSOLE_USERS"] = "ann:plaintext"
    result = ws.run("console", "--port", "0")
    assert result.code == 1 and "pair 1 (ann)" in result.stderr


def test_hash_password_reads_standard_input_never_an_argument(ws: Workspace) -> None:
    from mailer.web.console.auth import login, parse_users

    result = ws.run("console", "hash-password", stdin="s3cret-enough\n")
    assert result.code == 0, result.stderr
    hashed = result.stdout.strip()
    assert hashed.startswith("scrypt$65536$8$2$") and "s3cret" not in hashed
    users = parse_users(f"ann:{hashed}  bob:{HASH}")
    assert login(users, "ann", "s3cret-enough") and not login(users, "ann", "s3cret")
    assert not login(users, "nobody", "s3cret-enough")
    assert ws.run("console", "hash-password", "s3cret-enough").code == 2  # no argument
    assert ws.run("console", "hash-password", stdin="short\n").code == 1


def test_stored_figures_are_shown_with_their_time_and_marked_stale_on_a_change(
        console: Console) -> None:
    cookie = console.login()
    sizes = json.loads(console.request("GET", "/segments?format=json", cookie=cookie)[2])
    assert sizes["computed_by"] == "cli" and sizes["computed_at"] is not None
    assert sizes["as_of"] == "2026-12-01T11:00:00Z" and sizes["stale"] is False
    assert sizes["computing"] is False  # stored: the console counts nothing itself
    campaigns = json.loads(console.request("GET", "/campaigns?format=json", cookie=cookie)[2])
    assert campaigns["audiences_at"] == sizes["computed_at"]
    assert campaigns["audiences_stale"] is False
    status, _, page, _ = console.request("GET", "/segments", cookie=cookie)
    assert status == 200 and "by cli" in page and 'id="stale"' not in page
    # a new campaign file: the campaigns page parses the files again, the figures say
    # they were computed from other files
    console.shop.write("campaigns/late-note.yaml", (
        "name: A late note\ntrigger: once\nat: 2027-01-11T09:00\nsegment: active-buyers\n"
        "template: promotion.html\nsubject: Hello\ntopic: promotions\n"))
    try:
        campaigns = json.loads(console.request("GET", "/campaigns?format=json",
                                               cookie=cookie)[2])
        assert "late-note" in [c["campaign"] for c in campaigns["campaigns"]]
        assert campaigns["audiences_stale"] is True
        sizes = json.loads(console.request("GET", "/segments?format=json", cookie=cookie)[2])
        assert sizes["stale"] is True
        status, _, page, _ = console.request("GET", "/segments", cookie=cookie)
        assert status == 200 and 'id="stale"' in page and "mailer console refresh" in page
    finally:
        (console.shop.root / "campaigns" / "late-note.yaml").unlink()
    sizes = json.loads(console.request("GET", "/segments?format=json", cookie=cookie)[2])
    assert sizes["stale"] is False  # the files it was computed from, again


def test_the_campaigns_counts_are_stored_and_counted_again_once_a_minute_old(
        console: Console) -> None:
    """Sent, opened, clicked and unsubscribed on /campaigns come from the stored `counts`
    figure (four aggregates over the whole ledger, too slow for a page on a big store):
    counted by the console when none is stored, shown with their time, and counted
    again in the background once older than a minute, the old ones shown meanwhile."""
    from mailer.store.insight.figures import Figure, save

    cookie = console.login()
    sent = console.shop.query("SELECT count(*) FROM deliveries WHERE campaign = "
                              "'black-friday' AND status = 'sent'")[0][0]
    opened = console.shop.query("SELECT count(DISTINCT delivery_id) FROM events WHERE "
                                "campaign = 'black-friday' AND kind = 'open'")[0][0]
    document = json.loads(console.request("GET", "/campaigns?format=json", cookie=cookie)[2])
    assert document["counts_at"] is not None and document["counts_by"] in ("console", "cli")
    status, _, page, _ = console.request("GET", "/campaigns", cookie=cookie)
    assert status == 200 and 'id="counted"' in page
    # counts stored long ago (and wrong, to tell them apart): shown, then counted again
    long_ago = datetime(2000, 1, 1, tzinfo=UTC)
    engine = console.shop.engine()
    try:
        with engine.begin() as conn:
            save(conn, Figure("counts", long_ago, long_ago, 0.1, "old", "cli", {
                "as_of": "2000-01-01T00:00:00Z", "campaigns": {"black-friday": {
                    "sent": 1, "opened": 0, "clicked": 0, "unsubscribed": 0}}}))
    finally:
        engine.dispose()
    document = json.loads(console.request("GET", "/campaigns?format=json", cookie=cookie)[2])
    friday = next(c for c in document["campaigns"] if c["campaign"] == "black-friday")
    # the stored ones, while the console counts again in the background
    assert document["counts_by"] == "cli" and document["counts_at"].startswith("2000-")
    assert friday["sent"] == 1
    deadline = time.monotonic() + 60
    while document["counts_by"] != "console" and time.monotonic() < deadline:
        time.sleep(0.1)  # polling a state the server reports, up to the deadline
        document = json.loads(console.request("GET", "/campaigns?format=json",
                                              cookie=cookie)[2])
    friday = next(c for c in document["campaigns"] if c["campaign"] == "black-friday")
    assert document["counts_by"] == "console" and (friday["sent"], friday["opened"]) == (
        sent, opened) and opened == 30
    assert not document["counts_at"].startswith("2000-")


def test_counts_stored_a_moment_ago_are_shown_without_counting_again_under_now(
        console: Console) -> None:
    """The console runs with --now two days back (NOW): the stored counts' age is taken
    on the clock their time was stamped with, so counts stored a moment ago are shown
    as they are, view after view, not counted again on every view."""
    from mailer.store.insight.figures import load

    refreshed = console.shop.run("console", "refresh", "--only", "counts", "--now", NOW)
    assert refreshed.code == 0, refreshed.stderr

    def stored_at() -> datetime:
        engine = console.shop.engine()
        try:
            with engine.connect() as conn:
                found = load(conn, "counts")
        finally:
            engine.dispose()
        assert found is not None and found.computed_by == "cli"
        return found.computed_at

    before = stored_at()
    cookie = console.login()
    for _ in range(2):
        document = json.loads(console.request("GET", "/campaigns?format=json",
                                              cookie=cookie)[2])
        assert document["now"].startswith("2026-12-01T")  # the console's --now
        assert document["counts_at"] == before.strftime("%Y-%m-%dT%H:%M:%SZ")
        assert document["counts_by"] == "cli" and document["counts_computing"] is False
    assert stored_at() == before


def test_the_forecast_is_computed_when_asked_and_stored(small_console: Console) -> None:
    """None is stored, so the page says so and offers to compute it; asked, the console
    computes it in the background. Waited for on SQLite only: the simulation's two
    databases are tests/test_forecast_frozen.py's."""
    console = small_console
    cookie = console.login()
    forecast = json.loads(console.request("GET", "/forecast?format=json", cookie=cookie)[2])
    assert forecast["computed_at"] is None and forecast["computing"] is False
    status, _, page, _ = console.request("GET", "/forecast", cookie=cookie)
    assert status == 200 and "not computed yet" in page and "mailer console refresh" in page
    token = page.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    status, headers, _, _ = console.request("POST", "/forecast/refresh", cookie=cookie,
                                            body={"csrf": token})
    assert status == 303 and headers["location"] == "/forecast"
    if console.shop.database is not None:
        forecast = json.loads(console.request("GET", "/forecast?format=json", cookie=cookie)[2])
        assert forecast["computing"] or forecast["computed_at"] is not None
        status, _, page, _ = console.request("GET", "/forecast", cookie=cookie)
        assert status == 200 and ("being computed" in page or "Caps that hold" in page)
        return
    deadline = time.monotonic() + 600
    while True:
        forecast = json.loads(console.request("GET", "/forecast?format=json", cookie=cookie)[2])
        if forecast["computed_at"] is not None or time.monotonic() > deadline:
            break
        assert forecast["computing"] is True
        time.sleep(0.5)  # polling a state the server reports, up to the deadline
    assert forecast["computed_at"] is not None and len(forecast["days"]) == 30
    assert forecast["computed_by"] == "console" and "chart_svg" not in forecast
    assert "caps_hit" in forecast and forecast["from"].startswith("2026-12-01T")
    status, _, page, _ = console.request("GET", "/forecast", cookie=cookie)
    assert status == 200 and "Caps that hold people back" in page and "<svg" in page
    assert "by console" in page
    assert console.shop.query("SELECT computed_by FROM console_figures WHERE kind = "
                              "'forecast'") == [("console",)]
