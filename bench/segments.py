"""Segment benchmark: each example segment's count next to a hand-written SQL query.

    python bench/segments.py [--customers N] [--orders M] [--database-url URL] [--keep]

Generates a store (default 100,000 customers and 1,000,000 orders with one line
each; `--customers 1000000 --orders 10000000` is the full size) straight into a
fresh database (SQLite under bench/.data/, or the PostgreSQL database given,
which is emptied). For every segment in the repository's segments/ it times
mailer's compiled query (`mailer.segments.runner.count`) and a hand-written SQL query
answering the same question on the same data in the same run, checks that the
two counts agree, and prints both times and their ratio (best of 3 runs each).
"""

from __future__ import annotations

import json
import random
import re
import shutil
import sys
import time
from datetime import UTC, date, datetime, timedelta
from typing import Any

from harness import ROOT, arguments, fresh_store, loading, stamp
from sqlalchemy import Engine, bindparam, text

sys.path.insert(0, str(ROOT))

from mailer.config.settings import parse_settings
from mailer.config.workspace import load_segments
from mailer.core.addresses import email_key
from mailer.segments.runner import count, reading, scope_for
from mailer.store.models import UTCDateTime

DATA = ROOT / "bench" / ".data"
NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)  # 10:00 in Berlin
CHUNK = 500_000  # orders generated and written at a time
CATEGORIES = ["shoes", "outdoor", "kitchen", "coffee", "books", "garden", "beauty", "toys"]

# Hand-written answers to the example segments. {TEST} is "a test account" in the
# database's own JSON dialect; times are bound parameters.
TEST = {
    "sqlite": ("(EXISTS (SELECT 1 FROM json_each(c.tags) WHERE lower(value) = 'test-account')"
               " OR c.email_key LIKE '%@staff.shop.example')"),
    "postgresql": ("(EXISTS (SELECT 1 FROM jsonb_array_elements_text(c.tags) t "
                   "WHERE lower(t) = 'test-account') OR c.email_key LIKE '%@staff.shop.example')"),
}
VIP_TAG = {
    "sqlite": "EXISTS (SELECT 1 FROM json_each(c.tags) WHERE lower(value) = 'vip')",
    "postgresql": ("EXISTS (SELECT 1 FROM jsonb_array_elements_text(c.tags) t "
                   "WHERE lower(t) = 'vip')"),
}
PAID = "status = 'paid' AND placed_at <= :now"
# Orders in the last year, what was spent in them (EUR) and the latest, by customer.
YEAR_OF_ORDERS = f"""
          SELECT customer_id, sum(CASE WHEN placed_at >= :year THEN 1 ELSE 0 END) AS n,
                 sum(CASE WHEN placed_at >= :year AND currency = 'EUR' THEN total_minor
                          ELSE 0 END) AS spent, max(placed_at) AS last
          FROM orders WHERE {PAID} GROUP BY customer_id"""
