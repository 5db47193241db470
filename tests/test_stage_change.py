"""`trigger: stage_change` (issue 18, item 3) and the stages updates around it (item 2): on
both databases, through the real CLI.

The store (workspace zone Europe/Berlin, default rules: lapsed after 180 days, commitment
at 4 orders within 365 days). T1 = 2026-11-23 10:00 Berlin (09:00Z), the first recording;
T2 = 2026-11-29T03:00Z (Berlin 04:00 on the 29th, Los Angeles 19:00 on the 28th):

- A: one order 2026-05-20: in termination at T1 already (a first recording: never mailed);
- B (Los Angeles): one order 2026-06-01T09:00Z: exploration at T1, lapses 2026-11-28T09:00Z;
- D: four orders, the last 2026-05-31T12:00Z: commitment at T1, termination at T2;
- C: orders 2026-06-01 and 2026-10-01: expansion at both;
- E: no order at T1, one on 2026-11-25: awareness, then exploration (not termination).
"""

from __future__ import annotations

import re
import subprocess
import sys
from datetime import UTC, datetime
from typing import Any, get_args

import pytest
from sqlalchemy import text

from mailer.config.campaign import StageName
from mailer.config.settings import STAGE_NAMES
from tests.conftest import SETTINGS, Workspace
from tests.smtp_server import FaultServer
from tests.test_crash import _environment as _env
from tests.test_crash import _wait_for
from tests.test_daemon import _stop
from tests.test_delivery import KEY, TEMPLATE

T1, T2 = "2026-11-23T10:00", "2026-11-29T03:00:00Z"
CUSTOMERS = """\
id,email,first_name,timezone
A,anna@example.com,Anna,
B,bob@example.com,Bob,America/Los_Angeles
C,chloe@example.com,Chloe,
D,dora@example.com,Dora,
E,emil@example.com,Emil,
"""
ORDERS = [("A1", "A", "2026-05-20T09:00:00Z"), ("B1", "B", "2026-06-01T09:00:00Z"),
          ("C1", "C", "2026-06-01T09:00:00Z"), ("C2", "C", "2026-10-01T09:00:00Z"),
          ("D1", "D", "2026-01-10T09:00:00Z"), ("D2", "D", "2026-02-10T09:00:00Z"),
          ("D3", "D", "2026-04-10T09:00:00Z"), ("D4", "D", "2026-05-31T12:00:00Z")]
LATER_ORDER = [("E1", "E", "2026-11-25T09:00:00Z")]


def _campaign(extra: str = "") -> str:
    return ("name: Come back\ntrigger: stage_change\nto: termination\n" + extra +
            "segment: everyone\ntemplate: note.html\nsubject: We miss you\n")


def _orders_csv(rows: list[tuple[str, str, str]]) -> str:
    return "order_id,customer_id,placed_at,status,currency,total\n" + "".join(
        f"{order},{customer},{placed},paid,EUR,10\n" for order, customer, placed in rows)


@pytest.fixture
def store(db: Workspace) -> Workspace:
    db.write("mailer.yaml", SETTINGS + "policy: {frequency: [{max: 10, per: 1d}]}\n")
    db.write("segments/everyone.yaml", "description: all\nall: [{orders: {at_least: 0}}]\n")
    db.write("templates/note.html", TEMPLATE)
    db.write("campaigns/back.yaml", _campaign())
    db.write("campaigns/regulars.yaml", _campaign("from: commitment\n"))
    db.write("customers.csv", CUSTOMERS)
    db.write("orders.csv", _orders_csv(ORDERS))
    for kind in ("customers", "orders"):
        result = db.run("import", kind, f"{kind}.csv", "--now", T1)
        assert result.code == 0, result.stderr
    return db


def history(db: Workspace) -> list[tuple[str, str | None, str]]:
    return [(r[0], r[1], r[2]) for r in db.query(
        "SELECT c.store_id, h.from_stage, h.to_stage FROM stage_history h "
        "JOIN customers c ON c.id = h.customer_id ORDER BY h.id")]


def planned(db: Workspace, campaign: str, now: str) -> list[tuple[str, str]]:
    result = db.run("plan", campaign, "--now", now, "--json")
    assert result.code == 0, result.stdout + result.stderr
    return [(r["id"], r["occurrence"]) for r in result.json()["recipients"]]


def send(db: Workspace, server: FaultServer, campaign: str, now: str) -> dict[str, Any]:
    db.env.update({"MAILER_SMTP_URL": server.url + "?timeout=2", "MAILER_SECRET_KEY": KEY})
    result = db.run("send", campaign, "--now", now, "--json")
    assert result.code == 0, result.stdout + result.stderr
    document: dict[str, Any] = result.json()
    return document


def test_the_stage_names_are_the_settings_names() -> None:
    assert get_args(StageName) == STAGE_NAMES


def test_the_import_records_first_stages_and_nobody_is_due_for_them(store: Workspace) -> None:
    # A first load (customers, then their orders): the orders' import records each
    # customer's stage for the first time, so it moves nobody and mails nobody (had the
    # customers' import recorded them all in awareness, every buyer would have "moved").
    assert sorted(history(store)) == [
        ("A", None, "termination"), ("B", None, "exploration"), ("C", None, "expansion"),
        ("D", None, "commitment"), ("E", None, "awareness")]
    assert planned(store, "back", T1) == []


