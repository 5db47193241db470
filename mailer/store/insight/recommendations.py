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
from mailer.store.db import IDS, Connection, Engine, is_server, serial_plans
from mailer.store.locks import RECOMMEND_KEY, file_lock, lock_path
from mailer.store.models import Order, OrderLine, Recommendation, UTCDateTime

MAX_RECOMMENDATIONS = 6  # per customer: what a mail and the card show
NEIGHBOURS = 30  # co-purchased products kept per product: exact for catalogues up to 31
MAX_BASKET = 50  # distinct products an order may hold and still count for pairs
BATCH = 10_000  # customer ids per statement (favourite_categories binds their ids)
WORK_MEM = "64MB"  # per sort or hash of a batch, PostgreSQL

PAID = "o.status = 'paid' AND o.placed_at <= :now"
TEMPORARY = ("recommend_products", "recommend_lines", "recommend_bought", "recommend_ranks",
             "recommend_pairs", "recommend_favourites", "recommend_staging")

# Every sku of a paid line, numbered in sku order (so "ties by sku" is "by number", and the
# tables below hash and sort integers, not text), with the name and category of its
# latest paid line. {binary}: code point order on both databases, whatever PostgreSQL's
# collation.
PRODUCTS = f"""
INSERT INTO recommend_products (id, sku, product, category)
SELECT ROW_NUMBER() OVER (ORDER BY sku {{binary}}), sku, product, category
FROM (SELECT l.sku, l.product, l.category,
             ROW_NUMBER() OVER (PARTITION BY l.sku ORDER BY o.placed_at DESC, l.id DESC)
               AS latest
      FROM orders o JOIN order_lines l ON l.order_id = o.id
      WHERE {PAID} AND l.sku IS NOT NULL) n
WHERE latest = 1"""

# Each paid order's distinct products, with its customer.
LINES = f"""
INSERT INTO recommend_lines (order_id, customer_id, product_id)
SELECT DISTINCT o.id, o.customer_id, p.id
FROM orders o JOIN order_lines l ON l.order_id = o.id JOIN recommend_products p ON p.sku = l.sku
WHERE {PAID}"""

# What each customer bought: the products never to recommend them.
BOUGHT = """
INSERT INTO recommend_bought (customer_id, product_id)
SELECT DISTINCT customer_id, product_id FROM recommend_lines"""

# Each product's paid orders and its place among its category's bestsellers (ties by sku).
RANKS = """
INSERT INTO recommend_ranks (product_id, category, orders, category_rank)
SELECT p.id, p.category, c.orders,
       ROW_NUMBER() OVER (PARTITION BY p.category ORDER BY c.orders DESC, p.id)
FROM recommend_products p
JOIN (SELECT product_id, count(*) AS orders FROM recommend_lines GROUP BY product_id) c
  ON c.product_id = p.id"""

# For each product, the NEIGHBOURS products most often in the same paid order with it
# (ties by sku), counted over orders of 2 to MAX_BASKET distinct products.
PAIRS = """
INSERT INTO recommend_pairs (product_id, other, together)
SELECT product_id, other, together FROM (
  SELECT a.product_id, b.product_id AS other, count(*) AS together,
         ROW_NUMBER() OVER (PARTITION BY a.product_id ORDER BY count(*) DESC, b.product_id)
           AS k
  FROM recommend_lines a
  JOIN recommend_lines b ON b.order_id = a.order_id AND b.product_id <> a.product_id
  WHERE a.order_id IN (SELECT order_id FROM recommend_lines GROUP BY order_id
                       HAVING count(*) BETWEEN 2 AND :basket)
  GROUP BY a.product_id, b.product_id) ranked
WHERE k <= :neighbours"""

