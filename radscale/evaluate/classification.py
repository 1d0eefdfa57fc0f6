"""Classification tasks on frozen features: findings and lines/tubes, per label and macro, with CIs."""
from __future__ import annotations

import numpy as np
import pandas as pd

from radscale.config.specs import EvalSpec
from radscale.data.vocab import Vocabulary
from radscale.evaluate.metrics import auprc, auroc, cluster_bootstrap
from radscale.evaluate.probes import fit_linear_probe, label_targets


def task_labels(task: str, vocabulary: Vocabulary, columns) -> list[str]:
    labels = vocabulary.findings if task == "findings" else vocabulary.tubes
    return [lab for lab in labels if lab in columns and lab != "support_devices"] if task == "findings" \
        else [lab for lab in labels if lab in columns]


def _macro(metric):
    def fn(y: np.ndarray, s: np.ndarray) -> float:
        vals = []
        for j in range(y.shape[1]):
            ok = np.isfinite(y[:, j])
            vals.append(metric(y[ok, j], s[ok, j]))
        vals = np.asarray(vals)
        return float(np.nanmean(vals)) if np.isfinite(vals).any() else float("nan")
    return fn


def evaluate_classification(features: np.ndarray, meta: pd.DataFrame, spec: EvalSpec,
                            vocabulary: Vocabulary) -> pd.DataFrame:
    """meta rows align with features: image_id, patient_id, split ('probe_train'|'probe_val'|'test'), domain.

    Probes are trained on in-domain probe_train, selected on probe_val, and tested on each domain's test rows.
    Returns one row per (task, domain, metric, label) with value and 95% CI; macro rows carry replicates.
    """
    rows = []
    split = meta["split"].to_numpy()
    domain = meta["domain"].to_numpy()
    tr = (split == "probe_train") & (domain == "in-domain")
    va = (split == "probe_val") & (domain == "in-domain")
    for task in spec.tasks:
        labels = task_labels(task, vocabulary, meta.columns)
        targets = {lab: label_targets(meta[lab].to_numpy(dtype="float64", na_value=np.nan),
                                      spec.uncertain, spec.unmentioned) for lab in labels}
        for dom in sorted(set(domain)):
            te = (split == "test") & (domain == dom)
            kept, ys, ss = [], [], []
            for lab in labels:
                y = targets[lab]
                if np.nansum(y[te] == 1) < spec.min_positives:
                    continue
                res = fit_linear_probe(lab, features[tr], y[tr], features[va], y[va], features[te], y[te],
                                       spec.probe_c_grid, spec.seed)
                if res is None:
                    continue
                score = np.full(int(te.sum()), np.nan)
                score[res.test_index] = res.test_scores
                kept.append(lab)
                ys.append(y[te])
                ss.append(score)
            if not kept:
                continue
            y_m, s_m = np.stack(ys, 1), np.stack(ss, 1)
            patients = meta["patient_id"].to_numpy()[te]
            for name, fn in (("auroc", auroc), ("auprc", auprc)):
                ci = cluster_bootstrap(_macro(fn), patients, spec.bootstrap, spec.seed, y_m, s_m)
                rows.append(dict(task=task, domain=dom, metric=name, label="macro", value=ci.value, ci_lo=ci.lo,
                                 ci_hi=ci.hi, n_test=int(te.sum()), n_labels=len(kept),
                                 replicates=ci.replicates.tolist()))
                for j, lab in enumerate(kept):
                    ok = np.isfinite(y_m[:, j])
                    ci_l = cluster_bootstrap(fn, patients[ok], spec.bootstrap, spec.seed, y_m[ok, j], s_m[ok, j])
                    rows.append(dict(task=task, domain=dom, metric=name, label=lab, value=ci_l.value,
                                     ci_lo=ci_l.lo, ci_hi=ci_l.hi, n_test=int(ok.sum()),
                                     n_labels=1, replicates=None))
    return pd.DataFrame(rows)
