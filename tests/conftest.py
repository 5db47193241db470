"""Shared fixtures: a workspace on SQLite or PostgreSQL and the real CLI in-process.

Database tests take the `db` fixture, parametrised over both databases: the same
contract suite runs on each. PostgreSQL comes from MAILER_TEST_POSTGRES_URL (a
database on the server used to create `mailer_test_*` databases); without it the
local default is tried. In CI a missing PostgreSQL fails the run; elsewhere the
PostgreSQL half is skipped with one line in the summary.

Every test is marked `unit` (pure logic: `make test-fast`) or `integration` here, by what
it uses; unit tests run with subprocesses, sockets and databases refused (the end of this
file).
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import shutil
import socket
import sqlite3
import subprocess
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import CodeType, ModuleType
from typing import Any, NoReturn

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.engine.default import DefaultDialect

from mailer.cli import main
from mailer.store.db import create, database_url, upgrade

DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/postgres"

SETTINGS = """\
store: {name: Pine & Co, address: "1 Market St, Springfield", currency: EUR}
sender: {from: "Pine & Co <hello@shop.example>"}
timezone: Europe/Berlin
tracking: {base_url: https://mail.shop.example}
"""


@pytest.fixture(autouse=True)
def _no_leaking_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("MAILER_") and name != "MAILER_TEST_POSTGRES_URL":
            monkeypatch.delenv(name)


@contextmanager
def _mailer_logging_kept() -> Iterator[None]:
    """A command run in-process (`mailer import`, `hooks replay`) sets up mailer's log
    lines for its process (mailer.core.logs.configure: a stderr handler, no propagation):
    undone when it returns, so the test's caplog (and the next test's) still sees them."""
    logger = logging.getLogger("mailer")
    kept = (list(logger.handlers), logger.level, logger.propagate)
    try:
        yield
    finally:
        logger.handlers[:], logger.level, logger.propagate = kept[0], kept[1], kept[2]


@pytest.fixture(autouse=True)
def _no_leaking_log_setup() -> Iterator[None]:
    with _mailer_logging_kept():
        yield


def _postgres_admin_url() -> str | None:
    url = os.environ.get("MAILER_TEST_POSTGRES_URL") or DEFAULT_PG
    try:
        engine = create_engine(database_url(env_url=url, configured=None, root=Path(".")))
        with engine.connect():
            pass
        engine.dispose()
        return url
    except Exception as err:  # any failure to connect means "no PostgreSQL here"
        if os.environ.get("CI"):
            pytest.fail(f"CI needs PostgreSQL at {url}: {err}", pytrace=False)
        return None


@contextmanager
def _scratch_database() -> Iterator[str]:
    """A new, empty `mailer_test_*` database on the test server, dropped afterwards."""
    admin = _postgres_admin_url()
    if admin is None:
        pytest.skip("PostgreSQL not reachable (set MAILER_TEST_POSTGRES_URL)")
    name = f"mailer_test_{uuid.uuid4().hex[:10]}"
    admin_engine = create_engine(database_url(env_url=admin, configured=None, root=Path(".")),
                                 isolation_level="AUTOCOMMIT")
    with admin_engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(admin).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin_engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin_engine.dispose()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A migrated database shared by this test session's PostgreSQL tests."""
    with _scratch_database() as url:
        engine = create(database_url(env_url=url, configured=None, root=Path(".")))
        upgrade(engine)
        engine.dispose()
        yield url


@pytest.fixture
def fresh_postgres() -> Iterator[str]:
    """An empty PostgreSQL database (no schema) for one test."""
    with _scratch_database() as url:
        yield url


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


class Workspace:
    """A workspace folder and the real CLI run in-process against it."""

    def __init__(self, root: Path, database: str | None) -> None:
        self.root = root
        self.database = database
        self.env = {"MAILER_DATABASE_URL": database} if database else {}

    def write(self, name: str, content: str | bytes) -> Path:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
        return path

    def run(self, *args: str, stdin: str | bytes | None = None) -> Result:
        runner = CliRunner()
        previous = os.getcwd()
        os.chdir(self.root)  # relative file arguments are relative to the workspace
        try:
            with runner.isolation(input=stdin, env=self.env) as streams, \
                    _mailer_logging_kept():
                code = main(["--workspace", str(self.root), *args])
                out, err = streams[0].getvalue(), streams[1].getvalue()
        finally:
            os.chdir(previous)
        return Result(code, out.decode("utf-8"), err.decode("utf-8"))

    def engine(self) -> Any:
        return create(database_url(env_url=self.database, configured=None, root=self.root))

    def query(self, sql: str, **params: Any) -> list[Any]:
        engine = self.engine()
        try:
            with engine.connect() as conn:
                return list(conn.execute(text(sql), params))
        finally:
            engine.dispose()


