"""CLIP and UniCL losses against open_clip's ClipLoss and a float64 loop written from the UniCL formula."""

from __future__ import annotations

import pytest
import torch
from open_clip.loss import ClipLoss

from radscale.objectives.clip import clip_loss
from radscale.objectives.unicl import gather_keys, positives_from_keys, positives_from_label_sets, unicl_loss


def _features(n: int, d: int, seed: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(n, d, generator=g, dtype=dtype), dim=-1)


def _unicl_loop(img: torch.Tensor, txt: torch.Tensor, pos: torch.Tensor, scale: float) -> torch.Tensor:
    """UniCL from its definition, one row / column at a time, in float64."""
    s = scale * img.double() @ txt.double().t()
    rows, cols = [], []
    for i in range(s.shape[0]):
        js = pos[i].nonzero().flatten().tolist()
        if js:
            log_p = s[i] - torch.logsumexp(s[i], dim=0)
            rows.append(-sum(log_p[j] for j in js) / len(js))
    for j in range(s.shape[1]):
        is_ = pos[:, j].nonzero().flatten().tolist()
        if is_:
            log_p = s[:, j] - torch.logsumexp(s[:, j], dim=0)
            cols.append(-sum(log_p[i] for i in is_) / len(is_))
    return 0.5 * (sum(rows) / len(rows) + sum(cols) / len(cols))


def test_clip_loss_equals_open_clip() -> None:
    img, txt = _features(9, 6, 0), _features(9, 6, 1)
    scale = torch.tensor(14.3, dtype=torch.float64)
    expected = ClipLoss()(img, txt, scale)
    assert torch.allclose(clip_loss(img, txt, scale), expected, rtol=0, atol=1e-12)
    img32, txt32 = img.float(), txt.float()
    assert torch.allclose(clip_loss(img32, txt32, 14.3), ClipLoss()(img32, txt32, 14.3), atol=1e-6)


def test_unicl_equals_open_clip_when_all_labels_differ() -> None:
    img = _features(8, 5, 2).requires_grad_()
    txt = _features(8, 5, 3).requires_grad_()
    scale = torch.tensor(2.718281828, dtype=torch.float64, requires_grad=True)
    keys = torch.arange(8)
    ours = unicl_loss(img, txt, positives_from_keys(keys, keys), scale)
    ref = ClipLoss()(img, txt, scale)
    assert torch.allclose(ours, ref, rtol=0, atol=1e-12)
    grads = torch.autograd.grad(ours, (img, txt, scale))
    ref_grads = torch.autograd.grad(ref, (img, txt, scale))
    assert all(torch.allclose(a, b, atol=1e-12) for a, b in zip(grads, ref_grads))


def test_unicl_with_duplicate_labels_matches_float64_loop() -> None:
    img = _features(7, 4, 4).requires_grad_()
    txt = _features(7, 4, 5).requires_grad_()
    keys = torch.tensor([3, 1, 3, 0, 1, 3, 9])
    pos = positives_from_keys(keys, keys)
    got = unicl_loss(img, txt, pos, 10.0)
    expected = _unicl_loop(img, txt, pos, 10.0)
    assert torch.allclose(got, expected, atol=1e-12)
    g_got = torch.autograd.grad(got, (img, txt))
    g_exp = torch.autograd.grad(expected, (img, txt))
    assert all(torch.allclose(a, b, atol=1e-12) for a, b in zip(g_got, g_exp))
    assert not torch.allclose(got, ClipLoss()(img, txt, 10.0))  # duplicates do change the loss


def test_unicl_rectangular_batch_and_rows_without_positives() -> None:
    img, txt = _features(4, 3, 6), _features(6, 3, 7)
    pos = torch.zeros(4, 6, dtype=torch.bool)
    pos[0, [0, 4]] = True
    pos[1, 1] = True
    pos[3, [2, 3, 5]] = True  # image 2 has no positive: it is left out of the image->text mean
    assert torch.allclose(unicl_loss(img, txt, pos, 5.0), _unicl_loop(img, txt, pos, 5.0), atol=1e-12)
    with pytest.raises(ValueError, match="positives"):
        unicl_loss(img, txt, pos[:, :5], 5.0)


