"""The HTTP side (`mailer serve`, DESIGN §6): one-click unsubscribe, the preference centre,
clicks, opens and ratings, against the real service (in this process on a real socket,
tests/in_process.py; in a subprocess beside a daemon) and mails that really went
through SMTP."""

from __future__ import annotations

import http.client
import json
import os
import re
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from mailer.mail.links import Claims, sign, verify
from tests import in_process
from tests.conftest import SETTINGS, Workspace
from tests.smtp_server import FaultServer
from tests.test_delivery import KEY, send

BASE = "https://mail.shop.example"
TEMPLATE = """<html><body><p>Hello {{ customer.first_name }},</p>
<p><a href="https://shop.example/boots?size=42&amp;colour=red">Our new boots</a>
<a href="https://shop.example/account?c={{ customer.id }}">Your account</a></p>
<p>{% for score in range(1, 6) %}<a href="{{ links.rating[score] }}">{{ score }}</a>{% endfor %}</p>
<p>{{ store.address }} · <a href="{{ links.unsubscribe }}">unsubscribe</a>
· <a href="{{ links.preferences }}">preferences</a> · <a href="mailto:help@shop.example">help</a>
</p></body></html>
"""
ROOMY = SETTINGS + "policy: {frequency: [{max: 10, per: 1d}]}\n"


def campaign(name: str, topic: str = "general") -> str:
    return (f"name: {name}\ntrigger: once\nat: 2026-11-23T09:00\ngrace: 2d\n"
            f"segment: everyone\ntemplate: note.html\nsubject: {name}\ntopic: {topic}\n")


ADDRESSES = ["anna@example.com", "bob@example.com", "chloe@example.com"]


def shop(db: Workspace, addresses: list[str]) -> None:
    """A store of ADDRESSES with `note` (topic general) and `sale` (topic promotions)."""
    db.write("mailer.yaml", ROOMY)
    db.write("segments/everyone.yaml", "description: all\nall: [{orders: {at_least: 0}}]\n")
    db.write("templates/note.html", TEMPLATE)
    db.write("campaigns/note.yaml", campaign("Note"))
    db.write("campaigns/sale.yaml", campaign("Sale", topic="promotions"))
    rows = ["id,email,first_name"] + [f"C{n},{a},Name{n}" for n, a in enumerate(addresses)]
    db.write("customers.csv", "\n".join(rows) + "\n")
    assert db.run("import", "customers", "customers.csv", "--now", "2026-01-01").code == 0