# Table names of each migrated database, children before parents (see _emptying).
_EMPTYING: dict[str, str] = {}


def _emptying(conn: Any) -> str:
    """One statement that empties every table and restarts the sequences that moved (tests
    count ids from 1): a DELETE a table, children first. TRUNCATE of the ~40 tables made
    new files for each and took ~0.1-0.3 s a test; a DELETE of a test's few rows is ms."""
    tables = {row[0] for row in conn.execute(text(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
        "AND tablename <> 'alembic_version'"))}
    parents: dict[str, set[str]] = {table: set() for table in tables}
    for child, parent in conn.execute(text(
            "SELECT conrelid::regclass::text, confrelid::regclass::text FROM pg_constraint "
            "WHERE contype = 'f' AND connamespace = 'public'::regnamespace")):
        if child != parent and child in parents:
            parents[child].add(parent.strip('"'))
    ordered: list[str] = []  # children before parents
    while parents:
        leaves = sorted(t for t in parents if not any(t in p for p in parents.values()))
        if not leaves:  # a cycle of foreign keys: TRUNCATE copes with it
            return (f"TRUNCATE {', '.join(sorted(tables))} RESTART IDENTITY CASCADE")
        ordered += leaves
        for leaf in leaves:
            del parents[leaf]
    deletes = "".join(f'DELETE FROM "{table}"; ' for table in ordered)
    return ("DO $$ DECLARE s text; BEGIN " + deletes +
            "FOR s IN SELECT quote_ident(sequencename) FROM pg_sequences "
            "WHERE schemaname = 'public' AND last_value IS NOT NULL "
            "LOOP EXECUTE 'ALTER SEQUENCE ' || s || ' RESTART'; END LOOP; END $$")


def _truncate(url: str) -> None:
    """Empty the database at URL (on the newest schema) for the next test."""
    engine = create(database_url(env_url=url, configured=None, root=Path(".")))
    with engine.begin() as conn:
        if url not in _EMPTYING:
            _EMPTYING[url] = _emptying(conn)
        conn.exec_driver_sql(_EMPTYING[url])
    engine.dispose()


@pytest.fixture(scope="session")
def sqlite_schema(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty SQLite store on the newest schema, migrated once a session: each `db`
    workspace on SQLite starts from a copy of it, as each on PostgreSQL starts from the
    session's migrated database (running the migrations into a fresh file took 0.13 s
    a test on an idle machine, 0.3 s on a busy one). The `ws` workspaces still start
    without a database: the tests of a first command creating its schema take those."""
    folder = tmp_path_factory.mktemp("sqlite-schema")
    engine = create(database_url(env_url=None, configured=None, root=folder))
    upgrade(engine)
    engine.dispose()
    path = folder / "mailer.db"
    with sqlite3.connect(path) as conn:  # everything in the file itself, none in its WAL
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return path


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Workspace:
    """A workspace with settings, on SQLite (its own file, empty, on the newest schema) or
    on the shared PostgreSQL."""
    database = None
    if request.param == "postgresql":
        database = request.getfixturevalue("postgres_url")
        _truncate(database)
    workspace = Workspace(tmp_path / "ws", database)
    workspace.root.mkdir()
    workspace.write("mailer.yaml", SETTINGS)
    if database is None:
        shutil.copyfile(request.getfixturevalue("sqlite_schema"), workspace.root / "mailer.db")
    return workspace


@pytest.fixture
def pg(postgres_url: str, tmp_path: Path) -> Workspace:
    """A workspace on the shared PostgreSQL only (for what SQLite does not offer)."""
    _truncate(postgres_url)
    workspace = Workspace(tmp_path / "ws", postgres_url)
    workspace.root.mkdir()
    workspace.write("mailer.yaml", SETTINGS)
    return workspace


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    """A workspace with settings on SQLite only (for tests that are not about the database)."""
    workspace = Workspace(tmp_path / "ws", None)
    workspace.root.mkdir()
    workspace.write("mailer.yaml", SETTINGS)
    return workspace


# --- markers: `unit` (pure logic, `make test-fast`) and `integration` (the rest) ---------

# Fixtures that bring a database or a workspace the CLI runs against; a test that asks for
# one, directly, through another fixture or by request.getfixturevalue, is integration.
INTEGRATION_FIXTURES = frozenset({"db", "pg", "ws", "fresh_postgres", "postgres_url"})
# Names a test uses when it runs the CLI on a workspace of its own.
INTEGRATION_NAMES = frozenset({"Workspace", "CliRunner"})
# Modules that start servers, subprocesses or a browser, or open sockets or databases
# (mailer.store.db makes the engines; a rename there must be followed here, and the guard
# below fails any unit test these names miss).
PROCESS_MODULES = ("subprocess", "multiprocessing", "socket", "http.client", "http.server",
                   "urllib.request", "aiohttp", "aiosmtpd", "aiosmtplib", "playwright",
                   "sqlite3", "sqlalchemy", "psycopg", "mailer.store.db", "tests.smtp_server")


def _is_process_module(name: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in PROCESS_MODULES)


def _names(code: CodeType) -> set[str]:
    """The global and attribute names and the strings a function's code uses."""
    names = set(code.co_names) | {c for c in code.co_consts if isinstance(c, str)}
    for inner in code.co_consts:
        if isinstance(inner, CodeType):
            names |= _names(inner)
    return names


