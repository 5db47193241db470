"""Webhooks under /hooks/ (issue 20, docs/events.md) against the real `mailer serve`:
real payload shapes of every topic signed as each platform signs them, the answers
(401, 400, 413, 200 once committed), exactly-once by delivery id, out-of-order updates,
and what the store holds afterwards."""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import http.client
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mailer.mail.links import Claims, sign
from tests.conftest import Workspace
from tests.test_delivery import KEY
from tests.test_serve import Service, serving, serving_logged

DATA = Path(__file__).parent / "data" / "hooks"
SECRETS = {"MAILER_SHOPIFY_SECRET": "shpss_test_secret",
           "MAILER_WOOCOMMERCE_SECRET": "wc-test-secret",
           "MAILER_EVENTS_SECRET": "events-test-secret"}


def sample(name: str) -> bytes:
    return (DATA / name).read_bytes()


def b64_hmac(secret: str, body: bytes) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def post(service: Service, path: str, body: bytes,
         headers: dict[str, str]) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", service.port, timeout=10)
    conn.request("POST", path, body=body, headers={"Content-Type": "application/json",
                                                   **headers})
    response = conn.getresponse()
    text = response.read().decode()
    conn.close()
    return response.status, text


def shopify(service: Service, topic: str, body: bytes, delivery: str,
            secret: str = SECRETS["MAILER_SHOPIFY_SECRET"]) -> tuple[int, str]:
    return post(service, "/hooks/shopify", body, {
        "X-Shopify-Topic": topic, "X-Shopify-Webhook-Id": delivery,
        "X-Shopify-Hmac-Sha256": b64_hmac(secret, body),
        "X-Shopify-Shop-Domain": "pine.myshopify.com"})


def woo(service: Service, topic: str, body: bytes, delivery: str) -> tuple[int, str]:
    return post(service, "/hooks/woocommerce", body, {
        "X-WC-Webhook-Topic": topic, "X-WC-Webhook-Delivery-ID": delivery,
        "X-WC-Webhook-Signature": b64_hmac(SECRETS["MAILER_WOOCOMMERCE_SECRET"], body),
        "X-WC-Webhook-Source": "https://shop.example/"})


def custom(service: Service, body: bytes) -> tuple[int, str]:
    signature = hmac.new(SECRETS["MAILER_EVENTS_SECRET"].encode(), body,
                         hashlib.sha256).hexdigest()
    return post(service, "/hooks/custom", body, {"X-Mailer-Signature": f"sha256={signature}"})


@pytest.fixture
def hooks(db: Workspace) -> Iterator[Service]:
    with serving(db, **SECRETS) as served:
        yield served


def customer(db: Workspace, email: str) -> dict[str, Any]:
    rows = db.query("SELECT store_id, first_name, last_name, consent, consent_source, city, "
                    "country, tags FROM customers WHERE email = :e", e=email)
    assert len(rows) == 1, rows
    found = dict(rows[0]._mapping)
    if isinstance(found["tags"], str):  # SQLite hands JSON back as text
        found["tags"] = json.loads(found["tags"])
    return found


def orders(db: Workspace) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in db.query(
        "SELECT o.store_id, c.email, o.status, o.currency, o.total_minor, o.coupon_code, "
        "(SELECT count(*) FROM order_lines l WHERE l.order_id = o.id) FROM orders o "
        "JOIN customers c ON c.id = o.customer_id ORDER BY o.store_id")]


def test_shopify_customer_order_refund_and_cancel(db: Workspace, hooks: Service) -> None:
    assert shopify(hooks, "customers/create", sample("shopify_customers_create.json"),
                   "d-1") == (200, "stored\n")
    ana = customer(db, "ana.lima@example.com")
    assert ana == {"store_id": "7392650412345", "first_name": "Ana", "last_name": "Lima",
                   "consent": "subscribed", "consent_source": "shopify", "city": "Lisboa",
                   "country": "PT", "tags": ["newsletter", "vip"]}
    assert shopify(hooks, "orders/create", sample("shopify_orders_create.json"), "d-2")[0] == 200
    assert orders(db) == [("5912345678901", "ana.lima@example.com", "paid", "EUR", 8990,
                           "WELCOME10", 1)]
    line = db.query("SELECT sku, product, quantity, price_minor FROM order_lines")
    assert [tuple(r) for r in line] == [("BOOT-42-RED", "Trail boots - 42 / red", 1, 8990)]
    # a refund of 30.00 lowers the current total; the order stays paid
    assert shopify(hooks, "refunds/create", sample("shopify_refunds_create.json"),
                   "d-3")[0] == 200
    assert orders(db)[0][2:5] == ("paid", "EUR", 5990)
    assert shopify(hooks, "orders/cancelled", sample("shopify_orders_cancelled.json"),
                   "d-4")[0] == 200
    assert orders(db)[0][2:5] == ("cancelled", "EUR", 0)