# One batch of customers (ids in [lo, hi]) into the staging table: co-purchase first
# (part 0), then their favourite category's bestsellers (part 1). The fill reads no
# deeper into the category than 2 × MAX + the products the customer bought: at most
# that many are excluded, so the ones it needs are always there. The exclusions read the
# batch's own `bought`, which the database hashes, not the whole store's.
BATCH_SQL = """
INSERT INTO recommend_staging (customer_id, rank, product_id, part)
WITH bought AS (
  SELECT customer_id, product_id FROM recommend_bought
  WHERE customer_id BETWEEN :lo AND :hi),
scored AS (
  SELECT b.customer_id, p.other AS product_id, sum(p.together) AS score
  FROM bought b JOIN recommend_pairs p ON p.product_id = b.product_id
  GROUP BY b.customer_id, p.other),
co AS (
  SELECT customer_id, product_id,
         ROW_NUMBER() OVER (PARTITION BY customer_id ORDER BY score DESC, product_id) AS k
  FROM scored s
  WHERE NOT EXISTS (SELECT 1 FROM bought x
                    WHERE x.customer_id = s.customer_id AND x.product_id = s.product_id)),
chosen AS (SELECT customer_id, product_id, 0 AS part, k FROM co WHERE k <= :max),
depth AS (
  SELECT f.customer_id, f.category, 2 * :max + count(b.product_id) AS n
  FROM recommend_favourites f LEFT JOIN bought b ON b.customer_id = f.customer_id
  GROUP BY f.customer_id, f.category),
fill AS (
  SELECT d.customer_id, r.product_id, 1 AS part, r.category_rank AS k
  FROM depth d JOIN recommend_ranks r
    ON r.category = d.category AND r.category_rank <= d.n
  WHERE NOT EXISTS (SELECT 1 FROM bought x
                    WHERE x.customer_id = d.customer_id AND x.product_id = r.product_id)
    AND NOT EXISTS (SELECT 1 FROM chosen x
                    WHERE x.customer_id = d.customer_id AND x.product_id = r.product_id)),
merged AS (SELECT customer_id, product_id, part, k FROM chosen
           UNION ALL SELECT customer_id, product_id, part, k FROM fill),
ranked AS (
  SELECT customer_id, product_id, part,
         ROW_NUMBER() OVER (PARTITION BY customer_id ORDER BY part, k) AS rank
  FROM merged)
SELECT customer_id, rank, product_id, part FROM ranked WHERE rank <= :max"""

# Buyers in [lo, hi]: whose favourite category the batch asks for.
BUYERS = f"""
SELECT DISTINCT o.customer_id FROM orders o
WHERE {PAID} AND o.customer_id BETWEEN :lo AND :hi"""

REPLACE = """
INSERT INTO recommendations (customer_id, rank, sku, product, category, computed_at)
SELECT s.customer_id, s.rank, p.sku, p.product, p.category, :now
FROM recommend_staging s JOIN recommend_products p ON p.id = s.product_id
WHERE s.customer_id IN (SELECT id FROM customers)"""

