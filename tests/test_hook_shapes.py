"""The platforms' payloads as import records (mailer.store.feeds.shapes), pure: what a
field left out or null becomes, the status and consent tables, the signatures."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from pathlib import Path

import pytest

from mailer.store.feeds import shapes
from mailer.web.hooks import Answer, Delivery, check

DATA = Path(__file__).parent / "data" / "hooks"


def load(name: str) -> dict:  # type: ignore[type-arg]
    return json.loads((DATA / name).read_bytes())


@pytest.mark.parametrize(("financial_status", "stored"), [
    ("paid", "paid"), ("partially_paid", "paid"), ("partially_refunded", "paid"),
    ("refunded", "refunded"), ("voided", "cancelled"), ("pending", None),
    ("authorized", None), ("expired", None)])
def test_shopify_financial_status(financial_status: str, stored: str | None) -> None:
    order = load("shopify_orders_create.json") | {"financial_status": financial_status}
    change = shapes.shopify("orders/create", order)
    assert [o["status"] for o in change.orders] == ([stored] if stored else [])
    assert (change.ignored is None) == (stored is not None)


def test_a_null_or_absent_field_is_left_out_so_the_stored_value_stays() -> None:
    change = shapes.shopify("customers/update", load("shopify_customers_update.json"))
    (record,) = change.customers
    assert "last_name" not in record and "city" not in record
    assert record["first_name"] == "Ana Sofia" and record["subscribed"] is False


def test_woocommerce_current_total_is_its_total_less_refunds() -> None:
    change = shapes.woocommerce("order.updated", load("woocommerce_order_updated.json"))
    assert change.orders[0]["total"] == "32.48"
    assert change.updated_at == "2026-11-26T09:00:00Z"  # *_gmt read as UTC


def test_the_checks_before_any_write() -> None:
    body = (DATA / "shopify_orders_create.json").read_bytes()
    good = base64.b64encode(hmac.new(b"k", body, hashlib.sha256).digest()).decode()
    headers = {"x-shopify-topic": "orders/create", "X-Shopify-Webhook-Id": "1",
               "X-Shopify-Hmac-Sha256": good}
    assert isinstance(check("shopify", headers, body, {"shopify": "k"}), Delivery)
    assert check("shopify", headers, body, {}) == Answer(
        401, "no secret is set for shopify webhooks (MAILER_SHOPIFY_SECRET)")
    assert check("shopify", {**headers, "X-Shopify-Hmac-Sha256": "%%%"}, body,
                 {"shopify": "k"}).status == 401  # type: ignore[union-attr]
    assert check("shopify", {k: v for k, v in headers.items() if k != "X-Shopify-Webhook-Id"},
                 body, {"shopify": "k"}) == Answer(400, "X-Shopify-Webhook-Id is missing")
    assert check("woocommerce", {}, b"webhook_id=3", {}) == Answer(200, "pong: nothing changed")
    assert check("magento", {}, b"{}", {}).status == 404  # type: ignore[union-attr]
