"""Linear probes on frozen features, one logistic regression per label, C chosen on the validation split."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from radscale.evaluate.metrics import auroc


@dataclass(frozen=True)
class LinearProbe:
    """A fitted per-label probe: standardisation + logistic regression, C chosen on the validation split."""
    label: str
    c: float
    val_auroc: float
    scaler: StandardScaler
    clf: LogisticRegression

    def score(self, x: np.ndarray) -> np.ndarray:
        return self.clf.decision_function(self.scaler.transform(x))


def fit_linear_probe(label: str, x_tr, y_tr, x_val, y_val, c_grid, seed: int = 0) -> LinearProbe | None:
    """y arrays are float with NaN for rows excluded by the label policy. None if a split lacks a class."""
    tr, va = np.isfinite(y_tr), np.isfinite(y_val)
    if len(np.unique(y_tr[tr])) < 2 or len(np.unique(y_val[va])) < 2:
        return None
    scaler = StandardScaler().fit(x_tr[tr])
    xs_tr, xs_va = scaler.transform(x_tr[tr]), scaler.transform(x_val[va])
    best = None
    for c in c_grid:
        clf = LogisticRegression(C=c, max_iter=2000, class_weight="balanced", random_state=seed)
        clf.fit(xs_tr, y_tr[tr].astype(int))
        score = auroc(y_val[va], clf.decision_function(xs_va))
        if best is None or score > best[0]:
            best = (score, c, clf)
    score, c, clf = best
    return LinearProbe(label, float(c), float(score), scaler, clf)


def label_targets(values: np.ndarray, uncertain: str, unmentioned: str) -> np.ndarray:
    """Manifest label values (1/0/-1/NaN) -> probe targets 1/0/NaN under the configured policies."""
    v = np.asarray(values, dtype=np.float64)
    out = np.where(v == 1, 1.0, np.where(v == 0, 0.0, np.nan))
    unc = v == -1
    if uncertain == "positive":
        out[unc] = 1.0
    elif uncertain == "negative":
        out[unc] = 0.0
    if unmentioned == "negative":
        out[np.isnan(v)] = 0.0
    return out
