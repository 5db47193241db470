"""The recommendations table: each customer's "you may like" products, computed for the
whole store in SQL (`mailer recommend`, the daemon's daily job), and read once per batch
(a mail's `recommendations`, the customer card). docs/customers.md, "Recommendations",
gives the exact definition; in short, as of NOW and over paid orders only:

1. co-purchase: every other product P scores the number of paid orders that hold both P
   and a product the customer bought, summed over the customer's products (each counted
   once), highest first;
2. then the bestsellers (most paid orders) of the customer's favourite category
   (mailer.store.customers.favourite_categories, the one definition);

never a product the customer bought, ties by sku, at most MAX_RECOMMENDATIONS.

Bounds: an order with more than MAX_BASKET distinct products adds no pair (k products
make k(k-1) pairs: one wholesale order must not cost more than a day of baskets), and
each product keeps its NEIGHBOURS most co-purchased products only, so a customer's
candidates are at most NEIGHBOURS per product they bought.

The work happens in temporary tables on one connection: the paid (order, sku) pairs, the
catalogue, the pair table, then BATCH customers a statement into a staging table. Only
then one short transaction replaces the table as a whole (readers see the old set or the
new one), so on SQLite the store's writers are never held up by the computation.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, select, text

from mailer.store.customers import favourite_categories
from mailer.store.db import Connection, Engine, is_server, serial_plans
from mailer.store.locks import file_lock, lock_path
from mailer.store.models import Recommendation, UTCDateTime

MAX_RECOMMENDATIONS = 6  # per customer: what a mail and the card show
NEIGHBOURS = 30  # co-purchased products kept per product
MAX_BASKET = 50  # distinct products an order may hold and still count for pairs
BATCH = 10_000  # customer ids per statement (favourite_categories binds their ids)
RECOMMEND_KEY = 0x6D61_696C_6572_1805  # the advisory lock "mailer recommend"

PAID = "o.status = 'paid' AND o.placed_at <= :now"
TEMPORARY = ("recommend_lines", "recommend_catalogue", "recommend_pairs",
             "recommend_favourites", "recommend_staging")

# Each paid order's distinct skus, with its customer: everything below reads this one
# snapshot of the orders, never the orders again.
LINES = f"""
INSERT INTO recommend_lines (order_id, customer_id, sku)
SELECT DISTINCT o.id, o.customer_id, l.sku
FROM orders o JOIN order_lines l ON l.order_id = o.id
WHERE {PAID} AND l.sku IS NOT NULL"""

# Each sku's name and category as its latest paid line gives them, the paid orders that
# hold it, and its place among its category's bestsellers (ties by sku).
CATALOGUE = f"""
INSERT INTO recommend_catalogue (sku, product, category, orders, category_rank)
SELECT n.sku, n.product, n.category, c.orders,
       ROW_NUMBER() OVER (PARTITION BY n.category ORDER BY c.orders DESC, n.sku)
FROM (SELECT l.sku, l.product, l.category,
             ROW_NUMBER() OVER (PARTITION BY l.sku ORDER BY o.placed_at DESC, l.id DESC)
               AS latest
      FROM orders o JOIN order_lines l ON l.order_id = o.id
      WHERE {PAID} AND l.sku IS NOT NULL) n
JOIN (SELECT sku, count(*) AS orders FROM recommend_lines GROUP BY sku) c ON c.sku = n.sku
WHERE n.latest = 1"""

# For each product, the NEIGHBOURS products most often in the same paid order with it
# (ties by sku), counted over orders of 2 to MAX_BASKET distinct products.
PAIRS = """
INSERT INTO recommend_pairs (sku, other, together)
SELECT sku, other, together FROM (
  SELECT a.sku, b.sku AS other, count(*) AS together,
         ROW_NUMBER() OVER (PARTITION BY a.sku ORDER BY count(*) DESC, b.sku) AS k
  FROM recommend_lines a JOIN recommend_lines b ON b.order_id = a.order_id AND b.sku <> a.sku
  WHERE a.order_id IN (SELECT order_id FROM recommend_lines GROUP BY order_id
                       HAVING count(*) BETWEEN 2 AND :basket)
  GROUP BY a.sku, b.sku) ranked
