"""trigger: abandoned_checkout (issue 20 step 2.2): a checkout `after` old, not completed,
whose customer paid for no order since, is mailed once (`checkout:<id>`, expiring 7 days
after the checkout was created); an order cancels it when planning and again right
before the wire (reason `ordered`). On both databases, the checkouts arriving by
webhook through a real `mailer serve`, the mails through a real SMTP server."""

from __future__ import annotations

from datetime import UTC, datetime

from tests.conftest import SETTINGS, Workspace
from tests.smtp_server import FaultServer
from tests.test_delivery import send
from tests.test_hooks import SECRETS, custom, sample, shopify
from tests.test_serve import serving
from tests.test_signup_trigger import planned, run_plan

CAMPAIGN = ("name: Your cart\ntrigger: abandoned_checkout\nafter: 1h\nsegment: everyone\n"
            "template: mail.html\nsubject: You left something behind\n")
TEMPLATE = ("<p>Hello {{ customer.first_name }}. Your cart: {{ checkout.url }}\n"
            "{% for item in checkout.items %}{{ item.quantity }} x {{ item.product }} "
            "({{ item.sku }}) at {{ item.price }}; {% endfor %}total {{ checkout.total }} "
            "{{ checkout.currency }}. {{ store.address }} "
            "<a href='{{ links.unsubscribe }}'>unsubscribe</a></p>\n")
ANA = "7392650412345"  # Shopify's customer; her checkout 35123456789012 is of 15:00Z
# Berlin: 17:00 is 16:00Z, when Ana's checkout is exactly an hour old; Mia's is of 11:00Z
DUE = "2026-11-23T17:00"


def shop(db: Workspace) -> Workspace:
    db.write("mailer.yaml", SETTINGS + "policy: {frequency: []}\n")
    db.write("segments/everyone.yaml", "description: all\nall: [{orders: {at_least: 0}}]\n")
    db.write("templates/mail.html", TEMPLATE)
    db.write("campaigns/cart.yaml", CAMPAIGN)
    with serving(db, **SECRETS) as hooks:
        for topic, name in (("customers/create", "shopify_customers_create.json"),
                            ("checkouts/create", "shopify_checkouts_create.json")):
            assert shopify(hooks, topic, sample(name), name)[0] == 200
        for name in ("custom_customer.json", "custom_checkout.json"):
            assert custom(hooks, sample(name))[0] == 200
    return db


def test_open_checkouts_are_due_after_their_age_and_expire_a_week_after(db: Workspace) -> None:
    shop(db)
    checked = db.run("validate")  # checkout.* is known to an abandoned_checkout campaign
    assert checked.code == 0, checked.stdout + checked.stderr
    # a second before Ana's checkout is an hour old, only Mia's is due
    assert {k: v["occurrence"] for k, v in planned(db, "cart", "2026-11-23T16:59:59").items()
            } == {"M-100": "checkout:M-CH-1"}
    result = run_plan(db, "cart", DUE)
    assert {(p.id, p.occurrence, p.expires) for p in result.planned} == {
        (ANA, "checkout:35123456789012", datetime(2026, 11, 30, 15, tzinfo=UTC)),
        ("M-100", "checkout:M-CH-1", datetime(2026, 11, 30, 11, tzinfo=UTC))}
    # a week after its creation a checkout is no candidate any more
    assert sorted(planned(db, "cart", "2026-11-30T13:00")) == [ANA]
    assert planned(db, "cart", "2026-11-30T16:00") == {}


def test_an_order_a_second_before_the_mail_would_go_means_no_mail(db: Workspace) -> None:
    shop(db)
    run_plan(db, "cart", DUE)  # both queued, to go at 16:00Z
    # Ana pays for an order at 16:00:00Z; the send comes a second later
    db.write("orders.csv", "order_id,customer_id,placed_at,status,currency,total\n"
                           f"O-1,{ANA},2026-11-23T16:00:00Z,paid,EUR,10.00\n")
    assert db.run("import", "orders", "orders.csv", "--now", "2026-11-23T17:00").code == 0
    # planning again says why (plan time), and the queued row is stopped at the wire
    assert planned(db, "cart", "2026-11-23T17:00:01")[ANA]["reason"] == "ordered"
    with FaultServer() as server:
        report = send(db, server, "cart", now="2026-11-23T17:00:01")
    assert [c.recipient for c in server.caught] == ["mia@example.com"]
    part = server.caught[0].message().get_body(("plain",))
    assert part is not None
    assert ("Your cart: https://magento.example/checkout/cart/restore/abc "
            "1 x Mug (MUG) at 12.50; total 12.50 EUR.") in part.get_content()
    assert (report["sent"], report["skipped"]) == (1, 1)
    assert [tuple(r) for r in db.query(
        "SELECT d.occurrence, d.status, d.reason FROM deliveries d JOIN customers c "
        "ON c.id = d.customer_id WHERE c.store_id = :s", s=ANA)] == [
        ("checkout:35123456789012", "skipped", "ordered")]


