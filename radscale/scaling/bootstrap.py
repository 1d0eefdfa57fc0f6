"""Percentile-bootstrap replicates of scaling-law parameters.

Two sources of uncertainty (RECIPES.md, "Scaling laws"):
- over points: resample the (N, error) pairs with replacement and refit — captures scatter between runs;
- over test images: the caller evaluates every point on R bootstrap resamples of its test set and passes an
  (n_points, R) matrix; column r is refitted — captures the finite test set (Efron & Tibshirani 1993, ch. 13).

Replicates keep their row position even when a refit fails (row of NaN), so two fits made with the same seed
and N grid, or from the same test-set resamples, stay *paired* replicate by replicate (compare.py relies on it).
"""
from __future__ import annotations

import hashlib
from typing import Callable

import numpy as np

PointFit = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (n, err) -> public parameter vector

_MAX_REDRAWS = 1000


def resample_indices(n: np.ndarray, n_boot: int, seed: int, min_distinct: int) -> np.ndarray:
    """(n_boot, len(n)) row indices drawn with replacement; a draw with < min_distinct distinct N is redrawn."""
    n = np.asarray(n, dtype=float)
    if len(np.unique(n)) < min_distinct:
        raise ValueError(f"bootstrap over points: {len(np.unique(n))} distinct N, the form needs {min_distinct}")
    rng = np.random.default_rng(seed)
    out = np.empty((n_boot, len(n)), dtype=np.int64)
    for r in range(n_boot):
        for _ in range(_MAX_REDRAWS):
            idx = rng.integers(0, len(n), size=len(n))
            if len(np.unique(n[idx])) >= min_distinct:
                break
        else:
            raise ValueError(f"bootstrap over points: no resample with {min_distinct} distinct N "
                             f"in {_MAX_REDRAWS} draws")
        out[r] = np.sort(idx)
    return out


def pairing_key_points(n: np.ndarray, n_boot: int, seed: int) -> str:
    """Two point-bootstraps are paired iff they share seed, replicate count and the sorted N grid."""
    digest = hashlib.blake2b(np.sort(np.asarray(n, dtype=float)).tobytes(), digest_size=6).hexdigest()
    return f"points(seed={seed}, R={n_boot}, n_grid={digest})"


def _safe_fit(fit_point: PointFit, n: np.ndarray, err: np.ndarray, k: int) -> np.ndarray:
    try:
        theta = np.asarray(fit_point(n, err), dtype=float)
    except (ValueError, FloatingPointError, np.linalg.LinAlgError):
        return np.full(k, np.nan)
    return theta if np.all(np.isfinite(theta)) else np.full(k, np.nan)


def bootstrap_points(fit_point: PointFit, n: np.ndarray, err: np.ndarray, *, k: int, n_boot: int, seed: int,
                     min_distinct: int) -> np.ndarray:
    """(n_boot, k) parameter replicates from resampling points; NaN rows where a refit failed."""
    idx = resample_indices(n, n_boot, seed, min_distinct)
    return np.stack([_safe_fit(fit_point, n[i], err[i], k) for i in idx])


def bootstrap_replicates(fit_point: PointFit, n: np.ndarray, err_replicates: np.ndarray, *, k: int) -> np.ndarray:
    """(R, k) parameter replicates, one refit per column of err_replicates (n_points, R)."""
    return np.stack([_safe_fit(fit_point, n, err_replicates[:, r], k) for r in range(err_replicates.shape[1])])


def _quantiles(values: np.ndarray, qs: tuple[float, float]) -> np.ndarray:
    # Linear interpolation between +inf and a finite order statistic gives NaN, so quantities that may be
    # infinite in some replicates (an unreachable target) use the inverted-CDF (order-statistic) estimate.
    method = "linear" if np.all(np.isfinite(values[~np.isnan(values)])) else "inverted_cdf"
    if np.all(np.isnan(values)):
        return np.full(len(qs), np.nan)
    return np.nanquantile(values, qs, method=method)


def percentile_interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Two-sided percentile interval of replicate values, ignoring NaN (failed refits)."""
    lo, hi = _quantiles(np.asarray(values, dtype=float).ravel(), ((1 - level) / 2, (1 + level) / 2))
    return float(lo), float(hi)


def percentile_band(values: np.ndarray, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Pointwise percentile interval over rows of a (R, m) matrix of replicate predictions."""
    values = np.asarray(values, dtype=float)
    out = np.array([percentile_interval(values[:, j], level) for j in range(values.shape[1])]).reshape(-1, 2)
    return out[:, 0], out[:, 1]