HAND = {
    "test-accounts": "SELECT count(*) FROM customers c WHERE {TEST}",
    "subscribers": "SELECT count(*) FROM customers c WHERE c.consent = 'subscribed' AND NOT {TEST}",
    "birthday-club": """
        SELECT count(*) FROM customers c
        WHERE c.birth_date IS NOT NULL AND c.birth_date <= :age16 AND NOT {TEST}""",
    "active-buyers": f"""
        SELECT count(*) FROM customers c
        WHERE EXISTS (SELECT 1 FROM orders WHERE orders.customer_id = c.id AND {PAID}
                      AND placed_at >= :years2) AND NOT {{TEST}}""",
    "big-spenders-this-month": f"""
        SELECT count(*) FROM customers c JOIN (
          SELECT customer_id, sum(total_minor) AS spent FROM orders
          WHERE {PAID} AND currency = 'EUR' AND placed_at >= :month GROUP BY customer_id) o
          ON o.customer_id = c.id
        WHERE o.spent >= 15000 AND NOT {{TEST}}""",
    "loyal-drifting": f"""
        SELECT count(*) FROM customers c JOIN ({YEAR_OF_ORDERS}) o ON o.customer_id = c.id
        WHERE o.n >= 3 AND o.spent >= 20000 AND o.last < :days60 AND NOT {{TEST}}""",
    "rfm-champions": f"""
        SELECT count(*) FROM customers c JOIN ({YEAR_OF_ORDERS}) o ON o.customer_id = c.id
        WHERE o.last >= :days30 AND o.n >= 5 AND o.spent >= 50000 AND NOT {{TEST}}""",
    "new-customers": f"""
        SELECT count(*) FROM customers c JOIN (
          SELECT customer_id, min(placed_at) AS first FROM orders WHERE {PAID}
          GROUP BY customer_id) o ON o.customer_id = c.id
        WHERE o.first >= :days30 AND NOT {{TEST}}""",
    "never-bought": f"""
        SELECT count(*) FROM customers c
        WHERE NOT EXISTS (SELECT 1 FROM orders WHERE orders.customer_id = c.id AND {PAID})
          AND c.signed_up_at < :days14 AND NOT {{TEST}}""",
    "vip": f"""
        SELECT count(*) FROM customers c LEFT JOIN (
          SELECT customer_id, sum(total_minor) AS spent FROM orders
          WHERE {PAID} AND currency = 'EUR' AND placed_at >= :year GROUP BY customer_id) o
          ON o.customer_id = c.id
        WHERE ({{VIP_TAG}} OR coalesce(o.spent, 0) >= 100000) AND NOT {{TEST}}""",
    "coffee-fans": f"""
        SELECT count(*) FROM customers c JOIN (
          SELECT orders.customer_id, count(DISTINCT order_lines.order_id) AS n
          FROM order_lines JOIN orders ON orders.id = order_lines.order_id
          WHERE {PAID} AND placed_at >= :year AND lower(order_lines.category) = 'coffee'
          GROUP BY orders.customer_id) b ON b.customer_id = c.id
        WHERE b.n >= 2 AND NOT {{TEST}}""",
    "referral-ready": f"""
        SELECT count(*) FROM customers c JOIN (
          SELECT customer_id, count(*) AS n FROM orders WHERE {PAID} GROUP BY customer_id) o
          ON o.customer_id = c.id
        WHERE o.n >= 2 AND NOT EXISTS (SELECT 1 FROM customers r WHERE r.referred_by = c.store_id)
          AND NOT {{TEST}}""",
    "feedback-due": f"""
        SELECT count(*) FROM customers c JOIN (
          SELECT customer_id, max(placed_at) AS last FROM orders WHERE {PAID}
          GROUP BY customer_id) o ON o.customer_id = c.id
        WHERE o.last < :days10 AND o.last >= :days14 AND NOT {{TEST}}""",
}
SETTINGS = ('store: {name: Bench, address: "1 Road", currency: EUR}\n'
            "sender: {from: bench@shop.example}\ntimezone: Europe/Berlin\n"
            "tracking: {base_url: https://mail.shop.example}\n")


def generate(engine: Engine, customers: int, orders: int) -> None:
    """Write the store straight into the schema (the import path is bench/import.py's;
    `loading` adds the folded shadows the importer would)."""
    rng = random.Random(7)
    created = stamp(engine, NOW)
    people = []
    for index in range(1, customers + 1):
        # Tags and domains in any case, as shops write them: segments fold them.
        tags = ([rng.choice(["vip", "VIP", "Vip"])] if rng.random() < 0.03 else []) + (
            [rng.choice(["test-account", "Test-Account"])] if rng.random() < 0.01 else [])
        domain = "Staff.Shop.example" if rng.random() < 0.005 else "example.com"
        email = f"c{index}@{domain}"
        born = datetime(1950, 1, 1) + timedelta(days=rng.randrange(0, 20000))
        people.append((index, f"C{index:07d}", email, email_key(email),
                       born.date(), born.strftime("%m-%d"), "DE",
                       json.dumps(tags) if tags else None,
                       f"C{rng.randrange(1, index):07d}" if index > 1 and rng.random() < 0.08
                       else None, "subscribed",
                       stamp(engine, NOW - timedelta(days=rng.randrange(1, 1500))), created,
                       created))
    weights = [rng.paretovariate(1.3) for _ in range(customers)]
    owners = rng.choices(range(1, customers + 1), weights=weights, k=orders)
    del weights
    with loading(engine, ["customers", "orders", "order_lines"]) as load:
        load("customers", "id, store_id, email, email_key, birth_date, birth_md, country, "
                          "tags, referred_by, consent, signed_up_at, created_at, updated_at",
             people)
        del people
        # Orders and their lines a chunk at a time, in the order the random numbers are
        # drawn: the same store as one list each, without 10M tuples in memory.
        for first in range(0, orders, CHUNK):
            sales, lines = [], []
            for order_id in range(first + 1, min(orders, first + CHUNK) + 1):
                owner = owners[order_id - 1]
                placed = NOW - timedelta(seconds=int(3 * 365 * 86400 * rng.random() ** 1.5)
                                         - 3600)
                roll = rng.random()
                status = "refunded" if roll < 0.05 else "cancelled" if roll < 0.08 else "paid"
                total = rng.randrange(500, 30000)
                sales.append((order_id, f"O{order_id:08d}", owner, stamp(engine, placed),
                              status, "EUR" if rng.random() < 0.98 else "USD", total))
                category = rng.choice(CATEGORIES)
                lines.append((order_id, order_id, 1,
                              category.title() if rng.random() < 0.2 else category, 1, total))
            load("orders", "id, store_id, customer_id, placed_at, status, currency, total_minor",
                 sales)
            load("order_lines", "id, order_id, position, category, quantity, price_minor", lines)