def test_an_order_before_the_checkout_does_not_cancel_it(db: Workspace) -> None:
    shop(db)
    db.write("orders.csv", "order_id,customer_id,placed_at,status,currency,total\n"
                           f"O-0,{ANA},2026-11-23T14:59:59Z,paid,EUR,10.00\n")
    assert db.run("import", "orders", "orders.csv", "--now", "2026-11-23T17:00").code == 0
    assert planned(db, "cart", DUE)[ANA]["reason"] is None


REMINDED = CAMPAIGN + "reminder:\n  after: 24h\n  subject: Still thinking it over?\n"
# Both first mails go at DUE (16:00Z, a moment after on the sender's running clock);
# their reminders are due 24 h after that send.
REMINDER_DUE = "2026-11-24T17:01"


def fates(db: Workspace, slug: str, now: str) -> set[tuple[str, str, str | None]]:
    """`plan SLUG --now NOW --json`: every (id, occurrence, reason) it judged."""
    result = db.run("plan", slug, "--now", now, "--json")
    assert result.code == 0, result.stdout + result.stderr
    document = result.json()
    return {(r["id"], r["occurrence"], None) for r in document["recipients"]} | {
        (e["id"], e["occurrence"], e["reason"]) for e in document["excluded"]}


def test_the_reminder_follows_the_sent_mail_and_an_order_a_second_before_stops_it(
        db: Workspace) -> None:
    shop(db)
    db.write("campaigns/cart.yaml", REMINDED)
    assert db.run("validate").code == 0
    with FaultServer() as server:
        first = send(db, server, "cart", now=DUE)
    assert first["sent"] == 2
    # 24 h after the first mails less a second, no reminder is due
    assert fates(db, "cart", "2026-11-24T16:59:59") == {
        (ANA, "checkout:35123456789012", "already_sent"),
        ("M-100", "checkout:M-CH-1", "already_sent")}
    result = run_plan(db, "cart", REMINDER_DUE)  # both reminders queued, to go at once
    # the reminder expires with its checkout: 7 days after the checkout was created
    assert {(p.id, p.occurrence, p.expires) for p in result.planned} == {
        (ANA, "checkout-reminder:35123456789012", datetime(2026, 11, 30, 15, tzinfo=UTC)),
        ("M-100", "checkout-reminder:M-CH-1", datetime(2026, 11, 30, 11, tzinfo=UTC))}
    # Ana pays at 16:01:00Z, a second before her reminder would go
    db.write("orders.csv", "order_id,customer_id,placed_at,status,currency,total\n"
                           f"O-1,{ANA},2026-11-24T16:01:00Z,paid,EUR,10.00\n")
    assert db.run("import", "orders", "orders.csv", "--now", REMINDER_DUE).code == 0
    assert (ANA, "checkout-reminder:35123456789012", "ordered") in fates(
        db, "cart", "2026-11-24T17:01:01")
    with FaultServer() as server:
        report = send(db, server, "cart", now="2026-11-24T17:01:01")
    assert [(c.recipient, c.message()["Subject"]) for c in server.caught] == [
        ("mia@example.com", "Still thinking it over?")]
    assert (report["sent"], report["skipped"]) == (1, 1)
    assert [tuple(r) for r in db.query(
        "SELECT d.occurrence, d.status, d.reason FROM deliveries d JOIN customers c "
        "ON c.id = d.customer_id WHERE c.store_id = :s ORDER BY d.id", s=ANA)] == [
        ("checkout:35123456789012", "sent", None),
        ("checkout-reminder:35123456789012", "skipped", "ordered")]
    # a week after the checkouts, neither mail is a candidate any more
    assert fates(db, "cart", "2026-11-30T16:00:01") == set()


def test_no_reminder_without_a_first_mail_sent(db: Workspace) -> None:
    shop(db)
    db.write("campaigns/cart.yaml", REMINDED)
    run_plan(db, "cart", DUE)  # queued, never sent
    assert fates(db, "cart", "2026-11-25T17:00") == {
        (ANA, "checkout:35123456789012", "already_sent"),
        ("M-100", "checkout:M-CH-1", "already_sent")}


def test_a_checkout_reminder_takes_after(db: Workspace) -> None:
    shop(db)
    db.write("campaigns/cart.yaml", CAMPAIGN + "reminder:\n  before_end: 1d\n  subject: x\n")
    result = db.run("validate")
    assert result.code != 0
    assert "reminder needs after" in result.stdout + result.stderr
