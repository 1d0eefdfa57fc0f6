import numpy as np
import pytest
import torch
from scipy import ndimage

from radscale.data.vocab import DEVICE_TYPES
from radscale.errors import RadscaleError
from radscale.evaluate.seg_metrics import cldice_scores, dice_scores, skeletonize, zhang_suen_skeleton
from radscale.evaluate.segmentation import (evaluate_segmentation, fit_segmentation_probe, macro_mean,
                                            seg_loss, should_stop, unpack_masks)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny models: thread hand-offs cost more than they save, badly so on a loaded 2-core machine."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _bar(h=24, w=48, rows=slice(9, 16), cols=slice(4, 44)):
    m = np.zeros((h, w), bool)
    m[rows, cols] = True
    return m


def test_skeleton_of_thick_shapes_is_thin_connected_and_inside():
    bar = _bar()
    yy, xx = np.mgrid[:40, :40]
    diag = np.abs(yy - xx) <= 2
    # One pixel wide: at most one skeleton pixel per column (per row for the vertical bar).
    for shape, axis in ((bar, 0), (diag, 0), (bar.T, 1)):
        for skel in (zhang_suen_skeleton(shape), skeletonize(shape)):
            assert skel.any() and not (skel & ~shape).any()
            assert skel.sum(axis=axis).max() == 1
            assert ndimage.label(skel, structure=np.ones((3, 3)))[1] == 1
    # Batched thinning equals per-image thinning; a tiny blob keeps itself as its skeleton.
    stack = np.stack([bar, np.zeros_like(bar)])
    assert np.array_equal(zhang_suen_skeleton(stack)[0], zhang_suen_skeleton(bar))
    blob = np.zeros((6, 6), bool)
    blob[2:4, 2:4] = True
    assert skeletonize(blob).sum() >= 1


def test_dice_and_cldice_on_thin_lines():
    thick = _bar(rows=slice(4, 13))
    thin = _bar(rows=slice(18, 19))
    gt = thick | thin
    assert dice_scores(gt, gt) == 1.0 and cldice_scores(gt, gt) == 1.0
    # Break the thin catheter in the middle (a long gap): little volume is lost, much centreline is.
    broken = gt.copy()
    broken[18, 14:34] = False
    d, c = float(dice_scores(broken, gt)), float(cldice_scores(broken, gt))
    assert d > 0.95 and c < d - 0.1
    # A single uniform line loses Dice and clDice alike when cut: clDice weights centreline, not topology.
    line = _bar(rows=slice(10, 12))
    cut = line.copy()
    cut[:, 22:26] = False
    assert abs(float(dice_scores(cut, line)) - float(cldice_scores(cut, line))) < 0.05
    # Empty ground truth: undefined (excluded); empty prediction of a present line: 0.
    empty = np.zeros_like(gt)
    assert np.isnan(dice_scores(gt, empty)) and np.isnan(cldice_scores(gt, empty))
    assert dice_scores(empty, gt) == 0.0 and cldice_scores(empty, gt) == 0.0


def test_unpack_masks_reads_bit_k_as_device_type_k():
    masks = np.array([[[0b101, 0b010]]], dtype=np.uint8)
    out = unpack_masks(masks, 3)
    assert out.shape == (1, 3, 1, 2)
    assert out[0, :, 0, 0].tolist() == [True, False, True] and out[0, :, 0, 1].tolist() == [False, True, False]
    with pytest.raises(RadscaleError):
        unpack_masks(masks.astype(np.float32), 3)


def _synthetic(n, rng, patch=4, size=32):
    """Masks with a horizontal 'ett' (bit 0) and a vertical 'ngt' (bit 1) line; tokens = patchified mask bits
    through a fixed random projection plus noise, i.e. the signal an ideal encoder would carry."""
    masks = np.zeros((n, size, size), np.uint8)
    for i in range(n):
        if rng.random() < 0.8:
            r = rng.integers(2, size - 4)
            masks[i, r:r + 3, 2:size - 2] |= 1
        if rng.random() < 0.6:
            c = rng.integers(2, size - 4)
            masks[i, 4:size - 4, c:c + 3] |= 2
    g = size // patch
    bits = unpack_masks(masks, 2).astype(np.float32)                        # [n, 2, S, S]
    patches = bits.reshape(n, 2, g, patch, g, patch).transpose(0, 2, 4, 1, 3, 5).reshape(n, g * g, -1)
    proj = np.random.default_rng(123).normal(size=(patches.shape[-1], 24)).astype(np.float32)
    return patches @ proj + rng.normal(0, 0.1, (n, g * g, 24)).astype(np.float32), masks, (g, g)