def best_of(runs: int, work: Any) -> tuple[float, int]:
    best, result = float("inf"), 0
    for _ in range(runs):
        started = time.perf_counter()
        result = work()
        best = min(best, time.perf_counter() - started)
    return best, result


def main() -> None:
    parser = arguments(__doc__, {"--customers": 100_000, "--orders": 1_000_000}, "bench/.data/")
    parser.add_argument("--reuse", action="store_true",
                        help="query the store a previous --keep (or PostgreSQL) run left")
    options = parser.parse_args()
    settings, _ = parse_settings(SETTINGS)
    specs, problems = load_segments(ROOT)
    if problems:
        sys.exit("\n".join(map(str, problems)))
    if not options.reuse:
        shutil.rmtree(DATA / "segments", ignore_errors=True)
    (DATA / "segments").mkdir(parents=True, exist_ok=True)
    engine = fresh_store(options.database_url, DATA / "segments", empty=not options.reuse)
    try:
        started = time.perf_counter()
        if not options.reuse:
            generate(engine, options.customers, options.orders)
        with engine.connect() as conn:
            sizes = [conn.execute(text(f"SELECT count(*) FROM {t}")).scalar_one()
                     for t in ("customers", "orders")]
        print(f"{engine.dialect.name}: {sizes[0]:,} customers, {sizes[1]:,} orders and lines, "
              f"ready in {time.perf_counter() - started:.0f} s")
        scope = scope_for(settings, NOW, engine)
        month = datetime(2026, 10, 31, 23, 0, tzinfo=UTC)  # 1 November, Berlin
        # age16: born on or before this day 16 years ago (the Berlin date of NOW)
        params: dict[str, Any] = {
            "age16": date(2010, 11, 23), "now": NOW, "month": month,
            "years2": NOW - timedelta(days=730), "year": NOW - timedelta(days=365),
            "days60": NOW - timedelta(days=60), "days30": NOW - timedelta(days=30),
            "days14": NOW - timedelta(days=14), "days10": NOW - timedelta(days=10)}
        print(f"{'segment':<26}{'count':>10}{'mailer s':>10}{'hand s':>10}{'ratio':>8}")
        worst = 0.0
        for name in sorted(specs):
            sql = HAND[name].replace("{TEST}", TEST[engine.dialect.name]).replace(
                "{VIP_TAG}", VIP_TAG[engine.dialect.name])
            used = [k for k in params if re.search(rf":{k}\b", sql)]
            query = text(sql).bindparams(*(
                bindparam(k, type_=UTCDateTime() if isinstance(params[k], datetime) else None)
                for k in used))

            def hand(query: Any = query, used: list[str] = used) -> int:
                with reading(engine) as conn:
                    return int(conn.execute(query, {k: params[k] for k in used}).scalar_one())

            ours_s, ours = best_of(3, lambda name=name: count(engine, specs, name, scope))
            hand_s, theirs = best_of(3, hand)
            if ours != theirs:
                sys.exit(f"{name}: mailer counts {ours}, the hand-written query {theirs}")
            worst = max(worst, ours_s / hand_s)
            print(f"{name:<26}{ours:>10,}{ours_s:>10.3f}{hand_s:>10.3f}{ours_s / hand_s:>8.2f}")
        print(f"counts agree; worst ratio {worst:.2f} (target: at most 1.30)")
    finally:
        engine.dispose()
        if not options.keep:
            shutil.rmtree(DATA / "segments", ignore_errors=True)


if __name__ == "__main__":
    main()
