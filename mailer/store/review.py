"""The monthly review's reads (issue 19), aggregated in the database: a month's sent mails
with their opens, clicks and unsubscribes per campaign; the paid orders attributed to a
click; bounces and complaints; and the one customer and order a low-score alert names.

Attribution: a paid order placed in (click, click + 7 days] is attributed to the last
click of the same customer before it (one order, one campaign, however many clicks came
before it). "Attributed", never "caused": the click came first, nothing more is known.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import case, exists, func, literal, select

from mailer.store.db import Connection, is_server
from mailer.store.models import Customer, Delivery, Event, Order

ATTRIBUTION = timedelta(days=7)


@dataclass(frozen=True)
class CampaignMonth:
    """A campaign's mails sent in the month and how many of them were opened, clicked and
    unsubscribed from (each mail once, its events whenever they came)."""

    campaign: str
    sent: int
    opened: int
    clicked: int
    unsubscribed: int


def _had(kind: str) -> Any:
    """1 for a ledger row with an event of KIND, else 0 (ix_events_delivery_id)."""
    return case((exists().where(Event.delivery_id == Delivery.id, Event.kind == kind), 1),
                else_=0)


def campaign_months(conn: Connection, start: datetime, end: datetime) -> list[CampaignMonth]:
    """Every campaign with mail sent in [START, END), by name."""
    rows = conn.execute(
        select(Delivery.campaign, func.count(), func.sum(_had("open")), func.sum(_had("click")),
               func.sum(_had("unsubscribe")))
        .where(Delivery.status == "sent", Delivery.sent_at >= start, Delivery.sent_at < end)
        .group_by(Delivery.campaign).order_by(Delivery.campaign))
    return [CampaignMonth(str(campaign), int(sent), int(opened or 0), int(clicked or 0),
                          int(unsubscribed or 0))
            for campaign, sent, opened, clicked, unsubscribed in rows]


def _window_start(conn: Connection) -> Any:
    """The earliest click that still counts for an order: placed_at − 7 days, in SQL."""
    if is_server(conn):
        return Order.placed_at - literal(ATTRIBUTION)
    # SQLite stores 'YYYY-MM-DD HH:MM:SS.ffffff': the same text form, to the millisecond
    return func.strftime("%Y-%m-%d %H:%M:%f", Order.placed_at, f"-{ATTRIBUTION.days} days")


def attributed(conn: Connection, start: datetime, end: datetime, currency: str
               ) -> dict[str, tuple[int, int]]:
    """Campaign -> (orders, revenue in minor units) of the paid orders in CURRENCY placed in
    [START, END) that follow a click within 7 days, each credited to its last click."""
    last_click = (select(func.coalesce(Event.campaign, ""))
                  .where(Event.customer_id == Order.customer_id, Event.kind == "click",
                         Event.at < Order.placed_at, Event.at >= _window_start(conn))
                  .order_by(Event.at.desc(), Event.id.desc()).limit(1)
                  .correlate(Order).scalar_subquery())
    credited = (select(last_click.label("campaign"), Order.total_minor)
                .where(Order.status == "paid", Order.currency == currency,
                       Order.placed_at >= start, Order.placed_at < end)
                .subquery("credited"))
    rows = conn.execute(select(credited.c.campaign, func.count(), func.sum(credited.c.total_minor))
                        .where(credited.c.campaign.is_not(None))
                        .group_by(credited.c.campaign))
    return {str(campaign): (int(n), int(total or 0)) for campaign, n, total in rows}


def event_counts(conn: Connection, start: datetime, end: datetime,
                 kinds: tuple[str, ...]) -> dict[str, int]:
    """How many events of each of KINDS happened in [START, END) (zeros included)."""
    found = dict.fromkeys(kinds, 0)
    for kind, n in conn.execute(select(Event.kind, func.count()).where(
            Event.kind.in_(kinds), Event.at >= start, Event.at < end).group_by(Event.kind)):
        found[str(kind)] = int(n)
    return found


@dataclass(frozen=True)
class Ordered:
    """A paid order as an alert names it."""

    store_id: str
    placed_at: datetime
    currency: str
    total_minor: int


@dataclass(frozen=True)
class AlertSubject:
    """The customer a low-score alert is about and the order it names: the one the survey
    asked about (ASKED), else their latest paid order by then."""

    store_id: str
    email: str
    name: str
    order: Ordered | None
    asked: bool = False


def alert_subject(conn: Connection, customer_id: int, now: datetime,
                  order_store_id: str | None = None) -> AlertSubject | None:
    """The customer (None if gone) and the order ORDER_STORE_ID of theirs (the one an
    after_order mail asked about), else their latest paid order placed by NOW."""
    person = conn.execute(select(Customer.store_id, Customer.email, Customer.first_name,
                                 Customer.last_name).where(Customer.id == customer_id)).first()
    if person is None:
        return None
    columns = select(Order.store_id, Order.placed_at, Order.currency, Order.total_minor)
    order = None
    if order_store_id is not None:  # another customer's order is never named
        order = conn.execute(columns.where(Order.customer_id == customer_id,
                                           Order.store_id == order_store_id)).first()
    asked = order is not None
    if order is None:
        order = conn.execute(
            columns.where(Order.customer_id == customer_id, Order.status == "paid",
                          Order.placed_at <= now)
            .order_by(Order.placed_at.desc(), Order.id.desc()).limit(1)).first()
    name = " ".join(part for part in (person.first_name, person.last_name) if part)
    return AlertSubject(str(person.store_id), str(person.email), name,
                        None if order is None else Ordered(str(order.store_id), order.placed_at,
                                                           str(order.currency),
                                                           int(order.total_minor)),
                        asked)

