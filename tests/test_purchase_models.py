"""The purchase models against published results: BG/NBD and Gamma-Gamma on the CDNOW data
that the MIT-licensed lifetimes wheel ships (tests/data/README.md), the summariser against
that data's own summary, and the model's conditional predictions against a simulation."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest

from mailer.insight.bgnbd import (
    BgNbd,
    expected_purchases,
    fit_bgnbd,
    p_alive,
    prob_at_least_one,
    time_to_likely_purchase,
)
from mailer.insight.gamma_gamma import (
    GammaGamma,
    conditional_expected_value,
    fit_gamma_gamma,
    population_mean,
)
from mailer.insight.purchases import Fitted, Thresholds, Unfit, fit_or_reason, summarise

DATA = Path(__file__).resolve().parent / "data"
# FHL 2005, table 1 / Fader & Hardie's Gamma-Gamma note, on the same 2,357 CDNOW customers
PUBLISHED_BGNBD = BgNbd(r=0.243, alpha=4.414, a=0.793, b=2.426)
PUBLISHED_GG = GammaGamma(p=6.25, q=3.74, gamma=15.44)
EPOCH = dt.date(1997, 1, 1)


def _summary() -> np.ndarray:
    """ID, frequency, recency, T (weeks), from the wheel's cdnow_customers_summary.csv."""
    return np.loadtxt(DATA / "cdnow_customers_summary.csv", delimiter=",", skiprows=1)


def _with_values() -> np.ndarray:
    """ID, x, t_x, T, zbar (mean value of the repeat purchases, dollars)."""
    return np.loadtxt(DATA / "cdnow_customers_summary_with_transactions.csv", delimiter=",",
                      skiprows=1)


def _raw() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CDNOW_sample.txt: customer index (from its 1..2357 id), days since 1997-01-01, dollars."""
    rows = [line.split() for line in (DATA / "CDNOW_sample.txt").read_text().splitlines()]
    customer = np.array([int(r[1]) - 1 for r in rows])
    days = np.array([(dt.date(int(r[2][:4]), int(r[2][4:6]), int(r[2][6:])) - EPOCH).days
                     for r in rows], dtype=float)
    return customer, days, np.array([float(r[4]) for r in rows])


def _close(got: float, want: float, within: float = 0.01) -> bool:
    return abs(got - want) <= within * abs(want)


# --- BG/NBD -------------------------------------------------------------------------------

def test_bgnbd_fit_on_the_cdnow_summary_reproduces_the_published_parameters() -> None:
    s = _summary()
    fit = fit_bgnbd(s[:, 1], s[:, 2], s[:, 3])
    assert fit.converged and not fit.at_bound
    got = fit.params
    for name in ("r", "alpha", "a", "b"):
        assert _close(getattr(got, name), getattr(PUBLISHED_BGNBD, name)), (name, got)


def test_conditional_expectation_matches_hardies_spreadsheet() -> None:
    # lifetimes' test suite, from Hardie's BG/NBD spreadsheet: customer 1 of CDNOW
    # (x = 2, t_x = 30.43, T = 38.86) expects 1.226 purchases in the next 39 weeks
    s = _summary()
    fitted = fit_bgnbd(s[:, 1], s[:, 2], s[:, 3]).params
    assert abs(float(expected_purchases(fitted, 39, 2, 30.43, 38.86)[()]) - 1.226) < 0.001


def test_with_no_history_the_expectation_is_the_papers_unconditional_one() -> None:
    # E[X(t)] (FHL eq. 9) at these weeks, from the same spreadsheet via lifetimes' tests
    s = _summary()
    fitted = fit_bgnbd(s[:, 1], s[:, 2], s[:, 3]).params
    weeks = np.array([0.1429, 1.0, 3.00, 31.8571, 32.00, 78.00])
    want = np.array([0.0078, 0.0532, 0.1506, 1.0405, 1.0437, 1.8576])
    np.testing.assert_allclose(expected_purchases(fitted, weeks, 0, 0, 0), want, atol=6e-4)


def test_no_purchase_probability_matches_r_btyd() -> None:
    # R BTYD's bgnbd.pmf at the published parameters: P(X(39) = 0) = 0.5737864
    none = 1.0 - prob_at_least_one(PUBLISHED_BGNBD, 39, 0, 0, 0)
    assert abs(float(none[()]) - 0.5737864) < 1e-6


def test_p_alive_is_one_without_repeat_purchases_and_falls_with_silence() -> None:
    P = PUBLISHED_BGNBD
    assert p_alive(P, [0, 0], [0, 0], [1, 500]).tolist() == [1.0, 1.0]
    silence = p_alive(P, 3, 10, np.array([10, 20, 40, 80]))
    assert silence[0] > silence[1] > silence[2] > silence[3] > 0
    recent = p_alive(P, 3, np.array([5, 20, 39]), 40)
    assert recent[0] < recent[1] < recent[2] <= 1
    grid = p_alive(P, *np.meshgrid(np.arange(0, 100, 10), np.arange(0, 100, 10), 100))
    assert np.all((grid >= 0) & (grid <= 1))


def test_large_counts_and_ages_stay_finite() -> None:
    P = PUBLISHED_BGNBD
    x = np.array([0, 1, 50, 1_000, 10_000, 100_000])
    ages = np.full(x.shape, 3_000.0)
    e = expected_purchases(P, 365, x, ages, ages)
    assert np.all(np.isfinite(e)) and np.all(np.diff(e) > 0)
    # a near-constant drop-out (large a and b) overflows Euler's form; the paper's holds
    near_constant = BgNbd(r=0.27, alpha=30.5, a=1454.6, b=6377.4)
    e2 = expected_purchases(near_constant, 90, [0, 2, 30], [0, 50, 100], [103, 103, 103])
    e3 = expected_purchases(BgNbd(0.27, 30.5, 1455.6, 6381.8), 90, [0, 2, 30], [0, 50, 100],
                            [103, 103, 103])
    assert np.all(np.isfinite(e2)) and np.allclose(e2, e3, rtol=1e-3)


def test_a_equal_to_one_is_the_limit_of_its_neighbours() -> None:
    at_one = expected_purchases(BgNbd(0.243, 4.414, 1.0, 2.426), 39, 2, 30.43, 38.86)
    near = expected_purchases(BgNbd(0.243, 4.414, 1.0 + 1e-4, 2.426), 39, 2, 30.43, 38.86)
    assert np.isfinite(at_one) and abs(float(at_one[()]) - float(near[()])) < 1e-3


def _simulate(params: BgNbd, customers: int, until: float, seed: int
              ) -> tuple[np.ndarray, list[np.ndarray]]:
    """BG/NBD customers born at 0: each one's repeat purchase times up to `until`."""
    rng = np.random.default_rng(seed)
    rate = rng.gamma(params.r, 1.0 / params.alpha, customers)
    drop = rng.beta(params.a, params.b, customers)
    now = np.zeros(customers)
    alive = np.ones(customers, dtype=bool)
    times: list[list[float]] = [[] for _ in range(customers)]
    while alive.any():
        now[alive] += rng.exponential(1.0 / rate[alive])
        alive &= now <= until
        for i in np.flatnonzero(alive):
            times[i].append(float(now[i]))
        alive &= rng.random(customers) >= drop
    return rate, [np.array(t) for t in times]