def test_shopify_customer_update_keeps_what_it_leaves_out(db: Workspace,
                                                          hooks: Service) -> None:
    shopify(hooks, "customers/create", sample("shopify_customers_create.json"), "d-1")
    assert shopify(hooks, "customers/update", sample("shopify_customers_update.json"),
                   "d-2")[0] == 200
    ana = customer(db, "ana.lima@example.com")
    # first name changed; last_name null and default_address absent keep the stored ones;
    # not_subscribed at the shop moves consent down
    assert (ana["first_name"], ana["last_name"], ana["city"], ana["consent"]) == \
        ("Ana Sofia", "Lima", "Lisboa", "not_subscribed")


def test_an_older_update_never_overwrites_a_newer_one(db: Workspace, hooks: Service) -> None:
    assert shopify(hooks, "customers/update", sample("shopify_customers_update.json"),
                   "d-new")[0] == 200
    assert shopify(hooks, "customers/create", sample("shopify_customers_create.json"),
                   "d-old") == (200, "stored\n")
    assert customer(db, "ana.lima@example.com")["first_name"] == "Ana Sofia"
    # orders too: the partially refunded state (newer) survives a late orders/create
    assert shopify(hooks, "orders/updated", sample("shopify_orders_updated.json"),
                   "o-new")[0] == 200
    assert shopify(hooks, "orders/create", sample("shopify_orders_create.json"),
                   "o-old")[0] == 200
    assert orders(db)[0][2:5] == ("paid", "EUR", 5990)


def test_a_replay_is_200_and_changes_nothing(db: Workspace, hooks: Service) -> None:
    body = sample("shopify_orders_create.json")
    assert shopify(hooks, "orders/create", body, "same-id")[0] == 200
    db.query("SELECT 1")  # the first is committed before its answer
    with db.engine().begin() as conn:  # an operator's change after the first delivery
        from sqlalchemy import text
        conn.execute(text("UPDATE orders SET total_minor = 1"))
    assert shopify(hooks, "orders/create", body, "same-id") == (
        200, "replay: delivery seen before: nothing changed\n")
    assert orders(db)[0][4] == 1
    assert db.query("SELECT count(*) FROM hook_deliveries")[0][0] == 1


def test_a_bad_signature_is_401_before_anything(db: Workspace, hooks: Service) -> None:
    body = sample("shopify_orders_create.json")
    status, text = shopify(hooks, "orders/create", body, "d-1", secret="not-the-secret")
    assert (status, text) == (401, "the signature does not match the body\n")
    # one byte changed after signing
    signed = b64_hmac(SECRETS["MAILER_SHOPIFY_SECRET"], body)
    assert post(hooks, "/hooks/shopify", body.replace(b"89.90", b"89.91", 1), {
        "X-Shopify-Topic": "orders/create", "X-Shopify-Webhook-Id": "d-2",
        "X-Shopify-Hmac-Sha256": signed})[0] == 401
    assert post(hooks, "/hooks/custom", b'{"id": "x"}', {"X-Mailer-Signature": "sha256=00"}
                )[0] == 401
    assert db.query("SELECT count(*) FROM customers")[0][0] == 0
    assert db.query("SELECT count(*) FROM hook_deliveries")[0][0] == 0


