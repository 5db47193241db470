"""Planning benchmark: a campaign for N customers, next to a bare INSERT ... SELECT.

    python bench/plan.py [--customers N] [--database-url URL]

Writes N customers (default 100,000; --customers 1000000 for the full size)
straight into a fresh database (SQLite under bench/.data/, or the PostgreSQL
database given, which is emptied), then, each in a fresh process: mailer's
planner (segment query, policy with caps and suppressions, ledger insert,
plan run), and a bare `INSERT INTO deliveries ... SELECT` of the same audience.
Prints seconds and peak memory of each and checks the ledger counts agree.
"""

from __future__ import annotations

import json
import shutil
import sys

from harness import ROOT, arguments, python

DATA = ROOT / "bench" / ".data" / "plan"
SETTINGS = ('store: {name: Bench, address: "1 Road", currency: EUR}\n'
            "sender: {from: bench@shop.example}\ntimezone: Europe/Berlin\n"
            "tracking: {base_url: https://mail.shop.example}\n")
CAMPAIGN = ("name: Bench\ntrigger: once\nat: 2026-12-01T10:00\nsegment: subscribers\n"
            "template: mail.html\nsubject: Hello\n")
NOW = "2026-12-01T10:30"

SETUP = """
import sys
from datetime import datetime
from pathlib import Path
from harness import fresh_store, stamp, write_rows
root, url, count = Path(sys.argv[1]), sys.argv[2] or None, int(sys.argv[3])
engine = fresh_store(url, root)
created = stamp(engine, datetime(2026, 1, 1))
write_rows(engine,
           ("customers", "id, store_id, email, email_key, consent, created_at, updated_at",
            [(i, f"C{i:07d}", f"c{i}@example.com", f"c{i}@example.com",
              "not_subscribed" if i % 10 == 0 else "subscribed", created, created)
             for i in range(1, count + 1)]),
           ("suppressions", "email_key, reason, source, created_at",
            [("c7@example.com", "bounced", "bench", created)]))
"""

OURS = """
import json, resource, sys
from pathlib import Path
from harness import plan_due_at
result = plan_due_at(Path(sys.argv[1]), sys.argv[2], sys.argv[3], compiled=False)[0]
print(json.dumps({"planned": result.planned_count, "excluded": result.counts(),
                  "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""

BASELINE = """
import json, resource, sys
from pathlib import Path
from sqlalchemy import text
from mailer.store.db import create, database_url
root, url = Path(sys.argv[1]), sys.argv[2] or None
engine = create(database_url(env_url=url, configured=None, root=root))
with engine.begin() as conn:
    conn.execute(text("DELETE FROM deliveries")); conn.execute(text("DELETE FROM plan_runs"))
    version = conn.execute(text("SELECT id FROM campaign_versions")).scalar()
    planned = conn.execute(text(
        "INSERT INTO deliveries (campaign, campaign_version_id, occurrence, customer_id, email, "
        "subject_variant, status, attempts, planned_at, send_after, expires_at) "
        "SELECT 'bench', :version, 'once', c.id, c.email, 0, 'queued', 0, :now, :now, :expires "
        "FROM customers c WHERE c.consent = 'subscribed' AND c.email_key NOT IN "
        "(SELECT email_key FROM suppressions)"),
        {"version": version, "now": "2026-12-01 09:30:00",
         "expires": "2026-12-01 15:00:00"}).rowcount
print(json.dumps({"planned": planned,
                  "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def run(code: str, *args: str) -> tuple[float, dict[str, object]]:
    """Seconds and the JSON document CODE printed last, in a fresh interpreter."""
    elapsed, done = python(code, *args)
    lines = done.stdout.strip().splitlines()
    return elapsed, json.loads(lines[-1]) if lines else {}


def main() -> None:
    options = arguments(__doc__, {"--customers": 100_000}, "bench/.data/plan").parse_args()
    shutil.rmtree(DATA, ignore_errors=True)
    (DATA / "segments").mkdir(parents=True)
    (DATA / "campaigns").mkdir()
    (DATA / "templates").mkdir()
    (DATA / "mailer.yaml").write_text(SETTINGS)
    (DATA / "segments" / "subscribers.yaml").write_text(
        "description: subscribers\nall: [{subscribed: true}]\n")
    (DATA / "campaigns" / "bench.yaml").write_text(CAMPAIGN)
    (DATA / "templates" / "mail.html").write_text(
        "<p>{{ store.address }} <a href='{{ links.unsubscribe }}'>unsubscribe</a></p>")
    url = options.database_url or ""
    try:
        run(SETUP, str(DATA), url, str(options.customers))
        ours_s, ours = run(OURS, str(DATA), url, NOW)
        base_s, base = run(BASELINE, str(DATA), url)
        if ours["planned"] != base["planned"]:
            sys.exit(f"planner planned {ours['planned']}, the bare insert {base['planned']}")
        kind = "postgresql" if url else "sqlite"
        print(f"{kind}: {options.customers:,} customers, {ours['planned']:,} planned, "
              f"excluded {ours['excluded']}")
        print(f"{'path':<32}{'seconds':>10}{'peak MB':>10}")
        print(f"{'mailer planner':<32}{ours_s:>10.1f}"
              f"{int(str(ours['maxrss_kb'])) / 1024:>10.0f}")
        print(f"{'bare INSERT ... SELECT':<32}{base_s:>10.1f}"
              f"{int(str(base['maxrss_kb'])) / 1024:>10.0f}")
        print(f"the planner takes {ours_s / base_s:.1f}x the bare insert "
              "(target: under 60 s and 500 MB at 1M customers)")
    finally:
        if not options.keep:
            shutil.rmtree(DATA, ignore_errors=True)


if __name__ == "__main__":
    main()
