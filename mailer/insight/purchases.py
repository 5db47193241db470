"""From paid orders to the purchase models' inputs, and the judgement whether the data can
support a model at all: pure functions on numpy arrays (the caller reads the store).

Time is counted in whole local days, as the CDNOW summary (and lifetimes) count it: a
customer's several orders on one day are one purchase, t_x is the days from the first
purchase day to the last, T the days from the first purchase day to the last day observed
(the day of the last instant before `now`), all divided by `unit_days` (1: days, 7: weeks).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from mailer.insight.bgnbd import BgNbd, fit_bgnbd
from mailer.insight.gamma_gamma import GammaGamma, fit_gamma_gamma

Array = NDArray[np.float64]


@dataclass(frozen=True)
class Summary:
    """One entry per customer index 0..n-1; `buyer` is False for a customer with no order
    before now (x, t_x, T and m_x are then 0 and the models leave them out)."""

    x: Array  # repeat purchase days
    t_x: Array
    T: Array
    m_x: Array  # mean value of a repeat purchase day (0 where x = 0)
    buyer: NDArray[np.bool_]
    unit_days: float


def summarise(customer: ArrayLike, at: ArrayLike, now: float, unit_days: float = 1.0,
              value: ArrayLike | None = None, customers: int | None = None) -> Summary:
    """(x, t_x, T, m_x) per customer from flat order arrays: `customer` indices, `at` in
    local days since any epoch (fractional: 1.5 is noon of day 1), `value` per order
    (a day's orders add up into one purchase's value). Orders at or after `now` are
    ignored. `customers` is n (default: the largest index + 1)."""
    who = np.asarray(customer, dtype=np.int64)
    when = np.asarray(at, dtype=np.float64)
    worth = (np.zeros_like(when) if value is None else np.asarray(value, dtype=np.float64))
    n = int(customers if customers is not None else (who.max() + 1 if who.size else 0))
    before = when < now
    who, day, worth = who[before], np.floor(when[before]).astype(np.int64), worth[before]
    last_day = math.ceil(now) - 1  # the day of the last instant before now
    if who.size == 0:
        zeros = np.zeros(n)
        return Summary(x=zeros, t_x=zeros, T=zeros, m_x=zeros, buyer=zeros > 0,
                       unit_days=unit_days)

    # one row per (customer, day), sorted by customer then day
    order = np.lexsort((day, who))
    who, day, worth = who[order], day[order], worth[order]
    starts = np.flatnonzero(np.r_[True, (who[1:] != who[:-1]) | (day[1:] != day[:-1])])
    who, day, day_value = who[starts], day[starts], np.add.reduceat(worth, starts)

    days = np.bincount(who, minlength=n).astype(np.float64)
    buyer = days > 0
    # rows are sorted, so each customer's first and last rows are their first and last days
    ids, first_row = np.unique(who, return_index=True)
    last_row = np.r_[first_row[1:], who.size].astype(np.int64) - 1
    first = np.zeros(n, dtype=np.int64)
    last = np.zeros(n, dtype=np.int64)
    first_value = np.zeros(n)
    first[ids], last[ids], first_value[ids] = day[first_row], day[last_row], day_value[first_row]
    total = np.bincount(who, weights=day_value, minlength=n)

    x = np.where(buyer, days - 1.0, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        m_x = np.where(x > 0, (total - first_value) / np.maximum(x, 1.0), 0.0)
    t_x = np.where(buyer, (last - first) / unit_days, 0.0)
    T = np.where(buyer, (last_day - first) / unit_days, 0.0)
    return Summary(x=x, t_x=t_x, T=T, m_x=m_x, buyer=buyer, unit_days=unit_days)


@dataclass(frozen=True)
class Thresholds:
    """What the data must hold before a model is fitted (docs/predictions.md says why)."""

    repeat_buyers: int = 50  # customers with at least one repeat purchase day
    days_of_history: int = 120  # from the store's first paid order to now


@dataclass(frozen=True)
class Fitted:
    purchases: BgNbd
    value: GammaGamma
    customers: int
    repeat_buyers: int
    days_of_history: int


@dataclass(frozen=True)
class Unfit:
    reason: str
    customers: int
    repeat_buyers: int
    days_of_history: int


def fit_or_reason(summary: Summary, thresholds: Thresholds | None = None) -> Fitted | Unfit:
    """Fit BG/NBD and Gamma-Gamma on the buyers, or say in words why the data cannot
    support them: too few repeat buyers, too short a history, an optimiser that did not
    converge or ended on a bound, or a value model without a finite mean (q ≤ 1)."""
    limits = thresholds or Thresholds()
    b = summary.buyer
    x, t_x, T, m_x = summary.x[b], summary.t_x[b], summary.T[b], summary.m_x[b]
    customers = int(b.sum())
    repeat = x > 0
    repeat_buyers = int(repeat.sum())
    days = round(float(T.max()) * summary.unit_days) if customers else 0

    def unfit(reason: str) -> Unfit:
        return Unfit(reason=reason, customers=customers, repeat_buyers=repeat_buyers,
                     days_of_history=days)

    if repeat_buyers < limits.repeat_buyers:
        return unfit(f"{repeat_buyers} repeat buyers; the models need at least "
                     f"{limits.repeat_buyers}")
    if days < limits.days_of_history:
        return unfit(f"{days} days of order history; the models need at least "
                     f"{limits.days_of_history}")
    if np.any(m_x[repeat] <= 0):
        return unfit("some repeat purchases have no positive value")
    purchases = fit_bgnbd(x, t_x, T)
    if not purchases.converged:
        return unfit(f"the purchase model did not converge ({purchases.message})")
    if purchases.at_bound:
        return unfit("the purchase model's parameters ran to a bound (degenerate data)")
    value = fit_gamma_gamma(x[repeat], m_x[repeat])
    if not value.converged:
        return unfit(f"the order-value model did not converge ({value.message})")
    if value.at_bound:
        return unfit("the order-value model's parameters ran to a bound (degenerate data)")
    if value.params.q <= 1.0:
        return unfit("order values are too spread for a finite expected value (q ≤ 1)")
    return Fitted(purchases=purchases.params, value=value.params, customers=customers,
                  repeat_buyers=repeat_buyers, days_of_history=days)