WHERE k <= :neighbours"""

# One batch of customers (ids in [lo, hi]) into the staging table: co-purchase first
# (part 0), then their favourite category's bestsellers (part 1). The fill reads no
# deeper into the category than 2 × MAX + the products the customer bought: at most
# that many are excluded, so the ones it needs are always there.
BATCH_SQL = """
INSERT INTO recommend_staging (customer_id, rank, sku, part)
WITH bought AS (
  SELECT DISTINCT customer_id, sku FROM recommend_lines WHERE customer_id BETWEEN :lo AND :hi),
scored AS (
  SELECT b.customer_id, p.other AS sku, sum(p.together) AS score
  FROM bought b JOIN recommend_pairs p ON p.sku = b.sku
  WHERE NOT EXISTS (SELECT 1 FROM recommend_lines x
                    WHERE x.customer_id = b.customer_id AND x.sku = p.other)
  GROUP BY b.customer_id, p.other),
co AS (
  SELECT customer_id, sku,
         ROW_NUMBER() OVER (PARTITION BY customer_id ORDER BY score DESC, sku) AS k
  FROM scored),
chosen AS (SELECT customer_id, sku, 0 AS part, k FROM co WHERE k <= :max),
depth AS (
  SELECT f.customer_id, f.category, 2 * :max + count(b.sku) AS n
  FROM recommend_favourites f LEFT JOIN bought b ON b.customer_id = f.customer_id
  GROUP BY f.customer_id, f.category),
fill AS (
  SELECT d.customer_id, c.sku, 1 AS part, c.category_rank AS k
  FROM depth d JOIN recommend_catalogue c
    ON c.category = d.category AND c.category_rank <= d.n
  WHERE NOT EXISTS (SELECT 1 FROM recommend_lines x
                    WHERE x.customer_id = d.customer_id AND x.sku = c.sku)
    AND NOT EXISTS (SELECT 1 FROM chosen x
                    WHERE x.customer_id = d.customer_id AND x.sku = c.sku)),
merged AS (SELECT customer_id, sku, part, k FROM chosen
           UNION ALL SELECT customer_id, sku, part, k FROM fill),
ranked AS (
  SELECT customer_id, sku, part,
         ROW_NUMBER() OVER (PARTITION BY customer_id ORDER BY part, k) AS rank
  FROM merged)
SELECT customer_id, rank, sku, part FROM ranked WHERE rank <= :max"""

# Buyers in [lo, hi]: whose favourite category the batch asks for.
BUYERS = f"""
SELECT DISTINCT o.customer_id FROM orders o
WHERE {PAID} AND o.customer_id BETWEEN :lo AND :hi"""

REPLACE = """
INSERT INTO recommendations (customer_id, rank, sku, product, category, computed_at)
SELECT s.customer_id, s.rank, s.sku, c.product, c.category, :now
FROM recommend_staging s JOIN recommend_catalogue c ON c.sku = s.sku
WHERE s.customer_id IN (SELECT id FROM customers)"""

CREATE = {
    "recommend_lines": "order_id INTEGER NOT NULL, customer_id INTEGER NOT NULL, "
                       "sku VARCHAR(255) NOT NULL",
    "recommend_catalogue": "sku VARCHAR(255) PRIMARY KEY, product TEXT, category TEXT, "
                           "orders INTEGER NOT NULL, category_rank INTEGER NOT NULL",
    "recommend_pairs": "sku VARCHAR(255) NOT NULL, other VARCHAR(255) NOT NULL, "
                       "together INTEGER NOT NULL",
    "recommend_favourites": "customer_id INTEGER PRIMARY KEY, category TEXT NOT NULL",
    "recommend_staging": "customer_id INTEGER NOT NULL, rank INTEGER NOT NULL, "
                         "sku VARCHAR(255) NOT NULL, part INTEGER NOT NULL",
}
# Indexes made after the fill (cheaper than kept up row by row); each serves one lookup.
INDEXES = (
    "CREATE INDEX recommend_lines_order ON recommend_lines (order_id, sku)",
    "CREATE INDEX recommend_lines_customer ON recommend_lines (customer_id, sku)",
    "CREATE INDEX recommend_catalogue_category ON recommend_catalogue (category, category_rank)",
    "CREATE INDEX recommend_pairs_sku ON recommend_pairs (sku, other)",
)


@dataclass(frozen=True)
class Recommended:
    """One recommended product, as a template and the card see it."""

    sku: str
    product: str | None
    category: str | None

    def as_json(self) -> dict[str, str | None]:
        return {"sku": self.sku, "product": self.product, "category": self.category}


@dataclass(frozen=True)
class Computed:
    """What one computation wrote: customers with recommendations, rows by where they
    came from, the products in paid orders and the co-purchase pairs kept."""

    customers: int
    co_purchase: int
    category: int
    products: int
    pairs: int


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


def _now(sql: str) -> Any:
    """SQL with :now bound as a UTC time (stored naive on both databases)."""
    return text(sql).bindparams(bindparam("now", type_=UTCDateTime()))


@contextmanager
def _one_run(engine: Engine, conn: Connection) -> Iterator[None]:
    """One computation at a time: the second waits, then computes afresh. The lock spans
    two transactions, so on PostgreSQL it is the session's, released in `finally`."""
    if not is_server(engine):
        with file_lock(lock_path(engine, "recommend"), wait=True,
                       doing="computing recommendations"):
            yield
        return
    conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": RECOMMEND_KEY})
    conn.commit()
    try:
        yield
    finally:
        conn.rollback()
        conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": RECOMMEND_KEY})
        conn.commit()


