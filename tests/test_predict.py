"""`mailer predict` (issue 18, item 4) through the real CLI on both databases.

A store too small for the models is told why and keeps no prediction. A store whose orders
are simulated from the BG/NBD and Gamma-Gamma processes with known parameters (numpy, a
fixed seed: 300 customers over 400 days) is imported as CSV and fitted: the parameters come
back near the simulation's, every buyer has a prediction, churn_risk follows p_alive, two
customers' predictions equal what the insight functions give for their orders summarised by
hand (the oracle), and the holdout compares sane numbers. The segment conditions
churn_risk, p_alive and predicted_clv pick exactly the customers whose stored values
satisfy them; a customer without a prediction is in none. `mailer validate` accepts them and
refuses typos with a did-you-mean.
"""

from __future__ import annotations

import math
import threading
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from sqlalchemy import text

from mailer.insight.bgnbd import BgNbd, expected_purchases, p_alive, time_to_likely_purchase
from mailer.insight.gamma_gamma import GammaGamma, conditional_expected_value
from mailer.store.locks import PREDICT_KEY
from tests.conftest import Workspace

NOW = "2026-11-23T10:00"  # Berlin, 09:00Z
NOW_UTC = datetime(2026, 11, 23, 9, tzinfo=UTC)
BERLIN = ZoneInfo("Europe/Berlin")
DAYS = 400
CUSTOMERS = 300
# The simulation's truth, time in days, money in euros.
TRUE = {"r": 0.8, "alpha": 40.0, "a": 0.8, "b": 4.0, "p": 6.0, "q": 4.0, "gamma": 15.0}
PARAMETERS = ("r", "alpha", "a", "b", "p", "q", "gamma")

Orders = dict[str, list[tuple[datetime, int]]]  # customer -> [(placed at UTC, cents)]


def _simulate(seed: int = 18) -> Orders:
    """BG/NBD: each customer buys at rate λ ~ Gamma(r, α) from a first purchase in the first
    60 days, and after each purchase leaves for good with probability p ~ Beta(a, b);
    Gamma-Gamma: each order is worth Gamma(p, ν) with ν ~ Gamma(q, γ) per customer."""
    rng = np.random.default_rng(seed)
    start = NOW_UTC - timedelta(days=DAYS)
    orders: Orders = {}
    for n in range(CUSTOMERS):
        rate = rng.gamma(TRUE["r"], 1 / TRUE["alpha"])
        leave = rng.beta(TRUE["a"], TRUE["b"])
        nu = rng.gamma(TRUE["q"], 1 / TRUE["gamma"])
        t = rng.uniform(0, 60)
        placed = []
        while t < DAYS:
            cents = max(1, round(rng.gamma(TRUE["p"], 1 / nu) * 100))
            placed.append((start + timedelta(seconds=round(t * 86_400)), cents))
            if rng.random() < leave:
                break
            t += rng.exponential(1 / rate)
        orders[f"C{n:03d}"] = placed
    return orders


ORDERS = _simulate()


def _csv(orders: Orders) -> tuple[str, str]:
    customers = ["id,email", "NONE,none@example.com"]
    lines = ["order_id,customer_id,placed_at,status,currency,total"]
    for customer, placed in orders.items():
        customers.append(f"{customer},{customer.lower()}@example.com")
        for n, (at, cents) in enumerate(placed):
            lines.append(f"{customer}-{n},{customer},{at:%Y-%m-%dT%H:%M:%SZ},paid,EUR,"
                         f"{cents // 100}.{cents % 100:02d}")
    # neither a refund nor another currency is a purchase
    lines.append(f"X-1,C000,{NOW_UTC - timedelta(days=3):%Y-%m-%dT%H:%M:%SZ},refunded,EUR,50")
    lines.append(f"X-2,C001,{NOW_UTC - timedelta(days=2):%Y-%m-%dT%H:%M:%SZ},paid,USD,50")
    return "\n".join(customers) + "\n", "\n".join(lines) + "\n"


