"""A webhook's change written to the store, exactly once (docs/events.md).

`take` runs in one transaction: the delivery's row first (source and the platform's
delivery id are unique, so a replay, or the same delivery arriving twice at once, finds
it and changes nothing), then the customers and orders through the importer's own
writes (mailer.store.importer.write_records: upsert, email_key, consent rules, minor
units, whole orders), then checkouts, products, stock and alerts. Anything the import's
checks refuse rolls all of it back and is `Unusable` (a 400 with the reason).

Timeliness: each customer, order, checkout and product keeps the platform's own
`updated_at` (source_updated_at); a change older than the stored one is skipped, so
deliveries arriving out of order end with the newest state.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Table,
    exists,
    func,
    insert,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.exc import IntegrityError

from mailer.core.addresses import parse_address
from mailer.core.clock import parse_local
from mailer.core.errors import InvalidValue
from mailer.core.states import Consent
from mailer.store.customers import opt_out
from mailer.store.db import upsert
from mailer.store.feeds.shapes import OPTED_OUT, Change, Unusable
from mailer.store.importer import write_records
from mailer.store.models import (
    Checkout,
    Customer,
    HookDelivery,
    Order,
    Product,
    StockAlert,
)
from mailer.store.records import BadRow, Context, CustomerRow, parse_customer, parse_order

_DELIVERIES = cast(Table, HookDelivery.__table__)
GUEST = "guest:"  # the store id of a customer known only by an order's address
SHOP_UNSUBSCRIBE = "unsubscribed at the shop"  # the consent reason of a shop's opt-out


@dataclass(frozen=True)
class Taken:
    """What became of one delivery: stored, replay (seen before) or ignored (why)."""

    outcome: str
    detail: str = ""


def _when(value: Any, ctx: Context, what: str) -> datetime | None:
    if value is None or value == "":
        return None
    try:
        return parse_local(str(value), ctx.tz)
    except InvalidValue as err:
        raise Unusable(f"{what}: {err.message}") from None


def _newer(stored: datetime | None, incoming: datetime | None) -> bool:
    """Whether a change of INCOMING time may overwrite what STORED says."""
    return stored is None or incoming is None or incoming >= stored


def take(engine: Engine, source: str, delivery_id: str, change: Change, ctx: Context,
         now: datetime) -> Taken:
    """Write CHANGE once for (SOURCE, DELIVERY_ID); committed when this returns."""
    for attempt in range(2):
        try:
            with engine.begin() as conn:
                return _take(conn, source, delivery_id, change, ctx, now)
        except IntegrityError:
            # Two deliveries about one new customer at once: the second sees the first's
            # rows on its retry. A second conflict is a real one.
            if attempt:
                raise
    raise AssertionError("unreachable")


def _take(conn: Connection, source: str, delivery_id: str, change: Change, ctx: Context,
          now: datetime) -> Taken:
    event_at = _when(change.updated_at, ctx, "updated_at")
    claimed = conn.execute(
        upsert(conn, _DELIVERIES).values(
            source=source, delivery_id=delivery_id, topic=change.topic[:64],
            received_at=now, event_at=event_at,
            outcome="ignored" if change.ignored else "stored")
        .on_conflict_do_nothing(index_elements=["source", "delivery_id"])
        .returning(_DELIVERIES.c.id)).first()  # psycopg's rowcount here is -1
    if claimed is None:
        return Taken("replay", "delivery seen before: nothing changed")
    if change.ignored:
        return Taken("ignored", change.ignored)
    ids = _customers(conn, source, change, ctx, now, event_at)
    _orders(conn, source, change, ctx, now, event_at, ids)
    _checkouts(conn, change, ctx, event_at, ids)
    _products(conn, change, ctx, now, event_at)
    _stock_alerts(conn, change, now)
    _refunds(conn, change, ctx)
    return Taken("stored")


# --- customers and orders -----------------------------------------------------------------


def _customers(conn: Connection, source: str, change: Change, ctx: Context, now: datetime,
               event_at: datetime | None) -> dict[str, str]:
    """Write the change's customers; their store ids by email key (guests resolved)."""
    c = Customer.__table__.c
    rows: list[tuple[CustomerRow, datetime | None]] = []
    opted_out: set[str] = set()  # store ids whose customer unsubscribed at the shop
    for record in change.customers:
        record = dict(record)
        guest = bool(record.pop("guest", False))
        leaves = bool(record.pop(OPTED_OUT, False))
        # the customer's own time: an order's time says nothing of its billing name
        updated = _when(record.pop("updated_at", None), ctx, "updated_at")
        if "email" not in record:
            if "id" in record:  # an order naming a customer the store should already know
                continue
            raise Unusable("a customer without an email")
        try:
            key = parse_address(str(record["email"])).key
        except InvalidValue as err:
            raise Unusable(f"email: {err.message}") from None
        owner = conn.execute(select(c.store_id).where(c.email_key == key)).scalar()
        if guest:
            record["id"] = owner or f"{GUEST}{key}"
        elif owner is not None and owner.startswith(GUEST) and owner != str(record["id"]):
            # the guest made an account: the customer keeps its history under the shop's id
            conn.execute(update(Customer).where(c.store_id == owner)
                         .values(store_id=str(record["id"])))
        try:
            row = parse_customer(0, record, ctx, typed=True)
        except BadRow as bad:
            raise Unusable("customer: " + "; ".join(bad.reasons)) from None
        rows.append((row, updated))
        if leaves:
            opted_out.add(row.store_id)
    stored = {r.store_id: (r.source_updated_at, r.consent) for r in conn.execute(
        select(c.store_id, c.source_updated_at, c.consent)
        .where(c.store_id.in_([row.store_id for row, _ in rows])))} if rows else {}
    fresh: list[CustomerRow] = []
    for row, updated in rows:
        known = stored.get(row.store_id)
        if known is not None and not _newer(known[0], updated):
            continue  # an older update than the stored one
        if known is None and row.subscribed is None:
            # no consent given at the shop: a webhook's new customer is not subscribed
            row = dataclasses.replace(row, subscribed=False)
        if ctx.double_opt_in and row.subscribed is True:
            row = dataclasses.replace(row, pending=True)  # an opt-in they must confirm
        fresh.append(row)
    errors = write_records(conn, fresh, [], now=now, source=source)
    if errors:
        raise Unusable("; ".join(e.reason for e in errors))
    # An unsubscribe at the shop is the customer's own opt-out, recorded as `mailer
    # unsubscribe` records one (its consent history row, source the platform); a later
    # `subscribed` from the shop does not lift it, as an import's `true` does not.
    leaving = sorted(opted_out & {row.store_id for row in fresh})
    if leaving:
        opt_out(conn, c.store_id.in_(leaving), Consent.UNSUBSCRIBED, now=now, source=source,
                reason=SHOP_UNSUBSCRIBE)
    _mark(conn, Customer, Customer.__table__.c.store_id,
          [(row.store_id, updated) for row, updated in rows if updated is not None])
    return {row.email_key: row.store_id for row, _ in rows}


