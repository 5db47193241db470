"""Forecast benchmark: one hourly sweep of `mailer forecast`, next to the old way's.

    python bench/forecast.py [--customers N] [--days D] [--database-url URL] [--callgrind]

Builds the demo store (`mailer init`, `mailer demo-data --customers N --seed 1 --now
2026-11-23T10:00`; N defaults to 200, the README tour's) under bench/.data/forecast, or
in the PostgreSQL database given (emptied first), then in one fresh interpreter runs
the forecast of D days (default 3) from that moment both ways, twice each, alternating:

- ours: the store data read once (mailer.planning.frozen), so a sweep skips the
  per-zone trigger queries that cannot find anyone, and no plan runs are recorded
  on the scratch copy;
- the old way (`run_forecast(..., steady=False)`): every per-zone query of every
  campaign built, compiled and run at every sweep, plan runs recorded.

It prints milliseconds per sweep of each (the better of two), one planning run of the
store at the start (a daemon's sweep, a dry run) for scale, and checks that both ways
give the same JSON document, byte for byte (exit 1 if not). `--callgrind` adds
instructions per sweep under `valgrind --tool=callgrind` (stable on a busy machine):
a forecast of 2 days minus one of 1 day, divided by 24, for each way.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

from harness import HERE, ROOT, arguments, python

DATA = ROOT / "bench" / ".data" / "forecast"
NOW = "2026-11-23T10:00"

MEASURE = """
import json, sys, time
from pathlib import Path
from mailer.app.forecast import run_forecast
from mailer.config.settings import load_settings
from mailer.config.workspace import load_valid_workspace
from mailer.core.clock import parse_local, zone
from mailer.mail.version import compile_version, definition
from mailer.planning.planner import plan_due
from mailer.segments.runner import scope_for
from mailer.store.db import database_url, open_database

root, url, days, rounds = Path(sys.argv[1]), sys.argv[2] or None, int(sys.argv[3]), int(sys.argv[4])
ways = sys.argv[5].split(",")
settings, _ = load_settings(root)
specs, campaigns = load_valid_workspace(root)
engine = open_database(database_url(env_url=url, configured=None, root=root))
start = parse_local(sys.argv[6], zone(settings.timezone)).replace(minute=0)
versions = {slug: definition(compile_version(slug, spec, root / "templates"), root)
            for slug, spec in campaigns.items()}
order = sorted(campaigns)
best = {}
documents = {}
for _ in range(rounds):
    for way in ways:
        began = time.perf_counter()
        result = run_forecast(engine, specs, campaigns, settings=settings, start=start,
                              days=days, versions=versions, steady=way == "ours")
        elapsed = time.perf_counter() - began
        best[way] = min(best.get(way, elapsed), elapsed)
        documents.setdefault(way, json.dumps(result.as_json(order)))
began = time.perf_counter()
plan_due(engine, specs, campaigns, scope=scope_for(settings, start, engine), settings=settings)
planning = time.perf_counter() - began
print(json.dumps({"seconds": best, "documents": documents, "planning": planning}))
"""


def mailer(*args: str, env: dict[str, str]) -> None:
    """The real CLI, as a user runs it; a failure ends the bench with its stderr."""
    done = subprocess.run([sys.executable, "-m", "mailer.cli", *args], capture_output=True,
                          text=True, env=env, check=False, cwd=ROOT)
    if done.returncode != 0:
        sys.exit(f"mailer {' '.join(args)}: {done.stderr[-2000:]}")


def build_store(customers: int, url: str) -> dict[str, str]:
    """The demo workspace and store; returns the environment the runs use."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    shutil.rmtree(DATA, ignore_errors=True)
    DATA.parent.mkdir(parents=True, exist_ok=True)
    mailer("init", str(DATA), env=env)
    if url:
        from harness import fresh_store

        fresh_store(url, DATA).dispose()
        env["MAILER_DATABASE_URL"] = url
    mailer("--workspace", str(DATA), "demo-data", "--customers", str(customers), "--seed", "1",
           "--now", NOW, env=env)
    return env


def instructions(ways: str, days: int, url: str, env: dict[str, str]) -> int:
    """Instructions valgrind counts for a forecast of DAYS days the given way."""
    code_env = {**env, "PYTHONPATH": str(HERE)}
    done = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
                           sys.executable, "-c", MEASURE, str(DATA), url, str(days), "1", ways,
                           NOW], capture_output=True, text=True, env=code_env, cwd=ROOT,
                          check=False)
    found = re.search(r"Collected : (\d+)", done.stderr)
    if done.returncode != 0 or found is None:
        sys.exit(done.stderr[-2000:])
    return int(found.group(1))


def main() -> None:
    parser = arguments(__doc__, {"--customers": 200, "--days": 3}, "bench/.data/forecast")
    parser.add_argument("--callgrind", action="store_true",
                        help="also count instructions per sweep under valgrind (slow)")
    options = parser.parse_args()
    url = options.database_url or ""
    try:
        env = build_store(options.customers, url)
        _, done = python(MEASURE, str(DATA), url, str(options.days), "2", "ours,old", NOW,
                         env=env)
        found = json.loads(done.stdout.strip().splitlines()[-1])
        sweeps = options.days * 24
        ours, old = (found["seconds"][way] * 1000 / sweeps for way in ("ours", "old"))
        kind = "postgresql" if url else "sqlite"
        print(f"{kind}: {options.customers:,} customers, a {options.days}-day forecast from "
              f"{NOW} ({sweeps} hourly sweeps)")
        print(f"{'path':<44}{'ms per sweep':>14}")
        print(f"{'forecast sweep (ours)':<44}{ours:>14.1f}")
        print(f"{'forecast sweep, every query each hour (old)':<44}{old:>14.1f}")
        print(f"{'one planning run at the start (dry run)':<44}"
              f"{found['planning'] * 1000:>14.1f}")
        print(f"ours takes {ours / old:.2f}x the old way's time per sweep")
        if options.callgrind:
            for way in ("ours", "old"):
                per_sweep = (instructions(way, 2, url, env) - instructions(way, 1, url, env)) / 24
                print(f"instructions per sweep ({way}, the second day): {per_sweep:,.0f}")
        documents = found["documents"]
        if documents["ours"] != documents["old"]:
            sys.exit(f"the forecasts differ:\nours {documents['ours']}\nold  {documents['old']}")
        print("both ways give the same forecast, byte for byte")
    finally:
        if not options.keep:
            shutil.rmtree(DATA, ignore_errors=True)


if __name__ == "__main__":
    main()