def test_positives_policies_on_a_hand_made_batch() -> None:
    # Labels: 0 effusion, 1 edema, 2 device. Pairs: image 0 + its report, image 1 + "effusion",
    # image 2 + "edema", image 3 + "effusion"; image labels are multi-hot.
    image_labels = torch.tensor([[1, 1, 0], [1, 0, 1], [0, 1, 0], [1, 0, 0]], dtype=torch.bool)
    text_labels = torch.tensor([-1, 0, 1, 0])
    sample_one = positives_from_label_sets(image_labels, text_labels, "sample_one")
    expected_one = torch.tensor(
        [[1, 0, 0, 0], [0, 1, 0, 1], [0, 0, 1, 0], [0, 1, 0, 1]], dtype=torch.bool
    )  # only the sampled labels count: image 0's report pair has no sampled label
    assert torch.equal(sample_one, expected_one)
    any_shared = positives_from_label_sets(image_labels, text_labels, "any_shared")
    expected_any = torch.tensor(
        [[1, 1, 1, 1], [0, 1, 0, 1], [0, 0, 1, 0], [0, 1, 0, 1]], dtype=torch.bool
    )  # image 0 has effusion and edema, so every label text in the batch is its positive
    assert torch.equal(any_shared, expected_any)
    ids = torch.tensor([5, 6, 5, 7])
    same_image = positives_from_label_sets(image_labels, text_labels, "sample_one", image_ids=ids)
    assert same_image[0, 2] and same_image[2, 0]  # texts made for image 5 are positives of both copies
    # The training batch repeats each image (next to its report, next to its sampled label's prompt): with the
    # sampled label as every copy's key, duplicated rows get identical targets.
    key = torch.tensor([0, 0, 1])
    labels3 = torch.tensor([[1, 0], [1, 1], [0, 1]], dtype=torch.bool)
    texts = torch.cat([torch.full((3,), -1), key])
    dup_ids = torch.arange(3).repeat(2)
    for keys, consistent in ((None, False), (key.repeat(2), True)):
        p = positives_from_label_sets(labels3.repeat(2, 1), texts, "sample_one", dup_ids, image_keys=keys)
        assert torch.equal(p[:3], p[3:]) == consistent
    assert positives_from_label_sets(labels3.repeat(2, 1), texts, "sample_one", dup_ids,
                                     image_keys=key.repeat(2))[0].tolist() == [1, 0, 0, 1, 1, 0]
    with pytest.raises(ValueError, match="policy"):
        positives_from_label_sets(image_labels, text_labels, "all")
    with pytest.raises(ValueError, match="text_labels"):
        positives_from_label_sets(image_labels, torch.tensor([-1, 0, 3, 0]), "any_shared")


def test_single_process_gather_is_identity() -> None:
    keys = torch.arange(5)
    (gathered,) = gather_keys(keys)
    assert torch.equal(gathered, keys)


def test_the_logit_scale_is_capped_in_the_loss() -> None:
    from radscale.config.specs import ClipSpec, EncoderSpec, TrainSpec
    from radscale.objectives.build import build_task

    task = build_task(EncoderSpec(name="mi2-tiny", objective="clip"), TrainSpec(), 0)
    with torch.no_grad():
        task.model.logit_scale.fill_(6.0)                         # e^6 = 403
    scale = task._scale()
    assert float(scale) == 100.0
    scale.backward()
    assert float(task.model.logit_scale.grad) == 0.0               # no push beyond the cap
    task.spec = ClipSpec(max_logit_scale=0)
    assert float(task._scale()) == pytest.approx(float(torch.exp(torch.tensor(6.0))))


def test_model_ema_of_the_image_tower_follows_the_formula_and_is_what_the_trial_evaluates() -> None:
    """MI2's model EMA (0.999): e_t = d_t e_{t-1} + (1 - d_t) w_t after each optimizer step, in float64 here, with
    d_t = min(0.999, (1 + t)/(10 + t)) (warm-up) or 0.999; the EMA, not the trained tower, is saved/evaluated."""
    from radscale.config.specs import ClipSpec, EncoderSpec, TrainSpec
    from radscale.objectives.build import build_task
    from radscale.objectives.ema import ema_decay

    assert [ema_decay(0.999, t, True) for t in (0, 1, 8989, 10**6)] == [0.1, 2 / 11, 8990 / 8999, 0.999]
    assert ema_decay(0.999, 0, False) == 0.999
    task = build_task(EncoderSpec(name="mi2-tiny", objective="clip"), TrainSpec(), 0).double()
    assert task.eval_encoder() is task.ema_image and not any(p.requires_grad for p in task.ema_image.parameters())
    assert all(id(p) not in {id(q) for g in task.param_groups() for q in g["params"]}
               for p in task.ema_image.parameters())                     # the optimizer never sees it
    tower = task.model.image_encoder
    expect = {k: v.clone() for k, v in tower.state_dict().items()}        # the EMA starts at the initial weights
    g = torch.Generator().manual_seed(0)
    for t in range(3):
        with torch.no_grad():
            for p in tower.parameters():
                p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype))   # an "optimizer step"
        d = (1 + t) / (10 + t)
        assert task.after_step(0.5) == pytest.approx(d)
        for name, p in tower.named_parameters():
            expect[name] = d * expect[name] + (1 - d) * p.detach()
    got = task.ema_image.state_dict()
    assert all(torch.allclose(got[k], expect[k], rtol=0, atol=1e-12) for k in expect)
    assert all(not torch.allclose(e, p) for e, p in zip(task.ema_image.parameters(), tower.parameters()))
    assert task.extra_state()["ema_updates"] == 3
    fresh = build_task(EncoderSpec(name="mi2-tiny", objective="clip"), TrainSpec(), 0)
    fresh.load_extra_state(task.extra_state())                           # a resumed trial continues the warm-up
    assert fresh._ema_updates == 3

    off = build_task(EncoderSpec(name="mi2-tiny", objective="clip"),
                     TrainSpec(clip=ClipSpec(model_ema=0.0)), 0)
    assert off.ema_image is None and off.eval_encoder() is off.model.image_encoder and off.after_step(0.5) == 0.0