CREATE = {
    "recommend_products": "id INTEGER PRIMARY KEY, sku VARCHAR(255) NOT NULL UNIQUE, "
                          "product TEXT, category TEXT",
    "recommend_lines": "order_id INTEGER NOT NULL, customer_id INTEGER NOT NULL, "
                       "product_id INTEGER NOT NULL",
    "recommend_bought": "customer_id INTEGER NOT NULL, product_id INTEGER NOT NULL, "
                        "PRIMARY KEY (customer_id, product_id)",
    "recommend_ranks": "product_id INTEGER PRIMARY KEY, category TEXT, "
                       "orders INTEGER NOT NULL, category_rank INTEGER NOT NULL",
    "recommend_pairs": "product_id INTEGER NOT NULL, other INTEGER NOT NULL, "
                       "together INTEGER NOT NULL",
    "recommend_favourites": "customer_id INTEGER PRIMARY KEY, category TEXT NOT NULL",
    "recommend_staging": "customer_id INTEGER NOT NULL, rank INTEGER NOT NULL, "
                         "product_id INTEGER NOT NULL, part INTEGER NOT NULL",
}
# Indexes made after the fill (cheaper than kept up row by row); each serves one lookup.
INDEXES = (
    "CREATE INDEX recommend_lines_order ON recommend_lines (order_id, product_id)",
    "CREATE INDEX recommend_ranks_category ON recommend_ranks (category, category_rank)",
    "CREATE INDEX recommend_pairs_product ON recommend_pairs (product_id, other)",
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


# Built once, values bound per call (a mail batch's reads, as mailer.store.customers').
_STORED = (select(Recommendation.customer_id, Recommendation.sku, Recommendation.product,
                  Recommendation.category, Recommendation.computed_at)
           .where(Recommendation.customer_id.in_(IDS))
           .order_by(Recommendation.customer_id, Recommendation.rank))
_BOUGHT_SINCE = (select(Order.customer_id, OrderLine.sku)
                 .join(OrderLine, OrderLine.order_id == Order.id)
                 .where(Order.customer_id.in_(IDS), Order.status == "paid",
                        Order.placed_at > bindparam("since"), Order.placed_at <= bindparam("now"),
                        OrderLine.sku.is_not(None)))


def recommendations_of(conn: Connection, ids: Sequence[int], *,
                       now: datetime) -> dict[int, list[Recommended]]:
    """The stored recommendations of the customers IDS as of NOW, best first (those
    without any are left out), in two queries: the table is up to a day old, so a product
    a customer bought after it was computed (and by NOW) is left out here too."""
    if not ids:
        return {}
    found: dict[int, list[Recommended]] = {}
    since: datetime | None = None
    rows = conn.execute(_STORED, {"ids": list(ids)})
    for customer_id, sku, product, category, computed_at in rows:
        found.setdefault(customer_id, []).append(Recommended(sku, product, category))
        since = computed_at if since is None else min(since, computed_at)
    if since is None:
        return found
    bought = {(customer_id, sku) for customer_id, sku in conn.execute(
        _BOUGHT_SINCE, {"ids": list(found), "since": since, "now": now})}
    if not bought:
        return found
    return {customer_id: kept for customer_id, products in found.items()
            if (kept := [p for p in products if (customer_id, p.sku) not in bought])}


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


def _tune(conn: Connection) -> None:
    """PostgreSQL, first in the computing transaction: one snapshot of the orders for
    every statement; sorts and hash tables of a batch in memory (at the default 4 MB they
    spilled to disk and took most of its time); no JIT (it compiled each batch for a
    second, for statements that run a few)."""
    conn.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))
    conn.execute(text(f"SET LOCAL work_mem = '{WORK_MEM}'"))
    conn.execute(text("SET LOCAL jit = off"))


def _drop(conn: Connection) -> None:
    for name in TEMPORARY:
        conn.execute(text(f"DROP TABLE IF EXISTS {name}"))


def _prepare(conn: Connection, now: datetime) -> None:
    """The temporary tables every batch reads: products, lines, bought, ranks, pairs."""
    _drop(conn)  # a pooled connection may keep them from a run that died
    for name, columns in CREATE.items():
        conn.execute(text(f"CREATE TEMPORARY TABLE {name} ({columns})"))
    binary = 'COLLATE "C"' if is_server(conn) else ""  # SQLite compares bytes already
    conn.execute(_now(PRODUCTS.format(binary=binary)), {"now": now})
    conn.execute(_now(LINES), {"now": now})
    conn.execute(text(INDEXES[0]))
    conn.execute(text(BOUGHT))
    conn.execute(text(RANKS))
    conn.execute(text(PAIRS), {"basket": MAX_BASKET, "neighbours": NEIGHBOURS})
    for index in INDEXES[1:]:
        conn.execute(text(index))
    if is_server(conn):  # autovacuum never analyses temporary tables
        for name in TEMPORARY[:5]:
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
                if is_server(conn):
                    _tune(conn)
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
                    "SELECT (SELECT count(*) FROM recommend_products), "
                    "(SELECT count(*) FROM recommend_pairs)")).one()
        finally:
            conn.rollback()
            with conn.begin():
                _drop(conn)
    return Computed(int(customers), int(co), int(category), int(products), int(pairs))