def test_payloads_it_cannot_use_are_400_with_the_reason(db: Workspace,
                                                        hooks: Service) -> None:
    assert shopify(hooks, "orders/create", b"{not json", "d-1")[0] == 400
    assert shopify(hooks, "carts/create", b"{}", "d-2") == (
        400, "topic 'carts/create' is not one mailer takes: " + ", ".join(
            ("orders/create", "orders/updated", "orders/cancelled", "refunds/create",
             "customers/create", "customers/update", "checkouts/create", "checkouts/update",
             "products/update", "inventory_levels/update")) + "\n")
    order = json.loads(sample("shopify_orders_create.json"))
    order["current_total_price"] = "12,50"
    status, text = shopify(hooks, "orders/create", json.dumps(order).encode(), "d-3")
    assert status == 400 and text.startswith("order: total:"), text
    order["current_total_price"] = "10.00"
    order["customer"]["email"] = "not an address"
    status, text = shopify(hooks, "orders/create", json.dumps(order).encode(), "d-4")
    assert status == 400 and "email" in text, text
    # nothing half-way: no customer, no order, no delivery row (a fixed retry is taken)
    assert db.query("SELECT count(*) FROM customers")[0][0] == 0
    assert db.query("SELECT count(*) FROM hook_deliveries")[0][0] == 0


def test_pending_orders_wait_until_paid_and_guests_are_keyed_by_email(
        db: Workspace, hooks: Service) -> None:
    body = sample("shopify_orders_create_guest_pending.json")
    assert shopify(hooks, "orders/create", body, "g-1") == (
        200, "ignored: order 5912345678999 is pending: stored once paid\n")
    assert orders(db) == []
    paid = json.loads(body)
    paid["financial_status"] = "paid"
    assert shopify(hooks, "orders/updated", json.dumps(paid).encode(), "g-2")[0] == 200
    assert orders(db) == [("5912345678999", "guest.buyer@example.com", "paid", "EUR", 8990,
                           "WELCOME10", 1)]
    guest = customer(db, "guest.buyer@example.com")
    # a guest gave no consent: known, never marketed to
    assert (guest["store_id"], guest["consent"]) == ("guest:guest.buyer@example.com",
                                                    "not_subscribed")


def test_checkouts_products_and_stock(db: Workspace, hooks: Service) -> None:
    assert shopify(hooks, "checkouts/create", sample("shopify_checkouts_create.json"),
                   "c-1")[0] == 200
    assert shopify(hooks, "checkouts/update", sample("shopify_checkouts_update.json"),
                   "c-2")[0] == 200
    row = db.query("SELECT store_id, url, total_minor, currency, items, completed_at "
                   "FROM checkouts")
    assert len(row) == 1
    items = row[0].items if isinstance(row[0].items, list) else json.loads(row[0].items)
    assert (row[0].store_id, row[0].total_minor, row[0].completed_at) == \
        ("35123456789012", 17980, None)
    assert row[0].url.startswith("https://shop.example/80123/checkouts/")
    assert items == [{"sku": "BOOT-42-RED", "product": "Trail boots", "quantity": 2,
                      "price_minor": 8990}]
    assert shopify(hooks, "orders/create", sample("shopify_orders_create.json"),
                   "o-1")[0] == 200
    assert db.query("SELECT completed_at FROM checkouts")[0][0] is not None

    assert shopify(hooks, "products/update", sample("shopify_products_update.json"),
                   "p-1")[0] == 200
    stock = {r.sku: (r.name, r.category, r.price_minor, r.in_stock) for r in db.query(
        "SELECT sku, name, category, price_minor, in_stock FROM products")}
    assert stock == {"BOOT-42-RED": ("Trail boots – 42 / red", "Shoes", 8990, True),
                     "BOOT-43-RED": ("Trail boots – 43 / red", "Shoes", 8990, False)}
    assert shopify(hooks, "inventory_levels/update",
                   sample("shopify_inventory_levels_update.json"), "i-1")[0] == 200
    back = db.query("SELECT in_stock, restocked_at FROM products WHERE sku = 'BOOT-43-RED'")
    assert bool(back[0][0]) is True and back[0][1] is not None


