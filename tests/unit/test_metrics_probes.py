import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from radscale.config.specs import EvalSpec
from radscale.data.vocab import Vocabulary
from radscale.evaluate.classification import evaluate_classification
from radscale.evaluate.metrics import auprc, auroc, auroc_auprc, cluster_bootstrap
from radscale.evaluate.probes import label_targets


@pytest.mark.parametrize("seed", range(5))
def test_auroc_auprc_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    y = rng.random(200) < 0.3
    s = np.round(rng.normal(size=200) + y, 1)            # rounding makes ties
    assert auroc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert auprc(y, s) == pytest.approx(average_precision_score(y, s), abs=1e-12)


def test_a_resample_without_negatives_is_undefined_for_both_metrics():
    # AP alone would be a perfect 1.0 there and bias the bootstrap interval of AUPRC up
    y, s = np.array([1, 1, 1]), np.array([0.2, 0.5, 0.9])
    assert auprc(y, s) == 1.0 and all(np.isnan(auroc_auprc(y, s)))
    y2, s2 = np.array([1, 0, 1, 0]), np.array([0.9, 0.1, 0.4, 0.5])
    assert auroc_auprc(y2, s2) == pytest.approx((auroc(y2, s2), auprc(y2, s2)))


def test_auroc_hand_case_and_degenerate():
    assert auroc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])) == pytest.approx(0.75)
    assert np.isnan(auroc(np.array([1, 1]), np.array([0.1, 0.2])))


def test_cluster_bootstrap_resamples_whole_patients_and_is_seeded():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(50), 4)
    y = rng.random(200) < 0.4
    s = y + rng.normal(size=200)
    a = cluster_bootstrap(auroc, groups, 100, 7, y, s)
    b = cluster_bootstrap(auroc, groups, 100, 7, y, s)
    assert np.array_equal(a.replicates, b.replicates) and a.lo < a.value < a.hi
    # Every replicate draws 50 patients of 4 images: the resample always has 200 rows.
    sizes = []
    cluster_bootstrap(lambda yy, ss: sizes.append(len(yy)) or 0.5, groups, 10, 0, y, s)
    assert set(sizes) == {200}


def test_label_policies():
    v = np.array([1, 0, -1, np.nan])
    assert np.array_equal(label_targets(v, "exclude", "negative"), [1, 0, np.nan, 0], equal_nan=True)
    assert np.array_equal(label_targets(v, "positive", "exclude"), [1, 0, 1, np.nan], equal_nan=True)
    assert np.array_equal(label_targets(v, "negative", "negative"), [1, 0, 0, 0], equal_nan=True)


def test_probes_find_signal_and_not_noise():
    rng = np.random.default_rng(0)
    n = 600
    split = np.array(["probe_train"] * 300 + ["probe_val"] * 100 + ["test"] * 200)
    y = rng.random(n) < 0.3
    x_signal = np.c_[y + rng.normal(0, 0.5, n), rng.normal(size=(n, 5))]
    meta = pd.DataFrame({"image_id": np.arange(n).astype(str), "patient_id": (np.arange(n) // 2).astype(str),
                         "split": split, "domain": "in-domain", "pleural_effusion": y.astype(float)})
    spec = EvalSpec(tasks=("findings",), bootstrap=50)
    good = evaluate_classification(x_signal, meta, spec, Vocabulary())
    noise = evaluate_classification(rng.normal(size=(n, 6)), meta, spec, Vocabulary())
    g = good[(good.label == "macro") & (good.metric == "auroc")].iloc[0]
    z = noise[(noise.label == "macro") & (noise.metric == "auroc")].iloc[0]
    assert g.value > 0.9 and g.ci_lo < g.value < g.ci_hi and len(g.replicates) == 50
    assert 0.35 < z.value < 0.65