def _import(db: Workspace, orders: Orders) -> None:
    customers, order_rows = _csv(orders)
    db.write("customers.csv", customers)
    db.write("orders.csv", order_rows)
    assert db.run("import", "customers", "customers.csv", "--now", NOW).code == 0
    result = db.run("import", "orders", "orders.csv", "--now", NOW)
    assert result.code == 0, result.stderr


def _predictions(db: Workspace) -> dict[str, dict[str, object]]:
    rows = db.query("SELECT c.store_id, p.p_alive, p.expected_orders_90d, "
                    "p.predicted_clv_365d, p.next_order_expected_at, p.churn_risk "
                    "FROM predictions p JOIN customers c ON c.id = p.customer_id")
    return {row[0]: {"p_alive": row[1], "expected_orders_90d": row[2], "clv": row[3],
                     "next": row[4], "churn_risk": row[5]} for row in rows}


@pytest.fixture
def fitted(db: Workspace) -> tuple[Workspace, dict[str, object]]:
    _import(db, ORDERS)
    result = db.run("predict", "--now", NOW, "--json")
    assert result.code == 0, result.stderr
    return db, result.json()


def test_a_small_store_is_told_why_and_keeps_no_prediction(db: Workspace) -> None:
    few = {customer: ORDERS[customer] for customer in list(ORDERS)[:5]}
    _import(db, few)
    result = db.run("predict", "--now", NOW, "--json")
    assert result.code == 0, result.stderr
    document = result.json()
    repeat = sum(1 for placed in few.values()
                 if len({at.astimezone(BERLIN).date() for at, _ in placed}) > 1)
    assert document == {
        "fitted": False, "now": "2026-11-23T09:00:00Z",
        "reason": f"{repeat} repeat buyers; the models need at least 50",
        "customers": 5, "repeat_buyers": repeat,
        "days_of_history": document["days_of_history"], "parameters": None, "holdout": None}
    assert db.query("SELECT count(*) FROM predictions")[0][0] == 0
    assert db.query("SELECT fitted, reason FROM prediction_fits") == [
        (False, document["reason"])]
    text = db.run("predict", "--now", NOW)
    assert text.code == 0
    assert "not fitted" in text.stdout and "at least 50" in text.stdout


def _summary(placed: list[tuple[datetime, int]]) -> tuple[int, int, int, float]:
    """x, t_x, T (whole Berlin days) and m_x (cents) of one customer, by hand."""
    by_day: dict[date, int] = defaultdict(int)
    for at, cents in placed:
        by_day[at.astimezone(BERLIN).date()] += cents
    days = sorted(by_day)
    last_seen = NOW_UTC.astimezone(BERLIN).date()  # now is 10:00, within its day
    x = len(days) - 1
    m_x = sum(by_day[day] for day in days[1:]) / x if x else 0.0
    return x, (days[-1] - days[0]).days, (last_seen - days[0]).days, m_x


