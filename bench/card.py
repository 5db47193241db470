"""Customer card benchmark: `mailer customer` latency next to whole-store segment work.

    python bench/card.py [--customers N] [--orders M] [--cards K] [--database-url URL] [--keep]

Generates the segment benchmark's store (bench/segments.py: default 100,000 customers and
1,000,000 orders; `--customers 1000000 --orders 10000000` is the full size), plus what a
card reads besides orders: two ledger rows per customer, one event, one consent and one
stage recording each. It then times, in the same run on the same store:

- the card (mailer.app.card.card, what `mailer customer` calls, the workspace's segments
  and campaigns read from the repository) for K customers, half by id, half by email:
  p50 and p95 (target: under 300 ms);
- its segment memberships alone (runner.memberships_of: each segment compiled for the
  customer), beside the same answer from whole segments filtered on the outer query only
  (runner.memberships: what the card would cost without the push-down);
- a full count of the largest example segment (the store-wide baseline);
- one `mailer customer ID --json` process end to end (interpreter start included),
  beside one `mailer status --json` (the start-up every command pays, and 4 counts),

and prints the database's plan of two restricted segment queries.
"""

from __future__ import annotations

import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from datetime import timedelta
from typing import Any

from harness import ROOT, arguments, fresh_store, stamp, write_rows
from sqlalchemy import Engine, text

from segments import NOW, SETTINGS, generate

sys.path.insert(0, str(ROOT))

from mailer.app.card import card
from mailer.config.settings import parse_settings
from mailer.config.workspace import load_segments
from mailer.segments.compiler import CUSTOMERS, compile_segment, members_query
from mailer.segments.runner import count, memberships, memberships_of, reading, scope_for

DATA = ROOT / "bench" / ".data" / "card"


