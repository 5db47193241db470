"""Import benchmark: the real import path next to a bare Core executemany, same run.

    python bench/import.py [--customers N] [--database-url URL] [--keep]

Writes N customers and 10·N order lines as CSV under bench/.data/, imports them
with `mailer import customers|orders` (each in a fresh process), then loads the
same rows into a fresh database of the same schema with plain SQLAlchemy Core
`executemany` in batches of 1,000 (no checks, no upsert: the floor). Prints
rows/s and peak memory (max RSS) of each; deletes bench/.data/ unless --keep.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sys
from pathlib import Path

from harness import HERE, arguments, fresh_store, python

DATA = HERE / ".data"
SETTINGS = ('store: {name: Bench, address: "1 Road"}\nsender: {from: bench@shop.example}\n'
            "timezone: Europe/Berlin\ntracking: {base_url: https://mail.shop.example}\n")

REAL = """
import json, resource, sys
from mailer.cli import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""

BASELINE = """
import csv, json, resource, sys
from datetime import datetime
from pathlib import Path
from sqlalchemy import insert
from mailer.store.db import create, database_url, upgrade
from mailer.store.models import Customer, Order, OrderLine

folder, url = Path(sys.argv[1]), sys.argv[2] or None
(folder / "baseline").mkdir(exist_ok=True)
engine = create(database_url(env_url=url, configured=None, root=folder / "baseline"))
upgrade(engine)
now = datetime.now().astimezone()

from harness import batches

with engine.begin() as conn:
    with open(folder / "customers.csv", newline="", encoding="utf-8") as f:
        reader = csv.reader(f); next(reader)
        rows = ({"id": i, "store_id": r[0], "email": r[1], "email_key": r[1].lower(),
                 "first_name": r[2], "consent": "subscribed", "created_at": now,
                 "updated_at": now} for i, r in enumerate(reader, 1))
        for batch in batches(rows):
            conn.execute(insert(Customer), batch)
    with open(folder / "orders.csv", newline="", encoding="utf-8") as f:
        reader = csv.reader(f); next(reader)
        last, order_id, lines = None, 0, []
        def orders_and_lines():
            global last, order_id
            for r in reader:
                if r[0] != last:
                    last, order_id = r[0], order_id + 1
                    yield "order", {"id": order_id, "store_id": r[0],
                                    "customer_id": int(r[1][1:]),
                                    "placed_at": datetime.fromisoformat(r[2]), "status": "paid",
                                    "currency": "EUR", "total_minor": int(r[5].replace(".", ""))}
                yield "line", {"order_id": order_id, "position": 1, "sku": r[6],
                               "category": r[8], "quantity": int(r[9]),
                               "price_minor": int(r[10].replace(".", ""))}
        for batch in batches(orders_and_lines()):
            orders = [v for k, v in batch if k == "order"]
            if orders:
                conn.execute(insert(Order), orders)
            conn.execute(insert(OrderLine), [v for k, v in batch if k == "line"])
print(json.dumps({"code": 0, "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def write_data(folder: Path, customers: int) -> tuple[int, int]:
    """N customers and 10·N order lines (orders of 1-4 lines, adjacent)."""
    rng = random.Random(42)
    lines = 0
    with (folder / "customers.csv").open("w", encoding="utf-8") as people, \
            (folder / "orders.csv").open("w", encoding="utf-8") as sales:
        people.write("id,email,first_name,birth_date,timezone,country,tags\n")
        sales.write("order_id,customer_id,placed_at,status,currency,total,sku,product,category,"
                    "quantity,price\n")
        order = 0
        for index in range(1, customers + 1):
            people.write(f"C{index:07d},c{index}@example.com,Name{index},"
                         f"19{rng.randrange(50, 99)}-0{rng.randrange(1, 9)}-1{rng.randrange(0, 9)},"
                         f"Europe/Berlin,DE,vip\n")
            budget = 10
            while budget > 0:
                size = min(rng.randrange(1, 5), budget)
                budget -= size
                order += 1
                prices = [rng.randrange(100, 9999) for _ in range(size)]
                total = sum(prices)
                day = rng.randrange(1, 28)
                for price in prices:
                    sales.write(f"O{order:08d},C{index:07d},2026-10-{day:02d}T12:00:00Z,paid,EUR,"
                                f"{total // 100}.{total % 100:02d},SKU-{price % 50},Product,"
                                f"cat{price % 8},1,{price // 100}.{price % 100:02d}\n")
                    lines += 1
    return customers, lines


def run(code: str, args: list[str], env_url: str | None) -> tuple[float, int]:
    """Seconds and peak memory (KB) of CODE with ARGS in a fresh interpreter."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    if env_url:
        env["MAILER_DATABASE_URL"] = env_url
    elapsed, done = python(code, *args, env=env)
    if not done.stdout.strip():
        sys.exit(f"failed: {args}\n{done.stderr[-2000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if result["code"] != 0:
        sys.exit(f"import reported problems: {args}\n{done.stderr[-2000:]}")
    return elapsed, int(result["maxrss_kb"])


def main() -> None:
    options = arguments(__doc__, {"--customers": 100_000}, "bench/.data/").parse_args()
    shutil.rmtree(DATA, ignore_errors=True)
    workspace = DATA / "workspace"
    workspace.mkdir(parents=True)
    (workspace / "mailer.yaml").write_text(SETTINGS, encoding="utf-8")
    try:
        customers, lines = write_data(DATA, options.customers)
        print(f"data: {customers:,} customers, {lines:,} order lines "
              f"({sum(f.stat().st_size for f in DATA.glob('*.csv')) / 1e6:.0f} MB of CSV)")
        url = options.database_url
        if url:
            fresh_store(url, DATA).dispose()
        t_c, rss_c = run(REAL, ["--workspace", str(workspace), "import", "customers",
                                str(DATA / "customers.csv")], url)
        t_o, rss_o = run(REAL, ["--workspace", str(workspace), "import", "orders",
                                str(DATA / "orders.csv")], url)
        if url:
            fresh_store(url, DATA).dispose()
        t_b, rss_b = run(BASELINE, [str(DATA), url or ""], url)
        rows = customers + lines
        print(f"{'path':<34}{'seconds':>10}{'rows/s':>12}{'peak MB':>10}")
        print(f"{'mailer import customers':<34}{t_c:>10.1f}{customers / t_c:>12,.0f}"
              f"{rss_c / 1024:>10.0f}")
        print(f"{'mailer import orders':<34}{t_o:>10.1f}{lines / t_o:>12,.0f}{rss_o / 1024:>10.0f}")
        print(f"{'mailer import (both)':<34}{t_c + t_o:>10.1f}{rows / (t_c + t_o):>12,.0f}"
              f"{max(rss_c, rss_o) / 1024:>10.0f}")
        print(f"{'baseline Core executemany':<34}{t_b:>10.1f}{rows / t_b:>12,.0f}"
              f"{rss_b / 1024:>10.0f}")
        print(f"mailer takes {(t_c + t_o) / t_b:.1f}x the time of the bare baseline")
    finally:
        if not options.keep:
            shutil.rmtree(DATA, ignore_errors=True)


if __name__ == "__main__":
    main()
