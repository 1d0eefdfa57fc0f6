"""The evaluation suite of one encoder: every family lands in one table, for every domain, and can be switched off."""
import numpy as np
import pandas as pd
import pytest
import torch

from radscale.config.specs import EvalSpec
from radscale.data.vocab import Vocabulary
from radscale.evaluate.suite import (SegMasks, annotated_types, evaluate_encoder, known_masks, report_test_rows,
                                    segmentation_table)

GRID, D = 4, 8
COLUMNS = ["task", "domain", "metric", "label", "value", "ci_lo", "ci_hi", "n_test", "n_labels", "replicates"]


@pytest.fixture(autouse=True)
def _one_torch_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _data(seed=0):
    rng = np.random.default_rng(seed)
    split = ["probe_train"] * 60 + ["probe_val"] * 24 + ["test"] * 40 + ["test"] * 40
    domain = ["in-domain"] * 124 + ["ood"] * 40
    n = len(split)
    eff, ett = rng.random(n) < 0.4, rng.random(n) < 0.4
    reports = [("FINDINGS: Small left pleural effusion." if e else "FINDINGS: No pleural effusion.")
               + (" ET tube terminates 4 cm above the carina." if t else "") for e, t in zip(eff, ett)]
    meta = pd.DataFrame({"eval_id": [f"e{i}" for i in range(n)], "patient_id": [f"p{i // 2}" for i in range(n)],
                         "split": split, "domain": domain, "pleural_effusion": pd.array(eff.astype(int), "Int8"),
                         "ett_normal": pd.array(ett.astype(int), "Int8"),
                         "support_devices": pd.array(ett.astype(int), "Int8"),
                         "mask_uri": [f"m{i}.png" if t else None for i, t in enumerate(ett)], "report": reports})
    patch = rng.normal(0, 1, (n, GRID * GRID, D)).astype(np.float32)
    patch[eff, 3, 0] += 4.0                              # effusion: one patch, channel 0
    patch[ett, :GRID, 1] += 4.0                          # tube: the top row of patches, channel 1
    masks = np.zeros((n, 16, 16), np.uint8)
    masks[ett, 1:3, :] = 1                               # bit 0 = ETT, a 2-px line under the top patch row
    cls = rng.normal(0, 1, (n, D)).astype(np.float32)
    features = np.concatenate([cls, patch.mean(1)], 1)   # the extractor's layout ends with [CLS, mean patch]
    return meta, features, patch.astype(np.float16), SegMasks(masks, known_masks(meta))


def _spec(**kw):
    base = dict(bootstrap=10, min_positives=3, attention_epochs=4, seg_epochs=3, report_epochs=2,
                report_max_test=12, report_max_tokens=16)
    return EvalSpec(**{**base, **kw})


def test_all_four_families_for_every_domain():
    meta, features, patch, masks = _data()
    torch.set_num_threads(2)
    res = evaluate_encoder(features, patch, meta, _spec(), Vocabulary(), masks)     # probes run on 1 thread
    assert torch.get_num_threads() == 2                                              # and restore the caller's
    t = res.table
    assert list(t.columns) == COLUMNS
    families = {"findings", "tubes", "findings:attention", "tubes:attention", "segmentation", "report_generation"}
    assert set(t.task) == families
    for task in families:
        assert set(t[(t.task == task) & (t.label == "macro")].domain) == {"in-domain", "ood"}, task
    macro = t[t.label == "macro"].set_index(["task", "domain", "metric"])
    assert {"dice", "cldice"} <= {m for (task, _, m) in macro.index if task == "segmentation"}
    assert {"label_f1", "bleu4", "rouge_l"} <= {m for (task, _, m) in macro.index if task == "report_generation"}
    assert (macro.loc[("report_generation", "ood", "bleu4"), "n_test"]) == 12      # report_max_test per domain
    seg = t[(t.task == "segmentation") & (t.label == "ett")]
    assert set(seg.metric) == {"dice", "cldice"} and (seg.n_test > 0).all()
    assert set(res.seconds) == {"linear", "attention", "segmentation", "report_generation"}
    assert set(res.cpu_seconds) == set(res.seconds)


def test_families_switch_off_and_patch_free_runs_keep_the_linear_probe():
    meta, features, patch, masks = _data(1)
    t = evaluate_encoder(features, patch, meta, _spec(attention_probe=False, report_generation=False,
                                                      tasks=("findings",)), Vocabulary(), masks).table
    assert set(t.task) == {"findings", "segmentation"}
    only = evaluate_encoder(features, None, meta, _spec(), Vocabulary(), masks)
    assert set(only.table.task) == {"findings", "tubes"} and set(only.seconds) == {"linear"}
    # No masks in the in-domain probe_train rows: no segmentation rows (nothing to learn).
    empty = SegMasks(np.zeros_like(masks.masks), masks.known)
    t2 = evaluate_encoder(features, patch, meta, _spec(attention_probe=False, report_generation=False), Vocabulary(),
                          empty).table
    assert "segmentation" not in set(t2.task)
    # Nor without any in probe_val (no epoch could be selected; the probe would run every epoch for nothing).
    no_val = masks.masks.copy()
    no_val[(meta.split == "probe_val").to_numpy()] = 0
    t3 = evaluate_encoder(features, patch, meta, _spec(attention_probe=False, report_generation=False), Vocabulary(),
                          SegMasks(no_val, masks.known)).table
    assert "segmentation" not in set(t3.task)