def extras(engine: Engine, customers: int) -> None:
    """The ledger, events, consent and stage history a card reads, straight into the schema."""
    import json

    rng = random.Random(11)
    now = stamp(engine, NOW)
    version = [(1, "newsletter", "bench", json.dumps({
        "campaign": "newsletter",
        "campaign_source": 'subject: ["Hello {{ customer.first_name }}", "News"]\n'}), now)]
    deliveries, events, consents, stages = [], [], [], []
    for customer in range(1, customers + 1):
        for week in (2, 1):
            row = len(deliveries) + 1
            planned = NOW - timedelta(days=7 * week)
            deliveries.append((row, "newsletter", 1, f"cron:w{week}", customer,
                               f"c{customer}@example.com", week % 2, "sent", 1,
                               stamp(engine, planned), stamp(engine, planned),
                               stamp(engine, planned + timedelta(hours=6)),
                               stamp(engine, planned + timedelta(minutes=1))))
            if rng.random() < 0.5:
                events.append((len(events) + 1, "open", customer, "newsletter", row,
                               stamp(engine, planned + timedelta(hours=1))))
        consents.append((customer, customer, "subscribed", now, "import"))
        stages.append((customer, customer, "exploration", now))
    write_rows(
        engine,
        ("campaign_versions", "id, campaign, content_hash, definition, created_at", version),
        ("deliveries", "id, campaign, campaign_version_id, occurrence, customer_id, email, "
                       "subject_variant, status, attempts, planned_at, send_after, expires_at, "
                       "sent_at", deliveries),
        ("events", "id, kind, customer_id, campaign, delivery_id, at", events),
        ("consent_history", "id, customer_id, state, since, source", consents),
        ("stage_history", "id, customer_id, to_stage, detected_at", stages))


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def timed(work: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    result = work()
    return time.perf_counter() - started, result


def plans(engine: Engine, specs: dict[str, Any], scope: Any, customer: int) -> None:
    explain = "EXPLAIN QUERY PLAN " if engine.dialect.name == "sqlite" else "EXPLAIN "
    for name in ("loyal-drifting", "coffee-fans"):
        query = members_query(compile_segment(specs[name], specs, scope, among=[customer]),
                              CUSTOMERS.c.id)
        compiled = query.compile(dialect=engine.dialect, compile_kwargs={"literal_binds": True})
        with reading(engine) as conn:
            print(f"plan of {name} for customer {customer}:")
            for row in conn.execute(text(explain + str(compiled))):
                print("   ", row[-1])


def main() -> None:
    parser = arguments(__doc__, {"--customers": 100_000, "--orders": 1_000_000, "--cards": 40},
                       "bench/.data/card/")
    parser.add_argument("--reuse", action="store_true", help=(
        "PostgreSQL: measure the store a previous run built in --database-url (migrated "
        "to the current schema first) instead of building it again (1M: about 9 minutes)"))
    options = parser.parse_args()
    settings, _ = parse_settings(SETTINGS)
    specs, problems = load_segments(ROOT)
    if problems:
        sys.exit("\n".join(map(str, problems)))
    shutil.rmtree(DATA, ignore_errors=True)
    DATA.mkdir(parents=True, exist_ok=True)
    reuse = bool(options.reuse and options.database_url)
    engine = fresh_store(options.database_url, DATA, empty=not reuse)
    try:
        started = time.perf_counter()
        if not reuse:
            generate(engine, options.customers, options.orders)
            extras(engine, options.customers)
        print(f"{engine.dialect.name}: {options.customers:,} customers, {options.orders:,} "
              f"orders, {2 * options.customers:,} ledger rows, "
              + ("reused" if reuse else f"ready in {time.perf_counter() - started:.0f} s"))
        scope = scope_for(settings, NOW, engine)
        rng = random.Random(3)
        chosen = rng.sample(range(1, options.customers + 1), options.cards)
        with engine.connect() as conn:
            emails = dict(conn.execute(text("SELECT id, email FROM customers WHERE id IN "
                                            f"({', '.join(map(str, chosen))})")).all())
        for who in ("C0000001", "c1@example.com"):  # warm the pool and the lazy imports
            card(engine, ROOT, settings, NOW, who)
        latencies, segment_times, outer_times = [], [], []
        for n, customer in enumerate(chosen):
            who = f"C{customer:07d}" if n % 2 == 0 else emails[customer]
            seconds, found = timed(lambda who=who: card(engine, ROOT, settings, NOW, who))
            latencies.append(seconds)
            seconds, ours = timed(lambda customer=customer: memberships_of(
                engine, specs, customer, scope))
            segment_times.append(seconds)
            if n < 5:  # the outer-filter baseline scans the store: a few suffice
                seconds, theirs = timed(lambda customer=customer: memberships(
                    engine, specs, sorted(specs), scope, [customer]))
                outer_times.append(seconds)
                if sorted(theirs[customer]) != ours or found.segments != ours:
                    sys.exit(f"customer {customer}: memberships disagree")
        biggest = max(specs, key=lambda name: count(engine, specs, name, scope))
        full, size = timed(lambda: count(engine, specs, biggest, scope))
        url = engine.url.render_as_string(hide_password=False)
        env = dict(os.environ, MAILER_DATABASE_URL=url)
        def command(*args: str) -> float:
            seconds, done = timed(lambda: subprocess.run(
                [sys.executable, "-m", "mailer.cli", *args, "--workspace", str(ROOT), "--json"],
                capture_output=True, text=True, env=env, check=False))
            if done.returncode != 0:
                sys.exit(done.stderr[-2000:])
            return float(seconds)

        process = command("customer", f"C{chosen[0]:07d}", "--now", "2026-11-23T10:00")
        status = command("status")
        print(f"card ({options.cards} customers): p50 {percentile(latencies, 0.5) * 1000:.0f} ms,"
              f" p95 {percentile(latencies, 0.95) * 1000:.0f} ms (target: under 300 ms)")
        print(f"  of which segment memberships ({len(specs)} segments): p50 "
              f"{statistics.median(segment_times) * 1000:.0f} ms; the same from whole segments "
              f"(outer filter only): p50 {statistics.median(outer_times) * 1000:.0f} ms")
        print(f"baseline: count of {biggest} ({size:,} members) {full * 1000:.0f} ms")
        print(f"`mailer customer --json`, one process end to end: {process * 1000:.0f} ms "
              f"(`mailer status --json`, the same start-up: {status * 1000:.0f} ms)")
        plans(engine, specs, scope, chosen[0])
    finally:
        engine.dispose()
        if not options.keep:
            shutil.rmtree(DATA, ignore_errors=True)


if __name__ == "__main__":
    main()
