"""The Gamma-Gamma model of order value (Fader & Hardie, "The Gamma-Gamma Model of Monetary
Value", 2013; Fader, Hardie & Lee 2005, "RFM and CLV"): pure functions on numpy arrays.

A customer's orders are worth Z ~ Gamma(p, ν) each, with ν ~ Gamma(q, γ) across customers;
what is observed is x orders with mean value m_x. Fitted on repeat buyers only (x > 0),
whose x counts the repeat orders and m_x their mean value, as in the note's CDNOW example.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import minimize
from scipy.special import gammaln

Array = NDArray[np.float64]

# Log-parameter bounds, values scaled so the mean m_x is 1; a fit that ends on one is
# degenerate, not used.
LOG_BOUND = 10.0


@dataclass(frozen=True)
class GammaGamma:
    p: float
    q: float
    gamma: float


@dataclass(frozen=True)
class GammaGammaFit:
    params: GammaGamma
    log_likelihood: float
    converged: bool
    at_bound: bool
    message: str


def log_likelihood(params: GammaGamma, x: ArrayLike, m_x: ArrayLike) -> Array:
    """ln f(m_x | p, q, γ; x) = ln Γ(px+q) − ln Γ(px) − ln Γ(q) + q ln γ + (px−1) ln m_x
    + px ln x − (px+q) ln(γ + x m_x), the note's eq. (3) in logs."""
    x_ = np.asarray(x, dtype=np.float64)
    m_ = np.asarray(m_x, dtype=np.float64)
    p, q, g = params.p, params.q, params.gamma
    px = p * x_
    return np.asarray(gammaln(px + q) - gammaln(px) - gammaln(q) + q * np.log(g)
                      + (px - 1.0) * np.log(m_) + px * np.log(x_)
                      - (px + q) * np.log(g + x_ * m_), dtype=np.float64)


def fit_gamma_gamma(x: ArrayLike, m_x: ArrayLike) -> GammaGammaFit:
    """Maximum-likelihood p, q, γ on customers with x > 0 and m_x > 0 (the caller passes
    repeat buyers only). Values are divided by their mean for the fit (γ scales with money,
    p and q do not), so the same start suits cents and dollars."""
    x_ = np.asarray(x, dtype=np.float64)
    m_ = np.asarray(m_x, dtype=np.float64)
    if x_.size == 0 or np.any(x_ <= 0) or np.any(m_ <= 0):
        raise ValueError("the Gamma-Gamma fit needs repeat buyers with a positive mean value")
    scale = float(m_.mean())
    m_scaled = m_ / scale

    def negative(theta: Array) -> float:
        p, q, g = np.exp(theta)
        value = -float(np.mean(log_likelihood(GammaGamma(p, q, g), x_, m_scaled)))
        return value if np.isfinite(value) else 1e300

    result = minimize(negative, np.zeros(3), method="L-BFGS-B",
                      bounds=[(-LOG_BOUND, LOG_BOUND)] * 3, options={"maxiter": 500})
    p, q, g = (float(v) for v in np.exp(result.x))
    # ln f of the unscaled values: dividing m_x by `scale` adds ln(scale) per customer
    ll = -float(result.fun) * x_.size - x_.size * float(np.log(scale))
    return GammaGammaFit(params=GammaGamma(p=p, q=q, gamma=g * scale), log_likelihood=ll,
                         converged=bool(result.success),
                         at_bound=bool(np.any(np.abs(result.x) >= LOG_BOUND - 1e-6)),
                         message=str(result.message))


def population_mean(params: GammaGamma) -> float:
    """E[Z] = pγ/(q−1) for a customer with no repeat orders yet; infinite when q ≤ 1."""
    return params.p * params.gamma / (params.q - 1.0) if params.q > 1.0 else float("inf")


def conditional_expected_value(params: GammaGamma, x: ArrayLike, m_x: ArrayLike) -> Array:
    """E[Z | x, m_x] = (γ + x m_x) p / (px + q − 1): a weighted mean of the population's
    pγ/(q−1) and the customer's own m_x, the weight on m_x growing with x (the note's eq. 5).
    With x = 0 it is the population mean. Needs q > 1."""
    x_ = np.asarray(x, dtype=np.float64)
    m_ = np.where(x_ > 0, np.asarray(m_x, dtype=np.float64), 0.0)
    p, q, g = params.p, params.q, params.gamma
    return np.asarray((g + x_ * m_) * p / (p * x_ + q - 1.0), dtype=np.float64)