def test_segmentation_stage_tokens_replace_patch_tokens_for_segmentation_only():
    meta, features, patch, masks = _data(2)
    spec = _spec(attention_probe=False, report_generation=False, tasks=("findings",), seg_head="linear")
    finer = np.repeat(np.repeat(patch.reshape(len(patch), GRID, GRID, D), 2, 1), 2, 2).reshape(len(patch), -1, D)
    known = masks.known
    t = evaluate_encoder(features, patch, meta, spec, Vocabulary(), masks, seg_tokens=finer[known]).table
    assert set(t.task) == {"findings", "segmentation"}
    with pytest.raises(ValueError, match="square grid"):         # the seg tokens, not patch, reach the probe
        evaluate_encoder(features, patch, meta, spec, Vocabulary(), masks, seg_tokens=finer[known][:, :-1])


def test_segmentation_tokens_of_the_known_rows_only_score_as_tokens_of_every_row():
    meta, _, patch, masks = _data(3)
    spec = _spec(seg_head="linear")
    # Some tube rows lose their mask (RANZCR images without annotations): unknown, so without tokens.
    known = masks.known.copy()
    known[np.flatnonzero(meta.ett_normal.to_numpy() == 1)[::3]] = False
    part = SegMasks(masks.masks, known)
    every_row = segmentation_table(patch, meta, part, spec)
    known_only = segmentation_table(patch[known], meta, part, spec, known_rows_only=True)
    assert len(every_row) and 0 < known.sum() < len(meta)
    pd.testing.assert_frame_equal(every_row, known_only)
    # Token rows that do not line up with the known rows are refused, not misaligned.
    with pytest.raises(ValueError, match="token rows for"):
        segmentation_table(patch[1:][known[1:]], meta, part, spec, known_rows_only=True)


def test_report_test_rows_are_a_seeded_sample_shared_by_trials():
    meta, *_ = _data()
    has = np.ones(len(meta), bool)
    a = report_test_rows(meta, has, "ood", _spec())
    assert len(a) == 12 and np.all(np.diff(a) > 0) and set(meta.domain.iloc[a]) == {"ood"}
    assert np.array_equal(a, report_test_rows(meta, has, "ood", _spec()))
    assert len(report_test_rows(meta, has, "ood", _spec(report_max_test=0))) == 40


def test_report_probe_trains_and_scores_on_the_chosen_section(monkeypatch):
    import radscale.evaluate.suite as suite
    meta, features, patch, _ = _data(2)
    meta["report"] = ["EXAMINATION: Chest PA.\n" + r + "\n\nIMPRESSION: Stable." for r in meta["report"]]
    seen = {}

    def fit(tr_feats, tr_reports, va_feats, va_reports, *a, **kw):
        seen["train"], seen["val"] = tr_reports, va_reports
        return real_fit(tr_feats, tr_reports, va_feats, va_reports, *a, **kw)

    def score(generator, feats, references, *a, **kw):
        seen.setdefault("test", []).extend(references)
        return real_score(generator, feats, references, *a, **kw)

    real_fit, real_score = suite.fit_report_generator, suite.evaluate_report_generation
    monkeypatch.setattr(suite, "fit_report_generator", fit)
    monkeypatch.setattr(suite, "evaluate_report_generation", score)
    spec = _spec(attention_probe=False, segmentation=False, tasks=("findings",))
    evaluate_encoder(features, patch, meta, spec, Vocabulary())
    texts = seen["train"] + seen["val"] + seen["test"]
    assert texts and all(t.endswith("pleural effusion.") or "ET tube" in t for t in texts)
    assert not any("EXAMINATION" in t or "Stable" in t for t in texts)
    seen.clear()
    evaluate_encoder(features, patch, meta, spec.model_copy(update={"report_section": "impression"}), Vocabulary())
    assert set(seen["train"] + seen["test"]) == {"Stable."}


def test_mask_devices_name_the_types_a_row_annotates():
    meta = pd.DataFrame({"mask_devices": ["ett,ngt,cvc,swan_ganz", None, "chest_tube", ""]})
    ann = annotated_types(meta)
    assert ann.tolist() == [[True, True, True, True, False], [True] * 5, [False] * 4 + [True], [True] * 5]
    assert annotated_types(pd.DataFrame({"x": [1]})) is None
    with pytest.raises(ValueError, match="unknown device type 'pacemaker' at eval row 0"):
        annotated_types(pd.DataFrame({"mask_devices": ["ett,pacemaker"]}))
