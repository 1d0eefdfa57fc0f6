"""AUROC / AUPRC and patient-clustered bootstrap confidence intervals."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata


def auroc(y: np.ndarray, score: np.ndarray) -> float:
    """Mann-Whitney U / (n_pos * n_neg), ties counted half; NaN when a class is absent."""
    y = np.asarray(y, dtype=bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(score)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def auprc(y: np.ndarray, score: np.ndarray) -> float:
    """Average precision (step-wise, as sklearn's average_precision_score)."""
    y = np.asarray(y, dtype=bool)
    if y.sum() == 0:
        return float("nan")
    order = np.argsort(-np.asarray(score), kind="mergesort")
    s, ys = np.asarray(score)[order], y[order]
    # Group tied scores: precision/recall are evaluated at distinct thresholds only.
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]
    tp = np.cumsum(ys)[last]
    precision = tp / (last + 1)
    recall = tp / y.sum()
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


@dataclass(frozen=True)
class BootstrapCI:
    value: float
    lo: float
    hi: float
    replicates: np.ndarray


def cluster_bootstrap(metric, groups: np.ndarray, n_boot: int, seed: int, *arrays: np.ndarray) -> BootstrapCI:
    """Percentile 95% CI resampling whole clusters (patients) with replacement.

    `metric(*arrays_subset) -> float`; replicates where the metric is undefined (NaN) are dropped.
    """
    groups = np.asarray(groups)
    uniq, inverse = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(inverse == k) for k in range(len(uniq))]
    rng = np.random.default_rng(seed)
    reps = np.empty(n_boot)
    for b in range(n_boot):
        pick = rng.integers(0, len(uniq), len(uniq))
        idx = np.concatenate([members[k] for k in pick])
        reps[b] = metric(*(a[idx] for a in arrays))
    value = metric(*arrays)
    ok = reps[np.isfinite(reps)]
    lo, hi = (np.percentile(ok, [2.5, 97.5]) if len(ok) else (np.nan, np.nan))
    return BootstrapCI(float(value), float(lo), float(hi), reps)
