"""Relationship stages (issue 18, items 1 and 2) against answers worked out by hand, on both
databases: the segment condition `stage:` (SQL), the rules in Python (mailer.insight.stages),
`mailer stages update` (the history), `mailer stages show` (a month's flow from orders) and
`customer.stage` in a previewed mail all agree with the oracle.

The store's clock: now = 2026-11-23 10:00 in Berlin (09:00Z); the default rules: lapsed
after 180d, commitment at 4 orders within 365d. Each customer hits one rule or one boundary.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text as sql

from mailer.config.settings import STAGE_NAMES, StageSettings
from mailer.insight.stages import Stage, stage_from_counts, stage_of, stage_of_latest
from tests.conftest import Workspace
from tests.test_segments import members

ROOT = Path(__file__).resolve().parent.parent
NOW = "2026-11-23T10:00"
NOW_UTC = datetime(2026, 11, 23, 9, tzinfo=UTC)
DAY, SECOND = timedelta(days=1), timedelta(seconds=1)

# Paid orders as spans before now; (status, span) for others; a negative span is after now.
ORDERS: dict[str, list[timedelta | tuple[str, timedelta]]] = {
    "A": [("refunded", 5 * DAY), -timedelta(hours=1)],  # nothing paid by now
    "B": [10 * DAY],
    "C": [100 * DAY, 20 * DAY],
    "D": [365 * DAY, 300 * DAY, 100 * DAY, 5 * DAY],  # the 4th exactly 365d ago counts
    "E": [365 * DAY + SECOND, 300 * DAY, 100 * DAY, 5 * DAY],  # one second too old
    "F": [180 * DAY],  # exactly lapsed_after ago: not lapsed
    "G": [180 * DAY + SECOND],  # one second more: lapsed
    "H": [300 * DAY, 250 * DAY, 200 * DAY, 190 * DAY, 181 * DAY],  # termination comes first
    "I": [("USD", 50 * DAY), ("USD", 40 * DAY), ("USD", 30 * DAY), ("USD", 20 * DAY)],
    "J": [],
}
# The oracle, by hand from the rules.
EXPECTED = {"A": "awareness", "B": "exploration", "C": "expansion", "D": "commitment",
            "E": "expansion", "F": "exploration", "G": "termination", "H": "termination",
            "I": "commitment", "J": "awareness"}


def _rows() -> list[tuple[str, str, datetime, str, str]]:
    """(order id, customer, placed at, status, currency) of every order above."""
    rows = []
    for customer, orders in ORDERS.items():
        for n, order in enumerate(orders):
            status, currency, span = "paid", "EUR", order
            if isinstance(order, tuple):
                kind, span = order
                status, currency = (kind, "EUR") if kind != "USD" else ("paid", "USD")
            assert isinstance(span, timedelta)
            rows.append((f"{customer}{n}", customer, NOW_UTC - span, status, currency))
    return rows


def _paid_times(customer: str) -> list[datetime]:
    return [placed for _, who, placed, status, _ in _rows() if who == customer
            and status == "paid"]


def _orders_csv() -> str:
    lines = ["order_id,customer_id,placed_at,status,currency,total"]
    lines += [f"{order},{customer},{placed:%Y-%m-%dT%H:%M:%SZ},{status},{currency},10"
              for order, customer, placed, status, currency in _rows()]
    return "\n".join(lines) + "\n"


def _customers_csv(ids: list[str]) -> str:
    return "id,email\n" + "".join(f"{c},{c.lower()}@example.com\n" for c in ids)


@pytest.fixture
def store(db: Workspace) -> Workspace:
    db.write("customers.csv", _customers_csv(list(ORDERS)))
    db.write("orders.csv", _orders_csv())
    assert db.run("import", "customers", "customers.csv", "--now", NOW).code == 0
    result = db.run("import", "orders", "orders.csv", "--now", NOW)
    assert result.code == 0, result.stderr
    return db


def by_stage(stages: dict[str, str]) -> dict[str, list[str]]:
    return {stage: sorted(c for c, s in stages.items() if s == stage) for stage in STAGE_NAMES}


# --- the rules in Python ------------------------------------------------------------------


def test_the_stage_names_are_the_settings_names_in_order() -> None:
    assert tuple(Stage) == STAGE_NAMES


def test_python_rules_match_the_hand_oracle() -> None:
    rules = StageSettings()
    for customer, expected in EXPECTED.items():
        times = _paid_times(customer)
        assert stage_of(times, now=NOW_UTC, rules=rules) == expected, customer
        by_now = sorted((t for t in times if t <= NOW_UTC), reverse=True)
        assert stage_of_latest(len(by_now), by_now, now=NOW_UTC, rules=rules) == expected


def test_boundaries_of_each_rule() -> None:
    rules = StageSettings(lapsed_after=timedelta(days=10), committed_orders=2,
                          committed_within=timedelta(days=30))
    at = NOW_UTC
    assert stage_from_counts(0, None, 0, now=at, rules=rules) == Stage.AWARENESS
    assert stage_from_counts(1, at - 10 * DAY, 1, now=at, rules=rules) == Stage.EXPLORATION
    assert stage_from_counts(3, at - 10 * DAY - SECOND, 3, now=at,
                             rules=rules) == Stage.TERMINATION
    assert stage_from_counts(2, at, 2, now=at, rules=rules) == Stage.COMMITMENT
    assert stage_from_counts(2, at, 1, now=at, rules=rules) == Stage.EXPANSION
    assert stage_of([at - 30 * DAY, at], now=at, rules=rules) == Stage.COMMITMENT
    assert stage_of([at - 30 * DAY - SECOND, at], now=at, rules=rules) == Stage.EXPANSION


# --- SQL: the segment condition -------------------------------------------------------------


def test_each_stage_segment_picks_the_oracles_customers(store: Workspace) -> None:
    for stage, expected in by_stage(EXPECTED).items():
        assert members(store, f"stage: {stage}") == expected, stage
    assert members(store, "stage: {in: [expansion, commitment]}") == ["C", "D", "E", "I"]
    assert members(store, "not: {stage: [awareness, termination]}") == \
        ["B", "C", "D", "E", "F", "I"]
    assert members(store, "all: [{stage: commitment}, {orders: {at_least: 4, within: 365d}}]") \
        == ["D", "I"]


def test_sql_and_python_agree_under_other_rules(store: Workspace) -> None:
    store.write("mailer.yaml", store.root.joinpath("mailer.yaml").read_text() + (
        "stages: {lapsed_after: 100d, committed_orders: 2, committed_within: 30d}\n"))
    rules = StageSettings(lapsed_after=timedelta(days=100), committed_orders=2,
                          committed_within=timedelta(days=30))
    for moment in (NOW_UTC, NOW_UTC - 60 * DAY, NOW_UTC + 90 * DAY):
        oracle = {c: str(stage_of(_paid_times(c), now=moment, rules=rules)) for c in ORDERS}
        when = f"{moment:%Y-%m-%dT%H:%M:%SZ}"
        for stage, expected in by_stage(oracle).items():
            assert members(store, f"stage: {stage}", now=when) == expected, (when, stage)


def test_a_misspelt_stage_and_a_bad_rule_are_errors(ws: Workspace) -> None:
    ws.write("segments/probe.yaml", "description: probe\nstage: comitment\n")
    result = ws.run("validate", "--json")
    assert result.code == 1
    assert "did you mean commitment?" in result.stdout
    ws.write("segments/probe.yaml", "description: probe\nstage: commitment\n")
    ws.write("mailer.yaml", ws.root.joinpath("mailer.yaml").read_text()
             + "stages: {committed_orders: 1}\n")
    result = ws.run("stages", "update", "--json")
    assert result.code == 1
    assert "stages.committed_orders" in result.stdout


# --- the history --------------------------------------------------------------------------


def test_update_records_first_then_only_changes(store: Workspace) -> None:
    with store.engine().begin() as conn:  # what the fixture's imports recorded: start over
        conn.execute(sql("DELETE FROM stage_history"))
    first = store.run("stages", "update", "--now", NOW, "--json")
    assert first.code == 0, first.stderr
    assert first.json() == {"now": "2026-11-23T09:00:00Z", "recorded": 10, "changed": 0,
                            "moves": []}
    rows = store.query("SELECT c.store_id, h.from_stage, h.to_stage FROM stage_history h "
                       "JOIN customers c ON c.id = h.customer_id ORDER BY c.store_id")
    assert [(r[0], r[1], r[2]) for r in rows] == [(c, None, s) for c, s in EXPECTED.items()]
    again = store.run("stages", "update", "--now", NOW, "--json").json()
    assert (again["recorded"], again["changed"], again["moves"]) == (0, 0, [])
    # Two days on: A's order of an hour after now is placed, F's order is 182 days old,
    # D's oldest falls out of the year.
    later = store.run("stages", "update", "--now", "2026-11-25T10:00", "--json").json()
    assert later == {"now": "2026-11-25T09:00:00Z", "recorded": 0, "changed": 3, "moves": [
        {"from": "awareness", "to": "exploration", "customers": 1},
        {"from": "exploration", "to": "termination", "customers": 1},
        {"from": "commitment", "to": "expansion", "customers": 1}]}
    # A new customer is recorded for the first time; B's second order makes it expansion.
    store.write("more.csv", _customers_csv(["K"]))
    store.write("more-orders.csv", "order_id,customer_id,placed_at,status,currency,total\n"
                                   "B9,B,2026-11-25T12:00:00Z,paid,EUR,10\n")
    assert store.run("import", "customers", "more.csv", "--now", "2026-11-26").code == 0
    imported = store.run("import", "orders", "more-orders.csv", "--now", "2026-11-26")
    assert imported.code == 0
    # an import that wrote rows updates the stages itself: K recorded, B's move found
    assert store.query("SELECT count(*) FROM stage_history h JOIN customers c "
                       "ON c.id = h.customer_id WHERE c.store_id = 'K'")[0][0] == 1
    last = store.run("stages", "update", "--now", "2026-11-26T10:00", "--json").json()
    assert (last["recorded"], last["changed"], last["moves"]) == (0, 0, [])
    history = store.query("SELECT h.from_stage, h.to_stage, h.detected_at FROM stage_history h "
                          "JOIN customers c ON c.id = h.customer_id WHERE c.store_id = 'B' "
                          "ORDER BY h.id")
    assert [(r[0], r[1]) for r in history] == [(None, "exploration"),
                                               ("exploration", "expansion")]
    text = store.run("stages", "update", "--now", "2026-11-26T11:00")
    assert text.code == 0 and "0 recorded for the first time, 0 changed" in text.stdout


def test_update_refuses_a_now_before_the_latest_recording(store: Workspace) -> None:
    assert store.run("stages", "update", "--now", NOW).code == 0
    result = store.run("stages", "update", "--now", "2026-11-01", "--json")
    assert result.code == 1
    assert "before the latest stage recording" in result.json()["error"]["message"]


def test_update_records_what_the_segments_say(store: Workspace) -> None:
    assert store.run("stages", "update", "--now", NOW).code == 0
    rows = store.query("SELECT c.store_id, h.to_stage FROM stage_history h "
                       "JOIN customers c ON c.id = h.customer_id")
    recorded = {r[0]: r[1] for r in rows}
    for stage, expected in by_stage(recorded).items():
        assert members(store, f"stage: {stage}") == expected


# --- a month's flow, from orders ----------------------------------------------------------


def test_show_the_running_month(store: Workspace) -> None:
    # November starts 2026-10-31 23:00Z; by hand, each customer's stage then and now:
    # B awareness -> exploration, C exploration -> expansion, D and I expansion ->
    # commitment, G exploration -> termination, H commitment -> termination.
    result = store.run("stages", "show", "--now", NOW, "--json")
    assert result.code == 0, result.stderr
    assert result.json() == {
        "month": "2026-11",
        "counts": dict.fromkeys(STAGE_NAMES, 2),
        "moves": [{"from": "awareness", "to": "exploration", "customers": 1},
                  {"from": "exploration", "to": "expansion", "customers": 1},
                  {"from": "exploration", "to": "termination", "customers": 1},
                  {"from": "expansion", "to": "commitment", "customers": 2},
                  {"from": "commitment", "to": "termination", "customers": 1}]}


def test_show_a_past_month_is_reproducible_and_ignores_the_history(store: Workspace) -> None:
    # October, 2026-09-30 22:00Z to 2026-10-31 23:00Z: only I moves (its first orders).
    expected = {"month": "2026-10",
                "counts": {"awareness": 3, "exploration": 3, "expansion": 3, "commitment": 1,
                           "termination": 0},
                "moves": [{"from": "awareness", "to": "expansion", "customers": 1}]}
    assert store.run("stages", "show", "--month", "2026-10", "--now", NOW,
                     "--json").json() == expected
    assert store.run("stages", "update", "--now", NOW).code == 0
    assert store.run("stages", "show", "--month", "2026-10", "--now", "2027-03-01",
                     "--json").json() == expected
    # the counts at a month's end are the stages as of then, as the segments see them
    end = "2026-11-01T00:00"
    counted = {stage: len(members(store, f"stage: {stage}", now=end)) for stage in STAGE_NAMES}
    assert counted == expected["counts"]
    text = store.run("stages", "show", "--month", "2026-10", "--now", NOW)
    assert text.code == 0 and "awareness" in text.stdout and "expansion" in text.stdout


def test_show_refuses_a_month_not_begun_and_a_bad_month(store: Workspace) -> None:
    future = store.run("stages", "show", "--month", "2026-12", "--now", NOW, "--json")
    assert future.code == 1 and "has not begun" in future.json()["error"]["message"]
    assert store.run("stages", "show", "--month", "2026-13", "--now", NOW).code == 2
    assert store.run("stages", "show", "--month", "november", "--now", NOW).code == 2


# --- templates ----------------------------------------------------------------------------


def test_preview_shows_customer_stage(store: Workspace, tmp_path: Path) -> None:
    shutil.copytree(ROOT / "templates", store.root / "templates")
    store.write("templates/stage.html", '{% extends "layout.html" %}{% block content %}'
                "<p>Your stage: {{ customer.stage }}</p>{% endblock %}")
    store.write("segments/everyone.yaml", "description: everyone\n"
                "stage: {in: [awareness, exploration, expansion, commitment, termination]}\n")
    store.write("campaigns/stage-note.yaml",
                "name: Stage note\ntrigger: schedule\nschedule: \"0 10 * * *\"\n"
                "segment: everyone\ntemplate: stage.html\n"
                "subject: \"You are in {{ customer.stage }}\"\n")
    assert store.run("validate").code == 0
    for customer, stage in EXPECTED.items():
        result = store.run("preview", "stage-note", "--customer", customer, "--now", NOW,
                           "--out", str(tmp_path / customer), "--json")
        assert result.code == 0, result.stderr
        assert result.json()["samples"][0]["subject"] == f"You are in {stage}", customer
        html = (tmp_path / customer / f"stage-note-01-{customer}.html").read_text(encoding="utf-8")
        assert f"Your stage: {stage}" in html
