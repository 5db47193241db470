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

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "bench" / ".data" / "plan"
SETTINGS = ('store: {name: Bench, address: "1 Road", currency: EUR}\n'
            "sender: {from: bench@shop.example}\ntimezone: Europe/Berlin\n"
            "tracking: {base_url: https://mail.shop.example}\n")
CAMPAIGN = ("name: Bench\ntrigger: once\nat: 2026-12-01T10:00\nsegment: subscribers\n"
            "template: mail.html\nsubject: Hello\n")
NOW = "2026-12-01T10:30"

SETUP = """
import sys
from datetime import datetime, UTC
from sqlalchemy import text
from mailer.store.db import create, database_url, upgrade
from pathlib import Path
root, url, count = Path(sys.argv[1]), sys.argv[2] or None, int(sys.argv[3])
engine = create(database_url(env_url=url, configured=None, root=root))
if engine.dialect.name == "postgresql":
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE")); conn.execute(text("CREATE SCHEMA public"))
upgrade(engine)
now = datetime(2026, 1, 1, tzinfo=UTC)
postgres = engine.dialect.name == "postgresql"
stamp = now.replace(tzinfo=None) if postgres else "2026-01-01 00:00:00.000000"
rows = [(i, f"C{i:07d}", f"c{i}@example.com", f"c{i}@example.com",
         "not_subscribed" if i % 10 == 0 else "subscribed", stamp, stamp)
        for i in range(1, count + 1)]
with engine.begin() as conn:
    raw = conn.connection.driver_connection
    mark = "%s" if engine.dialect.name == "postgresql" else "?"
    cur = raw.cursor()
    for start in range(0, len(rows), 50000):
        cur.executemany("INSERT INTO customers (id, store_id, email, email_key, consent, "
                        f"created_at, updated_at) VALUES ({', '.join([mark] * 7)})",
                        rows[start:start + 50000])
    conn.execute(text("INSERT INTO suppressions (email_key, reason, source, created_at) "
                      "VALUES ('c7@example.com', 'bounced', 'bench', :now)"), {"now": stamp})
with engine.begin() as conn:
    conn.execute(text("ANALYZE"))
"""

OURS = """
import json, resource, sys
from pathlib import Path
from mailer.segments.runner import scope_for
from mailer.core.clock import parse_local, zone
from mailer.store.db import open_database, database_url
from mailer.planning.planner import plan_due
from mailer.config.settings import load_settings
from mailer.config.workspace import load_valid_workspace
root, url = Path(sys.argv[1]), sys.argv[2] or None
settings, _ = load_settings(root)
specs, campaigns = load_valid_workspace(root)
engine = open_database(database_url(env_url=url, configured=None, root=root))
scope = scope_for(settings, parse_local(sys.argv[3], zone(settings.timezone)), engine)
result = plan_due(engine, specs, campaigns, scope=scope, settings=settings,
                  versions={slug: {"campaign": slug} for slug in campaigns}, keep=False)[0]
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
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          cwd=ROOT, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(done.stderr[-3000:])
    lines = done.stdout.strip().splitlines()
    return elapsed, json.loads(lines[-1]) if lines else {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--database-url", help="a PostgreSQL database to use (emptied first)")
    parser.add_argument("--keep", action="store_true", help="keep bench/.data/plan")
    options = parser.parse_args()
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
