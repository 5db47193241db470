"""trigger: back_in_stock (issue 20 step 2.2): a product with open stock alerts turning in
stock is mailed to each alert's customer once (`stock:<sku>:<local date of the restock>`,
expiring 3 days after it); stock is checked again right before each mail (sold out
again: `out_of_stock`, the alert stays open and the next restock mails); a sent mail
closes the alert; a replayed restock changes nothing. On both databases, the store
arriving by webhook through a real `mailer serve`, the mails through a real SMTP
server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from mailer.core.clock import zone
from mailer.core.occurrences import stock_occurrence, stock_sku
from tests.conftest import SETTINGS, Workspace
from tests.smtp_server import FaultServer
from tests.test_checkout_trigger import fates
from tests.test_delivery import send
from tests.test_hooks import SECRETS, custom, sample, shopify
from tests.test_serve import Service, serving
from tests.test_signup_trigger import run_plan

CAMPAIGN = ("name: Back in stock\ntrigger: back_in_stock\nsegment: everyone\n"
            "template: mail.html\nsubject: \"{{ product.name }} is back\"\n")
TEMPLATE = ("<p>Hello {{ customer.first_name }}. {{ product.name }} ({{ product.sku }}) at "
            "{{ product.price }} {{ product.currency }}{% if product.url is defined %}: "
            "{{ product.url }}{% endif %}. {{ store.address }} "
            "<a href='{{ links.unsubscribe }}'>unsubscribe</a></p>\n")
ANA = "7392650412345"
SKU = "BOOT-43-RED"  # sold out in the products/update sample (16:00Z on 26 November)
STOCK_KEY = 46123456789013  # its inventory_item_id


def level(available: int, at: str) -> bytes:
    """Shopify's inventory_levels/update for the sku's inventory item."""
    body = json.loads(sample("shopify_inventory_levels_update.json"))
    body.update(available=available, updated_at=at)
    return json.dumps(body).encode()


def alert(event: str, customer: str) -> bytes:
    return json.dumps({"id": event, "kind": "stock_alert",
                       "data": {"customer_id": customer, "sku": SKU}}).encode()


@contextmanager
def shop(db: Workspace) -> Iterator[Service]:
    """Ana (Shopify) and Mia (custom) ask for the sold-out 43; the hooks stay open."""
    db.write("mailer.yaml", SETTINGS + "policy: {frequency: []}\n")
    db.write("segments/everyone.yaml", "description: all\nall: [{orders: {at_least: 0}}]\n")
    db.write("templates/mail.html", TEMPLATE)
    db.write("campaigns/back.yaml", CAMPAIGN)
    with serving(db, **SECRETS) as hooks:
        assert shopify(hooks, "customers/create", sample("shopify_customers_create.json"),
                       "cu-1")[0] == 200
        assert custom(hooks, sample("custom_customer.json"))[0] == 200
        assert shopify(hooks, "products/update", sample("shopify_products_update.json"),
                       "p-1")[0] == 200
        for event, who in (("a-1", ANA), ("a-2", "M-100")):
            assert custom(hooks, alert(event, who))[0] == 200
        yield hooks


def alerts(db: Workspace) -> dict[str, Any]:
    return {row[0]: row[1] for row in db.query(
        "SELECT c.store_id, a.notified_at FROM stock_alerts a JOIN customers c "
        "ON c.id = a.customer_id")}


def test_a_restock_mails_each_open_alert_once_and_closes_it(db: Workspace) -> None:
    with shop(db) as hooks:
        assert db.run("validate").code == 0  # product.* is known to a back_in_stock campaign
        assert fates(db, "back", "2026-11-26T17:30") == set()  # sold out: nothing due
        # 17:00Z (18:00 in Berlin): five are back
        restock = level(5, "2026-11-26T12:00:00-05:00")
        assert shopify(hooks, "inventory_levels/update", restock, "i-1")[0] == 200
        result = run_plan(db, "back", "2026-11-26T18:00:01")
        assert {(p.id, p.occurrence, p.expires) for p in result.planned} == {
            (who, f"stock:{SKU}:2026-11-26", datetime(2026, 11, 29, 17, tzinfo=UTC))
            for who in (ANA, "M-100")}
        # the same delivery again, and another delivery saying "in stock" again: no new
        # restock (its time stays), nothing new to plan
        restocked = db.query("SELECT restocked_at FROM products WHERE sku = :s", s=SKU)[0][0]
        assert restocked is not None
        assert shopify(hooks, "inventory_levels/update", restock, "i-1")[1].startswith(
            "replay")
        assert shopify(hooks, "inventory_levels/update", level(7, "2026-11-26T12:30:00-05:00"),
                       "i-2")[0] == 200
        with FaultServer() as server:
            report = send(db, server, "back", now="2026-11-26T18:45")
        assert sorted(c.recipient for c in server.caught) == ["ana.lima@example.com",
                                                               "mia@example.com"]
        mail = server.caught[0].message()
        assert mail["Subject"] == "Trail boots – 43 / red is back"
        part = mail.get_body(("plain",))
        assert part is not None and "Trail boots – 43 / red (BOOT-43-RED) at 89.90 EUR." \
            in part.get_content()
        assert report["sent"] == 2
        assert all(at is not None for at in alerts(db).values())  # closed by the mails
        assert db.query("SELECT restocked_at FROM products WHERE sku = :s", s=SKU)[0][0] \
            == restocked
        # closed alerts: the next sweep finds nobody, and three days on nothing is due
        assert fates(db, "back", "2026-11-26T19:00") == set()
        # Mia asks again: the same restock's occurrence is hers already
        assert custom(hooks, alert("a-3", "M-100"))[0] == 200
        assert fates(db, "back", "2026-11-26T19:00") == {
            ("M-100", f"stock:{SKU}:2026-11-26", "already_sent")}
        assert fates(db, "back", "2026-11-29T18:00:01") == set()  # expired with the restock


def test_stock_flipping_back_out_before_the_send(db: Workspace) -> None:
    with shop(db) as hooks:
        assert shopify(hooks, "inventory_levels/update", level(1, "2026-11-26T12:00:00-05:00"),
                       "i-1")[0] == 200
        run_plan(db, "back", "2026-11-26T18:00:01")  # both queued
        # the last one sells at 17:10Z, before the mails go
        assert shopify(hooks, "inventory_levels/update", level(0, "2026-11-26T12:10:00-05:00"),
                       "i-2")[0] == 200
        assert fates(db, "back", "2026-11-26T18:15") == {
            (who, f"stock:{SKU}:2026-11-26", "out_of_stock") for who in (ANA, "M-100")}
        with FaultServer() as server:
            report = send(db, server, "back", now="2026-11-26T18:15")
        assert server.caught == []
        assert (report["sent"], report["skipped"]) == (0, 2)
        assert [tuple(r) for r in db.query(
            "SELECT DISTINCT occurrence, status, reason FROM deliveries")] == [
            (f"stock:{SKU}:2026-11-26", "skipped", "out_of_stock")]
        assert alerts(db) == {ANA: None, "M-100": None}  # open for the next restock
        # the next morning it is back: a new occurrence, and the mails go
        assert shopify(hooks, "inventory_levels/update", level(3, "2026-11-27T04:00:00-05:00"),
                       "i-3")[0] == 200
        with FaultServer() as server:
            report = send(db, server, "back", now="2026-11-27T10:00")
        assert sorted(c.recipient for c in server.caught) == ["ana.lima@example.com",
                                                               "mia@example.com"]
        assert {tuple(r) for r in db.query(
            "SELECT occurrence, status FROM deliveries WHERE status = 'sent'")} == {
            (f"stock:{SKU}:2026-11-27", "sent")}
        assert all(at is not None for at in alerts(db).values())


def test_a_sku_with_colons_keeps_them_in_its_occurrence() -> None:
    restocked = datetime(2026, 11, 26, 23, 30, tzinfo=UTC)
    occurrence = stock_occurrence("shopify-variant:4612", restocked, zone("Europe/Berlin"))
    assert occurrence == "stock:shopify-variant:4612:2026-11-27"  # Berlin's date
    assert stock_sku(occurrence) == "shopify-variant:4612"
    assert stock_sku("checkout:1") is None


def test_a_custom_product_s_page_and_a_url_no_mail_may_link(db: Workspace) -> None:
    with shop(db) as hooks:
        mug = json.loads(sample("custom_product.json"))
        mug["data"]["url"] = "javascript:alert(1)"
        status, reason = custom(hooks, json.dumps(mug).encode())
        assert (status, reason) == (400, "product: url 'javascript:alert(1)' is not an http(s) "
                                         "address\n")
        mug["id"], mug["data"]["url"] = "evt-4b", "https://magento.example/mug.html"
        assert custom(hooks, json.dumps(mug).encode())[0] == 200
        assert db.query("SELECT url FROM products WHERE sku = 'MUG'")[0][0] == \
            "https://magento.example/mug.html"