def _drop(conn: Connection) -> None:
    for name in TEMPORARY:
        conn.execute(text(f"DROP TABLE IF EXISTS {name}"))


def _prepare(conn: Connection, now: datetime) -> None:
    """The temporary tables every batch reads: lines, catalogue, pairs."""
    _drop(conn)  # a pooled connection may keep them from a run that died
    for name, columns in CREATE.items():
        conn.execute(text(f"CREATE TEMPORARY TABLE {name} ({columns})"))
    conn.execute(_now(LINES), {"now": now})
    conn.execute(text(INDEXES[0]))
    conn.execute(text(INDEXES[1]))
    conn.execute(_now(CATALOGUE), {"now": now})
    conn.execute(text(PAIRS), {"basket": MAX_BASKET, "neighbours": NEIGHBOURS})
    for index in INDEXES[2:]:
        conn.execute(text(index))
    if is_server(conn):  # autovacuum never analyses temporary tables
        for name in TEMPORARY[:3]:
            conn.execute(text(f"ANALYZE {name}"))


def _batch(conn: Connection, now: datetime, lo: int, hi: int) -> None:
    """Stage the recommendations of the customers with ids in [LO, HI]."""
    buyers = [row[0] for row in conn.execute(_now(BUYERS), {"now": now, "lo": lo, "hi": hi})]
    conn.execute(text("DELETE FROM recommend_favourites"))
    favourites = favourite_categories(conn, buyers, now=now) if buyers else {}
    if favourites:
        conn.execute(text("INSERT INTO recommend_favourites (customer_id, category) "
                          "VALUES (:customer_id, :category)"),
                     [{"customer_id": c, "category": f} for c, f in favourites.items()])
    conn.execute(text(BATCH_SQL), {"lo": lo, "hi": hi, "max": MAX_RECOMMENDATIONS})


def compute_recommendations(engine: Engine, *, now: datetime) -> Computed:
    """Compute every customer's recommendations as of NOW and make them the only ones
    stored (each row's computed_at is NOW)."""
    with engine.connect() as conn, _one_run(engine, conn):
        try:
            with conn.begin():
                if is_server(conn):  # one snapshot of the orders for every statement
                    conn.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))
                serial_plans(conn)
                _prepare(conn, now)
                low, high = conn.execute(text("SELECT min(id), max(id) FROM customers")).one()
                for lo in range(low or 0, (high or -1) + 1, BATCH):
                    _batch(conn, now, lo, lo + BATCH - 1)
            with conn.begin():
                conn.execute(text("DELETE FROM recommendations"))
                conn.execute(_now(REPLACE), {"now": now})
                customers, co, category = conn.execute(text(
                    "SELECT count(DISTINCT customer_id), "
                    "coalesce(sum(CASE WHEN part = 0 THEN 1 ELSE 0 END), 0), "
                    "coalesce(sum(part), 0) FROM recommend_staging "
                    "WHERE customer_id IN (SELECT id FROM customers)")).one()
                products, pairs = conn.execute(text(
                    "SELECT (SELECT count(*) FROM recommend_catalogue), "
                    "(SELECT count(*) FROM recommend_pairs)")).one()
        finally:
            conn.rollback()
            with conn.begin():
                _drop(conn)
    return Computed(int(customers), int(co), int(category), int(products), int(pairs))