def _reaches_integration(function: object, seen: set[int]) -> bool:
    """Whether a function of the suite, or suite code it names (helpers, fixtures, classes
    in tests/), uses an integration fixture, a Workspace, the CLI runner or PROCESS_MODULES."""
    # Hypothesis wraps its tests: read the test as written.
    written = getattr(getattr(function, "hypothesis", None), "inner_test", function)
    if not callable(written):
        return False
    function = inspect.unwrap(written)
    code = getattr(function, "__code__", None)
    if not isinstance(code, CodeType) or id(function) in seen:
        return False
    seen.add(id(function))
    namespace: dict[str, Any] = getattr(function, "__globals__", {})
    for name in _names(code):
        if name in INTEGRATION_FIXTURES or name in INTEGRATION_NAMES or _is_process_module(name):
            return True
        if name not in namespace:
            continue
        value = namespace[name]
        origin = value.__name__ if isinstance(value, ModuleType) else \
            getattr(value, "__module__", None)
        if not isinstance(origin, str):
            continue
        if _is_process_module(origin):
            return True
        if origin.startswith("tests.") and origin != __name__:
            members = list(vars(value).values()) if isinstance(value, type) else [value]
            if any(_reaches_integration(member, seen) for member in members):
                return True
    return False


def _is_integration(item: pytest.Function) -> bool:
    if item.get_closest_marker("integration") is not None:  # marked by hand
        return True
    if INTEGRATION_FIXTURES & set(item.fixturenames):  # the whole fixture closure
        return True
    seen: set[int] = set()
    module = vars(item.module)
    fixtures = [module[name] for name in item.fixturenames if name in module]
    return any(_reaches_integration(f, seen) for f in [item.obj, *fixtures])


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test by what it uses, in this one place: `make test-fast` runs `-m unit`."""
    for item in items:
        integration = not isinstance(item, pytest.Function) or _is_integration(item)
        item.add_marker(pytest.mark.integration if integration else pytest.mark.unit)
    if getattr(config.option, "loadgroup", False):
        _name_groups(items)


def _name_groups(items: list[pytest.Item]) -> None:
    """`--dist loadgroup` sends the tests whose node id ends in `@GROUP` to one worker.
    xdist 3.8 appends the suffix to `item._nodeid`, which pytest 9 no longer reads (the id
    is `item._id`), so each xdist_group was spread over every worker: tests/test_console.py
    built its store on each of them. Appended here where xdist's did not take."""
    for item in items:
        groups = sorted({str(mark.args[0] if mark.args else mark.kwargs.get("name", "default"))
                         for mark in item.iter_markers("xdist_group")})
        if groups and "@" not in item.nodeid and hasattr(item, "_id"):
            from _pytest.nodeid import NodeId  # pytest 9: only reached there

            item._id = NodeId.parse(f"{item.nodeid}@{'_'.join(groups)}")


def _refuse(what: str) -> Callable[..., NoReturn]:
    def refuse(*args: object, **kwargs: object) -> NoReturn:
        raise AssertionError(f"a unit test {what}: take the db/ws fixture, or mark it "
                             "@pytest.mark.integration (see tests/conftest.py)")
    return refuse


@contextmanager
def _pure() -> Iterator[None]:
    """Refuse what a unit test must not reach for, so a wrong marker fails `make test-fast`
    at once instead of slowing it down or letting it flake."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(subprocess.Popen, "__init__", _refuse("started a subprocess"))
        for name in ("fork", "system", "posix_spawn", "posix_spawnp"):
            patch.setattr(os, name, _refuse("started a process"))
        patch.setattr(socket.socket, "connect", _refuse("opened a connection"))
        patch.setattr(socket.socket, "connect_ex", _refuse("opened a connection"))
        patch.setattr(socket.socket, "bind", _refuse("started a server"))
        patch.setattr(DefaultDialect, "connect", _refuse("opened a database"))
        patch.setattr(sqlite3, "connect", _refuse("opened a database"))
        yield


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    if item.get_closest_marker("unit") is None:
        return (yield)
    with _pure():
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    if item.get_closest_marker("unit") is None:
        return (yield)
    with _pure():
        return (yield)
