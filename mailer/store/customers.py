"""Store-wide reads and writes: counts, opt-outs, clearing the store."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, delete, func, select

from mailer.core.addresses import parse_address
from mailer.core.errors import InvalidValue
from mailer.core.states import Consent
from mailer.store.consent import opt_out, suppress
from mailer.store.models import DELIVERY_STATES, Base, Customer, Delivery, Order


@dataclass(frozen=True)
class OptOut:
    """What `unsubscribe` did with one address."""

    email: str
    outcome: str  # unsubscribed | already | suppressed | invalid
    reason: str | None = None


def unsubscribe(engine: Engine, emails: list[str], *, now: datetime, source: str = "cli",
                reason: str = "manual") -> list[OptOut]:
    """Record opt-outs; an unknown but valid address is suppressed anyway."""
    results = []
    with engine.begin() as conn:
        for raw in emails:
            try:
                address = parse_address(raw)
            except InvalidValue as err:
                results.append(OptOut(raw, "invalid", err.message))
                continue
            row = conn.execute(select(Customer.id, Customer.consent)
                               .where(Customer.email_key == address.key)).first()
            if row is None:
                suppress(conn, [address.key], now=now, source=source, reason=reason)
                results.append(OptOut(address.email, "suppressed"))
            elif opt_out(conn, Customer.id == row.id, Consent.UNSUBSCRIBED, now=now, source=source,
                         reason=reason):
                results.append(OptOut(address.email, "unsubscribed"))
            else:
                results.append(OptOut(address.email, "already", row.consent))
    return results


def customer_count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(Customer)).scalar_one())


def status_counts(engine: Engine) -> dict[str, Any]:
    """Customers, subscribed, every stored order, deliveries by state (zeros included)."""
    with engine.connect() as conn:
        customers = conn.execute(select(func.count()).select_from(Customer)).scalar_one()
        subscribed = conn.execute(select(func.count()).select_from(Customer)
                                  .where(Customer.consent == "subscribed")).scalar_one()
        orders = conn.execute(select(func.count()).select_from(Order)).scalar_one()
        deliveries: dict[str, int] = dict.fromkeys(DELIVERY_STATES, 0)
        for state, count in conn.execute(select(Delivery.status, func.count())
                                         .group_by(Delivery.status)):
            deliveries[state] = int(count)
    return {"customers": int(customers), "subscribed": int(subscribed), "orders": int(orders),
            "deliveries": deliveries}


def clear_store(engine: Engine) -> None:
    """Delete every row of every mailer table, children first."""
    with engine.begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            conn.execute(delete(table))
