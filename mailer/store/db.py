"""Opening the database and keeping its schema current (DESIGN §3).

SQLite is the embedded default (`mailer.db` in the workspace, WAL mode, a busy
timeout, foreign keys on); commands bring its schema up to date themselves,
under a file lock so two commands starting at once migrate once. PostgreSQL is
the server choice: an out-of-date schema is refused (exit 3) until
`mailer db upgrade`, which migrates under an advisory lock.
"""

from __future__ import annotations

import fcntl
import json
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    ARRAY,
    BindParameter,
    Table,
    any_,
    bindparam,
    create_engine,
    event,
    inspect,
    text,
)
from sqlalchemy import Connection as Connection  # re-exported: the handle others hold
from sqlalchemy import Engine as Engine
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL as URL
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from mailer.core.errors import DatabaseUnavailable, SchemaOutOfDate, UserError

SQLITE_FILE = "mailer.db"
_MIGRATIONS = Path(__file__).parent / "migrations"
# A list of ids bound to a statement built once (`column.in_(IDS)`, `{"ids": [...]}`):
# expanded to IN (…) per call, so the statement and its cache key are made only once.
IDS: BindParameter[Any] = bindparam("ids", expanding=True)
_UPGRADE_LOCK_KEY = 0x6D61696C6572  # "mailer": the advisory lock `db upgrade` holds


def database_url(*, env_url: str | None, configured: str | None, root: Path) -> URL:
    """MAILER_DATABASE_URL, else `database:` in mailer.yaml, else ROOT/mailer.db.

    A plain postgresql:// URL gets the psycopg driver; a relative SQLite path is
    relative to the workspace.
    """
    raw = env_url or configured
    if raw is None:
        return make_url(f"sqlite:///{(root / SQLITE_FILE).resolve()}")
    try:
        url = make_url(raw)
    except ArgumentError:
        raise UserError(f"database URL is not a URL like postgresql://user@host:5432/db: "
                        f"{_redact(raw)}") from None
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg")
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        url = url.set(database=str((root / url.database).resolve()))
    if url.get_backend_name() not in ("sqlite", "postgresql"):
        raise UserError(f"unsupported database {url.get_backend_name()!r}: "
                        "use SQLite or PostgreSQL")
    return url


def _redact(raw: str) -> str:
    try:
        return make_url(raw).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparsable URL>"


def _number(value: object) -> float | None:
    """A number, or NULL for text that is not one (CAST would give 0.0)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    try:
        return float(value) if isinstance(value, str) and value.strip() else None
    except ValueError:
        return None


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.create_function("mailer_number", 1, _number, deterministic=True)
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")  # safe with WAL: a crash loses no committed txn
    cursor.close()


def create(url: URL) -> Engine:
    """An engine for the URL, with SQLite's pragmas on every connection."""
    if url.get_backend_name() == "sqlite":
        engine = create_engine(url, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True, connect_args={"connect_timeout": 10})


def _alembic_config() -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    return config


# The newest migration. Written here, opening a database needs no alembic (loading it
# and its scripts took 0.3 s of every command's start); tests/test_db.py checks it
# against alembic's own head, so a new migration that does not move it fails there.
HEAD = "0021"


def head_revision() -> str:
    """The newest migration this mailer knows."""
    return HEAD


def alembic_head() -> str | None:
    """The newest migration as alembic finds it in mailer/store/migrations."""
    from alembic.script import ScriptDirectory

    head: str | None = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    return head


def current_revision(engine: Engine) -> str | None:
    """The migration the database is at; None for an empty database (the migrations
    are one line, so alembic_version holds one row)."""
    with _connect(engine) as connection:
        if not inspect(connection).has_table("alembic_version"):
            return None
        revision = connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
        return str(revision) if revision is not None else None


@contextmanager
def _connect(engine: Engine) -> Iterator[Any]:
    try:
        connection = engine.connect()
    except DBAPIError as err:
        where = engine.url.render_as_string(hide_password=True)
        reason = str(err.orig).strip().splitlines()[0] if err.orig else str(err)
        raise DatabaseUnavailable(f"cannot open the database {where}: {reason}") from None
    with connection:
        yield connection


def upgrade(engine: Engine) -> tuple[str | None, str | None]:
    """Migrate to the newest schema; returns (before, after)."""
    from alembic import command

    config = _alembic_config()
    with _migration_lock(engine), _connect(engine) as connection, connection.begin():
        if engine.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"),
                               {"key": _UPGRADE_LOCK_KEY})
        from alembic.runtime.migration import MigrationContext

        before = MigrationContext.configure(connection).get_current_revision()
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
    return before, head_revision()


