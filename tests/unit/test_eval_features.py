"""Frozen-feature extraction (multi-layer CLS, pooled patch tokens) and the mask geometry of the eval images."""
import io

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from radscale.data.masks import load_square_masks, square_mask
from radscale.evaluate.extract import (FeatureExtractor, bytes_per_image, last_layer_cls, patch_grid,
                                      pool_patch_tokens)
from radscale.evaluate.suite import known_masks
from radscale.models.registry import build_image_encoder
from radscale.train.batches import TrainBatchBuilder


@pytest.fixture(autouse=True)
def _one_torch_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _checkpoint(tmp_path, name: str) -> tuple[str, torch.nn.Module]:
    torch.manual_seed(0)
    model = build_image_encoder(name).eval()
    path = tmp_path / f"{name}.pt"
    torch.save(model.state_dict(), path)
    return str(path), model


def _batch(n=3, size=64, seed=0):
    rng = np.random.default_rng(seed)
    return {"image_id": np.array([f"i{k}" for k in range(n)], dtype=object),
            "image": rng.integers(0, 256, (n, size, size), dtype=np.uint8)}


def _images(batch):
    return torch.as_tensor(batch["image"]).unsqueeze(1).float() / 255.0


def test_vit_features_are_last_blocks_cls_plus_mean_patch(tmp_path):
    ckpt, model = _checkpoint(tmp_path, "rad-dino-tiny")
    batch = _batch()
    with torch.no_grad():
        ref = model.forward_features(_images(batch), layers=(0, 1, 2, 3))
    out = FeatureExtractor([("rad-dino-tiny", ckpt)], n_layers=3)(batch)
    d = model.embed_dim
    f = out["features_0"]
    assert f.dtype == np.float32 and f.shape == (3, 4 * d)
    # DINOv2 linear-eval order: CLS of blocks 1, 2, 3 (the last is the final CLS), then the mean patch token.
    expect = torch.cat([ref["layer1"], ref["layer2"], ref["layer3"], ref["patch"].mean(1)], 1).numpy()
    np.testing.assert_allclose(f, expect, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(last_layer_cls(f, d), ref["cls"].numpy(), rtol=1e-4, atol=1e-5)
    # The 8x8 grid is under the cap: tokens pass unpooled, as float16.
    p = out["patch_0"]
    assert p.dtype == np.float16 and p.shape == (3, 64, d) and patch_grid(64) == (8, 8)
    np.testing.assert_allclose(p.astype(np.float32), ref["patch"].numpy(), rtol=1e-2, atol=1e-2)
    # One layer is the former protocol (CLS ++ mean patch); no patch columns when asked.
    one = FeatureExtractor([("rad-dino-tiny", ckpt)], n_layers=1, patch_tokens=False)(batch)
    assert set(one) == {"image_id", "features_0"}
    np.testing.assert_allclose(one["features_0"], torch.cat([ref["cls"], ref["patch"].mean(1)], 1).numpy(),
                               rtol=1e-4, atol=1e-5)


def test_patch_tokens_are_average_pooled_to_the_grid_cap(tmp_path):
    ckpt, model = _checkpoint(tmp_path, "rad-dino-tiny")
    batch = _batch(2)
    out = FeatureExtractor([("rad-dino-tiny", ckpt)], max_patch_grid=4)(batch)
    with torch.no_grad():
        patch = model.forward_features(_images(batch))["patch"]          # [2, 64, D] on an 8x8 grid
    grid = patch.transpose(1, 2).reshape(2, -1, 8, 8)
    expect = F.avg_pool2d(grid, 2).flatten(2).transpose(1, 2).numpy()   # 2x2 cells -> 4x4
    assert out["patch_0"].shape == (2, 16, model.embed_dim)
    np.testing.assert_allclose(out["patch_0"].astype(np.float32), expect, rtol=1e-2, atol=1e-2)
    # A 5x5 grid capped at 3 uses adaptive bins; an uneven grid is refused.
    x = torch.arange(2 * 25 * 1, dtype=torch.float32).reshape(2, 25, 1)
    assert pool_patch_tokens(x, 3).shape == (2, 9, 1) and pool_patch_tokens(x, 5) is x
    with pytest.raises(ValueError, match="square grid"):
        patch_grid(24)


def test_davit_layers_are_pooled_stage_outputs_in_one_pass(tmp_path):
    ckpt, model = _checkpoint(tmp_path, "mi2-tiny")
    batch = _batch(2)
    two = [FeatureExtractor([("mi2-tiny", ckpt), ("rad-dino-tiny", _checkpoint(tmp_path, "rad-dino-tiny")[0])],
                            n_layers=n)(batch) for n in (2, 9)]
    with torch.no_grad():
        x = model.davit.stem(model.normalize(_images(batch)))
        pooled = []
        for stage in model.davit.stages:
            x = stage(x)
            pooled.append(x.mean((2, 3)))
        ref = model.forward_features(_images(batch))
    dims = [p.shape[1] for p in pooled]                                  # 24, 48, 96, 192
    f2, f_all = two[0]["features_0"], two[1]["features_0"]
    assert f2.shape == (2, dims[2] + 2 * dims[3])                        # stage 2 ++ cls ++ mean patch
    np.testing.assert_allclose(f2[:, :dims[2]], pooled[2].numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(last_layer_cls(f2, dims[3]), ref["cls"].numpy(), rtol=1e-4, atol=1e-5)
    # More layers than stages: every stage once.
    assert f_all.shape == (2, sum(dims) + dims[3])
    np.testing.assert_allclose(f_all[:, :dims[0]], pooled[0].numpy(), rtol=1e-4, atol=1e-5)
    assert two[0]["patch_0"].shape == (2, 4, dims[3]) and "features_1" in two[0] and "patch_1" in two[0]


def test_davit_segmentation_stage_map_is_its_own_column(tmp_path):
    ckpt, model = _checkpoint(tmp_path, "mi2-tiny")
    vit_ckpt = _checkpoint(tmp_path, "rad-dino-tiny")[0]
    batch = _batch(2)
    with torch.no_grad():
        x = model.davit.stem(model.normalize(_images(batch)))
        maps = []
        for stage in model.davit.stages:
            x = stage(x)
            maps.append(x)
    out = FeatureExtractor([("mi2-tiny", ckpt), ("rad-dino-tiny", vit_ckpt)], seg_stage=-3)(batch)
    expect = maps[1].flatten(2).transpose(1, 2)                         # stride 8: 8x8 tokens of width 48
    assert out["seg_0"].dtype == np.float16 and out["seg_0"].shape == (2, 64, 48)
    np.testing.assert_allclose(out["seg_0"].astype(np.float32), expect.numpy(), rtol=1e-2, atol=1e-2)
    assert "seg_1" not in out                                           # a ViT has one grid: patch_1
    # The same pass's other columns do not change with the tap; the grid cap pools it like patch tokens.
    plain = FeatureExtractor([("mi2-tiny", ckpt)])(batch)
    assert "seg_0" not in plain and np.array_equal(plain["features_0"], out["features_0"])
    capped = FeatureExtractor([("mi2-tiny", ckpt)], seg_stage=-3, max_patch_grid=4)(batch)["seg_0"]
    np.testing.assert_allclose(capped.astype(np.float32), F.avg_pool2d(maps[1], 2).flatten(2).transpose(1, 2),
                               rtol=1e-2, atol=1e-2)
    assert "seg_0" not in FeatureExtractor([("mi2-tiny", ckpt)], seg_stage=-2, patch_tokens=False)(batch)
    with pytest.raises(ValueError, match="seg_stage=-5"):
        FeatureExtractor([("mi2-tiny", ckpt)], seg_stage=-5)


def test_vit_segmentation_tokens_concatenate_the_last_blocks(tmp_path):
    ckpt, model = _checkpoint(tmp_path, "rad-dino-tiny")
    batch, d = _batch(2), model.embed_dim
    with torch.no_grad():                          # by hand: every block's tokens through the final norm
        v = model.vit
        x = v.norm_pre(v._pos_embed(v.patch_embed(model.normalize(_images(batch)))))
        blocks = []
        for blk in v.blocks:
            x = blk(x)
            blocks.append(v.norm(x)[:, v.num_prefix_tokens:])
    depth = len(blocks)
    out = FeatureExtractor([("rad-dino-tiny", ckpt)], seg_layers=2)(batch)
    assert out["seg_0"].dtype == np.float16 and out["seg_0"].shape == (2, 64, 2 * d)
    np.testing.assert_allclose(out["seg_0"].astype(np.float32), torch.cat(blocks[-2:], -1).numpy(),
                               rtol=1e-2, atol=1e-2)
    # The last block's half is the patch column; the other columns do not change with the extra blocks.
    plain = FeatureExtractor([("rad-dino-tiny", ckpt)])(batch)
    assert "seg_0" not in plain and np.array_equal(plain["features_0"], out["features_0"])
    np.testing.assert_array_equal(out["seg_0"][..., d:], plain["patch_0"])
    # More blocks than the depth: all of them; pooled by the grid cap; none without patch tokens.
    every = FeatureExtractor([("rad-dino-tiny", ckpt)], seg_layers=depth + 3, max_patch_grid=4)(batch)["seg_0"]
    expect = F.avg_pool2d(torch.cat(blocks, -1).transpose(1, 2).reshape(2, -1, 8, 8), 2).flatten(2).transpose(1, 2)
    np.testing.assert_allclose(every.astype(np.float32), expect.numpy(), rtol=1e-2, atol=1e-2)
    assert "seg_0" not in FeatureExtractor([("rad-dino-tiny", ckpt)], seg_layers=4, patch_tokens=False)(batch)
    # DaViT ignores seg_layers (its segmentation tokens are seg_stage's map).
    mi2 = _checkpoint(tmp_path, "mi2-tiny")[0]
    assert "seg_0" not in FeatureExtractor([("mi2-tiny", mi2)], seg_layers=4)(batch)
    with pytest.raises(ValueError, match="seg_layers=0"):
        FeatureExtractor([("rad-dino-tiny", ckpt)], seg_layers=0)


@pytest.mark.parametrize("kw", [dict(), dict(n_layers=1, patch_tokens=False), dict(n_layers=9, max_patch_grid=4),
                                dict(seg_stage=-3, seg_layers=3), dict(seg_stage=-2, seg_layers=9, max_patch_grid=2)])
def test_bytes_per_image_is_what_the_extractor_returns(tmp_path, kw):
    batch = _batch(2)
    for name in ("rad-dino-tiny", "mi2-tiny"):
        out = FeatureExtractor([(name, _checkpoint(tmp_path, name)[0])], **kw)(batch)
        held = sum(v.nbytes for k, v in out.items() if k != "image_id")
        assert bytes_per_image(name, **kw) * 2 == held, (name, kw)


def test_bytes_per_image_of_the_full_size_encoders():
    # RAD-DINO: 5 CLS-width float32 features; 37x37 tokens pooled to 16x16, float16, for 1 + 4 blocks.
    assert bytes_per_image("rad-dino", seg_layers=4) == 4 * 5 * 768 + 2 * 256 * 768 * 5
    # MI2 at 480 px: stages 120/60/30/15 px; stage -2 (1024 wide, 30x30) pooled to 16x16; last stage 15x15.
    assert bytes_per_image("mi2", seg_stage=-2) == 4 * (256 + 512 + 1024 + 2 * 2048) + 2 * 225 * 2048 + 2 * 256 * 1024


def _png(array: np.ndarray, path):
    Image.fromarray(array).save(path, format="PNG")
    return str(path)


def test_thin_mask_lines_survive_resize_and_crop_where_the_image_has_them(tmp_path):
    h, w, size, col, row = 100, 160, 32, 120, 37
    mask = np.zeros((h, w), np.uint8)
    mask[:, col] |= 1 << 0                    # 1-px vertical line, bit 0
    mask[row, 40:150] |= 1 << 3               # 1-px horizontal line, bit 3
    image = np.zeros((h, w), np.uint8)
    image[:, col] = 255
    image[row, 40:150] = 255
    out = square_mask(mask, size)
    assert out.shape == (size, size) and out.dtype == np.uint8
    assert not (out & 0b11110110).any()       # bits stay apart; no bit appears from nowhere
    # Short side 100 -> 32 (x0.32): width 51, centre crop from column 9; column 120 -> 38.4 - 9 = 29.4.
    cols = np.flatnonzero((out & 1).any(0))
    assert (out & 1).any(1).all() and set(cols) <= {28, 29, 30} and len(cols) <= 2
    rows = np.flatnonzero((out >> 3 & 1).any(1))
    assert set(rows) <= {11, 12, 13} and len(rows) <= 2                   # 37 x 0.32 = 11.8
    # The decoded image puts its line at the same place (the eval images' own resize + crop).
    img = TrainBatchBuilder("dinov2", size).decode_square(_png(image, tmp_path / "img.png")).astype(float)
    line_col = int(np.argmax(img[:5].mean(0)))          # top rows: only the vertical line is there
    assert line_col in cols
    assert int(np.argmax(img[:, 15:25].mean(1))) in rows                 # and its horizontal line
    # Loading: None = empty mask, an unreadable file is reported, not raised.
    (tmp_path / "bad.png").write_bytes(b"not a png")
    masks, failed = load_square_masks([_png(mask, tmp_path / "m.png"), None, str(tmp_path / "bad.png")], size)
    assert np.array_equal(masks[0], out) and not masks[1].any() and failed == [2]


def test_upscaled_mask_keeps_lines_and_geometry_matches_square_images():
    mask = np.zeros((20, 20), np.uint8)
    mask[5, :] = 1 << 2
    out = square_mask(mask, 64)                # 3.2x upscale: the line becomes a band of ~3 rows
    rows = np.flatnonzero((out >> 2 & 1).any(1))
    assert (out >> 2 & 1).any(1).sum() >= 3 and rows.min() >= 15 and rows.max() <= 19
    assert np.array_equal(square_mask(mask, 20), mask)                   # same size: untouched
    with pytest.raises(ValueError, match="integer bitfield"):
        square_mask(mask.astype(float), 8)


def test_known_masks_policy():
    meta = pd.DataFrame({"mask_uri": ["a.png", None, None, None, "b.png"],
                         "support_devices": pd.array([1, 0, None, 1, 1], dtype="Int8")})
    # File -> known; no file and no device (0 or unmentioned) -> known empty; device but no file -> unknown.
    assert known_masks(meta).tolist() == [True, True, True, False, True]
    assert known_masks(meta, failed=[4]).tolist() == [True, True, True, False, False]
    assert not known_masks(meta.drop(columns="mask_uri")).any()
    assert known_masks(meta.drop(columns="support_devices")).all()


def test_precision_bf16_applies_to_gpu_actors_only(tmp_path):
    # eval.precision: bf16 autocast is for CUDA devices; a CPU actor runs fp32 whatever the job says.
    ckpt, _ = _checkpoint(tmp_path, "rad-dino-tiny")
    batch = _batch()
    fp32 = FeatureExtractor([("rad-dino-tiny", ckpt)])(batch)
    bf16 = FeatureExtractor([("rad-dino-tiny", ckpt)], precision="bf16")
    assert bf16.bf16 is False
    np.testing.assert_array_equal(bf16(batch)["features_0"], fp32["features_0"])
    with pytest.raises(ValueError, match="precision='fp16'"):
        FeatureExtractor([("rad-dino-tiny", ckpt)], precision="fp16")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="bf16 autocast needs a CUDA device")
def test_bf16_features_on_gpu_are_close_to_fp32(tmp_path):
    ckpt, _ = _checkpoint(tmp_path, "rad-dino-tiny")
    batch = _batch(n=8)
    fp32 = FeatureExtractor([("rad-dino-tiny", ckpt)], device="cuda")(batch)["features_0"]
    bf16 = FeatureExtractor([("rad-dino-tiny", ckpt)], device="cuda", precision="bf16")(batch)["features_0"]
    assert bf16.dtype == np.float32
    np.testing.assert_allclose(bf16, fp32, atol=0.1, rtol=0.05)