def test_woocommerce_topics_and_its_ping(db: Workspace, hooks: Service) -> None:
    # the ping WooCommerce sends, unsigned, when a webhook is saved
    assert post(hooks, "/hooks/woocommerce", b"webhook_id=15", {
        "Content-Type": "application/x-www-form-urlencoded"}) == (200, "pong: nothing changed\n")
    assert db.query("SELECT count(*) FROM hook_deliveries")[0][0] == 0
    assert woo(hooks, "customer.created", sample("woocommerce_customer_created.json"),
               "w-1")[0] == 200
    joao = customer(db, "joao.silva@example.com")
    assert (joao["store_id"], joao["first_name"], joao["consent"]) == ("26", "João",
                                                                      "subscribed")
    assert woo(hooks, "order.created", sample("woocommerce_order_created.json"),
               "w-2")[0] == 200
    assert orders(db) == [("727", "joao.silva@example.com", "paid", "EUR", 3980, "autumn5", 2)]
    assert woo(hooks, "order.updated", sample("woocommerce_order_updated.json"),
               "w-3")[0] == 200
    assert orders(db)[0][2:5] == ("paid", "EUR", 3248)  # 39.80 less the 7.32 refunded
    assert woo(hooks, "order.created", sample("woocommerce_order_created_guest_pending.json"),
               "w-4")[1].startswith("ignored: order 728 is pending")
    assert woo(hooks, "customer.updated", sample("woocommerce_customer_updated.json"),
               "w-5")[0] == 200
    joao = customer(db, "joao.silva@example.com")
    assert (joao["first_name"], joao["consent"]) == ("João Pedro", "not_subscribed")
    assert woo(hooks, "product.updated", sample("woocommerce_product_updated.json"),
               "w-6")[0] == 200
    assert [tuple(r) for r in db.query("SELECT sku, name, category, price_minor FROM products")
            ] == [("SOCK-WOOL", "Wool socks", "Accessories", 900)]


def test_custom_events(db: Workspace, hooks: Service) -> None:
    for name in ("custom_customer.json", "custom_order.json", "custom_checkout.json",
                 "custom_product.json", "custom_stock_alert.json"):
        assert custom(hooks, sample(name)) == (200, "stored\n"), name
    assert customer(db, "mia@example.com")["consent"] == "subscribed"
    assert orders(db) == [("M-O-1", "mia@example.com", "paid", "EUR", 2500, None, 1)]
    assert db.query("SELECT total_minor FROM checkouts")[0][0] == 1250
    alert = db.query("SELECT sku, notified_at FROM stock_alerts")
    assert [tuple(r) for r in alert] == [("MUG", None)]
    assert custom(hooks, sample("custom_stock_alert.json"))[1].startswith("replay")
    bad = json.dumps({"id": "evt-9", "kind": "coupon", "data": {}}).encode()
    assert custom(hooks, bad) == (400, "kind 'coupon' is not one of customer, order, checkout, "
                                       "product, stock_alert\n")


def test_body_limits(db: Workspace, hooks: Service) -> None:
    big = b'{"pad": "' + b"x" * (5 * 1024 * 1024) + b'"}'
    status, _ = shopify(hooks, "orders/create", big, "big")
    assert status == 413
    # 1 MB is fine under /hooks/ (a large order), far over the limit anywhere else
    large = json.loads(sample("shopify_orders_create.json"))
    large["note"] = "n" * (1024 * 1024)
    assert shopify(hooks, "orders/create", json.dumps(large).encode(), "large")[0] == 200
    unsubscribe = sign(Claims("unsubscribe", "C0", "note", "1", ""), KEY)
    assert post(hooks, f"/u/{unsubscribe}", b"x" * (1024 * 1024), {})[0] == 413


def saved(source: str, headers: dict[str, str], body: bytes) -> str:
    return json.dumps({"source": source, "headers": headers,
                       "body_base64": base64.b64encode(body).decode()})


