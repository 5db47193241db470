"""The BG/NBD model of repeat purchases (Fader, Hardie & Lee 2005, "Counting your customers
the easy way"), fitted by maximum likelihood: pure functions on numpy arrays, one entry per
customer, time in any unit (the caller's: days in mailer, weeks in the CDNOW tests).

Per customer: x repeat purchases, the last at t_x, observed for T since the first purchase.
While alive, a customer buys at rate λ ~ Gamma(r, α); after each purchase they drop out
with probability p ~ Beta(a, b).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import minimize
from scipy.special import expit, gammaln, hyp2f1

Array = NDArray[np.float64]

# The optimiser works on log-parameters inside these bounds (e^±10 ≈ 4.5e-5 .. 22,026, in
# units scaled so the longest T is 10); a fit that ends on one is degenerate, not used.
LOG_BOUND = 10.0


@dataclass(frozen=True)
class BgNbd:
    r: float
    alpha: float
    a: float
    b: float


@dataclass(frozen=True)
class BgNbdFit:
    params: BgNbd
    log_likelihood: float
    converged: bool
    at_bound: bool
    message: str


def _arrays(*values: ArrayLike) -> list[Array]:
    return [np.asarray(v, dtype=np.float64) for v in values]


def log_likelihood(params: BgNbd, x: ArrayLike, t_x: ArrayLike, T: ArrayLike) -> Array:
    """Each customer's log-likelihood, FHL 2005 eq. (6) in logs: ln L = A1 + A2 +
    ln(e^A3 + δ(x>0) e^A4), as in Fader & Hardie's note "Implementing the BG/NBD model", so
    large x and T neither overflow nor underflow."""
    x_, t_x_, T_ = _arrays(x, t_x, T)
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    a1 = gammaln(r + x_) - gammaln(r) + r * np.log(alpha)
    a2 = gammaln(a + b) + gammaln(b + x_) - gammaln(b) - gammaln(a + b + x_)
    a3 = -(r + x_) * np.log(alpha + T_)
    repeat = x_ > 0
    # b + x - 1 only where x > 0 (b - 1 may be negative)
    a4 = np.where(repeat, np.log(a) - np.log(b + np.maximum(x_, 1.0) - 1.0)
                  - (r + x_) * np.log(alpha + t_x_), -np.inf)
    return np.asarray(a1 + a2 + np.logaddexp(a3, a4), dtype=np.float64)


def fit_bgnbd(x: ArrayLike, t_x: ArrayLike, T: ArrayLike) -> BgNbdFit:
    """Maximum-likelihood r, α, a, b. Identical (x, t_x, T) rows are fitted once with their
    count as weight (in whole days most customers share their row with others), and time is
    rescaled so the longest T is 10, which puts α near 1 like the other three."""
    x_, t_x_, T_ = _arrays(x, t_x, T)
    if x_.size == 0:
        raise ValueError("no customers to fit")
    scale = float(T_.max()) / 10.0 if T_.max() > 0 else 1.0
    rows, weights = np.unique(np.column_stack([x_, t_x_ / scale, T_ / scale]), axis=0,
                              return_counts=True)
    total = float(weights.sum())

    def negative(theta: Array) -> float:
        r, alpha, a, b = np.exp(theta)
        ll = log_likelihood(BgNbd(r, alpha, a, b), rows[:, 0], rows[:, 1], rows[:, 2])
        value = -float(np.dot(weights, ll)) / total
        return value if np.isfinite(value) else 1e300

    result = minimize(negative, np.zeros(4), method="L-BFGS-B",
                      bounds=[(-LOG_BOUND, LOG_BOUND)] * 4, options={"maxiter": 500})
    r, alpha, a, b = (float(v) for v in np.exp(result.x))
    return BgNbdFit(params=BgNbd(r=r, alpha=alpha * scale, a=a, b=b),
                    log_likelihood=-float(result.fun) * total,
                    converged=bool(result.success),
                    at_bound=bool(np.any(np.abs(result.x) >= LOG_BOUND - 1e-6)),
                    message=str(result.message))


def _log_dead_odds(params: BgNbd, x: Array, t_x: Array, T: Array) -> Array:
    """ln of P(dropped out after the last purchase) / P(alive), for x > 0 (FHL eq. 11)."""
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    return np.asarray(np.log(a) - np.log(b + np.maximum(x, 1.0) - 1.0)
                      + (r + x) * (np.log(alpha + T) - np.log(alpha + t_x)), dtype=np.float64)


def p_alive(params: BgNbd, x: ArrayLike, t_x: ArrayLike, T: ArrayLike) -> Array:
    """P(alive at T | x, t_x, T) = 1 / (1 + δ(x>0) a/(b+x−1) ((α+T)/(α+t_x))^(r+x))
    (FHL 2005 eq. 11); 1 for x = 0, since BG/NBD drops customers only after a repeat
    purchase."""
    x_, t_x_, T_ = _arrays(x, t_x, T)
    odds = _log_dead_odds(params, x_, t_x_, T_)
    return np.asarray(np.where(x_ > 0, expit(-odds), 1.0), dtype=np.float64)


def expected_purchases(params: BgNbd, t: ArrayLike, x: ArrayLike, t_x: ArrayLike,
                       T: ArrayLike) -> Array:
    """E[Y(t) | x, t_x, T], the expected purchases in (T, T + t] (FHL 2005 eq. 10):

        (a+b+x−1)/(a−1) · [1 − ((α+T)/(α+T+t))^(r+x) ₂F₁(r+x, b+x; a+b+x−1; z)] · P(alive),
        z = t/(α+T+t).

    The paper's ₂F₁ overflows for large x; Euler's transformation ₂F₁(A,B;C;z) =
    (1−z)^(C−A−B) ₂F₁(C−A, C−B; C; z) turns the bracket's product into
    (1−z)^(a−1) ₂F₁(a+b−1−r, a−1; a+b+x−1; z), whose terms shrink as x grows, but which
    overflows in turn when a is large (a nearly constant drop-out probability): each
    customer gets the paper's form where it is finite, else Euler's.
    With x = t_x = T = 0 it is the unconditional E[X(t)] of eq. (9)."""
    t_, x_, t_x_, T_ = _arrays(t, x, t_x, T)
    r, alpha, b = params.r, params.alpha, params.b
    # a = 1 is a removable 0/0; step off it (the error is far below the model's own)
    a = params.a if abs(params.a - 1.0) > 1e-6 else 1.0 + 1e-6
    one_minus_z = (alpha + T_) / (alpha + T_ + t_)
    z = t_ / (alpha + T_ + t_)
    c = a + b + x_ - 1.0
    with np.errstate(over="ignore", invalid="ignore"):
        paper = one_minus_z ** (r + x_) * hyp2f1(r + x_, b + x_, c, z)
        euler = one_minus_z ** (a - 1.0) * hyp2f1(a + b - 1.0 - r, a - 1.0, c, z)
    bracket = 1.0 - np.where(np.isfinite(paper), paper, euler)
    expected = (a + b + x_ - 1.0) / (a - 1.0) * bracket
    return np.asarray(expected * p_alive(params, x_, t_x_, T_), dtype=np.float64)


def prob_at_least_one(params: BgNbd, t: ArrayLike, x: ArrayLike, t_x: ArrayLike,
                      T: ArrayLike) -> Array:
    """P(at least one purchase in (T, T + t] | x, t_x, T) = P(alive) · (1 − ((α+T)/(α+T+t))^(r+x)).

    Derivation: given the history and alive at T, the posterior factorises into
    λ ~ Gamma(r+x, α+T) and p ~ Beta(a, b+x) (the likelihood of "alive at T" is
    λ^x e^(−λT) (1−p)^x). An alive customer can only drop out after a purchase, so the
    first future purchase comes at rate λ whatever p is: P(none in t | λ, alive) = e^(−λt),
    and E[e^(−λt)] over Gamma(r+x, α+T) is ((α+T)/(α+T+t))^(r+x). A customer already gone
    buys nothing. With x = T = 0 this is 1 − P(X(t) = 0) of FHL eq. (8)."""
    t_, x_, t_x_, T_ = _arrays(t, x, t_x, T)
    none_if_alive = np.exp(-(params.r + x_) * np.log1p(t_ / (params.alpha + T_)))
    return np.asarray(p_alive(params, x_, t_x_, T_) * (1.0 - none_if_alive), dtype=np.float64)


def time_to_likely_purchase(params: BgNbd, x: ArrayLike, t_x: ArrayLike, T: ArrayLike,
                            level: float = 0.5, horizon: float = np.inf) -> Array:
    """The earliest t with prob_at_least_one(t) ≥ level, or NaN when that is beyond the
    horizon or never (the probability rises to P(alive) as t grows, so a customer with
    P(alive) ≤ level never gets there). Closed form: solving
    P(alive)(1 − ((α+T)/(α+T+t))^(r+x)) = level gives t = (α+T)(k^(−1/(r+x)) − 1),
    k = 1 − level/P(alive)."""
    x_, t_x_, T_ = _arrays(x, t_x, T)
    alive = p_alive(params, x_, t_x_, T_)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        k = 1.0 - level / alive
        t = (params.alpha + T_) * np.expm1(-np.log(k) / (params.r + x_))
    return np.asarray(np.where((alive > level) & np.isfinite(t) & (t <= horizon), t, np.nan),
                      dtype=np.float64)
