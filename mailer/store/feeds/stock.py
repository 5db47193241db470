"""Products and stock alerts as the back_in_stock trigger reads them (docs/events.md).

mailer.store.feeds.apply writes products and alerts from webhooks and records each
restock (`restocked_at`, when a product turns in stock); this module answers the
planner (which products were restocked lately, and in stock now or not), the sender
(in stock right before the wire; a sent mail closes its customer's alert) and the
templates (`product.*`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, tuple_, update

from mailer.store.db import Connection
from mailer.store.models import Product, StockAlert


@dataclass(frozen=True)
class Restock:
    """A product's latest restock, and whether it is still in stock."""

    sku: str
    restocked_at: datetime
    in_stock: bool


def restocked_between(conn: Connection, start: datetime, end: datetime) -> list[Restock]:
    """The products whose latest restock is in (START, END], by sku."""
    return [Restock(sku, at, bool(in_stock)) for sku, at, in_stock in conn.execute(
        select(Product.sku, Product.restocked_at, Product.in_stock)
        .where(Product.restocked_at > start, Product.restocked_at <= end)
        .order_by(Product.sku)) if at is not None]


def out_of_stock(conn: Connection, skus: Iterable[str]) -> set[str]:
    """Of SKUS, those not in stock now (a sku no longer known counts as out)."""
    wanted = sorted(set(skus))
    if not wanted:
        return set()
    present = {sku for sku, in_stock in conn.execute(
        select(Product.sku, Product.in_stock).where(Product.sku.in_(wanted))) if in_stock}
    return set(wanted) - present


def close_alerts(conn: Connection, pairs: Iterable[tuple[int, str]], now: datetime) -> int:
    """Close the open alerts of these (customer id, sku): their mail was sent. How many."""
    wanted = sorted(set(pairs))
    if not wanted:
        return 0
    closed = conn.execute(update(StockAlert).where(
        tuple_(StockAlert.customer_id, StockAlert.sku).in_(wanted),
        StockAlert.notified_at.is_(None)).values(notified_at=now))
    return int(closed.rowcount or 0)


@dataclass(frozen=True)
class ProductView:
    """What a back-in-stock mail shows of its product (money in minor units)."""

    sku: str
    name: str | None
    price_minor: int | None
    currency: str | None
    url: str | None


def products_by_sku(conn: Connection, skus: Iterable[str]) -> dict[str, ProductView]:
    """The products of SKUS, in one query."""
    wanted = sorted(set(skus))
    if not wanted:
        return {}
    return {sku: ProductView(sku, name, price, currency, url)
            for sku, name, price, currency, url in conn.execute(
                select(Product.sku, Product.name, Product.price_minor, Product.currency,
                       Product.url).where(Product.sku.in_(wanted)))}