def test_probe_learns_signal_tokens_and_fails_on_noise():
    rng = np.random.default_rng(0)
    tr, tr_m, grid = _synthetic(96, rng)
    va, va_m, _ = _synthetic(32, rng)
    te, te_m, _ = _synthetic(40, rng)
    groups = np.arange(40) // 2
    probe = fit_segmentation_probe(tr, tr_m, va, va_m, grid, 2, head="linear", epochs=12, lr=0.1, seed=0)
    res = evaluate_segmentation(probe, te, te_m, groups, DEVICE_TYPES[:2], n_boot=30, seed=0)
    assert set(res.columns) == {"task", "domain", "metric", "label", "value", "ci_lo", "ci_hi", "n_test",
                                "n_labels", "replicates"}
    assert set(res.metric) == {"dice", "cldice"} and set(res.label) == {"macro", "ett", "ngt"}
    macro = res[res.label == "macro"].set_index("metric")
    assert macro.loc["dice", "value"] > 0.6 and macro.loc["cldice", "value"] > 0.6
    assert macro.loc["dice", "ci_lo"] <= macro.loc["dice", "value"] <= macro.loc["dice", "ci_hi"]
    assert len(macro.loc["dice", "replicates"]) == 30 and macro.loc["dice", "n_labels"] == 2
    # Per-type rows count only the images that contain the type.
    ett = res[(res.label == "ett") & (res.metric == "dice")].iloc[0]
    assert ett.n_test == int(((te_m & 1) > 0).any(axis=(1, 2)).sum()) < 40 and ett.replicates is None

    noise = [rng.normal(size=a.shape).astype(np.float32) for a in (tr, va, te)]
    blind = fit_segmentation_probe(noise[0], tr_m, noise[1], va_m, grid, 2, head="linear", epochs=5,
                                   lr=0.1, seed=0)
    res_n = evaluate_segmentation(blind, noise[2], te_m, groups, DEVICE_TYPES[:2], n_boot=30, seed=0)
    assert res_n[(res_n.label == "macro") & (res_n.metric == "dice")].value.iloc[0] < 0.3


def test_pyramid_head_trains_and_selects_an_epoch():
    rng = np.random.default_rng(1)
    tr, tr_m, grid = _synthetic(48, rng)
    va, va_m, _ = _synthetic(16, rng)
    probe = fit_segmentation_probe(tr, tr_m, va, va_m, grid, 2, head="pyramid", epochs=6, lr=1e-2, seed=0)
    assert probe.head_name == "pyramid" and 1 <= probe.best_epoch <= len(probe.val_dice) <= 6
    assert probe.val_dice[probe.best_epoch - 1] == max(probe.val_dice) > 0.3
    assert probe.predict(va[:3], (32, 32)).shape == (3, 2, 32, 32)


def test_repeated_fits_are_scored_by_their_mean_per_image():
    rng = np.random.default_rng(2)
    tr, tr_m, grid = _synthetic(48, rng)
    va, va_m, _ = _synthetic(16, rng)
    te, te_m, _ = _synthetic(24, rng)
    groups = np.arange(24) // 2
    fits = [fit_segmentation_probe(tr, tr_m, va, va_m, grid, 2, head="pyramid", epochs=3, lr=1e-2, seed=s)
            for s in (5, 6)]
    assert [p.seed for p in fits] == [5, 6]
    one = [evaluate_segmentation(p, te, te_m, groups, DEVICE_TYPES[:2], n_boot=20, seed=0).set_index(
        ["metric", "label"]) for p in fits]
    assert not np.allclose(one[0].value, one[1].value)           # the seeds differ, so averaging matters
    both = evaluate_segmentation(fits, te, te_m, groups, DEVICE_TYPES[:2], n_boot=20, seed=0).set_index(
        ["metric", "label"])
    # Every row averages the same images for both fits, so the mean per image gives the mean of the values.
    assert np.allclose(both.value, (one[0].value + one[1].value) / 2)
    assert (both.n_test == one[0].n_test).all()
    assert (both.loc[("dice", "macro"), "ci_lo"] <= both.loc[("dice", "macro"), "value"]
            <= both.loc[("dice", "macro"), "ci_hi"])
    with pytest.raises(RadscaleError, match="no probe"):
        evaluate_segmentation([], te, te_m, groups, DEVICE_TYPES[:2], n_boot=20, seed=0)
    with pytest.raises(RadscaleError, match="device types"):
        evaluate_segmentation(fits, te, te_m, groups, DEVICE_TYPES[:3], n_boot=20, seed=0)


