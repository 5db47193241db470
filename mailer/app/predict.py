"""`mailer predict`: fit the purchase models on the store's paid orders and store every
buyer's predictions (docs/customers.md, "Predictions").

Orders are read once (mailer.store.insight.predictions.paid_orders), counted in local days of the
workspace zone, summarised and fitted by mailer.insight; when the data cannot support the
models the run is recorded with its reason and no prediction is kept. The holdout refits
on all but the last HOLDOUT_DAYS with the same thresholds and compares the repeat purchase
days the purchase model predicts for them with those that happened.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from mailer.config.conditions import CHURN_RISKS
from mailer.config.settings import Settings
from mailer.core.clock import iso_z, zone
from mailer.insight.bgnbd import (
    BgNbd,
    expected_purchases,
    fit_bgnbd,
    p_alive,
    time_to_likely_purchase,
)
from mailer.insight.gamma_gamma import conditional_expected_value
from mailer.insight.purchases import Fitted, Summary, Thresholds, fit_or_reason, summarise
from mailer.store.db import Engine
from mailer.store.insight.predictions import Fit, Scored, paid_orders, replace_predictions

HOLDOUT_DAYS = 90
HORIZON_DAYS = 365  # predicted_clv_365d, and how far next_order_expected_at looks
NEXT_ORDER_LEVEL = 0.5
DAY_SECONDS = 86_400.0
ZONE_STEP = 900  # seconds: zones change their offset on quarter hours only
LOW, MEDIUM, HIGH = CHURN_RISKS


def churn_risk(alive: float) -> str:
    """`low` from 2/3 up, `high` below 1/3, else `medium` (the issue's definition)."""
    if alive >= 2 / 3:
        return LOW
    return HIGH if alive < 1 / 3 else MEDIUM


def local_days(seconds: Iterable[float], tz: ZoneInfo) -> list[float]:
    """UTC seconds since 1970 as fractional local days since 1970-01-01 in TZ (the unit
    mailer.insight.purchases.summarise counts whole days in); the offset is looked up once
    per quarter hour, not per order."""
    offsets: dict[int, float] = {}
    days = []
    for moment in seconds:
        step = int(moment // ZONE_STEP)
        offset = offsets.get(step)
        if offset is None:
            delta = datetime.fromtimestamp(step * ZONE_STEP, tz).utcoffset()
            offset = offsets[step] = delta.total_seconds() if delta else 0.0
        days.append((moment + offset) / DAY_SECONDS)
    return days


def _scores(fitted: Fitted, summary: Summary, ids: Sequence[int],
            now: datetime) -> list[Scored] | str:
    """Every buyer's predictions, or the reason there are none (a non-finite number)."""
    buyer = summary.buyer
    x, t_x, T, m_x = summary.x[buyer], summary.t_x[buyer], summary.T[buyer], summary.m_x[buyer]
    model = fitted.purchases
    alive = p_alive(model, x, t_x, T).tolist()
    soon = expected_purchases(model, HOLDOUT_DAYS, x, t_x, T).tolist()
    year = expected_purchases(model, HORIZON_DAYS, x, t_x, T).tolist()
    worth = conditional_expected_value(fitted.value, x, m_x).tolist()
    wait = time_to_likely_purchase(model, x, t_x, T, level=NEXT_ORDER_LEVEL,
                                   horizon=HORIZON_DAYS).tolist()
    who = [ids[n] for n, is_buyer in enumerate(buyer.tolist()) if is_buyer]
    scored = []
    for n, customer_id in enumerate(who):
        clv = year[n] * worth[n]
        if not all(math.isfinite(v) for v in (alive[n], soon[n], clv)):
            return "the models gave a non-finite prediction (degenerate data)"
        scored.append(Scored(
            customer_id=customer_id, p_alive=alive[n], expected_orders_90d=soon[n],
            predicted_clv_365d=round(clv),
            next_order_expected_at=(None if math.isnan(wait[n])
                                    else now + timedelta(days=wait[n])),
            churn_risk=churn_risk(alive[n])))
    return scored


def _purchase_model(summary: Summary, thresholds: Thresholds) -> BgNbd | None:
    """The purchase model alone, under the same thresholds and checks as fit_or_reason:
    the holdout compares orders, so a value model that fails on the shorter history
    does not void it."""
    fitted = fit_or_reason(summary, thresholds)
    if isinstance(fitted, Fitted):
        return fitted.purchases
    if (fitted.repeat_buyers < thresholds.repeat_buyers
            or fitted.days_of_history < thresholds.days_of_history):
        return None
    b = summary.buyer
    if bool((summary.m_x[b][summary.x[b] > 0] <= 0).any()):
        return None
    purchases = fit_bgnbd(summary.x[b], summary.t_x[b], summary.T[b])
    return purchases.params if purchases.converged and not purchases.at_bound else None


def _holdout(customer: Sequence[int], at: Sequence[float], value: Sequence[float],
             now_days: float, summary: Summary, thresholds: Thresholds) -> dict[str, Any]:
    """Refit as of HOLDOUT_DAYS before now and compare the repeat purchase days it
    predicts for its buyers in those days with the ones they made (None: unfit)."""
    cut = now_days - HOLDOUT_DAYS
    before = summarise(customer, at, cut, value=value, customers=summary.x.size)
    b = before.buyer
    model = _purchase_model(before, thresholds)
    # a buyer before the cut keeps their first day, so new purchase days are the new x
    actual = round(float((summary.x[b] - before.x[b]).sum()))
    predicted = None
    if model is not None:
        predicted = float(expected_purchases(model, HOLDOUT_DAYS, before.x[b], before.t_x[b],
                                             before.T[b]).sum())
    return {"days": HOLDOUT_DAYS,
            "predicted_orders": None if predicted is None else round(predicted, 2),
            "actual_orders": actual if predicted is not None else None}


def _indexed(customer_ids: Iterable[int]) -> tuple[list[int], list[int]]:
    """Customer ids as indices 0..n-1 (what summarise counts in), and the ids by index."""
    index: dict[int, int] = {}
    who = [index.setdefault(c, len(index)) for c in customer_ids]
    return who, list(index)


def predict(engine: Engine, settings: Settings, now: datetime,
            thresholds: Thresholds | None = None) -> dict[str, Any]:
    """Fit as of NOW, replace the stored predictions and record the fit: the JSON of
    `mailer predict --json`."""
    now = now.replace(microsecond=0)
    limits = thresholds or Thresholds()
    tz = zone(settings.timezone)
    orders = paid_orders(engine, now=now, currency=settings.store.currency)
    who, ids = _indexed(orders.customer_id)
    at = local_days(orders.placed_at, tz)
    now_days = local_days([now.timestamp()], tz)[0]
    summary = summarise(who, at, now_days, value=orders.total_minor, customers=len(ids))
    result = fit_or_reason(summary, limits)
    parameters: dict[str, float] | None = None
    holdout: dict[str, Any] | None = None
    scored: list[Scored] = []
    reason = result.reason if not isinstance(result, Fitted) else None
    if isinstance(result, Fitted):
        outcome = _scores(result, summary, ids, now)
        if isinstance(outcome, str):
            reason = outcome
        else:
            scored = outcome
            bg, gg = result.purchases, result.value
            parameters = {"r": bg.r, "alpha": bg.alpha, "a": bg.a, "b": bg.b,
                          "p": gg.p, "q": gg.q, "gamma": gg.gamma}
            holdout = _holdout(who, at, orders.total_minor, now_days, summary, limits)
    fit = Fit(fitted_at=datetime.now(UTC), now=now, fitted=parameters is not None,
              reason=reason, customers=result.customers, repeat_buyers=result.repeat_buyers,
              days_of_history=result.days_of_history, parameters=parameters,
              holdout_days=HOLDOUT_DAYS,
              holdout_predicted=None if holdout is None else holdout["predicted_orders"],
              holdout_actual=None if holdout is None else holdout["actual_orders"])
    replace_predictions(engine, fit, scored)
    return {"fitted": fit.fitted, "reason": reason, "now": iso_z(now),
            "customers": fit.customers, "repeat_buyers": fit.repeat_buyers,
            "days_of_history": fit.days_of_history, "parameters": parameters,
            "holdout": holdout}

