"""Attention-pooling probe: learns a finding that sits in one (varying) patch, honours the label policy, and
reports rows shaped like the linear probe's under its own task name."""
import numpy as np
import pandas as pd
import pytest
import torch

from radscale.config.specs import EvalSpec
from radscale.data.vocab import Vocabulary
from radscale.evaluate.attention_probe import (AttentionPoolHead, balanced_weights, evaluate_attention_probes,
                                               fit_attention_probe)
from radscale.evaluate.classification import evaluate_classification
from radscale.evaluate.metrics import auroc

P, D = 16, 12


@pytest.fixture(autouse=True)
def _one_torch_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _tokens(y: np.ndarray, rng, signal: bool = True) -> np.ndarray:
    """Noise tokens; a positive image of label j carries direction e_j in ONE random patch (a small finding),
    which the mean over 16 patches dilutes 16-fold."""
    x = rng.normal(0, 1, (len(y), P, D)).astype(np.float32)
    if signal:
        for i in range(len(y)):
            for j in np.flatnonzero(y[i] == 1):
                x[i, rng.integers(P), j] += 6.0
    return x.astype(np.float16)


def test_probe_finds_a_one_patch_signal_and_not_noise():
    rng = np.random.default_rng(0)
    y = (rng.random((400, 3)) < 0.3).astype(float)
    x = _tokens(y, rng)
    tr, va, te = slice(0, 240), slice(240, 300), slice(300, 400)
    probe = fit_attention_probe(["a", "b", "c"], x[tr], y[tr], x[va], y[va], epochs=25, seed=0)
    assert probe.labels == ("a", "b", "c") and 1 <= probe.best_epoch <= len(probe.val_auroc)
    assert probe.val_auroc[probe.best_epoch - 1] == max(probe.val_auroc)
    s = probe.score(x[te])
    assert s.shape == (100, 3) and s.dtype == np.float32
    assert min(auroc(y[te, j], s[:, j]) for j in range(3)) > 0.9
    again = fit_attention_probe(["a", "b", "c"], x[tr], y[tr], x[va], y[va], epochs=25, seed=0)
    np.testing.assert_array_equal(again.score(x[te]), s)               # seeded: reproducible
    xn = _tokens(y, rng, signal=False)
    blind = fit_attention_probe(["a", "b", "c"], xn[tr], y[tr], xn[va], y[va], epochs=10, seed=0)
    assert np.mean([auroc(y[te, j], blind.score(xn[te])[:, j]) for j in range(3)]) < 0.65


def test_label_policy_weights_and_dropped_labels():
    y = np.array([[1, 0], [0, np.nan], [0, 1], [0, 0]], dtype=float)
    w = balanced_weights(y)
    # Label 0: 1 pos / 3 neg of 4 -> 2.0 and 0.667; label 1: the NaN (excluded) entry weighs nothing.
    np.testing.assert_allclose(w[:, 0], [2.0, 2 / 3, 2 / 3, 2 / 3], rtol=1e-6)
    assert w[1, 1] == 0 and w[2, 1] == pytest.approx(1.5)
    rng = np.random.default_rng(1)
    yy = (rng.random((80, 3)) < 0.4).astype(float)
    yy[:, 1] = 0                                        # no positive in probe_train: dropped, like the linear probe
    yy[60:, 2] = 1                                      # no negative in probe_val: dropped
    x = _tokens(yy, rng)
    probe = fit_attention_probe(["a", "b", "c"], x[:60], yy[:60], x[60:], yy[60:], epochs=2)
    assert probe.labels == ("a",)
    assert fit_attention_probe(["b"], x[:60], yy[:60, 1:2], x[60:], yy[60:, 1:2], epochs=2) is None


def test_head_pools_with_learned_queries():
    head = AttentionPoolHead(D, 4, heads=4, n_queries=2)
    assert head(torch.zeros(3, P, D)).shape == (3, 4)
    assert AttentionPoolHead(10, 1, heads=4).attn.num_heads == 1   # width not divisible: one head


def _meta(rng, n_in=300, n_ood=120):
    vocab = Vocabulary()
    labels = ["pleural_effusion", "cardiomegaly", "pneumothorax"]
    split = np.array(["probe_train"] * 160 + ["probe_val"] * 50 + ["test"] * (n_in - 210) + ["test"] * n_ood)
    domain = np.array(["in-domain"] * n_in + ["ood"] * n_ood)
    y = (rng.random((n_in + n_ood, 3)) < 0.3).astype(float)
    meta = pd.DataFrame({"eval_id": [f"e{i}" for i in range(len(y))], "patient_id": [f"p{i // 2}" for i in
                                                                                      range(len(y))],
                         "split": split, "domain": domain})
    for j, lab in enumerate(labels):
        meta[lab] = pd.array(y[:, j].astype(int), dtype="Int8")
    meta.loc[::17, "cardiomegaly"] = -1                # uncertain: excluded by the default policy
    meta.loc[::13, "pleural_effusion"] = pd.NA         # unmentioned: negative by the default policy
    return meta, y, vocab


def test_rows_match_the_linear_probe_schema_for_every_domain():
    rng = np.random.default_rng(2)
    meta, y, vocab = _meta(rng)
    tokens = _tokens(np.where(meta[["pleural_effusion", "cardiomegaly", "pneumothorax"]].to_numpy(
        dtype=float, na_value=0) == 1, 1.0, 0.0), rng)
    spec = EvalSpec(tasks=("findings",), bootstrap=20, attention_epochs=30)
    rows = evaluate_attention_probes(tokens, meta, spec, vocab)
    linear = evaluate_classification(tokens.astype(np.float32).mean(1), meta, spec, vocab)
    assert list(rows.columns) == list(linear.columns)
    assert set(rows.task) == {"findings:attention"} and set(rows.domain) == {"in-domain", "ood"}
    macro = rows[rows.label == "macro"].set_index(["domain", "metric"])
    assert (macro.ci_lo <= macro.value).all() and (macro.value <= macro.ci_hi).all()
    assert all(len(r) == 20 for r in macro.replicates) and set(macro.n_labels) == {3}
    assert macro.loc[("in-domain", "auroc"), "value"] > 0.8
    per = rows[(rows.label == "cardiomegaly") & (rows.domain == "in-domain") & (rows.metric == "auroc")]
    te = (meta.split == "test") & (meta.domain == "in-domain")
    assert per.n_test.iloc[0] == int((te & (meta.cardiomegaly != -1)).sum())   # uncertain rows left out