def test_a_simulated_store_is_fitted_and_every_buyer_predicted(
        fitted: tuple[Workspace, dict[str, object]]) -> None:
    db, document = fitted
    assert document["fitted"] is True and document["reason"] is None
    assert document["customers"] == CUSTOMERS
    repeat = sum(1 for placed in ORDERS.values() if _summary(placed)[0] > 0)
    assert document["repeat_buyers"] == repeat
    parameters = document["parameters"]
    assert isinstance(parameters, dict) and list(parameters) == list(PARAMETERS)
    # 300 customers pin the buying rate and the mean order value, the rest loosely
    assert parameters["r"] / parameters["alpha"] == pytest.approx(TRUE["r"] / TRUE["alpha"],
                                                                  rel=0.25)
    for name in PARAMETERS:
        truth = TRUE[name] * (100 if name == "gamma" else 1)  # γ scales with money: cents
        assert truth / 3 < parameters[name] < truth * 3, name
    mean_order = parameters["p"] * parameters["gamma"] / (parameters["q"] - 1)
    assert mean_order == pytest.approx(100 * TRUE["p"] * TRUE["gamma"] / (TRUE["q"] - 1),
                                       rel=0.25)

    stored = _predictions(db)
    assert set(stored) == set(ORDERS)  # every buyer; NONE has no paid order
    for row in stored.values():
        alive = float(row["p_alive"])  # type: ignore[arg-type]
        risk = "low" if alive >= 2 / 3 else "high" if alive < 1 / 3 else "medium"
        assert row["churn_risk"] == risk
        if alive <= 0.5:
            assert row["next"] is None
    assert {row["churn_risk"] for row in stored.values()} == {"low", "medium", "high"}

    bg = BgNbd(*(parameters[name] for name in ("r", "alpha", "a", "b")))
    gg = GammaGamma(*(parameters[name] for name in ("p", "q", "gamma")))
    singles = [c for c, placed in ORDERS.items() if _summary(placed)[0] == 0]
    regular = max(ORDERS, key=lambda c: _summary(ORDERS[c])[0])
    for customer in (regular, singles[0]):
        x, t_x, T, m_x = _summary(ORDERS[customer])
        row = stored[customer]
        assert row["p_alive"] == pytest.approx(float(p_alive(bg, x, t_x, T)), rel=1e-9)
        assert row["expected_orders_90d"] == pytest.approx(
            float(expected_purchases(bg, 90, x, t_x, T)), rel=1e-9)
        clv = float(expected_purchases(bg, 365, x, t_x, T)) * float(
            conditional_expected_value(gg, x, m_x))
        assert row["clv"] == round(clv)
        wait = float(time_to_likely_purchase(bg, x, t_x, T, horizon=365))
        if math.isnan(wait):
            assert row["next"] is None
        else:
            stored_next = row["next"]
            if isinstance(stored_next, str):  # SQLite returns text from a raw query
                stored_next = datetime.fromisoformat(stored_next)
            assert isinstance(stored_next, datetime)
            expected = (NOW_UTC + timedelta(days=wait)).replace(tzinfo=None)
            assert abs(stored_next.replace(tzinfo=None) - expected) < timedelta(seconds=1)

    holdout = document["holdout"]
    assert isinstance(holdout, dict) and set(holdout) == {"days", "predicted_orders",
                                                          "actual_orders"}
    assert holdout["days"] == 90
    assert holdout["actual_orders"] > 50
    # the models are the simulation's own: the forecast of the held-out days is close
    assert holdout["predicted_orders"] == pytest.approx(holdout["actual_orders"], rel=0.35)
    fit = db.query("SELECT fitted, holdout_days, holdout_predicted, holdout_actual, r "
                   "FROM prediction_fits")
    assert fit == [(True, 90, holdout["predicted_orders"], holdout["actual_orders"],
                    parameters["r"])]

    text = db.run("predict", "--now", NOW)
    assert text.code == 0 and "holdout: the last 90 days" in text.stdout


def test_a_failed_fit_leaves_no_stale_prediction(
        fitted: tuple[Workspace, dict[str, object]]) -> None:
    db, _ = fitted
    assert db.query("SELECT count(*) FROM predictions")[0][0] == CUSTOMERS
    early = (NOW_UTC - timedelta(days=DAYS - 70)).astimezone(BERLIN)
    result = db.run("predict", "--now", f"{early:%Y-%m-%dT%H:%M}", "--json")
    assert result.code == 0
    document = result.json()
    assert document["fitted"] is False
    assert "days of order history; the models need at least 120" in document["reason"] \
        or "repeat buyers" in document["reason"]
    assert db.query("SELECT count(*) FROM predictions")[0][0] == 0
    assert db.query("SELECT count(*) FROM prediction_fits")[0][0] == 2


