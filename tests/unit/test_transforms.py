"""Device-side augmentation (data/transforms.py) and the DINOv2 task's views: properties that pin the math."""
import torch

from radscale.config.specs import JobSpec
from radscale.data import transforms as T
from radscale.objectives.build import build_task
from radscale.objectives.ibot import masked_token_weights


def _imgs(b=6, s=32, seed=0):
    return torch.rand(b, 1, s, s, generator=torch.Generator().manual_seed(seed))


def test_full_square_crop_is_the_identity_and_flip_mirrors():
    x = _imgs()
    g = torch.Generator().manual_seed(1)
    same = T.random_resized_crop(x, 32, (1.0, 1.0), g, ratio=(1.0, 1.0))
    assert torch.allclose(same, x, atol=1e-6)
    flipped = T.random_resized_crop(x, 32, (1.0, 1.0), g, ratio=(1.0, 1.0), flip_p=1.0)
    assert torch.allclose(flipped, x.flip(-1), atol=1e-6)


def test_crop_area_follows_the_scale_range():
    # A crop of area fraction a, resized to the full size, magnifies a horizontal ramp's slope by 1/sqrt(a).
    ramp = torch.linspace(0, 1, 64).expand(1, 1, 64, 64).repeat(200, 1, 1, 1)
    out = T.random_resized_crop(ramp, 64, (0.25, 0.25), torch.Generator().manual_seed(0), ratio=(1.0, 1.0))
    slope = (out[:, 0, 32, 40] - out[:, 0, 32, 24]) / 16 * 63
    assert torch.allclose(slope, torch.full_like(slope, 0.5), atol=1e-3)       # width fraction sqrt(0.25)



def test_antialiased_crops_match_torchvision_style_antialiasing_where_plain_bilinear_aliases():
    """1-px lines every 4 px (a thin tube pattern) and white noise at 518 -> 224 / 98, against torch's
    antialiased bilinear resize (PIL's filter): plain bilinear resampling aliases the lines to 0-1 columns."""
    import torch.nn.functional as F

    lines = torch.zeros(1, 1, 518, 518)
    lines[..., ::4] = 1.0
    noise = torch.rand(1, 1, 518, 518, generator=torch.Generator().manual_seed(0))
    for x in (lines, noise):
        for size in (224, 98):
            ref = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
            crop = {aa: T.random_resized_crop(x, size, (1.0, 1.0), torch.Generator().manual_seed(0),
                                              ratio=(1.0, 1.0), antialias=aa) for aa in (True, False)}
            err = {aa: (v - ref).abs().mean().item() for aa, v in crop.items()}
            assert err[True] < 0.015 and err[False] > 0.1 and err[True] < err[False] / 8, (size, err)
    row = T.random_resized_crop(lines, 224, (1.0, 1.0), torch.Generator(), ratio=(1.0, 1.0))[0, 0, 112]
    assert 0.1 < row.min() and row.max() < 0.5                             # reference: 0.11-0.43


def test_antialiasing_leaves_upscaled_crops_and_every_other_draw_unchanged():
    """64 -> 32 px square crops of area 0.05-0.3: downscale factor 2·sqrt(area), so the filter runs (up to 1.1)
    and the crops of area <= 0.25 (factor <= 1) must come out exactly as plain bilinear ones."""
    x = _imgs(32, 64)
    a = T.random_resized_crop(x, 32, (0.05, 0.3), torch.Generator().manual_seed(3), ratio=(1.0, 1.0))
    b = T.random_resized_crop(x, 32, (0.05, 0.3), torch.Generator().manual_seed(3), ratio=(1.0, 1.0),
                              antialias=False)
    area = torch.rand(32, generator=torch.Generator().manual_seed(3)) * 0.25 + 0.05      # the first draw
    same = (a == b).flatten(1).all(1)
    assert torch.equal(same, area <= 0.25) and 0 < int(same.sum()) < 32
    g1, g2 = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    T.random_resized_crop(x, 16, (0.3, 1.0), g1)
    T.random_resized_crop(x, 16, (0.3, 1.0), g2, antialias=False)
    assert torch.equal(torch.rand(3, generator=g1), torch.rand(3, generator=g2))    # same random stream

def test_blur_keeps_the_mean_and_p_zero_is_exact_identity():
    x = _imgs()
    g = torch.Generator().manual_seed(2)
    assert torch.equal(T.gaussian_blur(x, 0.0, g), x)
    y = T.gaussian_blur(x, 1.0, g, sigma=(2.0, 2.0), ref_size=32)
    assert y.std() < 0.5 * x.std()                          # noise is smoothed
    const = torch.full((2, 1, 16, 16), 0.3)
    assert torch.allclose(T.gaussian_blur(const, 1.0, g), const, atol=1e-6)    # normalised kernel, reflect pad


