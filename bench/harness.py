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
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
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


def write_rows(engine: Engine, *tables: tuple[str, str, Iterable[tuple[Any, ...]]]) -> None:
    """TABLES (name, "column, column", rows) in one transaction (`loading`: PostgreSQL's
    COPY, SQLite's executemany; mailer's import path is what bench/import.py times), then
    ANALYZE. The folded shadow of every case-insensitive column is added as the importer
    adds it."""
    with loading(engine, [table for table, _, _ in tables]) as load:
        for table, columns, rows in tables:
            load(table, columns, rows)


Load = Callable[[str, str, Iterable[tuple[Any, ...]]], None]


@contextmanager
def loading(engine: Engine, tables: list[str]) -> Iterator[Load]:
    """A bulk load into TABLES, in one transaction: the secondary indexes of TABLES are
    dropped first and built again at the end (one sort each instead of a tree updated per
    row), PostgreSQL's foreign-key triggers are off for the session (the generated rows
    are consistent by construction), then ANALYZE. Yields `load(table, columns, rows)`:
    PostgreSQL's COPY, SQLite's executemany in batches of BATCH; ROWS may be any
    iterable, so a generator streams a store bigger than memory."""
    from sqlalchemy import text

    from mailer.store.db import is_server

    server = is_server(engine)
    with engine.begin() as conn:
        raw = conn.connection.driver_connection
        assert raw is not None
        cursor = raw.cursor()
        indexes = _secondary_indexes(cursor, tables, server=server)
        if server:
            cursor.execute("SET LOCAL session_replication_role = replica")
            cursor.execute("SET LOCAL maintenance_work_mem = '512MB'")
        else:
            cursor.execute("PRAGMA cache_size = -262144")  # 256 MiB of pages
        for name, _ in indexes:
            cursor.execute(f'DROP INDEX "{name}"')

        def load(table: str, given: str, given_rows: Iterable[tuple[Any, ...]]) -> None:
            columns, rows = with_shadows(table, given, given_rows)
            if server:
                with cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
                return
            marks = ", ".join(["?"] * len(columns.split(",")))
            sql = f"INSERT INTO {table} ({columns}) VALUES ({marks})"
            for batch in batches(rows, BATCH):
                cursor.executemany(sql, batch)

        yield load
        for _, definition in indexes:
            cursor.execute(definition)
    with engine.begin() as conn:
        conn.execute(text("ANALYZE"))


def _secondary_indexes(cursor: Any, tables: list[str], *, server: bool
                       ) -> list[tuple[str, str]]:
    """(name, CREATE INDEX statement) of each index of TABLES that no constraint owns
    (primary keys, unique constraints and what foreign keys point at stay)."""
    if server:
        cursor.execute(
            "SELECT c.relname, pg_get_indexdef(i.indexrelid) FROM pg_index i"
            " JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_class t ON t.oid = i.indrelid"
            " WHERE t.relname = ANY(%s) AND NOT EXISTS"
            " (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid)", (tables,))
    else:
        marks = ", ".join("?" * len(tables))
        cursor.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index'"
                       f" AND sql IS NOT NULL AND tbl_name IN ({marks})", tables)
    return [(str(name), str(sql)) for name, sql in cursor.fetchall()]


def batches(rows: Iterable[tuple[Any, ...]], size: int) -> Iterator[list[tuple[Any, ...]]]:
    """ROWS in lists of SIZE (the last one shorter)."""
    batch: list[tuple[Any, ...]] = []
    for row in rows:
        batch.append(row)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def with_shadows(table: str, columns: str, rows: Iterable[tuple[Any, ...]]
                 ) -> tuple[str, Iterable[tuple[Any, ...]]]:
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
    return columns + extra, (row + shadows(row) for row in rows)


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
