"""Score a labeler against held-out annotations: per-label precision / recall / F1 (RECIPES.md "Labels").

Both frames hold one row per `key` and one column per label with 1 / 0 / -1 / null. Before counting, both
sides are binarised the same way: null (unmentioned) is negative, and `uncertain` decides -1:
- "positive" (default, CheXpert "U-Ones"): -1 is positive on both sides, so a hedge matches a hedge;
- "negative" ("U-Zeros"): -1 is negative on both sides;
- "exclude": rows whose *gold* is -1 are dropped for that label; a predicted -1 on the remaining rows counts
  as positive (otherwise hedging on every negative would be free).
Rows are the gold rows; predictions for other ids are ignored, missing predictions are an error.
A label with no gold and no predicted positives has undefined scores (NaN) and is left out of the macro row;
the micro row pools the counts over labels (both summary rows carry the pooled counts).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from radscale.errors import RadscaleError

UNCERTAIN_POLICIES = ("positive", "negative", "exclude")
_COLUMNS = ["label", "support", "n", "tp", "fp", "fn", "precision", "recall", "f1"]


def _numeric(frame: pd.DataFrame, label: str, key: str, side: str) -> pd.Series:
    values = pd.to_numeric(frame[label], errors="coerce").astype("float64")
    bad = ~(values.isin([1.0, 0.0, -1.0]) | values.isna()) | (values.isna() & frame[label].notna())
    if bad.any():
        row = frame.loc[bad[bad].index[0], key]
        raise RadscaleError(f"evaluate_labels: {side} column {label!r} at {key}={row!r}: label must be 1, 0, -1 "
                            f"or null")
    return values


def _scores(tp: int, fp: int, fn: int, support: int) -> tuple[float, float, float]:
    precision = tp / (tp + fp) if tp + fp else np.nan
    recall = tp / support if support else np.nan
    f1 = 2 * tp / (2 * tp + fp + fn) if 2 * tp + fp + fn else np.nan
    return precision, recall, f1


def evaluate_labels(pred: pd.DataFrame, gold: pd.DataFrame, labels: Sequence[str], key: str = "image_id",
                    uncertain: str = "positive") -> pd.DataFrame:
    """One row per label (+ "macro" and "micro"): support (gold positives), n, tp, fp, fn, precision, recall, f1."""
    if uncertain not in UNCERTAIN_POLICIES:
        raise RadscaleError(f"evaluate_labels: uncertain must be one of {UNCERTAIN_POLICIES} (got {uncertain!r})")
    for side, frame in (("pred", pred), ("gold", gold)):
        missing = [c for c in (key, *labels) if c not in frame.columns]
        if missing:
            raise RadscaleError(f"evaluate_labels: {side} has no column {missing[0]!r}")
        dup = frame[key][frame[key].duplicated()]
        if len(dup):
            raise RadscaleError(f"evaluate_labels: {side} has duplicate {key} {dup.iloc[0]!r}")
    absent = ~gold[key].isin(pred[key])
    if absent.any():
        raise RadscaleError(f"evaluate_labels: pred lacks {int(absent.sum())} gold {key}s "
                            f"(first: {gold[key][absent].iloc[0]!r})")
    pred = pred.set_index(key).loc[gold[key]].reset_index()
    rows = []
    for label in labels:
        p, g = _numeric(pred, label, key, "pred").fillna(0.0), _numeric(gold, label, key, "gold").fillna(0.0)
        if uncertain == "exclude":
            keep = (g != -1.0).to_numpy()
            p, g = p[keep].abs(), g[keep]  # a predicted -1 counts as positive
        else:
            fill = 1.0 if uncertain == "positive" else 0.0
            p, g = p.replace(-1.0, fill), g.replace(-1.0, fill)
        p, g = p.to_numpy() == 1.0, g.to_numpy() == 1.0
        tp, fp, fn = int((p & g).sum()), int((p & ~g).sum()), int((~p & g).sum())
        rows.append([label, int(g.sum()), len(g), tp, fp, fn, *_scores(tp, fp, fn, int(g.sum()))])
    per_label = pd.DataFrame(rows, columns=_COLUMNS)
    macro = [float(per_label[c].mean(skipna=True)) if per_label[c].notna().any() else np.nan
             for c in ("precision", "recall", "f1")]
    tp, fp, fn, support = (int(per_label[c].sum()) for c in ("tp", "fp", "fn", "support"))
    rows.append(["macro", support, len(gold), tp, fp, fn, *macro])
    rows.append(["micro", support, len(gold), tp, fp, fn, *_scores(tp, fp, fn, support)])
    return pd.DataFrame(rows, columns=_COLUMNS)


def format_evaluation(df: pd.DataFrame) -> str:
    """A fixed-width table of label, support, precision, recall, F1 ("-" where undefined)."""
    width = max([len("label"), *(len(str(v)) for v in df["label"])])
    lines = [f"{'label':<{width}}  {'support':>7}  {'precision':>9}  {'recall':>6}  {'f1':>6}"]
    for _, row in df.iterrows():
        if row["label"] == "macro":
            lines.append("-" * len(lines[0]))
        cells = [f"{row[c]:.3f}" if pd.notna(row[c]) else "-" for c in ("precision", "recall", "f1")]
        lines.append(f"{row['label']:<{width}}  {int(row['support']):>7}  {cells[0]:>9}  {cells[1]:>6}  {cells[2]:>6}")
    return "\n".join(lines)