SEGMENTS = {
    "high": ("churn_risk: high", "p.churn_risk = 'high'"),
    "risky": ("churn_risk: {in: [medium, high]}", "p.churn_risk IN ('medium', 'high')"),
    "fading": ("p_alive: {at_most: 0.3}", "p.p_alive <= 0.3"),
    "likely": ("p_alive: {at_least: 0.9}", "p.p_alive >= 0.9"),
    "valuable": ("predicted_clv: {at_least: 150}", "p.predicted_clv_365d >= 15000"),
    "modest": ("predicted_clv: {at_most: 99.99}", "p.predicted_clv_365d <= 9999"),
    "both": ("all: [{predicted_clv: {at_least: 100}}, {churn_risk: high}, {orders: "
             "{at_least: 2}}]",
             "p.predicted_clv_365d >= 10000 AND p.churn_risk = 'high' AND "
             "(SELECT count(*) FROM orders o WHERE o.customer_id = c.id "
             "AND o.status = 'paid') >= 2"),
    "either": ("any: [{p_alive: {at_most: 0.2}}, {orders: 0}]",
               "p.p_alive <= 0.2 OR NOT EXISTS (SELECT 1 FROM orders o WHERE "
               "o.customer_id = c.id AND o.status = 'paid')"),
}


def test_segment_conditions_pick_the_stored_values(
        fitted: tuple[Workspace, dict[str, object]]) -> None:
    db, _ = fitted
    for name, (condition, _) in SEGMENTS.items():
        db.write(f"segments/{name}.yaml", f"description: {name}\n{condition}\n")
    for name, (_, sql) in SEGMENTS.items():
        result = db.run("segments", "show", name, "--now", NOW, "--limit", "1000", "--json")
        assert result.code == 0, result.stderr
        found = sorted(member["id"] for member in result.json()["members"])
        expected = sorted(row[0] for row in db.query(
            "SELECT c.store_id FROM customers c LEFT JOIN predictions p "
            f"ON p.customer_id = c.id WHERE {sql}"))
        assert found == expected, name
        assert found or name == "both", f"{name} picks nobody: a weak test"
        assert ("NONE" in found) == (name == "either"), name


def test_validate_accepts_the_conditions_and_names_typos(db: Workspace) -> None:
    for name, (condition, _) in SEGMENTS.items():
        db.write(f"segments/{name}.yaml", f"description: {name}\n{condition}\n")
    result = db.run("validate")
    assert result.code == 0, result.stdout + result.stderr
    db.write("segments/typo.yaml", "description: typo\nall:\n  - churn_risk: hihg\n"
                                   "  - p_alvie: {at_most: 0.3}\n"
                                   "  - predicted_clv: {at_leats: 500}\n"
                                   "  - p_alive: {at_most: 1.5}\n")
    result = db.run("validate", "--json")
    assert result.code == 1
    messages = {(p["field"], p["message"]) for p in result.json()["problems"]}
    assert messages == {
        ("all.0.churn_risk.eq", "expected a churn risk: low, medium, high, got 'hihg' "
                             "(did you mean high?)"),
        ("all.1.p_alvie", "unknown condition 'p_alvie' (did you mean p_alive?)"),
        ("all.2.predicted_clv.at_leats", "unknown key (did you mean at_least?)"),
        ("all.2.predicted_clv", "give at_least or at_most"),
        ("all.3.p_alive.at_most", "expected a probability from 0 to 1, got '1.5'"),
    }


PREDICTIONS_TEMPLATE = """<html><body>
{% if customer.predictions is defined %}alive={{ '%.4f' % customer.predictions.p_alive }}
risk={{ customer.predictions.churn_risk }} clv={{ customer.predictions.predicted_clv_365d }}
{% else %}no prediction{% endif %}
{% for item in recommendations %}[{{ item.sku }}|{{ item.product }}]{% endfor %}
<a href="{{ links.unsubscribe }}">Unsubscribe</a> {{ store.address }}
</body></html>
"""


