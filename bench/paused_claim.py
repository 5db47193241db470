"""What a paused campaign costs every lease: a sender's claim of 20 due rows while one
campaign's N due rows, older than the others', are paused (docs/delivery.md, "Pausing
a campaign").

    python bench/paused_claim.py DATABASE_URL [N]

DATABASE_URL: an empty scratch database (its customers, campaign versions and ledger
are replaced), e.g. postgresql://postgres@127.0.0.1:5432/bench_pause or
sqlite:////tmp/bench_pause.db; N (default 100,000): the paused campaign's due rows.
Printed: the p50 and the slowest of 20 claims, before the pause and during it.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import text

from mailer.store.db import Engine, create, database_url, upgrade
from mailer.store.ledger import claim, new_owner, unlease

NOW = datetime(2026, 11, 23, 9, tzinfo=UTC)
OTHERS = 200  # due rows of the campaign that is not paused


def fill(engine: Engine, n: int) -> None:
    at = NOW.replace(tzinfo=None)
    with engine.begin() as conn:
        for table in ("paused_campaigns", "deliveries", "customers", "campaign_versions"):
            conn.execute(text(f"DELETE FROM {table}"))
        conn.execute(text("INSERT INTO campaign_versions (id, campaign, content_hash, "
                          "definition, created_at) VALUES (1, 'a', 'h1', '{}', :t), "
                          "(2, 'b', 'h2', '{}', :t)"), {"t": at})
        conn.execute(text(
            "INSERT INTO customers (id, store_id, email, email_key, consent, created_at, "
            "updated_at) VALUES (:i, :s, :e, :e, 'subscribed', :t, :t)"),
            [{"i": i, "s": f"S{i}", "e": f"c{i}@x.example", "t": at} for i in range(n + OTHERS)])
        # a's rows were due first: every lease walks past them in (status, send_after) order
        conn.execute(text(
            "INSERT INTO deliveries (campaign, campaign_version_id, occurrence, customer_id, "
            "email, subject_variant, status, attempts, planned_at, send_after, expires_at) "
            "VALUES (:c, :v, 'main', :i, 'x@x.example', 0, 'queued', 0, :s, :s, :e)"),
            [{"c": "a" if i < n else "b", "v": 1 if i < n else 2, "i": i,
              "s": at - timedelta(hours=2 if i < n else 1), "e": at + timedelta(days=7)}
             for i in range(n + OTHERS)])
        if engine.dialect.name == "postgresql":
            conn.execute(text("ANALYZE"))


def claims(engine: Engine) -> tuple[float, float, set[str]]:
    owner, took, campaigns = new_owner(), [], set()
    for _ in range(20):
        began = time.perf_counter()
        rows = claim(engine, owner, NOW, 20)
        took.append(time.perf_counter() - began)
        campaigns |= {row.campaign for row in rows}
        with engine.begin() as conn:
            unlease(conn, owner, [row.id for row in rows])
    return statistics.median(took) * 1000, max(took) * 1000, campaigns


def main() -> None:
    url, n = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 100_000
    engine = create(database_url(env_url=url, configured=None, root=Path(tempfile.mkdtemp())))
    upgrade(engine)
    fill(engine, n)
    for paused in (False, True):
        if paused:
            with engine.begin() as conn:
                conn.execute(text("INSERT INTO paused_campaigns VALUES ('a', :t, 'bench', "
                                  "NULL)"), {"t": NOW.replace(tzinfo=None)})
        p50, slowest, campaigns = claims(engine)
        state = "a paused" if paused else "none paused"
        print(f"{engine.dialect.name}, {n:,} due rows of a, {state}: claim of 20 p50 "
              f"{p50:.1f} ms, slowest {slowest:.1f} ms, leased {sorted(campaigns)}")
    engine.dispose()


if __name__ == "__main__":
    main()
