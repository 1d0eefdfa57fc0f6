"""DINO, iBOT, KoLeo, centering and masking against float64 references written from the formulas."""

from __future__ import annotations

import math

import pytest
import torch

from radscale.objectives.centering import (
    EMACenter,
    centered_teacher_probs,
    sinkhorn_knopp,
    teacher_temperature,
    updated_center,
)
from radscale.objectives.dino import dino_loss, n_dino_pairs
from radscale.objectives.ibot import ibot_patch_loss, ibot_patch_loss_masked, masked_token_weights
from radscale.objectives.koleo import koleo_loss
from radscale.objectives.masking import block_masks


def _log_softmax64(x: torch.Tensor) -> torch.Tensor:
    x = x.double()
    return x - torch.logsumexp(x, dim=-1, keepdim=True)


def _ce64(teacher: torch.Tensor, student_logits: torch.Tensor, temp: float) -> torch.Tensor:
    """Per-row -sum_k t_k log softmax(s / temp)_k in float64."""
    return -(teacher.double() * _log_softmax64(student_logits.double() / temp)).sum(-1)


def _teacher(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(torch.randn(shape, generator=g, dtype=torch.float64) / 0.3, dim=-1)


# ---------------------------------------------------------------- DINO


def test_dino_equals_explicit_loop_over_18_pairs() -> None:
    g = torch.Generator().manual_seed(0)
    student = torch.randn(10, 5, 7, generator=g, dtype=torch.float64, requires_grad=True)
    teacher = _teacher((2, 5, 7), seed=1)
    pairs = [(t, s) for t in range(2) for s in range(10) if s != t]
    assert len(pairs) == n_dino_pairs(10, 2) == 18
    expected = sum(_ce64(teacher[t], student[s], 0.1).mean() for t, s in pairs) / len(pairs)
    got = dino_loss(student, teacher, student_temp=0.1)
    assert torch.allclose(got, expected, rtol=0, atol=1e-12)
    (g_got,) = torch.autograd.grad(got, student)
    (g_exp,) = torch.autograd.grad(expected, student)
    assert torch.allclose(g_got, g_exp, atol=1e-12)


def test_dino_matches_dinov2_swapped_global_plus_local_scaling() -> None:
    g = torch.Generator().manual_seed(2)
    student = torch.randn(10, 4, 6, generator=g, dtype=torch.float64)
    teacher = _teacher((2, 4, 6), seed=3)
    n_terms = 2 * 1 + 2 * 8
    # Global term: both student globals (flattened) against the swapped teacher globals, scaled by 2.
    swapped = torch.cat([teacher[1], teacher[0]])
    global_term = 2 * _ce64(swapped, student[:2].flatten(0, 1), 0.1).mean() / n_terms
    local_term = sum(_ce64(teacher[t], student[s], 0.1).mean() for s in range(2, 10) for t in range(2)) / n_terms
    assert torch.allclose(dino_loss(student, teacher), global_term + local_term, atol=1e-12)


def test_dino_low_precision_input_is_computed_in_float32() -> None:
    g = torch.Generator().manual_seed(4)
    student = torch.randn(4, 3, 512, generator=g)
    teacher = _teacher((2, 3, 512), seed=5).float()
    got = dino_loss(student.bfloat16(), teacher.bfloat16())
    assert got.dtype == torch.float32
    ref = dino_loss(student.bfloat16().double(), teacher.bfloat16().double())
    assert abs(got.item() - ref.item()) < 1e-4


def test_dino_rejects_views_without_pairs() -> None:
    with pytest.raises(ValueError, match="no pair"):
        dino_loss(torch.zeros(1, 2, 3), torch.full((1, 2, 3), 1 / 3))


# ---------------------------------------------------------------- iBOT


def _ibot_case() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(6)
    student = torch.randn(4, 6, 5, generator=g, dtype=torch.float64)
    teacher = _teacher((4, 6, 5), seed=7)
    masks = torch.zeros(4, 6, dtype=torch.bool)
    masks[0, [0, 3]] = True  # 2 masked
    masks[1, :5] = True  # 5 masked
    masks[3, 4] = True  # 1 masked; image 2 has none
    return student, teacher, masks


def test_ibot_uneven_masks_match_float64_loop() -> None:
    student, teacher, masks = _ibot_case()
    per_image = []
    for n in range(4):
        idx = masks[n].nonzero().flatten().tolist()
        ce = [_ce64(teacher[n, p], student[n, p], 0.1) for p in idx]
        per_image.append(sum(ce) / len(ce) if ce else torch.zeros((), dtype=torch.float64))
    expected = sum(per_image) / 4  # divided by all images, the unmasked one included
    assert torch.allclose(ibot_patch_loss(student, teacher, masks), expected, atol=1e-12)


def test_ibot_compact_form_equals_dense_form() -> None:
    student, teacher, masks = _ibot_case()
    weights = masked_token_weights(masks)
    assert weights.shape == (int(masks.sum()),)
    assert math.isclose(weights.sum().item(), 3.0, rel_tol=1e-6)  # one per image with a mask
    compact = ibot_patch_loss_masked(student[masks], teacher[masks], weights, n_images=4)
    assert torch.allclose(compact, ibot_patch_loss(student, teacher, masks), atol=1e-12)


def test_ibot_all_unmasked_is_zero() -> None:
    student, teacher, _ = _ibot_case()
    assert ibot_patch_loss(student, teacher, torch.zeros(4, 6, dtype=torch.bool)).item() == 0.0


# ---------------------------------------------------------------- KoLeo


def test_koleo_hand_computed_square() -> None:
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    assert math.isclose(koleo_loss(x).item(), -math.log(math.sqrt(2.0) + 1e-8), rel_tol=1e-6)


def test_koleo_hand_computed_uneven_points_are_normalised_first() -> None:
    # Unit-circle angles 0, 60 and 180 degrees (the last scaled by 5 to check normalisation):
    # nearest-neighbour distances 1, 1 and sqrt(3), so the loss is -(0 + 0 + log sqrt 3) / 3 = -log(3) / 6.
    x = torch.tensor([[1.0, 0.0], [0.5, math.sqrt(3) / 2], [-5.0, 0.0]])
    assert math.isclose(koleo_loss(x).item(), -math.log(3.0) / 6.0, rel_tol=1e-6)


def test_koleo_coincident_points_have_finite_gradient() -> None:
    x = torch.tensor([[1.0, 2.0], [1.0, 2.0], [3.0, -1.0]], requires_grad=True)
    loss = koleo_loss(x)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(x.grad).all()
    assert koleo_loss(x.detach().half()).dtype == torch.float32


# ---------------------------------------------------------------- centering


def test_ema_center_update_applies_from_next_step() -> None:
    g = torch.Generator().manual_seed(8)
    x0, x1 = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
    center = EMACenter(5, momentum=0.9)
    p0 = center.teacher_probs(x0, 0.05)
    assert torch.allclose(center.teacher_probs(x0, 0.05), p0)  # reading targets never moves the center
    assert torch.allclose(p0, torch.softmax(x0 / 0.05, dim=-1), atol=1e-6)  # step 0 uses c_0 = 0
    center.update(x0)
    c1 = 0.1 * x0.mean(0)
    assert torch.allclose(center.center, c1, atol=1e-7)
    p1 = center.teacher_probs(x1, 0.05)  # step 1 uses c_1, which does not contain x1 yet
    assert torch.allclose(p1, torch.softmax((x1 - c1) / 0.05, dim=-1), atol=1e-6)
    center.update(x1)
    assert torch.allclose(center.center, 0.9 * c1 + 0.1 * x1.mean(0), atol=1e-7)


def test_ema_center_pure_functions_and_state_dict() -> None:
    g = torch.Generator().manual_seed(9)
    x = torch.randn(2, 3, 4, generator=g)  # leading dims are all rows of the mean
    c = updated_center(torch.ones(4), x, momentum=0.8)
    assert torch.allclose(c, 0.8 + 0.2 * x.reshape(-1, 4).mean(0), atol=1e-7)
    a = EMACenter(4)
    a.update(x)
    b = EMACenter(4, momentum=0.5)
    b.load_state_dict(a.state_dict())
    assert b.momentum == 0.9 and torch.equal(b.center, a.center)
    assert torch.allclose(b.teacher_probs(x, 0.07), centered_teacher_probs(x, a.center, 0.07))
    with pytest.raises(ValueError, match="shape"):
        b.load_state_dict({"center": torch.zeros(3), "momentum": 0.9})


def _sinkhorn64(logits: torch.Tensor, temp: float, n_iterations: int) -> torch.Tensor:
    """SwAV Alg. 1 in float64 on [N, K]: total to 1, then (prototypes to 1/K, samples to 1/N) x n, times N."""
    q = torch.exp(logits.double() / temp)
    n, k = q.shape
    q = q / q.sum()
    for _ in range(n_iterations):
        q = q / q.sum(0, keepdim=True) / k
        q = q / q.sum(1, keepdim=True) / n
    return q * n


def _cosine_logits(n: int, k: int, seed: int, dim: int = 8) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    z = torch.nn.functional.normalize(torch.randn(n, dim, generator=g), dim=-1)
    w = torch.nn.functional.normalize(torch.randn(k, dim, generator=g), dim=-1)
    return z @ w.t()  # in [-1, 1], like the DINO head's outputs


def test_sinkhorn_matches_float64_reference_and_rows_sum_to_one() -> None:
    logits = _cosine_logits(96, 24, seed=10)
    q = sinkhorn_knopp(logits.half(), teacher_temp=0.04)
    assert q.dtype == torch.float32
    assert torch.allclose(q.sum(1), torch.ones(96), atol=1e-5)
    ref = _sinkhorn64(logits.half().float(), 0.04, 3)
    assert torch.allclose(q.double(), ref, rtol=1e-4, atol=1e-7)


def test_sinkhorn_is_stable_where_naive_exp_overflows() -> None:
    logits = _cosine_logits(32, 8, seed=11) * 6.0  # exp(6 / 0.04) overflows float32
    assert not torch.isfinite(torch.exp(logits / 0.04)).all()
    q = sinkhorn_knopp(logits, teacher_temp=0.04)
    assert torch.isfinite(q).all()
    assert torch.allclose(q.double(), _sinkhorn64(logits, 0.04, 3), rtol=1e-4, atol=1e-7)


def test_sinkhorn_column_marginals_approach_n_over_k() -> None:
    logits = _cosine_logits(128, 16, seed=12)
    target = 128 / 16
    errors = [(sinkhorn_knopp(logits, 0.07, it).sum(0) - target).abs().sum().item() for it in (1, 2, 3, 5, 10)]
    assert all(b <= a + 1e-4 for a, b in zip(errors, errors[1:]))  # L1 marginal error never grows
    plain = (torch.softmax(logits / 0.07, dim=-1).sum(0) - target).abs().sum().item()
    assert errors[2] < 0.5 * plain  # 3 iterations already balance prototypes much better than softmax
    converged = sinkhorn_knopp(logits, 0.07, n_iterations=200).sum(0)
    assert torch.allclose(converged, torch.full((16,), target), rtol=1e-4)


def test_sinkhorn_ignores_padding_rows() -> None:
    logits = _cosine_logits(10, 6, seed=13)
    padded = torch.cat([logits, torch.full((4, 6), 7.0)])
    q = sinkhorn_knopp(padded, 0.05, n_masked=torch.tensor([10]))
    assert torch.equal(q[10:], torch.zeros(4, 6))
    assert torch.allclose(q[:10], sinkhorn_knopp(logits, 0.05), atol=1e-6)


def test_teacher_temperature_schedule() -> None:
    assert teacher_temperature(0.0) == 0.04
    assert math.isclose(teacher_temperature(0.15), 0.055)
    assert teacher_temperature(0.3) == 0.07 and teacher_temperature(1.0) == 0.07
    assert teacher_temperature(1.02) == 0.07  # the step that crosses the budget
    assert teacher_temperature(0.5, warmup_fraction=0.0) == 0.07
    with pytest.raises(ValueError, match="progress"):
        teacher_temperature(-0.1)


# ---------------------------------------------------------------- masking


def test_block_masks_follow_dinov2_policy() -> None:
    grid = (14, 16)
    n = grid[0] * grid[1]
    masks = block_masks(64, grid, (0.1, 0.5), 0.5, generator=torch.Generator().manual_seed(0))
    assert masks.shape == (64, n) and masks.dtype == torch.bool
    counts = masks.sum(1)
    masked = counts[counts > 0]
    assert len(masked) == 32  # exactly half of the images carry a mask
    assert int(masked.min()) >= 4 and int(masked.max()) <= int(0.5 * n)  # min block; upper end of the range
    ratios = masked.float() / n
    assert ratios.min() < 0.15 and ratios.max() > 0.4  # ratios spread over the range
    assert not torch.equal(counts[:32] > 0, torch.ones(32, dtype=torch.bool))  # shuffled over images


def test_block_masks_are_seeded_and_ordered_without_shuffle() -> None:
    kw = dict(n_images=8, grid=(10, 10), generator=torch.Generator().manual_seed(3), shuffle=False)
    a = block_masks(**kw)
    b = block_masks(**{**kw, "generator": torch.Generator().manual_seed(3)})
    assert torch.equal(a, b)
    counts = a.sum(1)
    assert (counts[:4] > 0).all() and (counts[4:] == 0).all()
    # Bin i of the ratio range goes to image i: targets grow, so counts mostly grow too.
    assert counts[3] > counts[0]
    assert block_masks(1, (4, 4), generator=torch.Generator()).sum() == 0  # int(1 * 0.5) = 0 masked
    with pytest.raises(ValueError, match="mask_ratio_range"):
        block_masks(2, (4, 4), (0.6, 0.2), generator=torch.Generator())


def test_ema_center_follows_the_logits_device():
    """EMACenter is no nn.Module (task.to(device) skips it): on a GPU its CPU center met CUDA logits and the
    first DINOv2 step failed. The meta device stands in for CUDA here."""
    c = EMACenter(8)
    logits = torch.randn(4, 8, device="meta")
    assert c.teacher_probs(logits, 0.04).device.type == "meta" and c.center.device.type == "meta"
    c.update(logits)
    assert c.center.device.type == "meta" and c.center.shape == (8,)


def test_weight_decay_follows_dinov2s_name_rule():
    """dinov2/utils/param_groups.py: wd 0 for names ending '.bias' or holding 'norm' or 'gamma', so the cls,
    position and mask tokens *are* decayed (they were not here before 2026-12-07)."""
    from radscale.config.specs import EncoderSpec, TrainSpec
    from radscale.objectives.build import build_task

    task = build_task(EncoderSpec(name="rad-dino-tiny", objective="dinov2"), TrainSpec(), 0)
    wd = {id(p): g["wd_scale"] for g in task.param_groups(0.9, 0.2) for p in g["params"]}
    named = [(n, p) for n, p in task.student.named_parameters() if p.requires_grad]
    assert len(wd) == len(named)
    for name, p in named:
        assert wd[id(p)] == (0.0 if name.endswith(".bias") or "norm" in name or "gamma" in name else 1.0), name
    tokens = {n: wd[id(p)] for n, p in named if n.endswith(("cls_token", "pos_embed", "mask_token"))}
    assert tokens == {"backbone.mask_token": 1.0, "backbone.vit.cls_token": 1.0, "backbone.vit.pos_embed": 1.0}