def test_templates_read_the_stored_predictions_and_recommendations(
        fitted: tuple[Workspace, dict[str, object]], tmp_path: Path) -> None:
    db, _ = fitted
    db.write("segments/everyone.yaml", "description: everyone\norders: {at_least: 0}\n")
    db.write("templates/insight.html", PREDICTIONS_TEMPLATE)
    db.write("campaigns/insight.yaml", "name: Insight\ntrigger: once\nat: 2026-11-24T10:00\n"
                                       "segment: everyone\ntemplate: insight.html\n"
                                       "subject: Hi\n")
    assert db.run("validate").code == 0
    stored = _predictions(db)
    # the table `mailer recommend` fills, written here as it would: rank 1 first
    db_id = db.query("SELECT id FROM customers WHERE store_id = 'C000'")[0][0]
    engine = db.engine()
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO recommendations (customer_id, rank, sku, product, "
                          "category, computed_at) VALUES (:c, 2, 'B-2', 'Mug', 'home', :t), "
                          "(:c, 1, 'A-9', 'Tea', 'food', :t)"),
                     {"c": db_id, "t": datetime(2026, 11, 23)})
    engine.dispose()
    pages = {}
    for customer in ("C000", "NONE"):
        out = tmp_path / customer
        result = db.run("preview", "insight", "--customer", customer, "--out", str(out),
                        "--now", NOW)
        assert result.code == 0, result.stderr
        pages[customer] = (out / f"insight-01-{customer}.html").read_text()
    mine = stored["C000"]
    assert f"alive={float(str(mine['p_alive'])):.4f}" in pages["C000"]
    assert f"risk={mine['churn_risk']}" in pages["C000"]
    clv = int(str(mine["clv"]))
    assert f"clv={clv // 100}.{clv % 100:02d}" in pages["C000"]  # euros, like stats.spent
    assert "[A-9|Tea][B-2|Mug]" in pages["C000"]
    assert "no prediction" in pages["NONE"] and "[" not in pages["NONE"].split("prediction")[1]


def test_validate_names_a_misspelt_prediction_field(db: Workspace) -> None:
    db.write("segments/everyone.yaml", "description: everyone\norders: {at_least: 0}\n")
    db.write("templates/t.html", "<p>{{ customer.predictions.p_alvie }}</p>\n"
                                 '<a href="{{ links.unsubscribe }}">x</a>{{ store.address }}\n')
    db.write("campaigns/c.yaml", "name: C\ntrigger: once\nat: 2026-11-24T10:00\n"
                                 "segment: everyone\ntemplate: t.html\nsubject: Hi\n")
    result = db.run("validate")
    assert result.code == 1
    assert ("templates/t.html:1: unknown variable customer.predictions.p_alvie (did you mean "
            "p_alive?)") in result.stdout + result.stderr


def test_two_runs_at_once_on_postgresql_store_one_set(pg: Workspace) -> None:
    """A second `predict` while one is storing waits for it (without the lock, both would
    insert the same customers and one would fail on the primary key)."""
    _import(pg, ORDERS)
    assert pg.run("predict", "--now", NOW).code == 0
    engine = pg.engine()
    try:
        with engine.connect() as holder:
            holder.begin()
            holder.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": PREDICT_KEY})
            done = threading.Event()
            outcome: list[int] = []
            second = threading.Thread(target=lambda: (outcome.append(
                pg.run("predict", "--now", NOW).code), done.set()))
            second.start()
            waiting = 0
            for _ in range(600):  # until the second run waits on the lock (up to a minute)
                waiting = holder.execute(text(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                    "AND NOT granted")).scalar_one()
                if waiting or done.wait(0.1):
                    break
            assert waiting == 1 and not done.is_set()
            holder.rollback()
        second.join(timeout=60)
        assert outcome == [0]
        assert pg.query("SELECT count(*) FROM predictions")[0][0] == CUSTOMERS
        assert pg.query("SELECT count(*) FROM prediction_fits")[0][0] == 2
    finally:
        engine.dispose()