def _mark(conn: Connection, model: Any, key: Any,
          times: Iterable[tuple[str, datetime]]) -> None:
    """Keep the platform's updated_at of each row written (the newest one)."""
    for store_id, at in times:
        column = model.__table__.c.source_updated_at
        conn.execute(update(model).where(key == store_id)
                     .where((column.is_(None)) | (column < at)).values(source_updated_at=at))


def _buyer(record: dict[str, Any], ids: dict[str, str]) -> dict[str, Any]:
    """RECORD with its customer_id, a guest's resolved from the address."""
    record = dict(record)
    email = record.pop("customer_email", None)
    if record.get("customer_id") is None and email:
        with contextlib.suppress(InvalidValue):  # the order's checks name a bad address
            record["customer_id"] = ids.get(parse_address(str(email)).key)
    return record


def _orders(conn: Connection, source: str, change: Change, ctx: Context, now: datetime,
            event_at: datetime | None, ids: dict[str, str]) -> None:
    if not change.orders:
        return
    o = Order.__table__.c
    parsed = []
    for record in change.orders:
        try:
            parsed.append(parse_order(0, _buyer(record, ids), ctx, typed=True))
        except BadRow as bad:
            raise Unusable("order: " + "; ".join(bad.reasons)) from None
    stored = {r.store_id: r.source_updated_at for r in conn.execute(
        select(o.store_id, o.source_updated_at).where(o.store_id.in_(
            [p.store_id for p in parsed])))}
    fresh = [p for p in parsed if p.store_id not in stored
             or _newer(stored[p.store_id], event_at)]
    errors = write_records(conn, [], fresh, now=now, source=source)
    if errors:
        raise Unusable("; ".join(e.reason for e in errors))
    if event_at is not None:
        _mark(conn, Order, o.store_id, [(p.store_id, event_at) for p in fresh])


