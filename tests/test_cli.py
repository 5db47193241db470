"""The command line as a user meets it: help, README, exit codes, JSON, init, demo data."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import click
import pytest

from mailer.cli import COMMANDS, cli
from tests.conftest import Workspace

ROOT = Path(__file__).resolve().parent.parent


def all_commands() -> list[str]:
    names = []
    ctx = click.Context(cli)
    for name in COMMANDS:
        command = cli.get_command(ctx, name)
        assert command is not None
        if isinstance(command, click.Group):
            names.extend(f"{name} {sub}" for sub in command.list_commands(ctx))
        else:
            names.append(name)
    return names


@pytest.mark.parametrize("command", all_commands())
def test_every_command_is_in_the_readme_and_has_help(command: str, ws: Workspace) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert f"mailer {command}" in readme
    result = ws.run(*command.split(), "--help")
    assert result.code == 0
    assert result.stdout.startswith(f"Usage: mailer {command}")


def test_unknown_option_is_misuse_with_a_json_error(ws: Workspace) -> None:
    result = ws.run("status", "--jsonn")
    assert result.code == 2
    assert "No such option '--jsonn'. Did you mean '--json'?" in result.stderr
    result = ws.run("status", "--json", "--colour")
    assert result.code == 2
    assert result.json()["error"]["message"].startswith("No such option '--colour'")


def test_unparsable_now_is_misuse(ws: Workspace) -> None:
    result = ws.run("unsubscribe", "a@example.com", "--now", "tomorrow", "--json")
    assert result.code == 2
    assert "expected an ISO 8601 date-time" in result.json()["error"]["message"]


def test_invalid_settings_name_file_and_line(ws: Workspace) -> None:
    ws.write("mailer.yaml", "store: {name: X, address: Y}\nsender: {from: x@shop.example}\n"
                            "timezone: Mars/Olympus\n")
    result = ws.run("status", "--json")
    assert result.code == 1
    assert result.json()["error"] == {"message": "unknown time zone 'Mars/Olympus'",
                                      "path": "mailer.yaml", "line": 3}
    assert result.stderr.strip() == "mailer.yaml:3: timezone: unknown time zone 'Mars/Olympus'"


def test_workspace_from_the_environment(ws: Workspace, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from mailer.cli import main

    with CliRunner().isolation(env={"MAILER_WORKSPACE": str(ws.root)}) as streams:
        code = main(["status", "--json"])
        assert code == 0, streams[1].getvalue()
    assert (ws.root / "mailer.db").exists()


def test_init_copies_the_demo_workspace_and_refuses_a_full_folder(tmp_path: Path) -> None:
    target = Workspace(tmp_path, None)
    result = target.run("init", "shop")
    assert result.code == 0, result.stderr
    shop = tmp_path / "shop"
    assert (shop / "mailer.yaml").read_text() == (ROOT / "mailer.yaml").read_text()
    assert {p.name for p in shop.iterdir()} == {"mailer.yaml", "campaigns", "segments",
                                                "surveys", "templates", ".gitignore"}
    again = target.run("init", "shop", "--json")
    assert again.code == 1
    assert again.json()["error"]["message"] == (
        "shop is not empty: use --force to copy the demo workspace into it")
    assert target.run("init", "shop", "--force").code == 0
    validated = Workspace(shop, None).run("validate")
    assert validated.code == 0, validated.stderr


def test_unsubscribe_known_unknown_and_invalid(db: Workspace) -> None:
    db.write("c.csv", "id,email\nC1,Anna@example.com\n")
    db.run("import", "customers", "c.csv")
    result = db.run("unsubscribe", "anna@EXAMPLE.com", "stranger@example.org", "not-an-address",
                    "--json")
    assert result.code == 1
    assert result.json() == {
        "unsubscribed": ["anna@example.com"], "already": [],
        "suppressed": ["stranger@example.org"],
        "invalid": [{"email": "not-an-address",
                     "reason": "invalid email 'not-an-address': An email address must have an "
                               "@-sign."}]}
    row = db.query("SELECT consent, consent_source, consent_reason FROM customers")[0]
    assert tuple(row) == ("unsubscribed", "cli", "manual")
    assert [tuple(r) for r in db.query("SELECT email_key, reason FROM suppressions")] == [
        ("stranger@example.org", "manual")]
    again = db.run("unsubscribe", "anna@example.com")
    assert again.code == 0
    assert again.stdout.strip() == "anna@example.com: already opted out"


def test_status_counts_every_order_and_every_state(db: Workspace) -> None:
    db.write("c.csv", "id,email,subscribed\nC1,c1@example.com,\nC2,c2@example.com,false\n")
    db.write("o.csv", "order_id,customer_id,placed_at,status,total\n"
                      "O1,C1,2026-01-01,paid,5\nO2,C1,2030-01-01,cancelled,5\n")
    db.run("import", "customers", "c.csv")
    db.run("import", "orders", "o.csv")
    result = db.run("status", "--json")
    assert result.code == 0
    document = result.json()
    assert (document["customers"], document["subscribed"], document["orders"]) == (2, 1, 2)
    assert document["deliveries"] == {"queued": 0, "sending": 0, "sent": 0, "deferred": 0,
                                      "failed": 0, "unknown": 0, "skipped": 0, "expired": 0}


def test_demo_data_is_reproducible_and_believable(ws: Workspace, tmp_path: Path) -> None:
    args = ("demo-data", "--customers", "400", "--seed", "5", "--now", "2026-11-23T10:00")
    assert ws.run(*args, "--out", str(tmp_path / "a")).code == 0
    assert ws.run(*args, "--out", str(tmp_path / "b")).code == 0
    for name in ("customers.csv", "orders.csv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    with (tmp_path / "a" / "customers.csv").open(encoding="utf-8") as handle:
        people = list(csv.DictReader(handle))
    with (tmp_path / "a" / "orders.csv").open(encoding="utf-8") as handle:
        sales = list(csv.DictReader(handle))
    zones = {p["timezone"].split("/")[0] for p in people if p["timezone"]}
    assert {"Europe", "America", "Asia", "Africa", "Australia", "Pacific"} <= zones
    assert any(p["birth_date"].endswith("-02-29") for p in people)
    assert any(p["subscribed"] == "false" for p in people)
    scripts = {"cyrillic": "[\u0400-\u04ff]", "cjk": "[\u4e00-\u9fff]",
               "arabic": "[\u0600-\u06ff]", "greek": "[\u0370-\u03ff]"}
    names = " ".join(p["first_name"] + p["last_name"] for p in people)
    assert all(re.search(pattern, names) for pattern in scripts.values())
    assert {"paid", "refunded", "cancelled"} <= {s["status"] for s in sales}
    assert all(p["email"].rsplit("@", 1)[1].endswith(("example.com", "example.org",
                                                      "example.net", "shop.example"))
               for p in people)


def test_demo_data_fills_the_store_and_refuses_to_overwrite(db: Workspace) -> None:
    args = ("demo-data", "--customers", "150", "--seed", "2", "--now", "2026-11-23T10:00")
    first = db.run(*args, "--json")
    assert first.code == 0, first.stderr
    assert first.json()["customers"] == 150
    refused = db.run(*args)
    assert refused.code == 1
    assert "the store is not empty: use --replace" in refused.stderr
    replaced = db.run(*args, "--replace", "--json")
    assert replaced.json() == first.json()
    assert db.run("status", "--json").json()["customers"] == 150
