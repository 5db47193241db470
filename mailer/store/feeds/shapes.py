"""Platform payloads as mailer's import records (docs/events.md), pure.

Each topic's JSON becomes a `Change`: customers and orders in the JSON Lines import
shape (mailer.store.records checks and types them, the importer writes them), and the
checkouts, products, stock levels, stock alerts and refunds only webhooks carry. A field
the platform leaves out or sends as null is left out of the record, so the stored value
stays. `Unusable` is a payload that cannot be used, with the reason the 400 carries.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

SOURCES = ("shopify", "woocommerce", "custom")
SHOPIFY_TOPICS = ("orders/create", "orders/updated", "orders/cancelled", "refunds/create",
                  "customers/create", "customers/update", "checkouts/create",
                  "checkouts/update", "products/update", "inventory_levels/update")
WOOCOMMERCE_TOPICS = ("order.created", "order.updated", "customer.created",
                      "customer.updated", "product.updated")
CUSTOM_KINDS = ("customer", "order", "checkout", "product", "stock_alert")

# Shopify's financial_status: what mailer stores (None: not stored until paid).
SHOPIFY_STATUS = {"paid": "paid", "partially_paid": "paid", "partially_refunded": "paid",
                  "refunded": "refunded", "voided": "cancelled",
                  "pending": None, "authorized": None, "expired": None}
# WooCommerce's order statuses.
WOO_STATUS = {"processing": "paid", "completed": "paid", "refunded": "refunded",
              "cancelled": "cancelled", "failed": None, "pending": None, "on-hold": None,
              "checkout-draft": None, "trash": "cancelled"}
# Shopify's email_marketing_consent.state: the import's `subscribed` (None: keep).
# `unsubscribed` is the customer's own opt-out: OPTED_OUT, not a `false`.
SHOPIFY_CONSENT: dict[str, bool | None] = {
    "subscribed": True, "not_subscribed": False, "pending": None,
    "redacted": False, "invalid": False}
WOO_CONSENT_KEYS = ("mailer_subscribed", "marketing_consent", "_wc_marketing_consent")
# A consent meta's value that is the customer's own opt-out (MailPoet and the like).
WOO_OPTED_OUT = ("unsubscribed", "unsubscribe", "opted_out")
# The record key marking the customer's own opt-out at the shop: the store records it
# as `unsubscribed` (mailer.store.feeds.apply), which no later `true` lifts.
OPTED_OUT = "opted_out"


class Unusable(ValueError):
    """A payload mailer cannot use: the reason is the 400's body."""


@dataclass
class Change:
    """What one webhook says about the store."""

    topic: str
    updated_at: str | None = None  # the platform's own time of the change (ISO 8601)
    customers: list[dict[str, Any]] = field(default_factory=list)
    orders: list[dict[str, Any]] = field(default_factory=list)
    checkouts: list[dict[str, Any]] = field(default_factory=list)
    products: list[dict[str, Any]] = field(default_factory=list)
    stock_levels: list[tuple[str, bool]] = field(default_factory=list)  # (stock key, in stock)
    stock_alerts: list[tuple[str, str]] = field(default_factory=list)  # (customer id, sku)
    refunds: list[tuple[str, str, str]] = field(default_factory=list)  # (order, amount, at)
    ignored: str | None = None  # why nothing is stored (a pending order)