def test_conditional_predictions_agree_with_a_simulation() -> None:
    # Customers simulated from the model, observed for 39 weeks: summed over them, the
    # conditional P(at least one purchase in the next 39) and E[purchases in the next 39]
    # must match what the simulation's customers then did (within 4 standard errors).
    P, T, t = PUBLISHED_BGNBD, 39.0, 39.0
    _, times = _simulate(P, 20_000, T + t, seed=7)
    past = [ts[ts <= T] for ts in times]
    x = np.array([len(p) for p in past], dtype=float)
    t_x = np.array([p[-1] if len(p) else 0.0 for p in past])
    future = np.array([int(np.sum(ts > T)) for ts in times])
    prob = prob_at_least_one(P, t, x, t_x, T)
    assert abs(prob.sum() - np.sum(future > 0)) < 4 * np.sqrt(np.sum(prob * (1 - prob)))
    expected = expected_purchases(P, t, x, t_x, T)
    assert abs(expected.sum() - future.sum()) < 0.03 * future.sum()


def test_time_to_likely_purchase_is_where_the_probability_reaches_the_level() -> None:
    P = PUBLISHED_BGNBD
    x, t_x, T = np.array([2, 6, 20, 0]), np.array([30.43, 30.43, 38.0, 0]), 38.86
    t = time_to_likely_purchase(P, x, t_x, T)
    likely = np.isfinite(t)
    assert likely.tolist() == (p_alive(P, x, t_x, T) > 0.5).tolist()
    assert likely.any()
    np.testing.assert_allclose(prob_at_least_one(P, t[likely], x[likely], t_x[likely], T), 0.5)
    earlier = prob_at_least_one(P, t[likely] * 0.999, x[likely], t_x[likely], T)
    assert np.all(earlier < 0.5)
    assert np.isnan(time_to_likely_purchase(P, x, t_x, T, horizon=float(np.nanmin(t)) / 2)).all()


