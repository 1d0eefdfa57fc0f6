"""Classification tasks on frozen features: findings and lines/tubes, per label and macro, with CIs."""
from __future__ import annotations

import numpy as np
import pandas as pd

from radscale.config.specs import EvalSpec
from radscale.data.vocab import Vocabulary
from radscale.evaluate.metrics import auprc, auroc, auroc_auprc, bootstrap_replicates, percentile_ci
from radscale.evaluate.probes import fit_linear_probe, label_targets


def task_labels(task: str, vocabulary: Vocabulary, columns) -> list[str]:
    labels = vocabulary.findings if task == "findings" else vocabulary.tubes
    return [lab for lab in labels if lab in columns and lab != "support_devices"] if task == "findings" \
        else [lab for lab in labels if lab in columns]


METRICS = (("auroc", auroc), ("auprc", auprc))


def _per_label(y: np.ndarray, s: np.ndarray) -> np.ndarray:
    """[len(METRICS), L]: AUROC and AUPRC per label over that label's usable (finite) rows (one sort each)."""
    out = np.full((len(METRICS), y.shape[1]), np.nan)
    for j in range(y.shape[1]):
        ok = np.isfinite(y[:, j])
        out[:, j] = auroc_auprc(y[ok, j], s[ok, j])
    return out


def _label_mean(v: np.ndarray) -> np.ndarray:
    """Macro average over the last axis (labels), ignoring NaN; NaN where no label is defined."""
    finite = np.isfinite(v)
    count = finite.sum(-1)
    return np.where(count > 0, np.where(finite, v, 0.0).sum(-1) / np.maximum(count, 1), np.nan)


def evaluate_classification(features: np.ndarray, meta: pd.DataFrame, spec: EvalSpec,
                            vocabulary: Vocabulary) -> pd.DataFrame:
    """meta rows align with features: image_id, patient_id, split ('probe_train'|'probe_val'|'test'), domain.

    Each label's probe is fitted once (in-domain probe_train, C selected on probe_val) and tested on every
    domain's test rows. `features` are the extractor's multi-layer features (CLS of the last layers ++ mean patch).
    Returns one row per (task, domain, metric, label) with value and 95% CI; macro rows carry replicates.
    """
    split = meta["split"].to_numpy()
    domain = meta["domain"].to_numpy()
    tr = (split == "probe_train") & (domain == "in-domain")
    va = (split == "probe_val") & (domain == "in-domain")
    rows: list[dict] = []
    for task in spec.tasks:
        labels, ys, scores = [], [], []
        for lab in task_labels(task, vocabulary, meta.columns):
            y = label_targets(meta[lab].to_numpy(dtype="float64", na_value=np.nan), spec.uncertain, spec.unmentioned)
            probe = fit_linear_probe(lab, features[tr], y[tr], features[va], y[va], spec.probe_c_grid, spec.seed)
            if probe is not None:
                labels.append(lab)
                ys.append(y)
                scores.append(probe.score(features))
        if labels:
            rows += domain_rows(task, labels, np.stack(ys, 1), np.stack(scores, 1), meta, spec)
    return pd.DataFrame(rows)


def domain_rows(task: str, labels: list[str], y: np.ndarray, scores: np.ndarray, meta: pd.DataFrame,
              spec: EvalSpec) -> list[dict]:
    """Rows of one task from targets y [N, L] (NaN = excluded) and probe scores [N, L] over all meta rows: per
    domain, its test rows; labels with fewer than `min_positives` test positives (or no negative) are skipped."""
    split, domain = meta["split"].to_numpy(), meta["domain"].to_numpy()
    patients = meta["patient_id"].to_numpy()
    rows: list[dict] = []
    for dom in sorted(set(domain)):
        te = (split == "test") & (domain == dom)
        yt, st = y[te], scores[te]
        kept = [j for j in range(len(labels)) if np.sum(yt[:, j] == 1) >= spec.min_positives
                and np.sum(yt[:, j] == 0) >= 1]
        if kept:
            rows += _task_rows(task, dom, [labels[j] for j in kept], yt[:, kept], st[:, kept], patients[te], spec)
    return rows


def _task_rows(task: str, dom: str, kept: list[str], y_m: np.ndarray, s_m: np.ndarray, patients: np.ndarray,
               spec: EvalSpec) -> list[dict]:
    """Macro and per-label rows. One set of patient resamples serves both metrics, the macro and every label
    without excluded rows (the same seed and clusters would draw the same resamples again); a label with
    excluded rows has fewer clusters, so it gets its own resamples, exactly as a separate bootstrap would."""
    value = _per_label(y_m, s_m)
    reps = bootstrap_replicates(_per_label, patients, spec.bootstrap, spec.seed, y_m, s_m)   # [B, M, L]
    macro, macro_reps = _label_mean(value), _label_mean(reps)
    usable = np.isfinite(y_m)
    label_reps = reps.copy()
    for j in np.flatnonzero(~usable.all(0)):
        ok = usable[:, j]
        label_reps[:, :, j] = bootstrap_replicates(_per_label, patients[ok], spec.bootstrap, spec.seed,
                                                   y_m[ok, j:j + 1], s_m[ok, j:j + 1])[:, :, 0]
    rows = []
    for m, (name, _) in enumerate(METRICS):
        ci = percentile_ci(macro[m], macro_reps[:, m])
        rows.append(dict(task=task, domain=dom, metric=name, label="macro", value=ci.value, ci_lo=ci.lo, ci_hi=ci.hi,
                         n_test=len(y_m), n_labels=len(kept), replicates=ci.replicates.tolist()))
        for j, lab in enumerate(kept):
            ci_l = percentile_ci(value[m, j], label_reps[:, m, j])
            rows.append(dict(task=task, domain=dom, metric=name, label=lab, value=ci_l.value, ci_lo=ci_l.lo,
                             ci_hi=ci_l.hi, n_test=int(usable[:, j].sum()), n_labels=1, replicates=None))
    return rows