def test_replay_goes_the_same_way_and_status_shows_the_last_event(db: Workspace) -> None:
    db.env.update(SECRETS)
    order = sample("shopify_orders_create.json")
    signed = {"X-Shopify-Topic": "orders/create", "X-Shopify-Webhook-Id": "r-1",
              "X-Shopify-Hmac-Sha256": b64_hmac(SECRETS["MAILER_SHOPIFY_SECRET"], order)}
    lines = [saved("shopify", signed, order),
             saved("shopify", signed, order),  # the same delivery again
             saved("shopify", {**signed, "X-Shopify-Webhook-Id": "r-2"},
                   order.replace(b"89.90", b"1.00")),  # edited after signing
             '{"source": "woocommerce"}']
    db.write("saved.jsonl", "\n".join(lines) + "\n")
    result = db.run("hooks", "replay", "saved.jsonl", "--now", "2026-11-24T20:30:05Z")
    assert result.code == 1, result.stderr
    assert result.stdout.splitlines() == [
        "saved.jsonl:1: shopify 200 stored",
        "saved.jsonl:2: shopify 200 replay: delivery seen before: nothing changed",
        "saved.jsonl:3: shopify 401 the signature does not match the body",
        "saved.jsonl:4: ? 400 body_base64 is missing"]
    assert orders(db) == [("5912345678901", "ana.lima@example.com", "paid", "EUR", 8990,
                           "WELCOME10", 1)]
    status = db.run("status", "--json").json()["hooks"]
    # the order changed at 19:30:02 UTC (14:30:02-05:00); heard at 20:30:05: an hour late
    assert status == {"shopify": {"topic": "orders/create",
                                  "received_at": "2026-11-24T20:30:05Z",
                                  "lag_seconds": 3603}}
    assert "hooks: shopify orders/create" in db.run("status").stdout


def test_a_database_that_does_not_answer_gets_503_within_4_s_then_the_retry_is_stored(
        db: Workspace, hooks: Service) -> None:
    import time

    from tests.test_serve_abuse import locked

    shopify(hooks, "customers/create", sample("shopify_customers_create.json"), "c-1")
    body = sample("shopify_orders_create.json")
    with locked(db):
        started = time.monotonic()
        status, text = shopify(hooks, "orders/create", body, "o-1")
        took = time.monotonic() - started
    assert (status, text) == (503, "the database did not answer in time; retry\n")
    assert 3.5 < took < 4.9, took  # inside Shopify's 5 s
    assert shopify(hooks, "orders/create", body, "o-1")[0] == 200  # the platform's retry
    assert len(orders(db)) == 1
    assert db.query("SELECT count(*) FROM hook_deliveries")[0][0] == 2


def test_webhooks_while_the_sender_sends(db: Workspace) -> None:
    import threading

    from tests.smtp_server import Behaviour, FaultServer
    from tests.test_delivery import send
    from tests.test_delivery import shop as delivery_shop

    addresses = [f"reader{n}@example.com" for n in range(40)]
    delivery_shop(db, addresses)
    template = json.loads(sample("shopify_orders_create.json"))
    answers: list[tuple[int, str]] = []
    with serving(db, **SECRETS) as served, \
            FaultServer(Behaviour(fails=0, delay=0.05)) as server:
        summary: dict[str, Any] = {}
        sender = threading.Thread(target=lambda: summary.update(send(db, server, "note")))
        sender.start()
        n = 0
        while sender.is_alive() or n < 5:
            order = copy.deepcopy(template)
            order["id"] = 7_000_000 + n
            order["checkout_id"] = None
            order["customer"]["id"] = 9_000_000 + n
            order["customer"]["email"] = f"buyer{n}@example.com"
            order["customer"]["email_marketing_consent"] = None  # buyers, not subscribers
            answers.append(shopify(served, "orders/create", json.dumps(order).encode(),
                                   f"while-{n}"))
            n += 1
        sender.join()
    assert summary["sent"] == 40 and len(server.caught) == 40
    assert answers == [(200, "stored\n")] * n
    assert db.query("SELECT count(*) FROM orders")[0][0] == n
    assert db.query("SELECT count(*) FROM hook_deliveries")[0][0] == n


# --- webhooks while the daemon sends (issue 20, Tests) ----------------------------------

# The daemon's logical clock starts at DAEMON_NOW (Berlin 17:30): the sign-ups below were
# created at 14:12:44Z (inside the welcome's 24 h), the checkouts at 15:00Z (over an hour
# old: the cart mail is due at once), the orders at 15:30Z.
DAEMON_NOW = "2026-11-23T16:30:00Z"
DAEMON_SETTINGS = ("policy: {frequency: [{max: 10, per: 1d}]}\n"
                   "delivery: {concurrency: 2, rate_per_second: 1000}\n")
