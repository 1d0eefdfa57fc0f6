"""Synthetic results tables with known power laws, shaped like orchestrate/sweep.py's results.parquet (shared by
the report tests)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

# Two encoder keys whose curves cross: 0.5·N^−0.1 = 1.0·N^−0.2 at N = 2^10 = 1024.
TRUTH = {("rad-dino-tiny", "dinov2"): (0.5, 0.1), ("mi2-tiny", "clip"): (1.0, 0.2)}
N_CROSS = 1024.0
SIZES = (150, 400, 1000, 3000, 8000)
BASELINE_N = 300.0   # each key's size-0 error equals its own curve at N = 300
DEVIATION = {"mi2-tiny.clip.n3000.s0": 0.03}  # one trial 3% over budget


def trial_meta(trial_id: str, size: int) -> dict:
    if size == 0:
        return dict(train_s=np.nan, samples_seen=np.nan, epochs=np.nan, budget_deviation=np.nan,
                    images_per_s=np.nan, startup_s=np.nan)
    dev = DEVIATION.get(trial_id, 0.002)
    return dict(train_s=20.0 * (1 + dev), samples_seen=25.0 * 20, epochs=500.0 / size, budget_deviation=dev,
                images_per_s=25.0, startup_s=10.0)


def crossing_results(sizes=SIZES, r: int = 200, seed: int = 0, tasks=(("findings", "in-domain"),)) -> pd.DataFrame:
    """Points exactly on the curves; replicates = shared (paired) test-set noise + a small per-trial part."""
    rng = np.random.default_rng(seed)
    rows = []
    for task, domain in tasks:
        common = rng.normal(0, 0.02, r)  # the same patient resamples for every trial
        for (enc, obj), (a, alpha) in TRUTH.items():
            for size in (0, *sizes):
                err = a * (BASELINE_N if size == 0 else size) ** -alpha
                reps = 1 - err * np.exp(common + rng.normal(0, 0.004, r))
                tid = f"{enc}.{obj}.n{size}.s0"
                for metric, value, rr in (("auroc", 1 - err, reps), ("auprc", 0.3, np.full(r, 0.3))):
                    rows.append(dict(task=task, domain=domain, metric=metric, label="macro", value=value,
                                     ci_lo=float(np.percentile(rr, 2.5)), ci_hi=float(np.percentile(rr, 97.5)),
                                     n_test=400, n_labels=6, replicates=rr.tolist(), trial_id=tid, encoder=enc,
                                     objective=obj, size=size, seed=0, n_eval_images=600,
                                     **trial_meta(tid, size)))
                rows.append(dict(task=task, domain=domain, metric="auroc", label="pleural_effusion",
                                 value=0.7, ci_lo=0.6, ci_hi=0.8, n_test=400, n_labels=1, replicates=None,
                                 trial_id=tid, encoder=enc, objective=obj, size=size, seed=0, n_eval_images=600,
                                 **trial_meta(tid, size)))
    return pd.DataFrame(rows)


def test_synthetic_table_has_the_sweep_columns_and_the_stated_crossing():
    df = crossing_results()
    assert {"task", "domain", "metric", "label", "value", "ci_lo", "ci_hi", "n_test", "n_labels", "replicates",
            "trial_id", "encoder", "objective", "size", "seed", "train_s", "samples_seen", "epochs",
            "budget_deviation", "images_per_s", "startup_s"} <= set(df.columns)
    (a1, b1), (a2, b2) = TRUTH.values()
    assert a1 * N_CROSS ** -b1 == pytest.approx(a2 * N_CROSS ** -b2)
    macro = df[(df.label == "macro") & (df.metric == "auroc")]
    assert macro.groupby("trial_id")["replicates"].apply(lambda s: len(s.iloc[0])).eq(200).all()