# --- checkouts, products, stock -------------------------------------------------------------


def _checkouts(conn: Connection, change: Change, ctx: Context, event_at: datetime | None,
               ids: dict[str, str]) -> None:
    k, c = Checkout.__table__.c, Customer.__table__.c
    for record in change.checkouts:
        store_id = str(record["id"])
        stored = conn.execute(select(k.id, k.source_updated_at, k.completed_at)
                              .where(k.store_id == store_id)).first()
        if record.get("complete"):  # an order naming the checkout it completes
            if stored is not None and stored.completed_at is None:
                done = _when(record.get("completed_at"), ctx, "created_at") or event_at
                conn.execute(update(Checkout).where(k.id == stored.id)
                             .values(completed_at=done))
            continue
        if stored is not None and not _newer(stored.source_updated_at, event_at):
            continue
        record = _buyer(record, ids)
        try:
            typed = parse_order(0, {"order_id": store_id,
                                    "customer_id": record.get("customer_id"),
                                    "placed_at": record.get("created_at"),
                                    "currency": record.get("currency"),
                                    "total": record.get("total", "0"),
                                    "items": record.get("items") or []}, ctx, typed=True)
        except BadRow as bad:
            raise Unusable("checkout: " + "; ".join(bad.reasons)) from None
        customer = conn.execute(select(c.id).where(c.store_id == typed.customer_store_id)
                                ).scalar()
        if customer is None:
            raise Unusable(f"checkout: unknown customer {typed.customer_store_id!r}")
        values = {"customer_id": customer, "created_at": typed.placed_at,
                  "completed_at": _when(record.get("completed_at"), ctx, "completed_at"),
                  "url": record.get("url"), "currency": typed.currency,
                  "total_minor": typed.total_minor, "source_updated_at": event_at,
                  "items": [{"sku": i.sku, "product": i.product, "quantity": i.quantity,
                             "price_minor": i.price_minor} for i in typed.items]}
        if stored is None:
            conn.execute(insert(Checkout).values(store_id=store_id, **values))
        else:
            if stored.completed_at is not None:
                values["completed_at"] = stored.completed_at  # completed stays completed
            conn.execute(update(Checkout).where(k.id == stored.id).values(**values))


def ordered_since_checkout(now: datetime) -> ColumnElement[bool]:
    """Whether the checkout's customer paid for an order placed from the checkout's
    creation to NOW, or the checkout was completed: an abandoned-checkout mail is
    cancelled (reason `ordered`), both when planning and right before the wire."""
    return or_(Checkout.completed_at.is_not(None), exists().where(
        Order.customer_id == Checkout.customer_id, Order.status == "paid",
        Order.placed_at >= Checkout.created_at, Order.placed_at <= now))