# --- Gamma-Gamma --------------------------------------------------------------------------

def test_gamma_gamma_fit_on_cdnow_repeat_buyers_reproduces_the_published_parameters() -> None:
    w = _with_values()
    repeat = w[:, 1] > 0
    assert repeat.sum() == 946  # the note's repeat buyers
    fit = fit_gamma_gamma(w[repeat, 1], w[repeat, 4])
    assert fit.converged and not fit.at_bound
    for name in ("p", "q", "gamma"):
        assert _close(getattr(fit.params, name), getattr(PUBLISHED_GG, name)), (name, fit)
    # CLVTools' correctness test for Fader & Hardie's estimates: LL = -4055.9177
    assert abs(fit.log_likelihood - (-4055.9177)) < 0.05


def test_conditional_expected_value_matches_hardies_spreadsheet() -> None:
    # The first ten CDNOW customers, from Hardie's spreadsheet via lifetimes' tests
    w = _with_values()
    repeat = w[:, 1] > 0
    fitted = fit_gamma_gamma(w[repeat, 1], w[repeat, 4]).params
    want = [24.65, 18.91, 35.17, 35.17, 35.17, 71.46, 18.91, 35.17, 27.28, 35.17]
    np.testing.assert_allclose(conditional_expected_value(fitted, w[:10, 1], w[:10, 4]), want,
                               atol=0.01)
    assert conditional_expected_value(fitted, 0, 0)[()] == pytest.approx(population_mean(fitted))


# --- the summariser -----------------------------------------------------------------------

def test_the_raw_cdnow_orders_summarise_to_the_published_summary() -> None:
    customer, days, dollars = _raw()
    now = float((dt.date(1997, 10, 1) - EPOCH).days)  # 1997-10-01 00:00: Sep 30 is the last day
    s = summarise(customer, days, now, unit_days=7, value=dollars)
    want = _summary()
    assert s.buyer.all() and s.x.size == 2357
    assert s.x.tolist() == want[:, 1].tolist()
    np.testing.assert_allclose(s.t_x, want[:, 2], atol=0.005)
    np.testing.assert_allclose(s.T, want[:, 3], atol=0.005)
    np.testing.assert_allclose(s.m_x, _with_values()[:, 4], atol=0.005)
    # several orders on one day are one purchase: counting orders would not match
    before = days < now
    orders = np.bincount(customer[before], minlength=2357) - 1
    assert np.sum(orders != s.x) > 0


def test_summarise_ignores_orders_from_now_on_and_counts_today() -> None:
    # customer 0: days 0 and 10.2 (before now), 10.9 (after now); customer 1: nothing before
    s = summarise([0, 0, 0, 1], [0.5, 10.2, 10.9, 11.0], now=10.5, customers=3)
    assert s.buyer.tolist() == [True, False, False]
    assert (s.x[0], s.t_x[0], s.T[0]) == (1.0, 10.0, 10.0)
    empty = summarise([], [], now=5.0, customers=2)
    assert empty.buyer.tolist() == [False, False]


# --- can the data support a model? --------------------------------------------------------

def test_cdnow_is_fitted_with_the_published_parameters() -> None:
    customer, days, dollars = _raw()
    s = summarise(customer, days, 273.0, unit_days=7, value=dollars)
    got = fit_or_reason(s)
    assert isinstance(got, Fitted), got
    assert (got.customers, got.repeat_buyers, got.days_of_history) == (2357, 946, 272)
    assert _close(got.purchases.r, 0.243) and _close(got.value.p, 6.25)


def test_too_few_repeat_buyers_or_too_short_a_history_is_a_reason_not_a_number() -> None:
    customer, days, dollars = _raw()
    few = np.isin(customer, np.arange(60))
    small = summarise(customer[few], days[few], 273.0, value=dollars[few], customers=60)
    got = fit_or_reason(small)
    assert isinstance(got, Unfit) and got.repeat_buyers < 50
    assert got.reason == f"{got.repeat_buyers} repeat buyers; the models need at least 50"
    short = summarise(customer, days, 100.0, value=dollars)
    got = fit_or_reason(short)
    assert isinstance(got, Unfit)
    assert got.reason == "99 days of order history; the models need at least 120"
    assert isinstance(fit_or_reason(short, Thresholds(repeat_buyers=50, days_of_history=90)),
                      Fitted)


def test_identical_order_values_are_degenerate_for_the_value_model() -> None:
    customer, days, _ = _raw()
    s = summarise(customer, days, 273.0, value=np.full(days.shape, 20.0))
    got = fit_or_reason(s)
    assert isinstance(got, Unfit) and "order-value model" in got.reason
