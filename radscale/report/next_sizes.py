"""Which additional subset size would most narrow a fit's CI: the fit with a hypothetical trial added.

Criterion (simple on purpose, and only about the test-set noise that the report's CIs measure):
a new trial at size N_c is assumed to land on the current fit (so the estimates do not move) and to carry the
observed test-set noise. Every trial is scored on the same patient resamples, so replicate r of a row's log
error deviates by d_r = c_r + u_r: a part c_r shared by all rows (the mean deviation of the key's observed rows
in replicate r) and the row's own part u_r. The new row gets the shared part and an own part with the variance
of its nearest observed row's (inflated by m/(m−1) for the mean taken out), independent of everything else.

Log-log least squares is linear in log e, so each replicate's α and log a are fixed weights applied to the
replicate's log errors; the spread of α over replicates is therefore exactly √(wᵀΣw), with w the slope weights
of the design (old rows, or old rows + the new one) and Σ the covariance of the rows' deviations — no resampling
needed. log N*(τ) = (log a − log τ)/α is linearised the same way (delta method). The benefit is
1 − sd_new / sd_now for α, and for log N*(τ) averaged over the targets (α > 0 only).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from radscale.report.analysis import Series
from radscale.scaling.fit import ScalingFit

CANDIDATE_FACTORS = (2.0, 4.0)  # beyond the largest size; plus geometric midpoints between observed sizes


def candidate_sizes(sizes, pool_size: int | None = None, exclude=()) -> list[int]:
    """2× and 4× the largest size and the geometric midpoints of adjacent sizes, minus existing/excluded ones."""
    s = sorted({int(x) for x in sizes if x > 0})
    if not s:
        return []
    out = {int(round(s[-1] * f)) for f in CANDIDATE_FACTORS}
    out |= {int(round(np.sqrt(a * b))) for a, b in zip(s[:-1], s[1:])}
    out -= set(s) | {int(x) for x in exclude}
    return sorted(n for n in out if pool_size is None or n <= pool_size)


def deviation_covariance(series: Series, n_new: float, copies: int = 1) -> np.ndarray:
    """Covariance of log-error deviations of the observed rows plus `copies` hypothetical rows at n_new."""
    d = np.log(series.err_reps) - np.log(series.err)[:, None]        # (m, R)
    m = len(d)
    c = d.mean(axis=0)
    u = d - c
    dist = np.round(np.abs(np.log(series.n) - np.log(n_new)), 12)
    j = min(range(m), key=lambda i: (dist[i], -series.n[i]))          # nearest row; ties: the larger size
    full = np.cov(np.vstack([d, c[None, :]]))
    sigma = np.empty((m + copies, m + copies))
    sigma[:m, :m] = full[:m, :m]
    sigma[:m, m:] = full[:m, m:m + 1]                                  # Cov(new, row i) = Cov(shared part, row i)
    sigma[m:, :m] = sigma[:m, m:].T
    sigma[m:, m:] = full[m, m]                                         # new rows share c
    sigma[m:, m:] += np.eye(copies) * np.var(u[j], ddof=1) * m / max(m - 1, 1)
    return sigma


def _weights(n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares weights of (log a, α) on log e for log e = log a − α log N."""
    w = np.linalg.pinv(np.stack([np.ones(len(n)), np.log(n)], axis=1))
    return w[0], -w[1]


@dataclass(frozen=True)
class SizeBenefit:
    n_new: int
    alpha_sd: float             # spread of α over test-set replicates now
    alpha_sd_new: float         # expected with the hypothetical trial(s)
    n_star_reduction: float     # mean 1 − sd ratio of log N*(τ) over targets (NaN: α ≤ 0)

    @property
    def alpha_reduction(self) -> float:
        return 1.0 - self.alpha_sd_new / self.alpha_sd if self.alpha_sd > 0 else float("nan")


def _sd(w: np.ndarray, sigma: np.ndarray) -> float:
    return float(np.sqrt(max(w @ sigma @ w, 0.0)))


def size_benefit(series: Series, fit: ScalingFit, n_new: int, taus, copies: int = 1) -> SizeBenefit | None:
    """Expected narrowing from `copies` trials (seeds) at n_new; None without replicates or for another fitter."""
    if series.err_reps is None or len(series.n) < 2 or fit.form != "power" or fit.method != "loglog_ols":
        return None
    sigma = deviation_covariance(series, n_new, copies)
    m = len(series.n)
    n_aug = np.concatenate([series.n, np.full(copies, float(n_new))])
    (wa0, wal0), (wa1, wal1) = _weights(series.n), _weights(n_aug)
    sd0, sd1 = _sd(wal0, sigma[:m, :m]), _sd(wal1, sigma)
    alpha, log_a = fit.params["alpha"], np.log(fit.params["a"])
    red = float("nan")
    if alpha > 0:
        ratios = []
        for tau in np.atleast_1d(np.asarray(taus, dtype=float)):
            log_n = (log_a - np.log(tau)) / alpha
            # δ log N* = (δ log a − log N*·δα)/α
            s0 = _sd((wa0 - log_n * wal0) / alpha, sigma[:m, :m])
            s1 = _sd((wa1 - log_n * wal1) / alpha, sigma)
            if s0 > 0:
                ratios.append(1.0 - s1 / s0)
        red = float(np.mean(ratios)) if ratios else red
    return SizeBenefit(n_new=int(n_new), alpha_sd=sd0, alpha_sd_new=sd1, n_star_reduction=red)
