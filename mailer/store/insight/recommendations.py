"""The recommendations table: each customer's "you may like" products, and reading
them once per batch (a mail's `recommendations`, the customer card).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select

from mailer.store.db import Connection
from mailer.store.models import Recommendation

MAX_RECOMMENDATIONS = 6  # per customer: what a mail and the card show


@dataclass(frozen=True)
class Recommended:
    """One recommended product, as a template and the card see it."""

    sku: str
    product: str | None
    category: str | None

    def as_json(self) -> dict[str, str | None]:
        return {"sku": self.sku, "product": self.product, "category": self.category}


def recommendations_of(conn: Connection, ids: Sequence[int]) -> dict[int, list[Recommended]]:
    """The stored recommendations of the customers IDS, best first (those without any
    are left out), in one query."""
    if not ids:
        return {}
    found: dict[int, list[Recommended]] = {}
    rows = conn.execute(select(Recommendation.customer_id, Recommendation.sku,
                               Recommendation.product, Recommendation.category)
                        .where(Recommendation.customer_id.in_(list(ids)))
                        .order_by(Recommendation.customer_id, Recommendation.rank))
    for customer_id, sku, product, category in rows:
        found.setdefault(customer_id, []).append(Recommended(sku, product, category))
    return found
