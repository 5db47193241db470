"""Recommendation benchmark: hit rate @5 on a time split beside a popularity baseline, and
the time of one full computation.

    python bench/recommend.py [--customers N] [--orders M] [--database-url URL] [--keep]

Generates a store with structure (default 100,000 customers and 1,000,000 orders;
`--customers 20000 --orders 200000` for a quick look) straight into a fresh database
(SQLite under bench/.data/, or the PostgreSQL database given, which is emptied):
categories of products whose popularity falls off like Zipf's law; products grouped in
bundles of four (a grinder, its beans, its filters, its mug) that are bought together in
one basket and, later, one after the other; customers who prefer a category or two.

The split: CUT is HOLDOUT_DAYS before the store's last day. A held-out customer has a paid
order by CUT and a later one; their last paid order is held out. mailer's recommendations
are computed as of CUT (the orders after it do not exist yet for the computation) and a
customer is a hit when their held-out order holds one of their top 5. The baseline, in the
same run on the same customers: the 5 store bestsellers as of CUT (paid orders holding
them) that the customer has not bought. Both figures are printed, with the computation's
time.
"""

from __future__ import annotations

import os
import random
import shutil
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

from harness import ROOT, arguments, fresh_store, stamp, write_rows
from sqlalchemy import Engine, text

sys.path.insert(0, str(ROOT))

from mailer.core.addresses import email_key
from mailer.store.insight.recommendations import compute_recommendations

DATA = ROOT / "bench" / ".data" / "recommend"
NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
DAYS = 730  # of history
HOLDOUT_DAYS = 30
CUT = NOW - timedelta(days=HOLDOUT_DAYS)
CATEGORIES = 20
PER_CATEGORY = 60  # products
BUNDLE = 4  # products per bundle
TOP = 5

Order = tuple[datetime, str, list[str]]  # placed at, status, skus


def catalogue() -> tuple[list[list[str]], dict[str, list[str]], dict[str, str]]:
    """Products by category (most popular first), each sku's bundle mates, its category."""
    by_category, mates, category_of = [], {}, {}
    for c in range(CATEGORIES):
        skus = [f"P{c:02d}-{p:03d}" for p in range(PER_CATEGORY)]
        by_category.append(skus)
        for sku in skus:
            category_of[sku] = f"category {c:02d}"
        # bundles mix ranks (a best-selling grinder with a slow-selling tamper): the
        # pairs, not popularity alone, say what goes with what
        shuffled = random.Random(c).sample(skus, len(skus))
        for start in range(0, len(shuffled), BUNDLE):
            bundle = shuffled[start:start + BUNDLE]
            for sku in bundle:
                mates[sku] = [other for other in bundle if other != sku]
    return by_category, mates, category_of


def simulate(customers: int, orders: int, seed: int = 5) -> dict[int, list[Order]]:
    """Each customer's orders in time order."""
    rng = random.Random(seed)
    by_category, mates, _ = catalogue()
    zipf = [1 / (rank + 1) for rank in range(PER_CATEGORY)]
    weights = [rng.paretovariate(1.5) for _ in range(customers)]
    counts = Counter(rng.choices(range(1, customers + 1), weights=weights, k=orders))
    store: dict[int, list[Order]] = {}
    for customer in range(1, customers + 1):
        liked = rng.sample(range(CATEGORIES), 2)
        times = sorted(rng.random() ** 0.7 * DAYS for _ in range(counts.get(customer, 0)))
        bought: list[str] = []
        placed: list[Order] = []
        for days in times:
            if bought and rng.random() < 0.5:
                # a complement of something bought before
                options = [m for m in mates[rng.choice(bought)] if m not in bought]
                anchor = rng.choice(options) if options else None
            else:
                anchor = None
            if anchor is None:
                category = liked[0] if rng.random() < 0.6 else (
                    liked[1] if rng.random() < 0.6 else rng.randrange(CATEGORIES))
                anchor = rng.choices(by_category[category], weights=zipf)[0]
            basket = [anchor]
            for chance in (0.5, 0.2):
                if rng.random() < chance:
                    basket.append(rng.choice(mates[anchor]))
            if rng.random() < 0.15:  # an impulse buy from anywhere
                basket.append(rng.choices(by_category[rng.randrange(CATEGORIES)],
                                          weights=zipf)[0])
            roll = rng.random()
            status = "refunded" if roll < 0.05 else "cancelled" if roll < 0.08 else "paid"
            skus = list(dict.fromkeys(basket))
            placed.append((NOW - timedelta(days=DAYS - days), status, skus))
            if status == "paid":
                bought.extend(skus)
        store[customer] = placed
    return store


