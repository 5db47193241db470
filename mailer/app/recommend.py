"""`mailer recommend`: compute every customer's "you may like" products as of now and
store them (docs/customers.md, "Recommendations"); the daemon runs the same daily.

The computation is SQL in the database (mailer.store.insight.recommendations); this is
the run and its summary.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from mailer.core.clock import iso_z
from mailer.store.db import Engine
from mailer.store.insight.recommendations import (
    MAX_BASKET,
    MAX_RECOMMENDATIONS,
    NEIGHBOURS,
    compute_recommendations,
)


def recommend(engine: Engine, now: datetime) -> dict[str, Any]:
    """Replace the stored recommendations with those as of NOW: the JSON of
    `mailer recommend --json`."""
    now = now.replace(microsecond=0)
    done = compute_recommendations(engine, now=now)
    return {"now": iso_z(now), "customers": done.customers,
            "recommendations": done.co_purchase + done.category,
            "from_co_purchase": done.co_purchase, "from_category": done.category,
            "products": done.products, "pairs": done.pairs,
            "limits": {"per_customer": MAX_RECOMMENDATIONS, "neighbours": NEIGHBOURS,
                       "max_basket": MAX_BASKET}}
