"""What templates and previews read about customers (DESIGN §4.4): the people by id,
their paid-order stats and favourite categories, a customer found by address, and how
many of a segment lack a field. Batches at a time, never a query per recipient."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import Connection, Engine, Select, and_, case, func, select

from mailer.store.models import Customer, Order, OrderLine


@dataclass(frozen=True, slots=True)
class Profile:
    """A customer as the template context reads them: the two required fields, then
    the optional ones (None when missing)."""

    store_id: str
    email: str
    first_name: str | None = None
    last_name: str | None = None
    birth_date: date | None = None
    country: str | None = None
    city: str | None = None
    locale: str | None = None
    timezone: str | None = None
    tags: list[str] | None = None
    attributes: dict[str, Any] | None = None
    signed_up_at: datetime | None = None
    referral_code: str | None = None


@dataclass(frozen=True, slots=True)
class OrderStats:
    """One customer's paid orders placed by then: SPENT_MINOR and COUNTED are over the
    orders in the store's currency only."""

    customer_id: int
    orders: int
    spent_minor: int
    counted: int
    first_at: datetime
    last_at: datetime


def people_by_id(conn: Connection, ids: Sequence[int]) -> dict[int, Profile]:
    """The profiles of these customers, by id (ids not found are left out)."""
    table = Customer.__table__
    rows = conn.execute(select(*table.c).where(table.c.id.in_(list(ids))))
    return {row.id: Profile(
        store_id=row.store_id, email=row.email, first_name=row.first_name,
        last_name=row.last_name, birth_date=row.birth_date, country=row.country,
        city=row.city, locale=row.locale, timezone=row.timezone, tags=row.tags,
        attributes=row.attributes, signed_up_at=row.signed_up_at,
        referral_code=row.referral_code) for row in rows}


def _paid(ids: Sequence[int], now: datetime) -> Any:
    """Their paid orders placed by NOW: what stats and favourites count."""
    return and_(Order.status == "paid", Order.placed_at <= now,
                Order.customer_id.in_(list(ids)))


def order_stats(conn: Connection, ids: Sequence[int], *, now: datetime,
                currency: str) -> list[OrderStats]:
    """One aggregation over these customers' paid orders (those with any)."""
    in_currency = Order.currency == currency
    rows = conn.execute(
        select(Order.customer_id, func.count(),
               func.sum(case((in_currency, Order.total_minor), else_=0)),
               func.sum(case((in_currency, 1), else_=0)),
               func.min(Order.placed_at), func.max(Order.placed_at))
        .where(_paid(ids, now)).group_by(Order.customer_id))
    return [OrderStats(customer_id, int(orders), int(spent or 0), int(counted or 0),
                       _utc(first), _utc(last))
            for customer_id, orders, spent, counted, first, last in rows]


def favourite_categories(conn: Connection, ids: Sequence[int], *,
                         now: datetime) -> dict[int, str]:
    """Each customer's most bought category over their paid orders (by quantity; a tie
    goes to the first by name); customers without one are left out."""
    rows = conn.execute(
        select(Order.customer_id, OrderLine.category, func.sum(OrderLine.quantity).label("n"))
        .join(Order, Order.id == OrderLine.order_id)
        .where(_paid(ids, now), OrderLine.category.is_not(None))
        .group_by(Order.customer_id, OrderLine.category)
        .order_by(Order.customer_id, func.sum(OrderLine.quantity).desc(), OrderLine.category))
    favourites: dict[int, str] = {}
    for customer_id, category, _ in rows:
        favourites.setdefault(customer_id, str(category))  # never NULL: filtered above
    return favourites


def _utc(value: Any) -> Any:
    """SQLite aggregates lose the column type: read back as aware UTC either way."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if isinstance(value, datetime) and value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value


def id_of_address(engine: Engine, address: str) -> int | None:
    """The id of the customer with this address (compared by its key), or None."""
    from mailer.core.addresses import email_key  # email-validator and idna: only when asked

    with engine.connect() as conn:
        found = conn.execute(select(Customer.id).where(
            Customer.email_key == email_key(address))).scalar()
    return None if found is None else int(found)


def missing_counts(conn: Connection, members: Select[Any], field: str) -> tuple[int, int]:
    """(members, members whose FIELD is NULL) for MEMBERS, a query of customers' ids."""
    table = Customer.__table__
    column = table.c[field]
    chosen = members.subquery()
    total, missing = conn.execute(
        select(func.count(), func.sum(case((column.is_(None), 1), else_=0)))
        .select_from(table.join(chosen, chosen.c.id == table.c.id))).one()
    return int(total), int(missing or 0)