NEWS = ("name: News\ntrigger: once\nat: 2026-11-23T16:00:00Z\ngrace: 2h\nsegment: everyone\n"
        "template: note.html\nsubject: News\n")
WELCOME = ("name: Welcome\ntrigger: signup\nafter: 0s\nsegment: everyone\n"
           "template: note.html\nsubject: Welcome\n")
CART = ("name: Cart\ntrigger: abandoned_checkout\nafter: 1h\nsegment: everyone\n"
        "template: cart.html\nsubject: Your cart\n")
CART_TEMPLATE = ("<p>Your cart: {{ checkout.url }}. {{ store.address }} "
                 "<a href='{{ links.unsubscribe }}'>unsubscribe</a></p>\n")
OLD_STORE = 30  # customers of long ago, every one subscribed
SIGNUPS = 4  # new subscribers by customers/create while the campaign goes out


def _signup(n: int) -> dict[str, Any]:
    person: dict[str, Any] = json.loads(sample("shopify_customers_create.json"))
    person.update(id=8_100_000 + n, email=f"signup{n}@example.com", first_name=f"New{n}",
                  default_address=None)
    return person


def _checkout(n: int) -> bytes:
    cart = json.loads(sample("shopify_checkouts_create.json"))
    cart.update(id=35_000_000 + n, token=f"tok{n}", email=f"signup{n}@example.com",
                customer=_signup(n), created_at="2026-11-23T15:00:00Z",
                updated_at="2026-11-23T15:00:00Z")
    return json.dumps(cart).encode()


def _order(n: int, person: dict[str, Any], checkout: int | None) -> bytes:
    order = json.loads(sample("shopify_orders_create.json"))
    order.update(id=7_100_000 + n, checkout_id=checkout, customer=person,
                 email=person["email"], contact_email=person["email"],
                 created_at="2026-11-23T15:30:00Z", processed_at="2026-11-23T15:30:00Z",
                 updated_at="2026-11-23T15:30:00Z")
    return json.dumps(order).encode()


def _buyer(n: int) -> dict[str, Any]:
    """A buyer who never subscribed: stored by the order, mailed nothing."""
    person: dict[str, Any] = json.loads(sample("shopify_orders_create.json"))["customer"]
    person.update(id=9_100_000 + n, email=f"buyer{n}@example.com",
                  email_marketing_consent=None)
    return person