@contextmanager
def _migration_lock(engine: Engine) -> Iterator[None]:
    """On SQLite, a file lock beside the database; PostgreSQL uses an advisory lock."""
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        yield
        return
    with open(f"{database}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def open_database(url: URL) -> Engine:
    """An engine on a current schema: SQLite is migrated, old PostgreSQL is refused."""
    engine = create(url)
    current, head = current_revision(engine), head_revision()
    if current == head:
        return engine
    if engine.dialect.name == "sqlite":
        upgrade(engine)
        return engine
    where = url.render_as_string(hide_password=True)
    if current is None:
        state = "has no mailer schema"
    else:
        state = f"is at schema {current}, this mailer needs {head}"
    raise SchemaOutOfDate(f"the database {where} {state}: run `mailer db upgrade`")


# The rest of mailer holds the database through these names (sqlalchemy is the store's
# library, docs/architecture.md): an Engine or Connection handed in, and the errors
# worth catching above the store.
DatabaseError = SQLAlchemyError
UNREACHABLE = (OperationalError, PoolTimeout)  # locked, refused, timed out, pool empty


# What each database can do, asked by capability rather than by dialect name.
def is_server(bind: Engine | Connection) -> bool:
    """PostgreSQL: a server shared by processes and hosts (advisory locks, a shared rate
    limit, relaxed commits, ANALYZE after big writes). SQLite is one file on one host."""
    return bind.dialect.name == "postgresql"


def binds_arrays(bind: Engine | Connection) -> bool:
    """Whether a statement can take a whole column as one parameter: an array (unnest),
    or rows as one JSON recordset (insert_returning, the turn's outcomes)."""
    return bind.dialect.name == "postgresql"


def serial_plans(conn: Connection) -> None:
    """Inside a transaction: no parallel query plans (PostgreSQL). On 2 cores the parallel
    plan redid the aggregation per worker and ran several times slower than a serial one."""
    if is_server(conn):
        conn.execute(text("SET LOCAL max_parallel_workers_per_gather = 0"))


def upsert(bind: Engine | Connection, table: Table) -> Any:
    """The dialect's INSERT with ON CONFLICT support."""
    if is_server(bind):
        return postgresql.insert(table)
    return sqlite.insert(table)


def stored_moment(moment: datetime, where: str) -> str:
    """An aware MOMENT as statements written by hand store it: naive UTC text with
    microseconds, as SQLite's DateTime writes it (its columns compare as text) and as
    PostgreSQL reads a `timestamp`. A naive one is refused, as the models' UTCDateTime
    refuses it (WHERE: the column, for the error)."""
    if moment.tzinfo is None:
        raise ValueError(f"naive datetime given to {where}")
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ",
                                                                  timespec="microseconds")


def insert_returning(conn: Connection, table: str, columns: dict[str, str],
                     rows: Sequence[dict[str, Any]], *, conflict: str,
                     returning: str) -> list[Any]:
    """ROWS (by column name; COLUMNS: name -> SQL type, `timestamp` an aware datetime)
    inserted with `ON CONFLICT (CONFLICT) DO NOTHING RETURNING RETURNING`; what RETURNING
    gives for the rows written. A timestamp is written as the naive UTC value (on SQLite
    as its DateTime writes it, text with microseconds: the columns compare as text), so
    reads through the models see the same value.

    PostgreSQL takes the rows as one JSON parameter (json_to_recordset): psycopg dumps an
    array per column in Python, 14 ms of CPU per thousand ledger rows against 5 ms for
    json.dumps, and a thousand-row VALUES list cost ~110 ms to parse and plan. SQLite
    takes as many rows a statement as the driver's variable limit allows, through the
    driver: SQLAlchemy's executemany processed each value of a plan in Python, a third
    of a 20,000-mail plan's time."""
    names = list(columns)
    stamps = [at for at, name in enumerate(names) if columns[name] == "timestamp"]
    stored: dict[datetime, str] = {}  # a plan's rows share a few moments

    def values(row: dict[str, Any]) -> list[Any]:
        found = [row.get(name) for name in names]
        for at in stamps:
            moment = found[at]
            if moment is not None:
                text_ = stored.get(moment)
                if text_ is None:
                    text_ = stored[moment] = stored_moment(moment, f"{table}.{names[at]}")
                found[at] = text_
        return found

    tail = f" ON CONFLICT ({conflict}) DO NOTHING RETURNING {returning}"
    if binds_arrays(conn):
        record = ", ".join(f"{name} {columns[name]}" for name in names)
        given = json.dumps([dict(zip(names, values(row), strict=True)) for row in rows])
        return list(conn.exec_driver_sql(
            f"INSERT INTO {table} ({', '.join(names)}) SELECT {', '.join(names)} FROM "
            f"json_to_recordset(%s::json) AS r({record}){tail}", (given,)).all())
    raw = conn.connection.driver_connection
    assert raw is not None
    limit = raw.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) \
        if hasattr(raw, "getlimit") else 999
    per = max(1, limit // len(names))
    mark = "(" + ", ".join("?" * len(names)) + ")"
    head = f"INSERT INTO {table} ({', '.join(names)}) VALUES "
    found: list[Any] = []
    for start in range(0, len(rows), per):
        chunk = rows[start:start + per]
        flat = tuple(value for row in chunk for value in values(row))
        found += conn.exec_driver_sql(head + ", ".join([mark] * len(chunk)) + tail,
                                      flat).all()
    return found


def among(bind: Engine | Connection, column: Any, values: list[Any]) -> Any:
    """column IN values. Where the database binds arrays, one array parameter (= ANY): a
    thousand separate parameters made each batch query cost more to plan than to run."""
    if binds_arrays(bind):
        return column == any_(bindparam(None, list(values), type_=ARRAY(column.type)))
    return column.in_(values)
