"""Double opt-in (issue 20 step 5, docs/events.md#double-opt-in): a customer who asks is
`pending` and planned with reason `pending`; the confirmation notice and its one
reminder arrive at a real SMTP server; the signed /confirm/ link confirms through the
real `mailer serve` (a button, in headless Chromium), with the proof kept; forged,
expired and other purposes' tokens are refused; the never confirmed are never mailed."""

from __future__ import annotations

import base64
import json
import re
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any

from mailer.delivery.confirmations import confirm_url
from mailer.mail.links import Claims, sign
from mailer.web.listener import HEADERS
from tests.conftest import SETTINGS, Workspace
from tests.smtp_server import Behaviour, FaultServer
from tests.test_crash import _wait_for
from tests.test_daemon import _daemon, _stop
from tests.test_delivery import KEY
from tests.test_hooks import SECRETS, b64_hmac, sample, saved
from tests.test_preview_browser import ARTIFACTS
from tests.test_serve import serving
from tests.test_serve_browser import chromium

DOI = SETTINGS + ("consent: {double_opt_in: true}\n"
                  "policy: {frequency: [{max: 10, per: 1d}]}\n")
T0 = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)  # 09:00 in Berlin, the daily campaign's hour
TEMPLATE = ("<p>Hi {{ customer.first_name }}</p><p>{{ store.address }} "
            "<a href=\"{{ links.unsubscribe }}\">unsubscribe</a></p>")