class Service:
    """A running service on PORT of 127.0.0.1; LOG returns its log lines so far."""

    def __init__(self, port: int, log: Callable[[], str] = str) -> None:
        self.port, self.log = port, log

    def request(self, method: str, url: str, body: str | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        """One request to the service for a link of the mail (its path is what counts)."""
        path = urllib.parse.urlsplit(url).path
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        data = response.read()
        conn.close()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, data


@pytest.fixture
def service(db: Workspace) -> Iterator[Service]:
    shop(db, ADDRESSES)
    with serving(db, MAILER_SECRET_KEY_OLD="an-older-key") as served:
        yield served


def serve_environment(db: Workspace, **extra: str) -> dict[str, str]:
    """What `mailer serve` runs with in these tests: no MAILER_* of the caller, DB's
    database, the test key and EXTRA."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    env.update(db.env)
    env.update({"MAILER_SECRET_KEY": KEY, **extra})
    return env


@contextmanager
def serving(db: Workspace, now: str | None = None, **env_extra: str) -> Iterator[Service]:
    """What `mailer serve --port 0` (at NOW, when given) serves on DB's workspace with the
    test key, until the block ends: in this process, on a real socket (tests/in_process.py);
    leaving stops it as SIGTERM does, its pending opens and clicks written."""
    with in_process.serving(db.root, serve_environment(db, **env_extra), now) as (port, log):
        yield Service(port, log.text)


@contextmanager
def serving_logged(db: Workspace, log: Path, now: str | None = None,
                   env_extra: dict[str, str] | None = None) -> Iterator[Service]:
    """The real `mailer serve` in a subprocess, its stderr written to LOG (a pipe nobody
    reads would stall a service that logs much), for the tests about it beside others."""
    env = serve_environment(db, **(env_extra or {}))
    at = ["--now", now] if now is not None else []
    with log.open("w") as sink:
        process = subprocess.Popen([sys.executable, "-m", "mailer.cli", "--workspace",
                                    str(db.root), "serve", "--port", "0", *at], env=env,
                                   text=True, stdout=subprocess.PIPE, stderr=sink)
    assert process.stdout is not None
    first = process.stdout.readline()
    if not first.startswith("listening on 127.0.0.1:"):
        process.kill()
        process.wait(timeout=10)
        raise AssertionError(log.read_text())
    try:
        yield Service(int(first.rsplit(":", 1)[1]), log.read_text)
    finally:
        process.terminate()
        process.wait(timeout=10)


def sent_mail(db: Workspace) -> dict[str, EmailMessage]:
    """`note`, sent to every customer of the store (made by the service fixture, or here)."""
    if not (db.root / "campaigns" / "note.yaml").exists():
        shop(db, ADDRESSES)
    with FaultServer() as server:
        assert send(db, server, "note")["sent"] == len(ADDRESSES)
    return {c.recipient: c.message() for c in server.caught}


def html_of(mail: EmailMessage) -> str:
    part = mail.get_body(("html",))
    assert part is not None
    return str(part.get_content())


def hrefs(mail: EmailMessage) -> list[str]:
    return re.findall(r'href="([^"]+)"', html_of(mail))


def consent(db: Workspace, email: str) -> tuple[Any, ...]:
    return tuple(db.query("SELECT consent, consent_source, paused_until, weekly_cap, topics "
                          "FROM customers WHERE email = :e", e=email)[0])


def events(db: Workspace, kind: str) -> list[tuple[Any, ...]]:
    return [tuple(row) for row in db.query(
        "SELECT c.email, e.campaign, e.delivery_id, e.url, e.score, e.comment FROM events e "
        "JOIN customers c ON c.id = e.customer_id WHERE e.kind = :k ORDER BY e.id", k=kind)]


def written(db: Workspace, kind: str, count: int) -> list[tuple[Any, ...]]:
    """The events of KIND once COUNT are there: opens and clicks are written in batches
    a moment after the answer."""
    deadline = time.monotonic() + 10
    while len(events(db, kind)) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # and no more arrive
    return events(db, kind)


def test_the_command_reports_its_database_and_names_no_framework(service: Service) -> None:
    status, headers, body = service.request("GET", "/healthz")
    assert status == 200 and json.loads(body) == {"database": "ok"}
    assert headers["server"] == "mailer" and headers["x-frame-options"] == "DENY"
    status, headers, _ = service.request("GET", "/no/such/page")
    assert status == 404 and headers["server"] == "mailer"
    assert headers["content-security-policy"].startswith("default-src 'none'")


# --- the mail carries tracked links ------------------------------------------------------


def test_sent_mails_carry_signed_click_links_an_open_pixel_and_untouched_own_links(
        db: Workspace) -> None:
    mail = sent_mail(db)["anna@example.com"]
    links = hrefs(mail)
    clicks = [h for h in links if h.startswith(f"{BASE}/c/")]
    # the boots (a link the version holds) and the account (personal); unsubscribe,
    # preferences, ratings and mailto stay as they are
    assert len(clicks) == 2
    row_id, version_id = (str(v) for v in db.query(
        "SELECT d.id, d.campaign_version_id FROM deliveries d JOIN customers c ON c.id = "
        "d.customer_id WHERE c.email = 'anna@example.com'")[0])
    token, number = clicks[0].removeprefix(f"{BASE}/c/").split("/")
    assert number == "0"  # the first link the version holds, under the mail's click token
    assert verify(token, "clicks", [KEY]) == Claims("clicks", "C0", "note", row_id, version_id)
    assert verify(clicks[1].rsplit("/", 1)[1], "click", [KEY]) == Claims(
        "click", "C0", "note", row_id, "https://shop.example/account?c=C0")
    assert sum(h.startswith(f"{BASE}/r/") for h in links) == 5
    assert "mailto:help@shop.example" in links
    assert re.search(rf'<img src="{BASE}/o/[^"]+" width="1" height="1"', html_of(mail))
    # the text part keeps the real URL for plain-text readers
    text = mail.get_body(("plain",))
    assert text is not None and "https://shop.example/boots?size=42&colour=red" in \
        str(text.get_content())
    unsubscribe = mail["List-Unsubscribe"]
    assert f"<{BASE}/u/" in unsubscribe


# --- unsubscribe -------------------------------------------------------------------------


def test_get_shows_a_confirmation_and_changes_nothing_post_unsubscribes_once(
        db: Workspace, service: Service) -> None:
    mail = sent_mail(db)["anna@example.com"]
    url = mail["List-Unsubscribe"].split("<", 1)[1].split(">", 1)[0]
    status, headers, body = service.request("GET", url)
    assert status == 200 and b"Unsubscribe?" in body and b'method="post"' in body
    assert "an\u2022\u2022@example.com".encode() in body  # masked, never whole
    assert "set-cookie" not in headers and headers["cache-control"] == "no-store"
    assert consent(db, "anna@example.com")[0] == "subscribed"  # a scanner's GET did nothing
    for _ in range(2):  # RFC 8058 one-click POST, replayed
        status, headers, body = service.request(
            "POST", url, body="List-Unsubscribe=One-Click",
            headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert status == 200 and b"You are unsubscribed" in body
        assert "set-cookie" not in headers
    assert consent(db, "anna@example.com")[:2] == ("unsubscribed", "link")
    assert consent(db, "bob@example.com")[0] == "subscribed"
    assert len(events(db, "unsubscribe")) == 1
    # effective for the very next send
    db.write("campaigns/next.yaml", campaign("Next"))
    with FaultServer() as server:
        summary = send(db, server, "next")
    assert summary["sent"] == 2 and summary["excluded"] == {"unsubscribed": 1}
    assert sorted(c.recipient for c in server.caught) == ["bob@example.com",
                                                          "chloe@example.com"]
    assert db.run("report", "note", "--json").json()["unsubscribes"] == 1


def test_tampered_swapped_and_wrong_purpose_tokens_are_refused(
        db: Workspace, service: Service) -> None:
    mail = sent_mail(db)["anna@example.com"]
    url = mail["List-Unsubscribe"].split("<", 1)[1].split(">", 1)[0]
    token = url.rsplit("/", 1)[1]
    payload, signature = token.split(".")
    tampered = f"{payload[:-2]}AA.{signature}"
    swapped = sign(Claims("unsubscribe", "C0", "note", "1"), "someone-elses-key")
    held = next(h for h in hrefs(mail) if "/c/" in h).split("/c/")[1].split("/")[0]
    personal = [h for h in hrefs(mail) if "/c/" in h][1].rsplit("/", 1)[1]
    for bad in (tampered, swapped, held, personal, "nonsense", f"{payload}."):
        status, _, body = service.request("POST", f"/u/{bad}", body="List-Unsubscribe=One-Click")
        assert status == 400 and b"This link does not work" in body
    assert consent(db, "anna@example.com")[0] == "subscribed"
    # a link signed with the previous key still works (MAILER_SECRET_KEY_OLD)
    old = sign(Claims("unsubscribe", "C0", "note", "1"), "an-older-key")
    assert service.request("POST", f"/u/{old}", body="")[0] == 200
    assert consent(db, "anna@example.com")[0] == "unsubscribed"


# --- clicks and opens -----------------------------------------------------------------------


def test_a_click_redirects_only_to_the_url_signed_into_the_mail(
        db: Workspace, service: Service) -> None:
    mails = sent_mail(db)
    mail = mails["anna@example.com"]
    held, personal = [h for h in hrefs(mail) if "/c/" in h]
    bobs = [h for h in hrefs(mails["bob@example.com"]) if "/c/" in h][1]
    boots, account = ("https://shop.example/boots?size=42&colour=red",
                      "https://shop.example/account?c=C1")
    # (two links of one mail within 2 s would be a scanner's burst: bob clicks the other)
    for url, target in ((held, boots), (held, boots), (bobs, account)):
        status, headers, _ = service.request("GET", url)
        assert status == 302 and headers["location"] == target
    # a link of a mail sent before click tokens (its target signed into its own token)
    claims = verify(personal.rsplit("/", 1)[1], "click", [KEY])
    old_form = sign(Claims("click", claims.customer, claims.campaign, claims.message, boots), KEY)
    status, headers, _ = service.request("GET", f"/c/{old_form}")
    assert status == 302 and headers["location"] == boots
    # the same claims with another target or another version, signed with a guessed key;
    # the mail's click token with a link number it does not hold, or not written as one
    token = held.split("/c/")[1].split("/")[0]
    version = verify(token, "clicks", [KEY]).extra
    forged = sign(Claims("click", claims.customer, claims.campaign, claims.message,
                         "https://evil.example/"), "guessed-key")
    forged_mail = sign(Claims("clicks", claims.customer, claims.campaign, claims.message,
                              version), "guessed-key")
    other_version = sign(Claims("clicks", claims.customer, claims.campaign, claims.message,
                                str(int(version) + 1)), KEY)
    for bad in (f"/c/{forged}", f"/c/{forged_mail}/0", f"/c/{token}/1", f"/c/{token}/00",
                f"/c/{token}/-1", f"/c/{token}/0x", f"/c/{token}/99999999999",
                f"/c/{token}", f"/c/{old_form}/0", f"/c/{other_version}/0"):
        status, headers, _ = service.request("GET", bad)
        assert status == 400 and "location" not in headers, bad
    assert [e[3] for e in written(db, "click", 4)] == [boots, boots, account, boots]
    pixel = re.search(rf'<img src="({BASE}/o/[^"]+)"', html_of(mail))
    assert pixel is not None
    status, headers, body = service.request("GET", pixel.group(1))
    assert status == 200 and headers["content-type"] == "image/gif" and body[:6] == b"GIF89a"
    assert service.request("GET", "/o/garbage")[0] == 200  # a pixel never fails
    assert len(written(db, "open", 1)) == 1
    report = db.run("report", "note", "--json").json()
    assert report["clicks"] == {"mails": 2, "total": 4} and report["opens"] == {
        "mails": 1, "total": 1}
    assert report["variants"][0]["clicked"] == 2


# --- ratings --------------------------------------------------------------------------------


def test_a_rating_link_records_nothing_its_button_the_score_a_second_replaces_it_and_a_comment(
        db: Workspace, service: Service) -> None:
    mails = sent_mail(db)
    anna = [h for h in hrefs(mails["anna@example.com"]) if "/r/" in h]
    bob = [h for h in hrefs(mails["bob@example.com"]) if "/r/" in h]
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    status, _, body = service.request("GET", anna[3])  # a mail scanner, or the reader
    assert status == 200 and b"4 of 5" in body and b"<textarea" in body
    assert events(db, "rating") == []
    service.request("POST", anna[3], body="comment=", headers=form)
    service.request("POST", anna[1], body="comment=", headers=form)  # changed her mind: 2
    service.request("POST", bob[4], body="", headers=form)
    status, _, body = service.request(
        "POST", anna[1], body="comment=Too+slow+%3Cscript%3E",
        headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 200 and b"we read every one" in body
    assert events(db, "rating") == [
        ("anna@example.com", "note", db.query("SELECT d.id FROM deliveries d JOIN customers c "
                                              "ON c.id = d.customer_id WHERE c.email = "
                                              "'anna@example.com'")[0][0], None, 2,
         "Too slow <script>"),
        ("bob@example.com", "note", db.query("SELECT d.id FROM deliveries d JOIN customers c "
                                             "ON c.id = d.customer_id WHERE c.email = "
                                             "'bob@example.com'")[0][0], None, 5, None)]
    ratings = db.run("report", "note", "--json").json()["ratings"]
    year, week, _ = datetime.now(UTC).isocalendar()
    assert ratings == {"count": 2, "mean": 3.5, "csat": 50.0,
                       "scores": {"1": 0, "2": 1, "3": 0, "4": 0, "5": 1},
                       "by_week": [{"week": f"{year}-W{week:02d}", "count": 2, "mean": 3.5,
                                    "csat": 50.0}],
                       "by_segment": {"everyone": {"count": 2, "mean": 3.5, "csat": 50.0}}}


# --- the preference centre -------------------------------------------------------------------


def test_preferences_pause_fewer_mails_and_topics_are_honoured_by_the_next_plan(
        db: Workspace, service: Service) -> None:
    mails = sent_mail(db)

    def preferences(email: str) -> str:
        return next(h for h in hrefs(mails[email]) if "/p/" in h)

    form = {"Content-Type": "application/x-www-form-urlencoded"}
    status, _, body = service.request("GET", preferences("anna@example.com"))
    assert status == 200 and b"Pause all mails for 30 days" in body
    assert service.request("POST", preferences("anna@example.com"), body="pause=30d",
                           headers=form)[0] == 200
    assert service.request("POST", preferences("bob@example.com"),
                           body="weekly_cap=1&topic=general&topic=promotions",
                           headers=form)[0] == 200
    status, _, body = service.request("POST", preferences("chloe@example.com"),
                                      body="topic=general", headers=form)
    assert status == 200 and b'id="saved"' in body
    assert consent(db, "anna@example.com")[2] is not None
    assert consent(db, "bob@example.com")[3:] == (1, None)
    topics = consent(db, "chloe@example.com")[4]  # JSON: text on SQLite, a list on PostgreSQL
    assert (json.loads(topics) if isinstance(topics, str) else topics) == ["general"]
    plan = db.run("plan", "sale", "--now", "2026-11-23T12:00", "--json").json()
    reasons = {e["email"]: e["reason"] for e in plan["excluded"]}
    assert reasons == {"anna@example.com": "paused", "bob@example.com": "frequency_cap",
                       "chloe@example.com": "topic"}


def test_sqlite_daemon_and_service_write_at_once_without_locking(ws: Workspace) -> None:
    """The daemon sends 150 mails while readers unsubscribe and click: no request fails,
    nobody is locked out, and each opt-out is honoured from the next mail on."""
    from concurrent.futures import ThreadPoolExecutor

    from tests.smtp_server import Behaviour
    from tests.test_daemon import _daemon, _stop, _wait_for

    addresses = [f"r{n:03d}@example.com" for n in range(150)]
    ws.write("mailer.yaml", ROOMY + "delivery: {concurrency: 4, rate_per_second: 1000}\n")
    ws.write("segments/everyone.yaml", "description: all\nall: [{orders: {at_least: 0}}]\n")
    ws.write("templates/note.html", TEMPLATE)
    rows = ["id,email,first_name"] + [f"C{n},{a},N{n}" for n, a in enumerate(addresses)]
    ws.write("customers.csv", "\n".join(rows) + "\n")
    assert ws.run("import", "customers", "customers.csv", "--now", "2026-01-01").code == 0
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    env.update(ws.env)
    env["MAILER_SECRET_KEY"] = KEY
    served = subprocess.Popen([sys.executable, "-m", "mailer.cli", "--workspace",
                               str(ws.root), "serve", "--port", "0"], env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert served.stdout is not None
    service = Service(int(served.stdout.readline().rsplit(":", 1)[1]))
    now = datetime.now(UTC).replace(microsecond=0)
    ws.write("campaigns/note.yaml", f"name: Note\ntrigger: once\nat: {now:%Y-%m-%dT%H:%M:%S}Z\n"
                                    "grace: 1h\nsegment: everyone\ntemplate: note.html\n"
                                    "subject: Note\n")
    leavers = [f"C{n}" for n in range(100, 150)]
    with FaultServer(Behaviour(delay=0.15)) as server:
        daemon = _daemon(ws, server)
        try:
            assert _wait_for(lambda: len(server.caught) >= 10, 30)

            def leave(store_id: str) -> int:
                token = sign(Claims("unsubscribe", store_id, "note", "0"), KEY)
                click = sign(Claims("click", store_id, "note", "0", "https://shop.example/"),
                             KEY)
                assert service.request("GET", f"/c/{click}")[0] == 302
                return service.request("POST", f"/u/{token}", body="")[0]

            with ThreadPoolExecutor(8) as pool:
                statuses = list(pool.map(leave, leavers))
            assert statuses == [200] * len(leavers)
            assert _wait_for(lambda: ws.query(
                "SELECT count(*) FROM deliveries WHERE status IN ('queued', 'sending')")[0][0]
                == 0, 60)
        finally:
            try:
                took, log = _stop(daemon)
            finally:  # never leave the service running, whatever the daemon did
                served.terminate()
                _, served_err = served.communicate(timeout=10)
    assert took < 30 and "database is locked" not in log + served_err
    states = dict(ws.query("SELECT c.store_id, d.status FROM deliveries d JOIN customers c "
                           "ON c.id = d.customer_id"))
    caught = {c.recipient for c in server.caught}
    for n, address in enumerate(addresses):
        if f"C{n}" in leavers and states[f"C{n}"] == "skipped":
            assert address not in caught
        else:
            assert states[f"C{n}"] == "sent" and address in caught
    assert sum(1 for s in states.values() if s == "skipped") > 0
    assert len(events(ws, "click")) == len(leavers)


def test_winner_sends_the_test_share_first_then_the_best_subject_to_the_rest(
        db: Workspace) -> None:
    from mailer.store.events import record

    addresses = [f"ab{n:02d}@example.com" for n in range(40)]
    shop(db, addresses)
    (db.root / "campaigns" / "sale.yaml").unlink()
    db.write("campaigns/note.yaml", "name: Note\ntrigger: once\nat: 2026-11-23T09:00\n"
                                    "grace: 12h\nsegment: everyone\ntemplate: note.html\n"
                                    "subject: [Plain subject, Bold subject]\n"
                                    "winner: {metric: clicks, test_share: 50%, after: 4h}\n")
    with FaultServer() as server:
        first = send(db, server, "note", now="2026-11-23T10:00")
        tested = {c.recipient: str(c.message()["Subject"]) for c in server.caught}
    held = first["excluded"]["waiting_for_winner"]
    assert first["sent"] == len(tested) and first["sent"] + held == 40
    assert 10 <= len(tested) <= 30  # about half, by a stable hash
    assert set(tested.values()) == {"Plain subject", "Bold subject"}
    # Readers click only the bold subject.
    engine = db.engine()
    for row_id, store_id in db.query(
            "SELECT d.id, c.store_id FROM deliveries d JOIN customers c ON c.id = "
            "d.customer_id WHERE d.subject_variant = 1"):
        record(engine, "click", Claims("click", store_id, "note", str(row_id),
                                       "https://shop.example/"), datetime.now(UTC), "x")
    engine.dispose()
    with FaultServer() as server:
        early = send(db, server, "note", now="2026-11-23T13:00")
        assert early["sent"] == 0 and early["excluded"]["waiting_for_winner"] == held
        later = send(db, server, "note", now="2026-11-23T14:30")
    assert later["sent"] == held
    assert {str(c.message()["Subject"]) for c in server.caught} == {"Bold subject"}
    report = db.run("report", "note", "--json").json()
    assert report["winner"]["variant"] == 2 and report["winner"]["confidence"] > 0.99


def test_a_winner_without_two_subjects_or_with_too_long_a_test_is_a_validation_error(
        ws: Workspace) -> None:
    shop(ws, ["a@example.com"])
    ws.write("campaigns/sale.yaml", "name: Sale\ntrigger: once\nat: 2026-11-23T09:00\n"
                                    "grace: 2h\nsegment: everyone\ntemplate: note.html\n"
                                    "subject: [One, Two]\n"
                                    "winner: {metric: clicks, test_share: 20%, after: 4h}\n")
    ws.write("campaigns/note.yaml", campaign("Note") + "winner: {metric: opens, test_share: "
                                                       "10%, after: 1h}\n")
    result = ws.run("validate")
    assert result.code == 1
    assert ("campaigns/sale.yaml:1: winner.after must be shorter than grace, or the rest of "
            "the audience would never get the winning subject") in result.stderr.splitlines()
    assert "campaigns/note.yaml:1: winner needs at least two subjects to choose from" in \
        result.stderr.splitlines()
