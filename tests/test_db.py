"""The database layer: SQLite pragmas and self-migration, PostgreSQL refusal and upgrade."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import text

from mailer.store.db import (
    alembic_head,
    current_revision,
    database_url,
    head_revision,
    open_database,
)
from tests.conftest import SETTINGS, Workspace


def test_sqlite_workspace_creates_its_schema_in_wal_mode(ws: Workspace) -> None:
    result = ws.run("status", "--json")
    assert result.code == 0, result.stderr
    assert (ws.root / "mailer.db").exists()
    engine = ws.engine()
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() == 30000
    assert current_revision(engine) == head_revision()
    engine.dispose()


def test_the_head_written_in_db_py_is_alembics_head() -> None:
    # A new migration must move mailer.store.db.HEAD too, or no database would be upgraded.
    assert head_revision() == alembic_head() is not None


def test_the_migrations_build_exactly_the_tables_the_models_describe(db: Workspace) -> None:
    # An index or column in models.py without its migration would exist only in tests.
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from mailer.store.db import upgrade
    from mailer.store.models import Base

    engine = db.engine()
    upgrade(engine)
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
    engine.dispose()


def test_db_upgrade_is_idempotent(db: Workspace) -> None:
    result = db.run("db", "upgrade", "--json")
    assert result.code == 0, result.stderr
    assert result.json()["after"] == head_revision()
    again = db.run("db", "upgrade")
    assert again.stdout.strip() == f"the schema is up to date ({head_revision()})"


def test_postgres_without_schema_is_refused_until_db_upgrade(
        tmp_path: Path, fresh_postgres: str) -> None:
    ws = Workspace(tmp_path, fresh_postgres)
    ws.write("mailer.yaml", SETTINGS)
    refused = ws.run("status", "--json")
    assert refused.code == 3
    assert refused.json()["error"]["message"].endswith(
        "has no mailer schema: run `mailer db upgrade`")
    upgraded = ws.run("db", "upgrade")
    assert upgraded.code == 0
    assert upgraded.stdout.strip() == f"upgraded the schema from nothing to {head_revision()}"
    assert ws.run("status").code == 0


def test_unreachable_database_exits_3_without_the_password(ws: Workspace) -> None:
    ws.env = {"MAILER_DATABASE_URL": "postgresql://mailer:hunter2@127.0.0.1:1/mail"}
    result = ws.run("status", "--json")
    assert result.code == 3
    message = result.json()["error"]["message"]
    assert message.startswith("cannot open the database postgresql+psycopg://mailer:***@")
    assert "hunter2" not in result.stdout + result.stderr


def test_times_are_stored_in_utc_whatever_the_host_zone(
        db: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "America/Los_Angeles")
    time.tzset()
    db.write("c.csv", "id,email,signed_up_at\nC1,c1@example.com,2026-07-01T12:00+02:00\n")
    assert db.run("import", "customers", "c.csv").code == 0
    engine = open_database(database_url(env_url=db.database, configured=None, root=db.root))
    from sqlalchemy import select

    from mailer.store.models import Customer

    with engine.connect() as conn:
        stored = conn.execute(select(Customer.signed_up_at)).scalar_one()
    assert stored == datetime(2026, 7, 1, 10, 0, tzinfo=UTC)
    engine.dispose()
    monkeypatch.undo()
    time.tzset()


def test_deleting_a_customer_deletes_their_orders(db: Workspace) -> None:
    db.write("c.csv", "id,email\nC1,c1@example.com\n")
    db.write("o.csv", "order_id,customer_id,placed_at,total,sku\nO1,C1,2026-11-01,5,A\n")
    db.run("import", "customers", "c.csv")
    db.run("import", "orders", "o.csv")
    engine = db.engine()
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM customers"))
    engine.dispose()
    assert db.query("SELECT count(*) AS n FROM order_lines")[0].n == 0


def test_two_commands_starting_at_once_migrate_sqlite_once(ws: Workspace) -> None:
    import subprocess
    import sys

    command = [sys.executable, "-m", "mailer.cli", "--workspace", str(ws.root), "status", "--json"]
    runs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(3)]
    results = [(*run.communicate(timeout=60), run.returncode) for run in runs]
    assert [code for _, _, code in results] == [0, 0, 0], [err for _, err, _ in results]
    assert ws.query("SELECT version_num FROM alembic_version")[0][0] == head_revision()


def _migrate_to(engine: object, revision: str) -> None:
    from alembic import command

    from mailer.store.db import _alembic_config

    config = _alembic_config()
    with engine.begin() as connection:  # type: ignore[attr-defined]
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_migration_0006_folds_stored_values_and_rekeys_addresses(
        backend: str, tmp_path: Path, request: pytest.FixtureRequest,
        caplog: pytest.LogCaptureFixture) -> None:
    from mailer.store.db import create, upgrade

    url = None if backend == "sqlite" else request.getfixturevalue("fresh_postgres")
    engine = create(database_url(env_url=url, configured=None, root=tmp_path))
    _migrate_to(engine, "0005")
    now = datetime(2026, 11, 1, tzinfo=UTC).replace(tzinfo=None)
    with engine.begin() as conn:
        # Rows as an older mailer wrote them: keys with the punycode domain, no shadows.
        for number, (email, key, city) in enumerate([
                ("info@bücher.example.com", "info@bücher.example.com", "STRASSBURG"),
                ("info@xn--bcher-kva.example.com", "info@xn--bcher-kva.example.com", "Σίσυφος"),
                ("ana@xn--mnchen-3ya.de", "ana@xn--mnchen-3ya.de", "İzmir")], 1):
            conn.execute(text(
                "INSERT INTO customers (id, store_id, email, email_key, city, tags, consent, "
                "created_at, updated_at) VALUES (:id, :sid, :email, :key, :city, :tags, "
                "'subscribed', :now, :now)"),
                {"id": number, "sid": f"C{number}", "email": email, "key": key, "city": city,
                 "tags": '["VIP", "Maße"]', "now": now})
        conn.execute(text("INSERT INTO orders (id, store_id, customer_id, placed_at, status, "
                          "currency, total_minor) VALUES (1, 'O1', 1, :now, 'paid', 'EUR', 1)"),
                     {"now": now})
        conn.execute(text("INSERT INTO order_lines (id, order_id, position, sku, category, "
                          "quantity) VALUES (1, 1, 1, 'SH-1', 'SÜSSWAREN', 1)"))
        for number, key in enumerate(["x@xn--mnchen-3ya.de", "x@münchen.de",
                                      "ana@xn--mnchen-3ya.de"], 1):
            conn.execute(text("INSERT INTO suppressions (id, email_key, reason, source, "
                              "created_at) VALUES (:id, :key, 'manual', 'test', :now)"),
                         {"id": number, "key": key, "now": now})
    with caplog.at_level("WARNING", logger="mailer.migrations"):
        upgrade(engine)  # must not crash on the collision
    assert current_revision(engine) == head_revision()
    with engine.connect() as conn:
        customers = {row.store_id: row for row in conn.execute(text(
            "SELECT store_id, email_key, city_folded, tags_folded FROM customers"))}
        line = conn.execute(text("SELECT category_folded, sku_folded FROM order_lines")).one()
        suppressed = sorted(conn.execute(text("SELECT email_key FROM suppressions")).scalars())
    engine.dispose()
    assert customers["C1"].email_key == "info@bücher.example.com"
    # C2 is the same person as C1: reported, left as it was for the operator to merge.
    assert customers["C2"].email_key == "info@xn--bcher-kva.example.com"
    assert "customer C2 keeps the address key info@xn--bcher-kva.example.com" in caplog.text
    assert "as customer C1 (merge them)" in caplog.text
    assert customers["C3"].email_key == "ana@münchen.de"
    assert [customers[s].city_folded for s in ("C1", "C2", "C3")] == [
        "strassburg", "σίσυφοσ", "i\u0307zmir"]
    tags = customers["C1"].tags_folded
    assert (json.loads(tags) if isinstance(tags, str) else tags) == ["vip", "masse"]
    assert tuple(line) == ("süsswaren", "sh-1")
    assert suppressed == ["ana@münchen.de", "x@münchen.de"]