def ordered_checkouts(conn: Connection, pairs: Iterable[tuple[int, str]],
                      now: datetime) -> set[tuple[int, str]]:
    """Of these (customer id, checkout store id), those ordered_since_checkout at NOW."""
    wanted = sorted(set(pairs))
    if not wanted:
        return set()
    return {(customer, store_id) for customer, store_id in conn.execute(
        select(Checkout.customer_id, Checkout.store_id).where(
            tuple_(Checkout.customer_id, Checkout.store_id).in_(wanted),
            ordered_since_checkout(now))) if customer is not None}


@dataclass(frozen=True)
class CheckoutView:
    """What an abandoned-checkout mail shows of its checkout (money in minor units)."""

    url: str | None
    items: list[dict[str, Any]]  # {"sku", "product", "quantity", "price_minor"}
    total_minor: int
    currency: str


def checkouts_by_key(conn: Connection, pairs: Iterable[tuple[int, str]]
                     ) -> dict[tuple[int, str], CheckoutView]:
    """The checkouts of these (customer id, checkout store id), in one query."""
    wanted = sorted(set(pairs))
    if not wanted:
        return {}
    return {(customer, store_id): CheckoutView(url, list(items or []), total, currency)
            for customer, store_id, url, items, total, currency in conn.execute(
                select(Checkout.customer_id, Checkout.store_id, Checkout.url, Checkout.items,
                       Checkout.total_minor, Checkout.currency)
                .where(tuple_(Checkout.customer_id, Checkout.store_id).in_(wanted)))
            if customer is not None}


def _open_alerts(conn: Connection, sku: str) -> bool:
    a = StockAlert.__table__.c
    return bool(conn.execute(select(func.count()).select_from(StockAlert)
                             .where(a.sku == sku, a.notified_at.is_(None))).scalar())


def _products(conn: Connection, change: Change, ctx: Context, now: datetime,
              event_at: datetime | None) -> None:
    p = Product.__table__.c
    for record in change.products:
        try:
            typed = parse_order(0, {"order_id": "product", "customer_id": "product",
                                    "placed_at": "2000-01-01", "total": "0",
                                    "currency": record.get("currency"),
                                    "items": [{"sku": record.get("sku"),
                                               "product": record.get("name"),
                                               "category": record.get("category"),
                                               "price": record.get("price")}]},
                                ctx, typed=True)
        except BadRow as bad:
            raise Unusable("product: " + "; ".join(bad.reasons)) from None
        item = typed.items[0]
        if item.sku is None:
            raise Unusable("product: sku is missing")
        stored = conn.execute(select(p.id, p.in_stock, p.source_updated_at)
                              .where(p.sku == item.sku)).first()
        if stored is not None and not _newer(stored.source_updated_at, event_at):
            continue
        in_stock = bool(record["in_stock"])
        values: dict[str, Any] = {"in_stock": in_stock, "updated_at": now,
                                  "source_updated_at": event_at, "currency": typed.currency}
        values |= {k: v for k, v in (("name", item.product), ("category", item.category),
                                     ("price_minor", item.price_minor),
                                     ("stock_key", record.get("stock_key")),
                                     ("url", _url(record.get("url")))) if v is not None}
        if "stock_key" in values:
            values["stock_key"] = str(values["stock_key"])
        restocked = in_stock and (not stored.in_stock if stored is not None
                                  else _open_alerts(conn, item.sku))
        if restocked:
            values["restocked_at"] = _restock_time(event_at, now)
        if stored is None:
            conn.execute(insert(Product).values(sku=item.sku, **values))
        else:
            conn.execute(update(Product).where(p.id == stored.id).values(**values))
    for stock_key, in_stock in change.stock_levels:
        for row in conn.execute(select(p.id, p.in_stock).where(p.stock_key == stock_key)):
            values = {"in_stock": in_stock, "updated_at": now}
            if in_stock and not row.in_stock:
                values["restocked_at"] = _restock_time(event_at, now)
            conn.execute(update(Product).where(p.id == row.id).values(**values))