def test_blur_applies_per_image_with_probability_p():
    x = _imgs(b=400, s=16)
    y = T.gaussian_blur(x, 0.3, torch.Generator().manual_seed(3), sigma=(1.0, 2.0), ref_size=16)
    changed = (y != x).flatten(1).any(1).float().mean()
    assert 0.22 < changed < 0.38



def test_local_crops_blur_with_dinovs_pixel_sigma(monkeypatch):
    """DINOv2 blurs its 96-px local crops with sigma U(0.1, 2.0) px, as its 224-px globals: the sigma is scaled
    from each crop kind's own reference size (it was scaled from 224 for both: at most 0.875 px at 98)."""
    impulse = torch.zeros(300, 1, 98, 98)
    impulse[:, :, 49, 49] = 1.0
    out = T.gaussian_blur(impulse, 1.0, torch.Generator().manual_seed(0), ref_size=96)
    prof = out[:, 0].sum(1)                                           # [B, 98] mass along x
    xs = torch.arange(98.0) - 49
    sigma = ((prof * xs**2).sum(1) / prof.sum(1)).sqrt()
    assert sigma.max() > 1.9 and sigma.max() <= 2.0 * 98 / 96 + 1e-3 and sigma.min() < 0.3

    seen = []
    real = T.gaussian_blur
    monkeypatch.setattr(T, "gaussian_blur", lambda v, p, g, ref_size=224: seen.append((v.shape[-1], ref_size))
                        or real(v, p, g, ref_size=ref_size))
    from radscale.config.specs import Dinov2Spec, EncoderSpec, TrainSpec

    spec = Dinov2Spec(global_size=32, local_size=16, local_crops=2, n_prototypes=256, head_hidden=64,
                      head_bottleneck=32)
    task = build_task(EncoderSpec(name="rad-dino-tiny", objective="dinov2"), TrainSpec(dinov2=spec), 0)
    task.make_views(torch.randint(0, 255, (2, 80, 80), dtype=torch.uint8))
    assert seen == [(task.spec.global_size, 224)] * 2 + [(task.spec.local_size, 96)] * 2

def test_brightness_contrast_solarize_erasing():
    x = _imgs(b=50)
    g = torch.Generator().manual_seed(4)
    assert torch.equal(T.brightness_contrast(x, 0.0, g), x)
    y = T.brightness_contrast(x, 1.0, g)
    assert y.min() >= 0 and y.max() <= 1 and not torch.equal(y, x)
    s = T.solarize(x, 1.0, g)
    assert torch.equal(s, torch.where(x >= 0.5, 1 - x, x))
    assert torch.equal(T.random_erasing(x, 0.0, g), x)
    e = T.random_erasing(x, 1.0, g)
    frac = (e != x).flatten(1).float().mean(1)
    assert (frac > 0).all() and (frac < 0.5).all()          # one rectangle of 2-33% of the area per image


def test_dinov2_views_gather_masked_tokens_by_host_index_in_mask_order():
    job = JobSpec.model_validate({
        "sweep": {"name": "v"}, "encoders": [{"name": "rad-dino-tiny", "objective": "dinov2"}], "sizes": [8],
        "budget": {"value": 1.0}, "train": {"dinov2": {"global_size": 32, "local_size": 16, "local_crops": 3,
                                                       "n_prototypes": 64, "head_hidden": 32, "head_bottleneck": 16}}})
    task = build_task(job.encoders[0], job.train, 0)
    images = torch.randint(0, 255, (4, 40, 40), dtype=torch.uint8)
    gl, lc, masks, index, weights = task.make_views(images)
    assert gl.shape == (8, 1, 32, 32) and lc.shape == (12, 1, 16, 16)
    assert masks.any(1).sum() == 4                          # half of the global crops carry a mask
    tokens = torch.randn(masks.shape + (5,))
    assert torch.equal(tokens.flatten(0, 1).index_select(0, index), tokens[masks])
    assert torch.equal(weights, masked_token_weights(masks))



def test_views_are_float32_inside_a_bf16_autocast_step():
    """The step runs under bf16 autocast on GPUs; the augmentation must not (conv filters would run in bf16)."""
    from radscale.config.specs import Dinov2Spec, EncoderSpec, TrainSpec

    spec = Dinov2Spec(global_size=32, local_size=16, local_crops=2, n_prototypes=256, head_hidden=64,
                      head_bottleneck=32)
    images = torch.randint(0, 255, (4, 80, 80), dtype=torch.uint8)
    for enc, objective in (("rad-dino-tiny", "dinov2"), ("mi2-tiny", "clip")):
        views = []
        for autocast in (False, True):
            task = build_task(EncoderSpec(name=enc, objective=objective), TrainSpec(dinov2=spec), 0)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                out = task.make_views(images)
            views.append(out[0] if isinstance(out, tuple) else out)
        assert views[1].dtype == torch.float32 and torch.equal(views[0], views[1]), enc