def test_early_stop_counts_patience_from_the_first_foreground_epoch():
    assert not should_stop([0.0] * 30, patience=5)               # never predicted foreground: keep going
    assert not should_stop([0.0] * 8 + [0.01, 0.02], patience=5)
    assert not should_stop([0.0] * 8 + [0.05] + [0.04] * 4, patience=5)
    assert should_stop([0.0] * 8 + [0.05] + [0.04] * 5, patience=5)
    assert should_stop([0.3, 0.2, 0.2], patience=2) and not should_stop([0.3, 0.2], patience=2)
    assert not should_stop([np.nan, 0.1, 0.2], patience=1)
    assert not should_stop([np.nan] * 40, patience=5)           # no foreground in probe_val: suite skips it


def test_macro_mean_skips_absent_types_and_bad_inputs_raise():
    s = np.array([[1.0, np.nan], [0.5, np.nan], [np.nan, 0.2]])
    assert macro_mean(s) == pytest.approx((0.75 + 0.2) / 2)
    assert np.isnan(macro_mean(np.full((2, 2), np.nan)))
    rng = np.random.default_rng(0)
    tok, m, grid = _synthetic(8, rng)
    with pytest.raises(RadscaleError, match="grid"):
        fit_segmentation_probe(tok, m, tok, m, (4, 4), 2)
    with pytest.raises(RadscaleError, match="head"):
        fit_segmentation_probe(tok, m, tok, m, grid, 2, head="unet")


def _float64_seg_loss(logits: np.ndarray, target: np.ndarray, annotated: np.ndarray) -> float:
    """BCE over annotated pixels + soft Dice per type present among annotated images, straight from the formulas."""
    p = 1 / (1 + np.exp(-logits))
    w = annotated[:, :, None, None].astype(float) * np.ones_like(logits)
    bce = -(target * np.log(p) + (1 - target) * np.log(1 - p))
    dice = []
    for k in range(logits.shape[1]):
        pk, tk = (p * w)[:, k], (target * w)[:, k]
        if tk.sum() > 0:
            dice.append(1 - (2 * (pk * tk).sum() + 1) / (pk.sum() + tk.sum() + 1))
    return float((bce * w).sum() / w.sum() + (np.mean(dice) if dice else 0.0))


def test_seg_loss_leaves_unannotated_types_out():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, len(DEVICE_TYPES), 6, 5))
    target = (rng.random(logits.shape) < 0.2).astype(float)
    every = np.ones((3, len(DEVICE_TYPES)), bool)
    partial = every.copy()
    partial[0, 4] = partial[1, :2] = False                   # e.g. RANZCR: no chest tubes drawn
    target[~partial] = 0.0                                    # what an unannotated type looks like in the mask
    for ann in (every, partial):
        x = torch.tensor(logits, requires_grad=True)
        loss = seg_loss(x, torch.tensor(target), torch.tensor(ann))
        assert float(loss) == pytest.approx(_float64_seg_loss(logits, target, ann), rel=1e-12)
        loss.backward()
        assert (x.grad[torch.tensor(~ann)] == 0).all() and (x.grad[torch.tensor(ann)] != 0).any()
    assert float(seg_loss(torch.tensor(logits), torch.tensor(target))) == pytest.approx(
        _float64_seg_loss(logits, target, every), rel=1e-12)  # None = every type annotated


def test_types_a_source_does_not_draw_are_not_taught_as_background():
    # 3 of 4 training images come from a source without ETT annotations (RANZCR has no chest tubes): their ETT
    # is in the tokens but not in the mask. Trained as background it costs ~0.07 test Dice; left out, nothing.
    rng = np.random.default_rng(0)
    tr, tr_m, grid = _synthetic(96, rng)
    va, va_m, _ = _synthetic(32, rng)
    te, te_m, _ = _synthetic(40, rng)
    undrawn = np.arange(96) % 4 != 0
    partial = tr_m.copy()
    partial[undrawn] &= ~np.uint8(1)
    annotated = np.ones((96, 2), bool)
    annotated[undrawn, 0] = False

    def ett_dice(masks, ann=None):
        probe = fit_segmentation_probe(tr, masks, va, va_m, grid, 2, head="linear", epochs=12, lr=0.1, seed=0,
                                       train_annotated=ann)
        res = evaluate_segmentation(probe, te, te_m, np.arange(40) // 2, DEVICE_TYPES[:2], n_boot=10, seed=0)
        return float(res[(res.label == "ett") & (res.metric == "dice")].value.iloc[0])

    full, blind, told = ett_dice(tr_m), ett_dice(partial), ett_dice(partial, annotated)
    assert told > blind + 0.04 and told > full - 0.02
    with pytest.raises(RadscaleError, match="train_annotated"):
        fit_segmentation_probe(tr, tr_m, va, va_m, grid, 2, train_annotated=annotated[:, :1])
