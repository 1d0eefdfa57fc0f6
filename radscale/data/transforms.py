"""Batched augmentation that runs on the training device (the host only decodes).

All ops take [B,1,H,W] float tensors in [0,1] and a torch.Generator on the same device, so a trial's
augmentation stream is reproducible and costs no host cores. Choices for single-channel CXRs are in
docs/SCIENCE.md: colour jitter becomes brightness/contrast jitter, grayscale conversion is a no-op and dropped.
"""
from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F


def full_precision(make_views):
    """Run a task's `make_views(images)` in float32 even inside the step's bf16 autocast: filters, resampling and
    jitter need more than bf16's 8 bits (a 16-bit CXR would be quantised, filter taps would not sum to 1)."""
    @functools.wraps(make_views)
    def run(self, images: torch.Tensor, *args, **kwargs):
        kind = images.device.type
        if not torch.amp.is_autocast_available(kind):
            return make_views(self, images, *args, **kwargs)
        with torch.autocast(kind, enabled=False):
            return make_views(self, images, *args, **kwargs)
    return run


def _uniform(n: int, lo: float, hi: float, g: torch.Generator, device) -> torch.Tensor:
    return torch.rand(n, generator=g, device=device) * (hi - lo) + lo


def random_resized_crop(images: torch.Tensor, size: int, scale: tuple[float, float], g: torch.Generator,
                        ratio: tuple[float, float] = (3 / 4, 4 / 3), flip_p: float = 0.0,
                        antialias: bool = True) -> torch.Tensor:
    """One crop per image: area fraction ~ U(scale), log aspect ~ U(log ratio), as torchvision's RRC.

    `antialias`: before the bilinear resample each image is filtered with a triangle of its own downscale factor
    per axis (what PIL / torchvision's antialiased bilinear resize does), so 1-px lines do not alias when a
    518-px image becomes a 98-px crop; an upscaled axis is left as is. Off: plain bilinear resampling.
    """
    b, dev = images.shape[0], images.device
    area = _uniform(b, *scale, g, dev)
    logr = _uniform(b, math.log(ratio[0]), math.log(ratio[1]), g, dev)
    r = torch.exp(logr)
    w = torch.sqrt(area * r).clamp(max=1.0)        # fraction of the width
    h = torch.sqrt(area / r).clamp(max=1.0)
    cx = (torch.rand(b, generator=g, device=dev) * 2 - 1) * (1 - w)
    cy = (torch.rand(b, generator=g, device=dev) * 2 - 1) * (1 - h)
    flip = torch.where(torch.rand(b, generator=g, device=dev) < flip_p, -1.0, 1.0)
    theta = torch.zeros(b, 2, 3, device=dev, dtype=images.dtype)
    theta[:, 0, 0] = w * flip
    theta[:, 0, 2] = cx
    theta[:, 1, 1] = h
    theta[:, 1, 2] = cy
    if antialias:
        hgt, wid = images.shape[-2:]
        # kernel radii from the largest factor the scale/ratio ranges allow: known on the host, no device read
        rx = math.ceil(min(1.0, math.sqrt(scale[1] * ratio[1])) * wid / size)
        ry = math.ceil(min(1.0, math.sqrt(scale[1] / ratio[0])) * hgt / size)
        if rx > 1 or ry > 1:
            images = separable_filter(images, _triangle(w * wid / size, rx, images.dtype),
                                      _triangle(h * hgt / size, ry, images.dtype))
    grid = F.affine_grid(theta, [b, images.shape[1], size, size], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _triangle(factor: torch.Tensor, radius: int, dtype: torch.dtype) -> torch.Tensor:
    """[B, 2r+1] normalised taps of max(0, 1 - |x| / f) per image (f < 1, an upscale: the identity)."""
    xs = torch.arange(-radius, radius + 1, device=factor.device, dtype=dtype)
    k = (1 - xs.view(1, -1).abs() / factor.clamp(min=1.0).view(-1, 1).to(dtype)).clamp(min=0)
    return k / k.sum(dim=1, keepdim=True)


def separable_filter(images: torch.Tensor, kx: torch.Tensor, ky: torch.Tensor) -> torch.Tensor:
    """Per-image separable filter (taps [B, Kx] along width, [B, Ky] along height; odd K), reflect-padded, as
    grouped convolutions: one kernel launch per axis for the whole batch."""
    b, c, hgt, wid = images.shape
    x = images.reshape(1, b * c, hgt, wid)
    for taps, horizontal in ((kx, True), (ky, False)):
        r = taps.shape[1] // 2
        if r == 0:
            continue
        shape = (b * c, 1, 1, -1) if horizontal else (b * c, 1, -1, 1)
        pad = (r, r, 0, 0) if horizontal else (0, 0, r, r)
        x = F.conv2d(F.pad(x, pad, mode="reflect"), taps.repeat_interleave(c, 0).view(shape), groups=b * c)
    return x.view(b, c, hgt, wid)


def brightness_contrast(images: torch.Tensor, p: float, g: torch.Generator, strength: float = 0.4) -> torch.Tensor:
    """The grayscale part of DINOv2's colour jitter (brightness 0.4, contrast 0.4), applied with prob p."""
    b, dev = images.shape[0], images.device
    apply = (torch.rand(b, generator=g, device=dev) < p).view(b, 1, 1, 1)
    bright = _uniform(b, 1 - strength, 1 + strength, g, dev).view(b, 1, 1, 1)
    contrast = _uniform(b, 1 - strength, 1 + strength, g, dev).view(b, 1, 1, 1)
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    out = ((images * bright - mean * bright) * contrast + mean * bright).clamp(0, 1)
    return torch.where(apply, out, images)


def gaussian_blur(images: torch.Tensor, p: float, g: torch.Generator,
                  sigma: tuple[float, float] = (0.1, 2.0), ref_size: int = 224) -> torch.Tensor:
    """Per-image sigma ~ U(sigma) in pixels at ref_size, rescaled to the crop size (grouped conv)."""
    b, wid, dev = images.shape[0], images.shape[-1], images.device
    apply = torch.rand(b, generator=g, device=dev) < p
    sig = _uniform(b, *sigma, g, dev) * (wid / ref_size)
    if p <= 0:        # decided on the host: asking the device whether any image blurs would stall the step
        return images
    radius = max(1, int(math.ceil(3 * sigma[1] * wid / ref_size)))
    xs = torch.arange(-radius, radius + 1, device=dev, dtype=images.dtype)
    k = torch.exp(-(xs.view(1, -1) ** 2) / (2 * sig.view(-1, 1) ** 2))
    k = k / k.sum(dim=1, keepdim=True)                               # [B, K]
    return torch.where(apply.view(b, 1, 1, 1), separable_filter(images, k, k), images)


def solarize(images: torch.Tensor, p: float, g: torch.Generator, threshold: float = 0.5) -> torch.Tensor:
    b = images.shape[0]
    apply = (torch.rand(b, generator=g, device=images.device) < p).view(b, 1, 1, 1)
    return torch.where(apply & (images >= threshold), 1 - images, images)


def random_erasing(images: torch.Tensor, p: float, g: torch.Generator,
                   scale: tuple[float, float] = (0.02, 0.33)) -> torch.Tensor:
    """timm/torchvision-style erasing of one rectangle with uniform noise, prob p (MI2 uses 0.25)."""
    b, _, hgt, wid = images.shape
    dev = images.device
    apply = torch.rand(b, generator=g, device=dev) < p
    area = _uniform(b, *scale, g, dev)
    r = torch.exp(_uniform(b, math.log(0.3), math.log(3.3), g, dev))
    eh = (torch.sqrt(area / r) * hgt).clamp(1, hgt)
    ew = (torch.sqrt(area * r) * wid).clamp(1, wid)
    y0 = torch.rand(b, generator=g, device=dev) * (hgt - eh)
    x0 = torch.rand(b, generator=g, device=dev) * (wid - ew)
    yy = torch.arange(hgt, device=dev).view(1, hgt, 1)
    xx = torch.arange(wid, device=dev).view(1, 1, wid)
    inside = ((yy >= y0.view(b, 1, 1)) & (yy < (y0 + eh).view(b, 1, 1))
              & (xx >= x0.view(b, 1, 1)) & (xx < (x0 + ew).view(b, 1, 1)))
    mask = (inside & apply.view(b, 1, 1)).unsqueeze(1)
    noise = torch.rand(images.shape, generator=g, device=dev, dtype=images.dtype)
    return torch.where(mask, noise, images)


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 [B,H,W] or [B,1,H,W] -> float [B,1,H,W] in [0,1]."""
    if images.dim() == 3:
        images = images.unsqueeze(1)
    return images.float().div_(255.0) if images.dtype == torch.uint8 else images.float()