def _restock_time(event_at: datetime | None, now: datetime) -> datetime:
    """When a product turned in stock: the shop's time of the change, never later than
    its arrival (a shop's clock running ahead must not hold the back-in-stock mails)."""
    return now if event_at is None else min(event_at, now)


def _url(value: Any) -> str | None:
    """A product page's address as a mail may link it: http(s) only (a `javascript:`
    URL from a compromised shop never reaches a reader)."""
    if value is None or value == "":
        return None
    text = str(value).strip()
    if not text.lower().startswith(("https://", "http://")) or any(
            ch.isspace() or ord(ch) < 32 for ch in text) or len(text) > 2000:
        raise Unusable(f"product: url {text[:80]!r} is not an http(s) address")
    return text


def _stock_alerts(conn: Connection, change: Change, now: datetime) -> None:
    c, a = Customer.__table__.c, StockAlert.__table__.c
    for customer_store_id, sku in change.stock_alerts:
        customer = conn.execute(select(c.id).where(c.store_id == customer_store_id)).scalar()
        if customer is None:
            raise Unusable(f"stock_alert: unknown customer {customer_store_id!r}")
        stored = conn.execute(select(a.id, a.notified_at).where(
            a.customer_id == customer, a.sku == sku)).first()
        if stored is None:
            conn.execute(insert(StockAlert).values(customer_id=customer, sku=sku,
                                                   created_at=now, notified_at=None))
        elif stored.notified_at is not None:  # heard once; asks again for the next restock
            conn.execute(update(StockAlert).where(a.id == stored.id)
                         .values(created_at=now, notified_at=None))


def _refunds(conn: Connection, change: Change, ctx: Context) -> None:
    """A refund lowers its order's total, unless the stored order is newer than it
    (then its current total holds the refund already); nothing left is `refunded`."""
    o = Order.__table__.c
    for order_id, amount, at in change.refunds:
        stored = conn.execute(select(o.id, o.currency, o.total_minor, o.source_updated_at)
                              .where(o.store_id == order_id)).first()
        when = _when(at, ctx, "created_at")
        if stored is None or (stored.source_updated_at is not None and when is not None
                              and stored.source_updated_at >= when):
            continue
        try:
            refund = parse_order(0, {"order_id": order_id, "customer_id": "refund",
                                     "placed_at": at, "currency": stored.currency,
                                     "total": amount}, ctx, typed=True).total_minor
        except BadRow as bad:
            raise Unusable("refund: " + "; ".join(bad.reasons)) from None
        left = max(stored.total_minor - refund, 0)
        values: dict[str, Any] = {"total_minor": left, "source_updated_at": when}
        if left == 0:
            values["status"] = "refunded"
        conn.execute(update(Order).where(o.id == stored.id).values(**values))


# --- status --------------------------------------------------------------------------------


@dataclass(frozen=True)
class LastEvent:
    source: str
    topic: str
    received_at: datetime
    event_at: datetime | None

    @property
    def lag_seconds(self) -> float | None:
        """How long after the shop's change mailer heard of it."""
        if self.event_at is None:
            return None
        return max((self.received_at - self.event_at).total_seconds(), 0.0)


def last_events(engine: Engine) -> list[LastEvent]:
    """The latest delivery of each source (`mailer status`)."""
    d = _DELIVERIES.c
    latest = select(d.source, func.max(d.id).label("id")).group_by(d.source).subquery()
    with engine.connect() as conn:
        return [LastEvent(r.source, r.topic, r.received_at, r.event_at) for r in conn.execute(
            select(d.source, d.topic, d.received_at, d.event_at)
            .join(latest, latest.c.id == d.id).order_by(d.source))]
