"""The predictions and prediction_fits tables, and the paid orders the purchase models
read (`mailer predict`, mailer.app.predict).

The orders come out as flat arrays in one streamed pass (never a query per customer), so
a million orders cost three arrays of machine numbers, not a million row objects kept
alive. Writing replaces every prediction at once: a fit that failed leaves none, never a
number from an older fit beside a newer reason.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, insert, select

from mailer.store.db import IDS, Connection, Engine
from mailer.store.locks import PREDICT_KEY, one_writer
from mailer.store.models import Order, Prediction, PredictionFit

READ_BATCH = 50_000  # order rows fetched at a time
WRITE_BATCH = 5_000  # prediction rows per INSERT


@dataclass(frozen=True)
class PaidOrders:
    """One entry per paid order: the customer's id, when (UTC seconds since 1970) and its
    total in minor units of the store currency."""

    customer_id: array[int]
    placed_at: array[float]
    total_minor: array[float]


def paid_orders(engine: Engine, *, now: datetime, currency: str) -> PaidOrders:
    """Every paid order in CURRENCY placed before NOW, read in one streamed pass."""
    ids, times, totals = array("q"), array("d"), array("d")
    query = (select(Order.customer_id, Order.placed_at, Order.total_minor)
             .where(Order.status == "paid", Order.currency == currency, Order.placed_at < now))
    with engine.connect() as conn:
        result = conn.execution_options(stream_results=True, yield_per=READ_BATCH).execute(query)
        for rows in result.partitions():
            for customer_id, placed_at, total in rows:
                ids.append(customer_id)
                times.append(placed_at.timestamp())
                totals.append(total)
    return PaidOrders(ids, times, totals)


@dataclass(frozen=True)
class Fit:
    """A prediction_fits row (parameters None when not fitted)."""

    fitted_at: datetime
    now: datetime
    fitted: bool
    reason: str | None
    customers: int
    repeat_buyers: int
    days_of_history: int
    parameters: dict[str, float] | None  # r, alpha, a, b, p, q, gamma
    holdout_days: int
    holdout_predicted: float | None
    holdout_actual: int | None


PARAMETERS = ("r", "alpha", "a", "b", "p", "q", "gamma")


@dataclass(frozen=True)
class Scored:
    """One customer's predictions, as stored."""

    customer_id: int
    p_alive: float
    expected_orders_90d: float
    predicted_clv_365d: int
    next_order_expected_at: datetime | None
    churn_risk: str


def _fit_values(fit: Fit) -> dict[str, Any]:
    values: dict[str, Any] = {
        "fitted_at": fit.fitted_at, "now": fit.now, "fitted": fit.fitted, "reason": fit.reason,
        "customers": fit.customers, "repeat_buyers": fit.repeat_buyers,
        "days_of_history": fit.days_of_history, "holdout_days": fit.holdout_days,
        "holdout_predicted": fit.holdout_predicted, "holdout_actual": fit.holdout_actual}
    values.update({name: (fit.parameters or {}).get(name) for name in PARAMETERS})
    return values


def replace_predictions(engine: Engine, fit: Fit, scored: Iterable[Scored]) -> int:
    """Record FIT and make SCORED the only predictions (none when unfit), in one
    transaction: readers see the old set or the new one, never a mix; a second run at the
    same time waits (both would insert the same customers). The count written."""
    written = 0
    with engine.connect() as conn, conn.begin(), one_writer(
            engine, conn, key=PREDICT_KEY, name="predict", doing="storing predictions"):
        conn.execute(insert(PredictionFit), [_fit_values(fit)])
        conn.execute(delete(Prediction))
        batch: list[dict[str, Any]] = []
        for row in scored:
            batch.append({"customer_id": row.customer_id, "p_alive": row.p_alive,
                          "expected_orders_90d": row.expected_orders_90d,
                          "predicted_clv_365d": row.predicted_clv_365d,
                          "next_order_expected_at": row.next_order_expected_at,
                          "churn_risk": row.churn_risk, "fitted_at": fit.now})
            if len(batch) == WRITE_BATCH:
                conn.execute(insert(Prediction), batch)
                written, batch = written + len(batch), []
        if batch:
            conn.execute(insert(Prediction), batch)
            written += len(batch)
    return written


def latest_fit(engine: Engine) -> Fit | None:
    """The latest `mailer predict` run (by id: the order they were recorded in)."""
    with engine.connect() as conn:
        row = conn.execute(select(PredictionFit).order_by(PredictionFit.id.desc())
                           .limit(1)).scalars().first()
    if row is None:
        return None
    parameters = ({name: float(getattr(row, name)) for name in PARAMETERS}
                  if row.fitted else None)
    return Fit(fitted_at=row.fitted_at, now=row.now, fitted=row.fitted, reason=row.reason,
               customers=row.customers, repeat_buyers=row.repeat_buyers,
               days_of_history=row.days_of_history, parameters=parameters,
               holdout_days=row.holdout_days, holdout_predicted=row.holdout_predicted,
               holdout_actual=row.holdout_actual)


_PREDICTIONS = select(Prediction.customer_id, Prediction.p_alive, Prediction.expected_orders_90d,
                      Prediction.predicted_clv_365d, Prediction.next_order_expected_at,
                      Prediction.churn_risk).where(Prediction.customer_id.in_(IDS))


def predictions_of(conn: Connection, ids: Sequence[int]) -> dict[int, Scored]:
    """The stored predictions of the customers IDS (those without one are left out): what
    a mail's `customer.predictions` and the customer card read, once per batch."""
    if not ids:
        return {}
    rows = conn.execute(_PREDICTIONS, {"ids": list(ids)})
    return {row[0]: Scored(*row) for row in rows}
