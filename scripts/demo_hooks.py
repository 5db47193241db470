"""A small day of a shop played through `mailer serve`'s webhooks (docs/events.md): three
sign-ups, a checkout left behind, a checkout that becomes an order, a shopper asking to
hear when a sold-out size is back, and the restock. Each request is signed as Shopify
signs (the stock alert is mailer's own custom event: Shopify has no such topic), and
each delivery is sent twice, as platforms retry: the second answer is a replay.

    python scripts/demo_hooks.py PORT SHOPIFY_SECRET EVENTS_SECRET
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import http.client
import json
import sys
from pathlib import Path
from typing import Any

SAMPLES = Path(__file__).resolve().parent.parent / "tests" / "data" / "hooks"
DAY = "2026-12-01"
PEOPLE = [(9100000000001, "Lena", "Vogel", "lena.vogel@example.com"),
          (9100000000002, "Omar", "Haddad", "omar.haddad@example.com"),
          (9100000000003, "Iris", "Berg", "iris.berg@example.com")]


def _sample(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((SAMPLES / name).read_bytes())
    return loaded


def _post(port: int, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("POST", path, body=body, headers={"Content-Type": "application/json",
                                                   **headers})
    response = conn.getresponse()
    answer = response.read().decode().strip()
    conn.close()
    return response.status, answer


def _customer(n: int, at: str) -> dict[str, Any]:
    shop_id, first, last, email = PEOPLE[n]
    body = _sample("shopify_customers_create.json")
    body.update(id=shop_id, first_name=first, last_name=last, email=email,
                created_at=at, updated_at=at, default_address=None)
    body["email_marketing_consent"]["consent_updated_at"] = at
    return body


def _checkout(n: int, checkout_id: int, at: str) -> dict[str, Any]:
    body = _sample("shopify_checkouts_create.json")
    customer = _customer(n, at)
    body.update(id=checkout_id, email=customer["email"], created_at=at, updated_at=at,
                customer=customer)
    body["abandoned_checkout_url"] = f"https://shop.example/checkouts/{checkout_id}/recover"
    return body


def main(port: int, shopify_secret: str, events_secret: str) -> None:
    def shopify(topic: str, body: dict[str, Any], delivery: str) -> None:
        raw = json.dumps(body).encode()
        signature = base64.b64encode(hmac.new(shopify_secret.encode(), raw,
                                              hashlib.sha256).digest()).decode()
        headers = {"X-Shopify-Topic": topic, "X-Shopify-Webhook-Id": delivery,
                   "X-Shopify-Hmac-Sha256": signature}
        answers = [_post(port, "/hooks/shopify", raw, headers) for _ in range(2)]
        _say(topic, answers)

    def custom(event: dict[str, Any]) -> None:
        raw = json.dumps(event).encode()
        signature = hmac.new(events_secret.encode(), raw, hashlib.sha256).hexdigest()
        answers = [_post(port, "/hooks/custom", raw, {"X-Mailer-Signature":
                                                      f"sha256={signature}"})
                   for _ in range(2)]
        _say(f"custom {event['kind']}", answers)

    sold_out = _sample("shopify_products_update.json")
    sold_out["updated_at"] = f"{DAY}T07:00:00Z"
    for variant in sold_out["variants"]:
        variant["inventory_quantity"] = 0
    shopify("products/update", sold_out, "demo-product-1")
    for n in range(3):
        shopify("customers/create", _customer(n, f"{DAY}T{8 + n:02d}:00:00Z"), f"demo-signup-{n}")
    # Lena leaves her checkout behind; Omar's becomes an order a few minutes later
    shopify("checkouts/create", _checkout(0, 36000000000001, f"{DAY}T09:30:00Z"),
            "demo-checkout-1")
    shopify("checkouts/create", _checkout(1, 36000000000002, f"{DAY}T10:00:00Z"),
            "demo-checkout-2")
    order = _sample("shopify_orders_create.json")
    order.update(id=6100000000001, checkout_id=36000000000002, email=PEOPLE[1][3],
                 created_at=f"{DAY}T10:07:00Z", processed_at=f"{DAY}T10:07:00Z",
                 updated_at=f"{DAY}T10:07:01Z", customer=_customer(1, f"{DAY}T09:00:00Z"))
    shopify("orders/create", order, "demo-order-1")
    # Iris wants the 43 when it is back; at a quarter to eleven it is
    custom({"id": "demo-alert-1", "kind": "stock_alert",
            "data": {"customer_id": str(PEOPLE[2][0]), "sku": "BOOT-43-RED"}})
    restocked = copy.deepcopy(sold_out)
    restocked["updated_at"] = f"{DAY}T10:45:00Z"
    restocked["variants"][1]["inventory_quantity"] = 4
    shopify("products/update", restocked, "demo-product-2")


def _say(what: str, answers: list[tuple[int, str]]) -> None:
    first, again = answers
    if first[0] != 200 or not again[1].startswith("replay"):
        raise SystemExit(f"{what}: {first} then {again}")
    print(f"  {what:<28} {first[0]} {first[1]}; again: {again[0]} replay")


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2], sys.argv[3])