def generate(engine: Engine, store: dict[int, list[Order]]) -> None:
    """Write the store straight into the schema (write_rows adds the folded shadows)."""
    _, _, category_of = catalogue()
    created = stamp(engine, NOW)
    people, sales, lines = [], [], []
    for customer, placed in store.items():
        email = f"c{customer}@example.com"
        people.append((customer, f"C{customer:07d}", email, email_key(email), "subscribed",
                       created, created, created))
        for at, status, skus in placed:
            order_id = len(sales) + 1
            sales.append((order_id, f"O{order_id:08d}", customer, stamp(engine, at), status,
                          "EUR", 1000 * len(skus)))
            for position, sku in enumerate(skus, 1):
                lines.append((len(lines) + 1, order_id, position, sku, f"Product {sku}",
                              category_of[sku], 1, 1000))
    write_rows(
        engine,
        ("customers", "id, store_id, email, email_key, consent, signed_up_at, created_at, "
                      "updated_at", people),
        ("orders", "id, store_id, customer_id, placed_at, status, currency, total_minor", sales),
        ("order_lines", "id, order_id, position, sku, product, category, quantity, "
                        "price_minor", lines))


def held_out(store: dict[int, list[Order]]) -> dict[int, tuple[set[str], set[str]]]:
    """Customers with a paid order by CUT and one after: (bought by CUT, held-out skus)."""
    split = {}
    for customer, placed in store.items():
        paid = [(at, skus) for at, status, skus in placed if status == "paid"]
        before = {sku for at, skus in paid if at <= CUT for sku in skus}
        if before and paid[-1][0] > CUT:
            split[customer] = (before, set(paid[-1][1]))
    return split


def popular(store: dict[int, list[Order]]) -> list[str]:
    """Every sku by paid orders holding it by CUT, most first, ties by sku."""
    counts = Counter(sku for placed in store.values() for at, status, skus in placed
                     if status == "paid" and at <= CUT for sku in skus)
    return sorted(counts, key=lambda sku: (-counts[sku], sku))


def main() -> None:
    parser = arguments(__doc__, {"--customers": 100_000, "--orders": 1_000_000},
                       "bench/.data/recommend")
    options = parser.parse_args()
    shutil.rmtree(DATA, ignore_errors=True)
    DATA.mkdir(parents=True)
    engine = fresh_store(options.database_url, DATA)
    try:
        started = time.perf_counter()
        store = simulate(options.customers, options.orders)
        generate(engine, store)
        with engine.connect() as conn:
            sizes = [conn.execute(text(f"SELECT count(*) FROM {t}")).scalar_one()
                     for t in ("customers", "orders", "order_lines")]
        print(f"{engine.dialect.name}: {sizes[0]:,} customers, {sizes[1]:,} orders, "
              f"{sizes[2]:,} lines, ready in {time.perf_counter() - started:.0f} s")

        started, cpu, load = time.perf_counter(), time.process_time(), os.getloadavg()[0]
        done = compute_recommendations(engine, now=CUT)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        # the machine may be shared: the load says how much of it the run had
        print(f"load average {load:.1f} before, {os.getloadavg()[0]:.1f} after, on "
              f"{os.cpu_count()} cores")
        print(f"recommendations as of the cut: {seconds:.1f} s for "
              f"{done.co_purchase + done.category:,} rows, {done.customers:,} customers "
              f"({done.co_purchase:,} co-purchase, {done.category:,} category), "
              f"{done.products:,} products, {done.pairs:,} pairs")
        # SQLite works in this process; PostgreSQL's work is the server's, not in here
        print(f"this process's CPU time: {cpu:.1f} s")

        split = held_out(store)
        ours: dict[int, list[str]] = {}
        with engine.connect() as conn:
            for customer, sku in conn.execute(text(
                    f"SELECT customer_id, sku FROM recommendations WHERE rank <= {TOP} "
                    "ORDER BY customer_id, rank")):
                ours.setdefault(customer, []).append(sku)
        ranking = popular(store)
        hits = baseline = 0
        for customer, (bought, later) in split.items():
            hits += bool(later & set(ours.get(customer, [])))
            # never more than TOP + len(bought) skus to look at
            top = [sku for sku in ranking[:TOP + len(bought)] if sku not in bought][:TOP]
            baseline += bool(later & set(top))
        n = len(split)
        print(f"held out: the last order of {n:,} customers (a paid order by the cut, "
              f"{HOLDOUT_DAYS} days before the end, and one after it)")
        print(f"{'hit rate @5':<40}{'hits':>10}{'rate':>8}")
        print(f"{'mailer (co-purchase, then category)':<40}{hits:>10,}{hits / n:>8.1%}")
        print(f"{'popularity (bestsellers not bought)':<40}{baseline:>10,}{baseline / n:>8.1%}")
        print(f"ratio {hits / max(baseline, 1):.2f}")
    finally:
        engine.dispose()
        if not options.keep:
            shutil.rmtree(DATA, ignore_errors=True)


if __name__ == "__main__":
    main()