def _object(payload: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(payload, dict):
        raise Unusable(f"{what}: expected a JSON object")
    return payload


def _sub(body: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    """An object inside BODY, or an empty one."""
    value = body.get(key)
    return value if isinstance(value, dict) else {}


def _items(body: Mapping[str, Any], key: str) -> list[Any]:
    value = body.get(key)
    return value if isinstance(value, list) else []


def _present(**values: Any) -> dict[str, Any]:
    """Only the fields that carry a value: absent and null keep the stored one."""
    return {k: v for k, v in values.items() if v is not None and v != ""}


def _id(value: Any, what: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, str)) or str(value).strip() == "":
        raise Unusable(f"{what} is missing")
    return str(value).strip()


def _gmt(value: Any) -> str | None:
    """WooCommerce's *_gmt times carry no offset: they are UTC."""
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    return text if text.endswith("Z") or "+" in text[10:] else text + "Z"


def _minus(total: Any, refunds: list[Any]) -> str | None:
    """A WooCommerce order's current total: its total less its refunds (negative there)."""
    try:
        amount = Decimal(str(total))
        for refund in refunds:
            amount -= abs(Decimal(str(_object(refund, "refunds[]").get("total") or 0)))
    except InvalidOperation:
        return None if total is None else str(total)  # the import's check names it
    return str(max(amount, Decimal(0)))


# --- Shopify ----------------------------------------------------------------------------


def _shopify_consent(customer: Mapping[str, Any]) -> dict[str, Any]:
    """The record's consent fields: `subscribed`, or OPTED_OUT for an unsubscribe."""
    consent = customer.get("email_marketing_consent")
    if isinstance(consent, dict) and isinstance(consent.get("state"), str):
        if consent["state"] == "unsubscribed":
            return {OPTED_OUT: True}
        return _present(subscribed=SHOPIFY_CONSENT.get(consent["state"]))
    accepts = customer.get("accepts_marketing")  # API versions before 2022-04
    return _present(subscribed=accepts if isinstance(accepts, bool) else None)


def _shopify_customer(customer: Mapping[str, Any]) -> dict[str, Any]:
    address = _sub(customer, "default_address")
    tags = customer.get("tags")
    return _present(
        id=_id(customer.get("id"), "customer id"), email=customer.get("email"),
        first_name=customer.get("first_name"), last_name=customer.get("last_name"),
        country=address.get("country_code"), city=address.get("city"),
        locale=customer.get("locale"), signed_up_at=customer.get("created_at"),
        updated_at=customer.get("updated_at"),
        tags=[t.strip() for t in tags.split(",") if t.strip()] or None
        if isinstance(tags, str) else None) | _shopify_consent(customer)


def _guest(email: Any, first: Any = None, last: Any = None) -> dict[str, Any]:
    """A guest (no shop account): keyed by the address (mailer.store.feeds.apply)."""
    if not isinstance(email, str) or not email.strip():
        raise Unusable("the order has neither a customer nor an email")
    return _present(id=None, email=email, first_name=first, last_name=last, guest=True)


def _shopify_items(lines: Any) -> list[dict[str, Any]]:
    if not isinstance(lines, list):
        return []
    return [_present(sku=line.get("sku"), product=line.get("name") or line.get("title"),
                     category=line.get("product_type"), quantity=line.get("quantity"),
                     price=line.get("price"))
            for line in (_object(x, "line_items[]") for x in lines)]


def _shopify_buyer(payload: Mapping[str, Any]) -> dict[str, Any]:
    customer = payload.get("customer")
    if isinstance(customer, dict) and customer.get("id") is not None:
        record = _shopify_customer(customer)
        if "email" not in record and payload.get("email"):
            record["email"] = payload["email"]
        return record
    billing = _sub(payload, "billing_address")
    return _guest(payload.get("email") or payload.get("contact_email"),
                  billing.get("first_name"), billing.get("last_name"))


def _shopify_order(topic: str, payload: Mapping[str, Any]) -> Change:
    change = Change(topic, updated_at=payload.get("updated_at"))
    buyer = _shopify_buyer(payload)
    status = "cancelled" if payload.get("cancelled_at") or topic == "orders/cancelled" \
        else SHOPIFY_STATUS.get(str(payload.get("financial_status")), "unknown")
    if status == "unknown":
        raise Unusable(f"financial_status {payload.get('financial_status')!r} is not one "
                       "Shopify documents")
    change.customers.append(buyer)
    if status is None:
        change.ignored = f"order {payload.get('id')} is {payload.get('financial_status')}: " \
                         "stored once paid"
    else:
        codes = payload.get("discount_codes")
        coupon = codes[0].get("code") if isinstance(codes, list) and codes and isinstance(
            codes[0], dict) else None
        total = payload.get("current_total_price", payload.get("total_price"))
        change.orders.append(_present(
            order_id=_id(payload.get("id"), "order id"), customer_id=buyer.get("id"),
            customer_email=buyer.get("email"),
            placed_at=payload.get("processed_at") or payload.get("created_at"),
            status=status, currency=payload.get("currency"), total=total, coupon=coupon)
            | {"items": _shopify_items(payload.get("line_items"))})
    if payload.get("checkout_id") is not None:  # the checkout it completes
        change.checkouts.append({"id": str(payload["checkout_id"]),
                                 "completed_at": payload.get("created_at"), "complete": True})
    return change


def _shopify_checkout(topic: str, payload: Mapping[str, Any]) -> Change:
    change = Change(topic, updated_at=payload.get("updated_at"))
    if not payload.get("email") and not isinstance(payload.get("customer"), dict):
        change.ignored = "a checkout without an address cannot be followed up"
        return change
    buyer = _shopify_buyer(payload)
    if "subscribed" not in buyer and OPTED_OUT not in buyer and isinstance(
            payload.get("buyer_accepts_marketing"), bool):
        buyer["subscribed"] = payload["buyer_accepts_marketing"] or None
    change.customers.append(buyer)
    change.checkouts.append(_present(
        id=_id(payload.get("id") or payload.get("token"), "checkout id"),
        customer_id=buyer.get("id"), customer_email=buyer.get("email"),
        created_at=payload.get("created_at"), completed_at=payload.get("completed_at"),
        url=payload.get("abandoned_checkout_url"), currency=payload.get("currency"),
        total=payload.get("total_price"))
        | {"items": _shopify_items(payload.get("line_items"))})
    return change


def _shopify_product(topic: str, payload: Mapping[str, Any]) -> Change:
    change = Change(topic, updated_at=payload.get("updated_at"))
    title = payload.get("title")
    variants = payload.get("variants")
    if not isinstance(variants, list):
        raise Unusable("variants: expected a list")
    for variant in (_object(v, "variants[]") for v in variants):
        name = variant.get("title")
        full = f"{title} – {name}" if title and name and name != "Default Title" else title
        tracked = variant.get("inventory_management") is not None
        quantity = variant.get("inventory_quantity")
        in_stock = (not tracked or variant.get("inventory_policy") == "continue"
                    or (isinstance(quantity, int) and quantity > 0))
        change.products.append(_present(
            sku=variant.get("sku") or f"shopify-variant:{_id(variant.get('id'), 'variant id')}",
            stock_key=variant.get("inventory_item_id"), name=full,
            category=payload.get("product_type"), price=variant.get("price"))
            | {"in_stock": in_stock})
    return change


def shopify(topic: str, payload: Any) -> Change:
    """A Shopify webhook's JSON (the REST Admin API resource of its topic)."""
    body = _object(payload, topic)
    if topic.startswith("orders/"):
        return _shopify_order(topic, body)
    if topic.startswith("customers/"):
        change = Change(topic, updated_at=body.get("updated_at"))
        change.customers.append(_shopify_customer(body))
        return change
    if topic.startswith("checkouts/"):
        return _shopify_checkout(topic, body)
    if topic == "products/update":
        return _shopify_product(topic, body)
    if topic == "inventory_levels/update":
        available = body.get("available")
        if not isinstance(available, int) or isinstance(available, bool):
            raise Unusable("available: expected a whole number")
        change = Change(topic, updated_at=body.get("updated_at"))
        change.stock_levels.append((_id(body.get("inventory_item_id"), "inventory_item_id"),
                                    available > 0))
        return change
    if topic == "refunds/create":
        change = Change(topic, updated_at=body.get("created_at"))
        transactions = body.get("transactions") or []
        if not isinstance(transactions, list):
            raise Unusable("transactions: expected a list")
        for t in (_object(x, "transactions[]") for x in transactions):
            if t.get("kind") == "refund" and t.get("status") in ("success", None):
                change.refunds.append((_id(body.get("order_id"), "order_id"),
                                       str(t.get("amount")), str(body.get("created_at"))))
        return change
    raise Unusable(f"topic {topic!r} is not one mailer takes: {', '.join(SHOPIFY_TOPICS)}")


# --- WooCommerce -------------------------------------------------------------------------


def _woo_consent(payload: Mapping[str, Any]) -> dict[str, Any]:
    """The record's consent fields from the consent meta: `subscribed`, or OPTED_OUT."""
    meta = payload.get("meta_data")
    for entry in meta if isinstance(meta, list) else []:
        if isinstance(entry, dict) and entry.get("key") in WOO_CONSENT_KEYS:
            value = str(entry.get("value")).strip().lower()
            if value in WOO_OPTED_OUT:
                return {OPTED_OUT: True}
            return {"subscribed": value in ("yes", "1", "true", "subscribed")}
    return {}


def _woo_customer(body: Mapping[str, Any]) -> dict[str, Any]:
    billing = _sub(body, "billing")
    return _present(id=_id(body.get("id"), "customer id"),
                    email=body.get("email") or billing.get("email"),
                    first_name=body.get("first_name") or billing.get("first_name"),
                    last_name=body.get("last_name") or billing.get("last_name"),
                    country=billing.get("country"), city=billing.get("city"),
                    signed_up_at=_gmt(body.get("date_created_gmt")),
                    updated_at=_gmt(body.get("date_modified_gmt"))) | _woo_consent(body)


def _woo_order(topic: str, body: Mapping[str, Any]) -> Change:
    change = Change(topic, updated_at=_gmt(body.get("date_modified_gmt")))
    billing = _sub(body, "billing")
    customer_id = body.get("customer_id")
    if customer_id not in (None, 0, "0"):
        buyer = _present(id=_id(customer_id, "customer_id"), email=billing.get("email"),
                         first_name=billing.get("first_name"),
                         last_name=billing.get("last_name"), country=billing.get("country"),
                         city=billing.get("city")) | _woo_consent(body)
    else:
        buyer = _guest(billing.get("email"), billing.get("first_name"),
                       billing.get("last_name")) | _woo_consent(body)
    change.customers.append(buyer)
    status = WOO_STATUS.get(str(body.get("status")), "unknown")
    if status == "unknown":
        raise Unusable(f"status {body.get('status')!r} is not a WooCommerce order status")
    if status is None:
        change.ignored = f"order {body.get('id')} is {body.get('status')}: stored once paid"
        return change
    lines = _items(body, "line_items")
    coupons = body.get("coupon_lines")
    coupon = coupons[0].get("code") if isinstance(coupons, list) and coupons and isinstance(
        coupons[0], dict) else None
    refunds = _items(body, "refunds")
    change.orders.append(_present(
        order_id=_id(body.get("id"), "order id"), customer_id=buyer.get("id"),
        customer_email=buyer.get("email"),
        placed_at=_gmt(body.get("date_paid_gmt")) or _gmt(body.get("date_created_gmt")),
        status=status, currency=body.get("currency"),
        total=_minus(body.get("total"), refunds), coupon=coupon)
        | {"items": [_present(sku=line.get("sku"), product=line.get("name"),
                              quantity=line.get("quantity"), price=line.get("price"))
                     for line in (_object(x, "line_items[]") for x in lines)]})
    return change


def woocommerce(topic: str, payload: Any) -> Change:
    """A WooCommerce webhook's JSON (the REST API v3 resource of its topic)."""
    body = _object(payload, topic)
    if topic.startswith("order."):
        return _woo_order(topic, body)
    if topic.startswith("customer."):
        change = Change(topic, updated_at=_gmt(body.get("date_modified_gmt")))
        change.customers.append(_woo_customer(body))
        return change
    if topic == "product.updated":
        categories = body.get("categories")
        category = categories[0].get("name") if isinstance(categories, list) and categories \
            and isinstance(categories[0], dict) else None
        change = Change(topic, updated_at=_gmt(body.get("date_modified_gmt")))
        change.products.append(_present(
            sku=body.get("sku") or f"woocommerce-product:{_id(body.get('id'), 'product id')}",
            name=body.get("name"), category=category, price=body.get("price"),
            url=body.get("permalink"))
            | {"in_stock": body.get("stock_status") in ("instock", "onbackorder")})
        return change
    raise Unusable(f"topic {topic!r} is not one mailer takes: {', '.join(WOOCOMMERCE_TOPICS)}")


# --- mailer's own ------------------------------------------------------------------------


def custom(payload: Any) -> tuple[str, Change]:
    """mailer's own event (docs/events.md): {"id", "kind", "updated_at"?, "data"}; the
    delivery id is the event's `id`."""
    body = _object(payload, "the event")
    event_id = _id(body.get("id"), "id")
    kind = body.get("kind")
    data = dict(_object(body.get("data"), "data"))
    change = Change(str(kind), updated_at=body.get("updated_at"))
    if kind == "customer":
        change.customers.append(data | _present(updated_at=body.get("updated_at")))
    elif kind == "order":
        customer = _object(data.pop("customer", None) or {"id": data.get("customer_id")},
                           "data.customer")
        if customer.get("email"):
            change.customers.append(dict(customer))
        change.orders.append(data | {"customer_id": customer.get("id")})
    elif kind == "checkout":
        customer = _object(data.pop("customer", None), "data.customer")
        change.customers.append(dict(customer))
        change.checkouts.append(data | {"customer_id": customer.get("id"),
                                        "customer_email": customer.get("email")})
    elif kind == "product":
        if not isinstance(data.get("in_stock"), bool):
            raise Unusable("data.in_stock: expected true or false")
        change.products.append(data)
    elif kind == "stock_alert":
        change.stock_alerts.append((_id(data.get("customer_id"), "data.customer_id"),
                                    _id(data.get("sku"), "data.sku")))
    else:
        raise Unusable(f"kind {kind!r} is not one of {', '.join(CUSTOM_KINDS)}")
    return event_id, change