def test_a_first_recording_in_termination_is_never_a_change(store: Workspace) -> None:
    """An upgrade mails nobody: the first `stages update` over a store without history
    records stages, and a stage_change campaign finds no change in them."""
    engine = store.engine()
    with engine.begin() as conn:  # as a store before the stages migration
        conn.execute(text("DELETE FROM stage_history"))
    engine.dispose()
    update = store.run("stages", "update", "--now", T1, "--json").json()
    assert (update["recorded"], update["changed"]) == (5, 0)
    assert ("A", None, "termination") in history(store)
    assert planned(store, "back", T1) == []


def test_a_change_into_termination_is_mailed_once_in_its_local_day(
        store: Workspace) -> None:
    with FaultServer() as server:
        assert send(store, server, "back", T1)["planned"] == 0  # a first load: nobody
        store.write("later.csv", _orders_csv(LATER_ORDER))
        imported = store.run("import", "orders", "later.csv", "--now", "2026-11-25T10:00")
        assert imported.code == 0, imported.stderr
        assert imported.stdout.splitlines() == [
            "later.csv: 1 order line written, 0 skipped",
            "stages: 0 customers recorded first, 1 change of stage"]
        update = store.run("stages", "update", "--now", T2, "--json").json()
        assert update["moves"] == [
            {"from": "exploration", "to": "termination", "customers": 1},
            {"from": "commitment", "to": "termination", "customers": 1}]
        # B's change is on the 28th in Los Angeles, D's on the 29th in Berlin; E moved to
        # exploration, not termination; A was first recorded in termination: no change.
        assert planned(store, "back", T2) == [("B", "stage:termination:2026-11-28"),
                                              ("D", "stage:termination:2026-11-29")]
        assert planned(store, "regulars", T2) == [("D", "stage:termination:2026-11-29")]
        sent = send(store, server, "back", T2)
        assert (sent["planned"], sent["sent"]) == (2, 2)
        expiries = {r[0]: r[1] for r in store.query(
            "SELECT c.store_id, d.expires_at FROM deliveries d JOIN customers c "
            "ON c.id = d.customer_id WHERE d.occurrence LIKE 'stage:termination:2026-11-2_' "
            "AND c.store_id IN ('B', 'D')")}
        # The end of the next local day: 30 November 00:00 in Los Angeles and in Berlin.
        assert {k: _utc(v) for k, v in expiries.items()} == {
            "B": datetime(2026, 11, 30, 8, tzinfo=UTC),
            "D": datetime(2026, 11, 30, 23, tzinfo=UTC)}
        # Later the same day: nothing new.
        again = send(store, server, "back", "2026-11-29T10:00:00Z")
        assert (again["planned"], again["excluded"]) == (0, {"already_sent": 2})
        assert len(server.caught) == 2
    # Past the next local day, the change is no longer due (and a plan shows nobody).
    assert planned(store, "regulars", "2026-12-01T00:30:00Z") == []


def _utc(value: Any) -> datetime:
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return moment.replace(tzinfo=moment.tzinfo or UTC).astimezone(UTC)


def test_from_and_to_are_checked(store: Workspace) -> None:
    store.write("campaigns/back.yaml", _campaign("from: termination\n"))
    store.write("campaigns/regulars.yaml", _campaign().replace("to: termination", "to: lost"))
    store.write("campaigns/other.yaml", "name: x\ntrigger: once\nat: 2026-12-01T10:00\n"
                "to: termination\nsegment: everyone\ntemplate: note.html\nsubject: x\n")
    store.write("campaigns/bare.yaml", _campaign().replace("to: termination\n", ""))
    result = store.run("validate")
    assert result.code != 0
    text = result.stdout + result.stderr
    assert "from and to name the same stage" in text
    assert "campaigns/regulars.yaml:3: to:" in text
    assert "to works with stage_change campaigns only" in text
    assert "a stage_change campaign needs to" in text


def test_the_daemon_updates_stages_at_its_start_and_mails_the_change(
        store: Workspace) -> None:
    with FaultServer() as server:
        send(store, server, "back", T1)  # A's mail, so only the daemon's change is left
        server.caught.clear()
        daemon = subprocess.Popen(
            [sys.executable, "-m", "mailer.cli", "--workspace", str(store.root), "run",
             "--interval", "1", "--now", T2], env=_env(store, server), text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            arrived = _wait_for(lambda: len(server.caught) == 3, 30)
            # the same hourly job recommends and refits the purchase models (none fitted)
            refitted = _wait_for(lambda: store.query(
                "SELECT count(*) FROM prediction_fits")[0][0] == 1, 30)
        finally:
            _, log = _stop(daemon)
    assert arrived and refitted, log
    # back to B and D, regulars (from commitment) to D.
    assert sorted(c.message()["To"] for c in server.caught) == [
        "Bob <bob@example.com>", "Dora <dora@example.com>", "Dora <dora@example.com>"]
    line = next(line for line in log.splitlines() if "stages update now=" in line)
    assert re.search(r"stages update now=2026-11-29T03:00:0\dZ recorded=0 changed=2 "
                     r"exploration->termination=1 commitment->termination=1$", line), line
    line = next(line for line in log.splitlines() if "predict now=" in line)
    # as of the daemon's clock, which runs on from its --now while the job works
    assert re.search(r"predict now=2026-11-29T03:0\d:\d\dZ not fitted: ", line), line
    # the recommendations come first in the same job (the fit is recorded last)
    assert re.search(r"recommend now=2026-11-29T03:0\d:\d\dZ customers=", log), log
