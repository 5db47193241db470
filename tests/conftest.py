"""Shared fixtures: a workspace on SQLite or PostgreSQL and the real CLI in-process.

Database tests take the `db` fixture, parametrised over both databases: the same
contract suite runs on each. PostgreSQL comes from MAILER_TEST_POSTGRES_URL (a
database on the server used to create `mailer_test_*` databases); without it the
local default is tried. In CI a missing PostgreSQL fails the run; elsewhere the
PostgreSQL half is skipped with one line in the summary.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from mailer.cli import main
from mailer.db import create, database_url, upgrade

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
            with runner.isolation(input=stdin, env=self.env) as streams:
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


def _truncate(url: str) -> None:
    engine = create(database_url(env_url=url, configured=None, root=Path(".")))
    with engine.begin() as conn:
        tables = [row[0] for row in conn.execute(text(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
            "AND tablename <> 'alembic_version'"))]
        if tables:
            conn.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Workspace:
    """A workspace with settings, on SQLite (its own file) or on the shared PostgreSQL."""
    database = None
    if request.param == "postgresql":
        database = request.getfixturevalue("postgres_url")
        _truncate(database)
    workspace = Workspace(tmp_path / "ws", database)
    workspace.root.mkdir()
    workspace.write("mailer.yaml", SETTINGS)
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