def test_webhooks_while_the_daemon_sends(db: Workspace, tmp_path: Path) -> None:
    """A real `mailer run` sends a campaign to the old store while signed webhooks
    arrive at `mailer serve`: every one is stored once and answered 200, the campaign
    goes to everyone once, and the daemon's later sweeps mail the welcome to the new
    subscribers only (nobody old) and the cart mail for the one checkout left behind."""
    import signal
    import subprocess
    import sys
    from collections import Counter
    from functools import partial

    from tests.smtp_server import Behaviour, FaultServer
    from tests.test_crash import _environment, _wait_for
    from tests.test_delivery import TEMPLATE

    db.write("mailer.yaml", db.root.joinpath("mailer.yaml").read_text() + DAEMON_SETTINGS)
    db.write("segments/everyone.yaml", "description: all\nall: [{orders: {at_least: 0}}]\n")
    db.write("templates/note.html", TEMPLATE)
    db.write("templates/cart.html", CART_TEMPLATE)
    for stem, text in (("news", NEWS), ("welcome", WELCOME), ("cart", CART)):
        db.write(f"campaigns/{stem}.yaml", text)
    old = [f"old{n}@example.com" for n in range(OLD_STORE)]
    rows = ["id,email,first_name,signed_up_at,subscribed"] + [
        f"O{n},{email},Old{n},{'2024-03-01T10:00:00Z' if n % 2 else ''},true"
        for n, email in enumerate(old)]
    db.write("customers.csv", "\n".join(rows) + "\n")
    assert db.run("import", "customers", "customers.csv", "--now", "2026-11-01").code == 0

    daemon_log, serve_log = tmp_path / "run.log", tmp_path / "serve.log"
    answers: dict[str, tuple[int, str]] = {}
    during = 0  # webhooks sent before the campaign's last mail reached the server
    with FaultServer(Behaviour(fails=0, delay=0.1)) as server, \
            serving_logged(db, serve_log, DAEMON_NOW, SECRETS) as served:
        with daemon_log.open("w") as sink:
            daemon = subprocess.Popen(
                [sys.executable, "-m", "mailer.cli", "--workspace", str(db.root), "run",
                 "--interval", "0.5", "--now", DAEMON_NOW], env=_environment(db, server),
                text=True, stdout=subprocess.DEVNULL, stderr=sink)
        try:
            def old_caught() -> int:
                return sum(c.recipient in old for c in server.caught)

            def more_mail(seen: int) -> bool:
                return len(server.caught) > seen or old_caught() >= OLD_STORE

            def hook(topic: str, body: bytes, delivery: str) -> None:
                nonlocal during
                during += old_caught() < OLD_STORE
                answers[delivery] = shopify(served, topic, body, delivery)

            assert _wait_for(lambda: old_caught() > 0, 60), daemon_log.read_text()
            for n in range(SIGNUPS):
                hook("customers/create", json.dumps(_signup(n)).encode(), f"signup-{n}")
            # signup1 pays for its cart (the order first: no sweep may see the checkout
            # without it); signup0 leaves its cart behind
            hook("orders/create", _order(0, _signup(1), 35_000_001), "order-signup1")
            hook("checkouts/create", _checkout(1), "checkout-1")
            hook("checkouts/create", _checkout(0), "checkout-0")
            # the platform's retry of a delivery already stored changes nothing
            replayed = shopify(served, "checkouts/create", _checkout(0), "checkout-0")
            buyers = 0  # then an order of a new buyer at each mail, until the last one
            while old_caught() < OLD_STORE or buyers < 3:
                seen = len(server.caught)
                hook("orders/create", _order(1 + buyers, _buyer(buyers), None),
                     f"buyer-{buyers}")
                buyers += 1
                _wait_for(partial(more_mail, seen), 30)
            new = [f"signup{n}@example.com" for n in range(SIGNUPS)]
            # News (still within its grace) goes to the new subscribers too, once
            expected = Counter({(email, "News"): 1 for email in old + new})
            expected.update({(email, "Welcome"): 1 for email in new})
            expected[("signup0@example.com", "Your cart")] = 1
            assert _wait_for(lambda: len(server.caught) >= sum(expected.values()), 60), \
                daemon_log.read_text()
            # two more full sweeps after the last mail: nothing else is due
            swept = _sweeps(daemon_log)
            assert _wait_for(lambda: _sweeps(daemon_log) >= swept + 2, 60)
        finally:
            daemon.send_signal(signal.SIGTERM)
            assert daemon.wait(timeout=40) == 0, daemon_log.read_text()
    assert during > 0  # the webhooks overlapped the campaign's sending
    assert answers == {delivery: (200, "stored\n") for delivery in answers}
    assert replayed == (200, "replay: delivery seen before: nothing changed\n")
    assert db.query("SELECT count(*) FROM hook_deliveries")[0][0] == len(answers)
    assert db.query("SELECT count(*) FROM orders")[0][0] == 1 + buyers
    assert db.query("SELECT count(*) FROM checkouts")[0][0] == 2
    assert db.query("SELECT count(*) FROM customers")[0][0] == OLD_STORE + SIGNUPS + buyers
    assert Counter((c.recipient, c.message()["Subject"]) for c in server.caught) == expected
    ledger = Counter(tuple(r) for r in db.query(
        "SELECT campaign, status FROM deliveries"))
    assert ledger == Counter({("news", "sent"): OLD_STORE + SIGNUPS,
                              ("welcome", "sent"): SIGNUPS, ("cart", "sent"): 1})
    for log in (daemon_log, serve_log):
        text = log.read_text()
        assert "database is locked" not in text and "Traceback" not in text, text


def _sweeps(log: Path) -> int:
    """How many sweeps the daemon has logged so far."""
    return log.read_text().count(" sweep now=")
