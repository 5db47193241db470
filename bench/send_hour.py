"""The right hour (`send_at: best`): how often the planner finds a customer's true hour,
beside a fixed 10:00, on the demo store with simulated engagement.

    python bench/send_hour.py [--customers N] [--database-url URL] [--keep]

Builds the demo store (mailer.app.demodata, default 10,000 customers) in a fresh
database (SQLite under bench/.data/, or the PostgreSQL database given, which is
emptied), then simulates engagement: each customer has a true preferred local hour,
drawn from a store-wide mix with a morning, a lunch and an evening peak; over the past
180 days they click a number of times that varies by customer (a third never, some
dozens of times), each click within ±1 h of the true hour 70 % of the time and at any
hour otherwise, in the customer's own zone; they open about twice as often with the
same habit, and a privacy proxy adds machine opens at random hours. A `once` campaign
with `send_at: best` is then planned by the real planner (plan_due) and each planned
mail's send_after, read in the customer's zone, is its chosen hour.

Printed: among planned customers with at least 5 clicks, the share whose chosen hour is
within ±1 h of the true one, beside the share a fixed 10:00 gets for the same
customers, and the plan's time beside the same campaign planned without `send_at`.
"""

from __future__ import annotations

import os
import random
import shutil
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from harness import ROOT, arguments, fresh_store, stamp, write_rows
from sqlalchemy import text

sys.path.insert(0, str(ROOT))

from mailer.app.demodata import fill_store
from mailer.config.settings import parse_settings
from mailer.config.workspace import load_valid_workspace
from mailer.core.clock import localize, parse_local, zone
from mailer.planning.planner import PlanResult, plan_due
from mailer.segments.runner import scope_for
from mailer.store.db import Engine

DATA = ROOT / "bench" / ".data" / "send_hour"
SETTINGS = ('store: {name: Bench, address: "1 Road", currency: EUR}\n'
            "sender: {from: bench@shop.example}\ntimezone: Europe/Berlin\n"
            "tracking: {base_url: https://mail.shop.example}\n")
NOW = "2026-06-10T00:30"  # the workspace's local time: every window hour is ahead
CAMPAIGN = ("name: Bench\ntrigger: once\nat: 2026-06-10T00:00\ngrace: 48h\n{send_at}"
            "segment: everyone\ntemplate: mail.html\nsubject: Hello\n")
DAYS = 180
# The store-wide mix of true hours: before work, lunch, the evening.
MIX = {8: 3, 9: 5, 10: 6, 11: 5, 12: 8, 13: 7, 14: 4, 15: 3, 16: 3, 17: 4, 18: 7,
       19: 9, 20: 6, 21: 3}
NEAR = 0.7  # the share of a customer's clicks within ±1 h of their true hour
BASELINE = 10  # the fixed hour to compare with
ENOUGH = 5  # clicks from which a customer is measured


def workspace(root: Path, send_at: str) -> None:
    (root / "segments").mkdir(parents=True, exist_ok=True)
    (root / "templates").mkdir(exist_ok=True)
    (root / "campaigns").mkdir(exist_ok=True)
    (root / "mailer.yaml").write_text(SETTINGS, encoding="utf-8")
    (root / "segments" / "everyone.yaml").write_text(
        "description: all\nall: [{orders: {at_least: 0}}]\n", encoding="utf-8")
    (root / "templates" / "mail.html").write_text("<p>{{ store.address }}</p>\n",
                                                  encoding="utf-8")
    (root / "campaigns" / "bench.yaml").write_text(CAMPAIGN.format(send_at=send_at),
                                                   encoding="utf-8")


def an_hour(rng: random.Random, true: int) -> int:
    if rng.random() < NEAR:
        return (true + rng.choice((-1, 0, 0, 1))) % 24
    return rng.randrange(24)


