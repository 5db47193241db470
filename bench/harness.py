"""What the database benches share: their options, a fresh store filled straight through
the driver, a fresh interpreter to time, and the planning run that deliver.py and plan.py
measure. Code run by `python()` can `import harness` too."""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from datetime import datetime

    from mailer.planning.planner import PlanResult
    from mailer.store.db import Engine

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BATCH = 50_000  # rows a driver executemany


def arguments(doc: str, sizes: dict[str, int], keeps: str) -> argparse.ArgumentParser:
    """The options of a bench: one a size (`--customers 100000`), then --database-url
    and --keep (of the folder KEEPS)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    for flag, default in sizes.items():
        parser.add_argument(flag, type=int, default=default)
    parser.add_argument("--database-url", help="a PostgreSQL database to use (emptied first)")
    parser.add_argument("--keep", action="store_true", help=f"keep {keeps}")
    return parser


def python(code: str, *args: str, env: dict[str, str] | None = None
           ) -> tuple[float, subprocess.CompletedProcess[str]]:
    """Seconds and output of CODE run with ARGS in a fresh interpreter (so its time and
    peak memory are its own); a failure ends the bench with its stderr's end."""
    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(HERE), env.get("PYTHONPATH"))))
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          cwd=ROOT, env=env, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(done.stderr[-3000:])
    return elapsed, done


def fresh_store(url: str | None, root: Path, *, empty: bool = True) -> Engine:
    """The database at URL (else SQLite under ROOT) on the current schema; a PostgreSQL
    database is emptied first when EMPTY."""
    from sqlalchemy import text

    from mailer.store.db import create, database_url, is_server, upgrade

    engine = create(database_url(env_url=url or None, configured=None, root=root))
    if empty and is_server(engine):
        with engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
    upgrade(engine)
    return engine


def stamp(engine: Engine, moment: datetime) -> Any:
    """MOMENT (UTC) as the driver writes it into a timestamp column: naive on PostgreSQL,
    the text mailer stores on SQLite."""
    from mailer.store.db import is_server

    naive = moment.replace(tzinfo=None)
    return naive if is_server(engine) else naive.isoformat(sep=" ", timespec="microseconds")


def write_rows(engine: Engine, *tables: tuple[str, str, list[tuple[Any, ...]]]) -> None:
    """TABLES (name, "column, column", rows) in one transaction through the driver's own
    executemany (mailer's import path is what bench/import.py times), then ANALYZE. The
    folded shadow of every case-insensitive column is added as the importer adds it."""
    from sqlalchemy import text

    from mailer.store.db import is_server

    mark = "%s" if is_server(engine) else "?"
    with engine.begin() as conn:
        raw = conn.connection.driver_connection
        assert raw is not None
        cursor = raw.cursor()
        for table, given, given_rows in tables:
            columns, rows = with_shadows(table, given, given_rows)
            marks = ", ".join([mark] * len(columns.split(",")))
            sql = f"INSERT INTO {table} ({columns}) VALUES ({marks})"
            for start in range(0, len(rows), BATCH):
                cursor.executemany(sql, rows[start:start + BATCH])
    with engine.begin() as conn:
        conn.execute(text("ANALYZE"))


def with_shadows(table: str, columns: str, rows: list[tuple[Any, ...]]
                 ) -> tuple[str, list[tuple[Any, ...]]]:
    """COLUMNS and ROWS with `<name>_folded` appended for each column segments match
    case-insensitively (mailer.store.models.folded): segments read only the shadows, so
    a store written without them has no tags, countries or categories to a segment.
    JSON columns (tags, attributes) arrive as JSON text and leave as JSON text."""
    import json

    from mailer.store.models import FOLDED, folded

    names = [name.strip() for name in columns.split(",")]
    matched = [name for name in FOLDED.get(table, ())
               if name in names and f"{name}_folded" not in names]
    if not matched:
        return columns, rows
    where = {name: names.index(name) for name in matched}
    textual = {name for name in matched if name in ("tags", "attributes")}

    def shadows(row: tuple[Any, ...]) -> tuple[Any, ...]:
        values = {name: row[at] if name not in textual or row[at] is None
                  else json.loads(row[at]) for name, at in where.items()}
        shadow = folded(table, values)
        return tuple(json.dumps(shadow[f"{name}_folded"])
                     if name in textual and values[name] is not None
                     else shadow[f"{name}_folded"] for name in matched)

    extra = "".join(f", {name}_folded" for name in matched)
    return columns + extra, [row + shadows(row) for row in rows]


def plan_due_at(root: Path, url: str | None, now: str, *, compiled: bool) -> list[PlanResult]:
    """One planning run of the workspace at ROOT at NOW (its local time), written to the
    ledger. COMPILED: with each campaign's real template version, else a stand-in (the
    planner does not read it)."""
    from mailer.config.settings import load_settings
    from mailer.config.workspace import load_valid_workspace
    from mailer.core.clock import parse_local, zone
    from mailer.mail.version import compile_version, definition
    from mailer.planning.planner import plan_due
    from mailer.segments.runner import scope_for
    from mailer.store.db import database_url, open_database

    settings, _ = load_settings(root)
    specs, campaigns = load_valid_workspace(root)
    engine = open_database(database_url(env_url=url or None, configured=None, root=root))
    scope = scope_for(settings, parse_local(now, zone(settings.timezone)), engine)
    versions = {slug: definition(compile_version(slug, spec, root / "templates"), root)
                if compiled else {"campaign": slug} for slug, spec in campaigns.items()}
    return plan_due(engine, specs, campaigns, scope=scope, settings=settings,
                    versions=versions, keep=False)


def latency_row(name: str, done: int, elapsed: float, latencies: list[float],
                width: int = 36) -> str:
    """One line of an HTTP bench's table: requests, requests/s, p50 and p99 in ms (the
    request at the 99th percentile of LATENCIES, in ms)."""
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return (f"{name:<{width}} {done:>8} {done / elapsed:>10.0f} "
            f"{statistics.median(ordered):>9.2f} {p99:>9.2f}")