def z(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def store(db: Workspace, rows: str, settings: str = DOI) -> None:
    """A store with a daily newsletter to everyone, and the customers of ROWS (CSV)."""
    db.write("mailer.yaml", settings)
    db.write("segments/everyone.yaml", "description: all\nall: [{orders: {at_least: 0}}]\n")
    db.write("templates/daily.html", TEMPLATE)
    db.write("campaigns/daily.yaml", "name: Daily\ntrigger: schedule\n"
             "schedule: \"0 9 * * *\"\nsegment: everyone\ntemplate: daily.html\n"
             "subject: Today at Pine\n")
    db.write("customers.csv", "id,email,first_name,subscribed\n" + rows)
    result = db.run("import", "customers", "customers.csv", "--now", z(T0 - timedelta(hours=1)))
    assert result.code == 0, result.stderr


def run_once(db: Workspace, server: FaultServer, now: datetime) -> Any:
    db.env.update({"MAILER_SMTP_URL": server.url + "?timeout=10", "MAILER_SECRET_KEY": KEY})
    result = db.run("run", "--once", "--now", z(now), "--json")
    assert result.code == 0, result.stdout + result.stderr
    return result.json()


def customer(db: Workspace, store_id: str) -> dict[str, Any]:
    row = db.query("SELECT consent, consent_source, consent_reason, opt_in_source, "
                   "opt_in_requested_at, opt_in_sent_at, opt_in_reminded_at, "
                   "opt_in_confirmed_at, opt_in_ip FROM customers WHERE store_id = :s",
                   s=store_id)[0]
    return dict(row._mapping)


def history(db: Workspace, store_id: str) -> list[tuple[str, str | None, str | None]]:
    return [tuple(r) for r in db.query(
        "SELECT h.state, h.source, h.reason FROM consent_history h JOIN customers c "
        "ON c.id = h.customer_id WHERE c.store_id = :s ORDER BY h.id", s=store_id)]


def stored_time(value: Any) -> datetime:
    """A timestamp column read back by text SQL, as an aware UTC datetime."""
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return moment.replace(tzinfo=UTC)


def confirm_link(mail: EmailMessage) -> str:
    text = mail.get_body(("plain",))
    assert text is not None
    found = re.findall(r"https://mail\.shop\.example/confirm/[A-Za-z0-9_.-]+",
                       str(text.get_content()))
    assert len(found) == 1
    return found[0]


def test_pending_from_an_import_is_planned_with_reason_pending(db: Workspace) -> None:
    store(db, "P,pia@example.com,Pia,pending\nS,sam@example.com,Sam,true\n"
              "N,noa@example.com,Noa,false\n")
    assert [customer(db, s)["consent"] for s in "PSN"] == ["pending", "subscribed",
                                                          "not_subscribed"]
    assert customer(db, "P")["opt_in_source"] == "import"
    plan = db.run("plan", "daily", "--now", z(T0), "--json").json()
    assert [r["id"] for r in plan["recipients"]] == ["S"]
    assert {e["id"]: e["reason"] for e in plan["excluded"]} == {"P": "pending",
                                                                "N": "not_subscribed"}
    # `true` never confirms a pending customer (only their click does); `false` withdraws;
    # `pending` asks a not-subscribed one, never a subscribed one
    db.write("again.csv", "id,email,subscribed\nP,pia@example.com,true\n"
                          "N,noa@example.com,pending\nS,sam@example.com,pending\n")
    assert db.run("import", "customers", "again.csv", "--now", z(T0)).code == 0
    assert [customer(db, s)["consent"] for s in "PSN"] == ["pending", "subscribed", "pending"]
    db.write("withdraw.csv", "id,email,subscribed\nP,pia@example.com,false\n")
    assert db.run("import", "customers", "withdraw.csv", "--now", z(T0)).code == 0
    assert customer(db, "P")["consent"] == "not_subscribed"
    assert [state for state, _, _ in history(db, "N")] == ["not_subscribed", "pending"]
    # without double opt-in nothing would ask them to confirm: a bad row, named
    db.write("mailer.yaml", SETTINGS)
    db.write("late.csv", "id,email,subscribed\nL,lou@example.com,pending\n")
    refused = db.run("import", "customers", "late.csv", "--now", z(T0))
    assert refused.code == 1
    assert "late.csv:2: subscribed: pending needs `consent: {double_opt_in: true}`" \
        in refused.stderr


def test_a_customer_arriving_by_webhook_is_pending(db: Workspace) -> None:
    store(db, "S,sam@example.com,Sam,true\n")
    db.env.update(SECRETS)
    body = sample("shopify_customers_create.json")  # email_marketing_consent: subscribed
    db.write("saved.jsonl", saved("shopify", {
        "X-Shopify-Topic": "customers/create", "X-Shopify-Webhook-Id": "w-1",
        "X-Shopify-Hmac-Sha256": b64_hmac(SECRETS["MAILER_SHOPIFY_SECRET"], body)}, body)
        + "\n")
    result = db.run("hooks", "replay", "saved.jsonl", "--now", z(T0))
    assert result.code == 0, result.stdout + result.stderr
    who = json.loads(body)["id"]
    found = customer(db, str(who))
    assert (found["consent"], found["opt_in_source"]) == ("pending", "shopify")
    status = db.run("status", "--json").json()
    assert (status["subscribed"], status["pending"]) == (1, 1)
    assert "pending" in db.run("status").stdout


def test_the_confirmation_and_one_reminder_arrive_and_the_unconfirmed_get_nothing_else(
        db: Workspace) -> None:
    store(db, "P,pia@example.com,Pia,pending\nS,sam@example.com,Sam,true\n")
    got: list[list[str]] = []
    with FaultServer() as server:
        def at(moment: datetime) -> None:
            before = len(server.caught)
            run_once(db, server, moment)
            got.append(sorted(f"{c.recipient}: {c.message()['Subject']}"
                              for c in server.caught[before:]))

        at(T0)
        # the reminder is due 3 days after the confirmation was queued (on the logical
        # clock: --now plus the time the command had run by then)
        asked = stored_time(customer(db, "P")["opt_in_sent_at"])
        assert T0 <= asked < T0 + timedelta(minutes=1)
        asked = asked.replace(microsecond=0) + timedelta(seconds=1)  # --now has seconds
        for moment in [T0 + timedelta(hours=1), asked + timedelta(days=3, minutes=-1),
                       asked + timedelta(days=3), T0 + timedelta(days=3, hours=1),
                       T0 + timedelta(days=4), T0 + timedelta(days=10),
                       T0 + timedelta(days=30)]:
            at(moment)
    confirm = "pia@example.com: Please confirm your subscription to Pine & Co"
    reminder = "pia@example.com: Reminder: please confirm your subscription to Pine & Co"
    daily = "sam@example.com: Today at Pine"
    assert got == [[confirm, daily], [], [], [reminder, daily], [], [daily], [daily],
                   [daily]]  # never confirmed: never mailed again
    mail = next(c.message() for c in server.caught if c.recipient == "pia@example.com")
    assert mail["List-Unsubscribe"] is None  # a notice, not marketing
    assert mail["From"] == "Pine & Co <hello@shop.example>"
    link = confirm_link(mail)
    html = mail.get_body(("html",))
    assert html is not None and f'href="{link}"' in str(html.get_content())
    found = customer(db, "P")
    assert found["consent"] == "pending"
    assert found["opt_in_sent_at"] is not None and found["opt_in_reminded_at"] is not None
    keys = [k for (k,) in db.query("SELECT key FROM notices ORDER BY id")]
    assert [k.split(":")[0] for k in keys] == ["confirm", "confirm-reminder"]
    assert db.query("SELECT count(*) FROM deliveries d JOIN customers c ON "
                    "c.id = d.customer_id WHERE c.store_id = 'P'")[0][0] == 0


def test_a_pending_customer_whose_address_changes_is_asked_again_at_the_new_one(
        db: Workspace) -> None:
    store(db, "P,pia@example.com,Pia,pending\n")
    with FaultServer() as server:
        run_once(db, server, T0)
        moved = T0 + timedelta(days=1)  # the request (T0 - 1 h) is more than a day old
        db.write("customers.csv", "id,email,first_name\nP,pia.new@example.com,Pia\n")
        assert db.run("import", "customers", "customers.csv", "--now", z(moved)).code == 0
        found = customer(db, "P")
        assert found["consent"] == "pending" and found["opt_in_sent_at"] is None
        assert moved <= stored_time(found["opt_in_requested_at"]) < moved + timedelta(minutes=1)
        run_once(db, server, moved + timedelta(hours=1))
        run_once(db, server, moved + timedelta(hours=2))  # asked once at each address
    subjects = [(c.recipient, c.message()["Subject"]) for c in server.caught]
    assert subjects == [
        ("pia@example.com", "Please confirm your subscription to Pine & Co"),
        ("pia.new@example.com", "Please confirm your subscription to Pine & Co")]
    old, new = (confirm_link(c.message()) for c in server.caught)
    assert old != new


def move(db: Workspace, email: str, at: datetime) -> str:
    """Import customer P at EMAIL at AT; what the import said on stderr (its log)."""
    db.write("moved.csv", f"id,email,first_name\nP,{email},Pia\n")
    result = db.run("import", "customers", "moved.csv", "--now", z(at))
    assert result.code == 0, result.stderr
    return result.stderr


def test_a_pending_customer_is_asked_again_at_most_once_a_day(db: Workspace) -> None:
    """Whoever feeds imports or webhooks must not mail an address a day more than once
    by rotating a pending customer through addresses: three new addresses within an
    hour get one new confirmation, and the next change a day after it asks again."""
    store(db, "P,pia@example.com,Pia,pending\n")  # asked at T0 - 1 h
    day = T0 + timedelta(days=2)
    with FaultServer() as server:
        run_once(db, server, T0)
        said = [move(db, "one@example.com", day)]
        run_once(db, server, day + timedelta(minutes=5))
        asked = customer(db, "P")
        said.append(move(db, "two@example.com", day + timedelta(minutes=20)))
        run_once(db, server, day + timedelta(minutes=25))
        said.append(move(db, "three@example.com", day + timedelta(minutes=40)))
        run_once(db, server, day + timedelta(minutes=45))
        found = customer(db, "P")
        # still pending at the last address, with the request of the first change
        assert found["consent"] == "pending"
        assert (found["opt_in_requested_at"], found["opt_in_sent_at"]) == (
            asked["opt_in_requested_at"], asked["opt_in_sent_at"])
        assert db.query("SELECT email FROM customers WHERE store_id = 'P'")[0][0] == \
            "three@example.com"
        later = day + timedelta(days=1, minutes=1)  # a day after that request
        said.append(move(db, "four@example.com", later))
        run_once(db, server, later + timedelta(minutes=5))
    subject = "Please confirm your subscription to Pine & Co"
    assert [(c.recipient, c.message()["Subject"]) for c in server.caught] == [
        ("pia@example.com", subject), ("one@example.com", subject),
        ("four@example.com", subject)]
    assert "double opt-in: customer P asked again (new address)" in said[0]
    first = stored_time(asked["opt_in_requested_at"])  # the logical clock: --now and after
    assert day <= first < day + timedelta(minutes=1)
    for refused in said[1:3]:
        assert ("double opt-in: customer P not asked again (new address): asked at "
                f"{z(first)}, next no sooner than {z(first + timedelta(days=1))}") in refused
    assert "double opt-in: customer P asked again (new address)" in said[3]
    assert "@example.com" not in "".join(said)  # the log names no address


def test_webhooks_rotating_a_pending_customer_get_one_new_confirmation_a_day(
        db: Workspace) -> None:
    """The same rule through the webhook path (`mailer hooks replay`, as `mailer serve`
    takes them): a shop's customers/update deliveries changing a pending customer's
    address three times within an hour get one new confirmation."""
    store(db, "S,sam@example.com,Sam,true\n")
    db.env.update(SECRETS)
    created = json.loads(sample("shopify_customers_create.json"))
    day = T0 + timedelta(days=2)

    def deliver(n: int, topic: str, email: str, at: datetime) -> str:
        body = json.dumps({**created, "email": email,
                           "updated_at": z(at - timedelta(seconds=1))}).encode()
        db.write("saved.jsonl", saved("shopify", {
            "X-Shopify-Topic": topic, "X-Shopify-Webhook-Id": f"w-{n}",
            "X-Shopify-Hmac-Sha256": b64_hmac(SECRETS["MAILER_SHOPIFY_SECRET"], body)},
            body) + "\n")
        result = db.run("hooks", "replay", "saved.jsonl", "--now", z(at))
        assert result.code == 0, result.stdout + result.stderr
        return result.stderr

    with FaultServer() as server:
        deliver(1, "customers/create", "ana.lima@example.com", T0)
        run_once(db, server, T0 + timedelta(minutes=5))
        said = []
        for n, (email, minutes) in enumerate([("one@example.com", 0), ("two@example.com", 20),
                                              ("three@example.com", 40)], start=2):
            said.append(deliver(n, "customers/update", email, day + timedelta(minutes=minutes)))
            run_once(db, server, day + timedelta(minutes=minutes + 5))
    subject = "Please confirm your subscription to Pine & Co"
    assert [(c.recipient, c.message()["Subject"]) for c in server.caught
            if c.recipient != "sam@example.com"] == [
        ("ana.lima@example.com", subject), ("one@example.com", subject)]
    who = created["id"]
    assert f"double opt-in: customer {who} asked again (new address)" in said[0]
    assert all(f"double opt-in: customer {who} not asked again (new address)" in line
               for line in said[1:])
    assert customer(db, str(who))["consent"] == "pending"


def test_a_new_address_before_the_first_confirmation_gets_the_one_confirmation(
        db: Workspace) -> None:
    store(db, "P,pia@example.com,Pia,pending\n")
    requested = customer(db, "P")["opt_in_requested_at"]
    said = move(db, "pia.fixed@example.com", T0 - timedelta(minutes=30))
    assert "asked" not in said  # nothing went to the old address: no one asked again
    assert customer(db, "P")["opt_in_requested_at"] == requested
    with FaultServer() as server:
        run_once(db, server, T0)
    assert [c.recipient for c in server.caught] == ["pia.fixed@example.com"]


def test_withdrawing_and_asking_again_within_a_day_sends_no_second_confirmation(
        db: Workspace) -> None:
    store(db, "P,pia@example.com,Pia,pending\n")
    with FaultServer() as server:
        run_once(db, server, T0)
        for at, answer in ((T0 + timedelta(hours=1), "false"), (T0 + timedelta(hours=2),
                                                              "pending")):
            db.write("again.csv", f"id,email,subscribed\nP,pia@example.com,{answer}\n")
            result = db.run("import", "customers", "again.csv", "--now", z(at))
            assert result.code == 0, result.stderr
        assert "customer P not asked again (withdrew and asked again)" in result.stderr
        assert customer(db, "P")["consent"] == "pending"
        run_once(db, server, T0 + timedelta(hours=3))
    assert [c.recipient for c in server.caught] == ["pia@example.com"]  # one, at T0
    # the request stays: its reminder is still to come, 3 days after that confirmation
    assert customer(db, "P")["opt_in_reminded_at"] is None


def test_no_reminder_when_the_confirmation_was_refused(db: Workspace) -> None:
    store(db, "P,bad550@example.com,Pia,pending\n")
    with FaultServer() as server:
        run_once(db, server, T0)
        run_once(db, server, T0 + timedelta(days=4))
    assert server.caught == []
    assert [s for (s,) in db.query("SELECT status FROM notices")] == ["failed"]
    assert customer(db, "P")["opt_in_reminded_at"] is not None  # decided: none goes


WIDTHS = {"phone": (390, 844), "desk": (1280, 900)}


def shown(page: Any, name: str, selector: str) -> None:
    """The page at phone and desk widths: SELECTOR in view, nothing wider than the
    screen; screenshots kept as test-artifacts/NAME-phone.png and -desk.png."""
    for label, (width, height) in WIDTHS.items():
        page.set_viewport_size({"width": width, "height": height})
        assert page.locator(selector).is_visible()
        assert page.evaluate("document.documentElement.scrollWidth") <= width
        box = page.locator(selector).bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= width
        page.screenshot(path=str(ARTIFACTS / f"{name}-{label}.png"), full_page=True)
        assert (ARTIFACTS / f"{name}-{label}.png").stat().st_size > 5_000


def test_confirming_in_a_browser_subscribes_with_the_proof_kept(db: Workspace) -> None:
    store(db, "P,pia@example.com,Pia,pending\n")
    with FaultServer() as server:
        run_once(db, server, T0)
    link = confirm_link(server.caught[0].message())
    path = link.removeprefix("https://mail.shop.example")
    at = T0 + timedelta(hours=2)
    database = "postgresql" if db.database else "sqlite"
    with serving(db, now=z(at)) as service, chromium() as browser:
        page = browser.new_page(viewport={"width": 480, "height": 800})
        answer = page.goto(f"http://127.0.0.1:{service.port}{path}")
        assert answer is not None and answer.status == 200
        for name, value in HEADERS.items():  # the same security headers as every page
            assert answer.headers[name.lower()] == value
        assert page.locator("h1").inner_text() == "Confirm your subscription"
        assert page.locator("strong").inner_text() == "pi•@example.com"  # masked
        said = " ".join(page.locator("body").inner_text().split())
        assert "Get Pine & Co's mail at pi•@example.com." in said
        assert "without your confirmation we send you nothing more" in said
        assert page.locator("#confirm").inner_text() == "Yes, subscribe me"
        shown(page, f"confirm-{database}", "#confirm")
        assert customer(db, "P")["consent"] == "pending"  # a scanner's GET did nothing
        page.locator("#confirm").click()
        page.wait_for_selector("#confirmed")
        assert page.locator("h1").inner_text() == "You are subscribed"
        assert page.locator("strong").inner_text() == "pi•@example.com"  # masked
        said = " ".join(page.locator("body").inner_text().split())
        assert "Thank you: pi•@example.com now gets Pine & Co's mail." in said
        assert "Every mail has a link to unsubscribe" in said
        shown(page, f"confirmed-{database}", "#confirmed")
        assert browser.contexts[0].cookies() == []
        # a second press (a replay): the same answer, nothing written twice
        status, _, body = service.request("POST", path, body="")
        assert status == 200 and b"You are subscribed" in body
    found = customer(db, "P")
    assert (found["consent"], found["consent_source"], found["consent_reason"],
            found["opt_in_source"], found["opt_in_ip"]) == (
        "subscribed", "import", "double_opt_in", "import", "127.0.0.1")
    assert at <= stored_time(found["opt_in_confirmed_at"]) < at + timedelta(minutes=5)
    assert history(db, "P") == [("pending", "import", None),
                                ("subscribed", "import", "double_opt_in")]
    # now planned like anyone subscribed, and the card keeps the proof
    plan = db.run("plan", "daily", "--now", z(T0 + timedelta(days=1)), "--json").json()
    assert [r["id"] for r in plan["recipients"]] == ["P"]
    card = db.run("customer", "P", "--now", z(T0 + timedelta(days=1)), "--json").json()
    assert card["consent"]["state"] == "subscribed"
    assert card["opt_in"]["ip"] == "127.0.0.1" and card["opt_in"]["source"] == "import"
    # no reminder for the confirmed, ever
    with FaultServer() as server:
        run_once(db, server, T0 + timedelta(days=4))
    assert [c.message()["Subject"] for c in server.caught] == ["Today at Pine"]


def test_forged_expired_and_other_purposes_tokens_are_refused(db: Workspace) -> None:
    store(db, "P,pia@example.com,Pia,pending\nU,uli@example.com,Uli,pending\n")
    db.run("unsubscribe", "uli@example.com")
    good = confirm_url("https://x", "P", "pia@example.com", T0, KEY).rsplit("/", 1)[1]
    payload, signature = good.split(".")
    tampered = f"{payload[:-2]}AA.{signature}"
    other_key = confirm_url("https://x", "P", "pia@example.com", T0,
                            "someone-elses-key").rsplit("/", 1)[1]
    unsubscribe = sign(Claims("unsubscribe", "P", "daily", "1"), KEY)
    keep = sign(Claims("keep_subscribed", "P", "daily", "1"), KEY)
    expired = confirm_url("https://x", "P", "pia@example.com", T0 - timedelta(days=8),
                          KEY).rsplit("/", 1)[1]
    unknown = confirm_url("https://x", "NOBODY", "nobody@example.com", T0, KEY).rsplit("/", 1)[1]
    # a link sent to the address P had before: that mailbox never confirms P's new one
    elsewhere = confirm_url("https://x", "P", "old-pia@example.com", T0, KEY).rsplit("/", 1)[1]
    withdrawn = confirm_url("https://x", "U", "uli@example.com", T0, KEY).rsplit("/", 1)[1]
    with serving(db, now=z(T0 + timedelta(hours=1))) as service:
        for bad in (tampered, other_key, unsubscribe, keep, "nonsense", f"{payload}."):
            for method in ("GET", "POST"):
                status, _, body = service.request(method, f"/confirm/{bad}", body="")
                assert status == 400 and b"This link does not work" in body
        # a confirm token never unsubscribes, nor keeps anyone subscribed
        assert service.request("POST", f"/u/{good}", body="")[0] == 400
        assert service.request("POST", f"/k/{good}", body="")[0] == 400
        status, _, body = service.request("POST", f"/confirm/{expired}", body="")
        assert status == 410 and b"This link has expired" in body
        assert service.request("POST", f"/confirm/{unknown}", body="")[0] == 404
        # an old link never re-subscribes someone who opted out since
        status, _, body = service.request("POST", f"/confirm/{withdrawn}", body="")
        assert status == 410 and b"Nothing to confirm" in body
        status, _, body = service.request("POST", f"/confirm/{elsewhere}", body="")
        assert status == 410 and b"Nothing to confirm" in body
        assert customer(db, "P")["consent"] == "pending"
        assert customer(db, "U")["consent"] == "unsubscribed"
        status, _, body = service.request("POST", f"/confirm/{good}", body="")
        assert status == 200 and b"You are subscribed" in body
    assert customer(db, "P")["consent"] == "subscribed"


def test_the_token_names_its_purpose() -> None:
    token = confirm_url("https://mail.shop.example", "P", "pia@example.com", T0,
                        KEY).rsplit("/", 1)[1]
    fields = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    assert fields[:2] == ["d", "P"]


def test_the_daemon_sweep_sends_the_confirmation_and_never_the_newsletter(
        db: Workspace) -> None:
    store(db, "P,pia@example.com,Pia,pending\n")
    db.write("customers.csv", "id,email,first_name,subscribed\nQ,quinn@example.com,Q,pending\n")
    assert db.run("import", "customers", "customers.csv").code == 0  # on the real clock
    db.write("campaigns/always.yaml", "name: Always\ntrigger: promotion\n"
             "starts: 2026-01-01T00:00\nends: 2030-01-01T00:00\nsegment: everyone\n"
             "template: daily.html\nsubject: Always on\n")  # due whenever the test runs
    with FaultServer() as server:
        daemon = _daemon(db, server)
        try:
            assert _wait_for(lambda: len(server.caught) == 2, 60)
        finally:
            _, log = _stop(daemon)
    assert sorted(c.recipient for c in server.caught) == ["pia@example.com",
                                                          "quinn@example.com"]
    assert {c.message()["Subject"] for c in server.caught} == {
        "Please confirm your subscription to Pine & Co"}
    assert "double opt-in: 2 confirmations and 0 reminders queued" in log
    assert "pending=" in log  # the sweep held the promotion back (pending=1 or 2 a sweep)
    assert db.query("SELECT count(*) FROM deliveries")[0][0] == 0
    assert "pia@example.com" not in log  # notices to customers log no address


def test_a_typo_fixed_after_the_confirmation_bounced_is_asked_at_once(db: Workspace) -> None:
    """The confirmation to a mistyped address is refused (550 5.1.1): the fixed address
    is asked within the day, since nothing reached anyone."""
    store(db, "P,bad550@example.com,Pia,pending\n")
    with FaultServer() as server:
        run_once(db, server, T0)
        said = move(db, "pia@example.com", T0 + timedelta(hours=1))
        run_once(db, server, T0 + timedelta(hours=2))
    assert [c.recipient for c in server.caught] == ["pia@example.com"]
    assert "customer P asked again (new address; the last confirmation was refused)" in said
    assert customer(db, "P")["consent"] == "pending"


def test_a_confirmation_refused_after_the_address_was_fixed_is_followed_by_a_reminder(
        db: Workspace) -> None:
    """The address changed while its confirmation was still being retried (not asked
    again: within the day); once that confirmation is given up, the one reminder goes
    to the address the customer has now, with a link that confirms it."""
    store(db, "P,temp451@example.com,Pia,pending\n")
    with FaultServer(Behaviour(fails=100)) as server:
        run_once(db, server, T0)  # deferred: 451 at RCPT
        said = move(db, "pia@example.com", T0 + timedelta(hours=1))
        assert "customer P not asked again (new address)" in said
        run_once(db, server, T0 + timedelta(days=3))  # retried past delivery.retry_for
        assert [s for (s,) in db.query("SELECT status FROM notices")] == ["failed"]
        run_once(db, server, T0 + timedelta(days=3, hours=1))
    assert [c.recipient for c in server.caught] == ["pia@example.com"]
    reminder = server.caught[0].message()
    assert "confirm" in reminder["Subject"].lower()
    assert "/confirm/" in confirm_link(reminder)
    assert customer(db, "P")["opt_in_reminded_at"] is not None


def test_asking_again_long_after_a_withdrawal_with_nothing_sent_is_a_new_request(
        db: Workspace) -> None:
    store(db, "P,pia@example.com,Pia,pending\n")  # asked at T0 - 1 h, nothing queued yet
    for at, answer in ((T0 - timedelta(minutes=50), "false"),
                       (T0 + timedelta(days=30), "pending")):
        db.write("again.csv", f"id,email,subscribed\nP,pia@example.com,{answer}\n")
        assert db.run("import", "customers", "again.csv", "--now", z(at)).code == 0
    found = customer(db, "P")
    assert found["consent"] == "pending"
    asked = stored_time(found["opt_in_requested_at"])  # the new request's, not the old one's
    assert T0 + timedelta(days=30) <= asked < T0 + timedelta(days=30, minutes=1)