def simulate(engine: Engine, now: datetime, default_zone: str, seed: int = 11
             ) -> tuple[dict[int, int], dict[int, int], int]:
    """Engagement for every customer, written as events: (true hour by customer id,
    clicks by customer id, events written)."""
    rng = random.Random(seed)
    with engine.connect() as conn:
        people = [(int(i), tz) for i, tz in conn.execute(
            text("SELECT id, timezone FROM customers ORDER BY id"))]
    hours, weights = list(MIX), list(MIX.values())
    truth, clicks, rows = {}, {}, []

    def at(tz_name: str, hour: int) -> object:
        day = (now - timedelta(days=rng.uniform(1, DAYS))).astimezone(zone(tz_name)).date()
        local = datetime(day.year, day.month, day.day, hour, rng.randrange(60),
                         rng.randrange(60))
        return stamp(engine, localize(local, zone(tz_name)).astimezone(UTC))

    for customer_id, tz_name in people:
        tz_name = tz_name or default_zone
        true = rng.choices(hours, weights)[0]
        count = 0 if rng.random() < 0.33 else min(60, int(rng.expovariate(1 / 7)) + 1)
        truth[customer_id], clicks[customer_id] = true, count
        for _ in range(count):
            rows.append(("click", customer_id, "old", at(tz_name, an_hour(rng, true))))
        for _ in range(2 * count + rng.randrange(3)):
            rows.append(("open", customer_id, "old", at(tz_name, an_hour(rng, true))))
        for _ in range(rng.randrange(4)):  # a proxy's fetch, at no habit of the reader's
            rows.append(("machine_open", customer_id, "old", at(tz_name, rng.randrange(24))))
    write_rows(engine, ("events", "kind, customer_id, campaign, at", rows))
    return truth, clicks, len(rows)


def planned(root: Path, engine: Engine, now: str) -> tuple[float, PlanResult]:
    """Seconds and the dry-run plan of the workspace's campaign at NOW."""
    settings, _ = parse_settings((root / "mailer.yaml").read_text(encoding="utf-8"))
    specs, campaigns = load_valid_workspace(root)
    scope = scope_for(settings, parse_local(now, zone(settings.timezone)), engine)
    started = time.perf_counter()
    result = plan_due(engine, specs, campaigns, scope=scope, settings=settings)[0]
    return time.perf_counter() - started, result


def near(hour: int, true: int) -> bool:
    return min((hour - true) % 24, (true - hour) % 24) <= 1


def main() -> None:
    parser = arguments(__doc__, {"--customers": 10_000}, "bench/.data/send_hour")
    options = parser.parse_args()
    shutil.rmtree(DATA, ignore_errors=True)
    DATA.mkdir(parents=True)
    engine = fresh_store(options.database_url, DATA)
    try:
        settings, _ = parse_settings(SETTINGS)
        started = time.perf_counter()
        now = parse_local(NOW, zone(settings.timezone))
        customers, lines = fill_store(engine, settings=settings, customers=options.customers,
                                      seed=3, now=now, replace=False)
        truth, clicks, written = simulate(engine, now, settings.timezone)
        print(f"{engine.dialect.name}: demo store of {customers:,} customers, {lines:,} order "
              f"lines, {written:,} events, ready in {time.perf_counter() - started:.0f} s")

        load = os.getloadavg()[0]
        workspace(DATA, "")
        plain_seconds, _ = planned(DATA, engine, NOW)
        workspace(DATA, "send_at: best\n")
        best_seconds, result = planned(DATA, engine, NOW)
        with engine.connect() as conn:
            zones = {int(i): tz for i, tz in conn.execute(
                text("SELECT id, timezone FROM customers"))}
        # (customers, hits, baseline hits) with ENOUGH clicks, and with fewer but some
        many, few = [0, 0, 0], [0, 0, 0]
        for mail in result.planned:
            count = clicks[mail.customer_id]
            if not count:
                continue
            tally = many if count >= ENOUGH else few
            tz = zone(zones.get(mail.customer_id) or settings.timezone)
            tally[0] += 1
            tally[1] += near(mail.send_after.astimezone(tz).hour, truth[mail.customer_id])
            tally[2] += near(BASELINE, truth[mail.customer_id])
        print(f"planned {result.planned_count:,} mails; {many[0]:,} of them to customers with "
              f"at least {ENOUGH} clicks, {few[0]:,} to customers with 1 to {ENOUGH - 1}")
        print(f"chosen hour within ±1 h of the true one, {ENOUGH}+ clicks: send_at: best "
              f"{many[1] / many[0]:.1%}, fixed {BASELINE}:00 {many[2] / many[0]:.1%} "
              f"(target ≥ 60 %)")
        print(f"the same, 1 to {ENOUGH - 1} clicks: send_at: best {few[1] / few[0]:.1%}, "
              f"fixed {BASELINE}:00 {few[2] / few[0]:.1%}")
        print(f"plan time: {best_seconds:.2f} s with send_at: best, {plain_seconds:.2f} s "
              "without")
        # the machine may be shared: the load says how much of it the run had
        print(f"load average {load:.1f} before, {os.getloadavg()[0]:.1f} after, on "
              f"{os.cpu_count()} cores")
    finally:
        engine.dispose()
        if not options.keep:
            shutil.rmtree(DATA, ignore_errors=True)


if __name__ == "__main__":
    main()
