"""Batched augmentation that runs on the training device (the host only decodes).

All ops take [B,1,H,W] float tensors in [0,1] and a torch.Generator on the same device, so a trial's
augmentation stream is reproducible and costs no host cores. Choices for single-channel CXRs are in
docs/SCIENCE.md: colour jitter becomes brightness/contrast jitter, grayscale conversion is a no-op and dropped.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _uniform(n: int, lo: float, hi: float, g: torch.Generator, device) -> torch.Tensor:
    return torch.rand(n, generator=g, device=device) * (hi - lo) + lo


def random_resized_crop(images: torch.Tensor, size: int, scale: tuple[float, float], g: torch.Generator,
                        ratio: tuple[float, float] = (3 / 4, 4 / 3), flip_p: float = 0.0) -> torch.Tensor:
    """One crop per image: area fraction ~ U(scale), log aspect ~ U(log ratio), as torchvision's RRC."""
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
    grid = F.affine_grid(theta, [b, images.shape[1], size, size], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


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
    b, c, hgt, wid = images.shape
    dev = images.device
    apply = torch.rand(b, generator=g, device=dev) < p
    sig = _uniform(b, *sigma, g, dev) * (wid / ref_size)
    if p <= 0:        # decided on the host: asking the device whether any image blurs would stall the step
        return images
    radius = max(1, int(math.ceil(3 * sigma[1] * wid / ref_size)))
    xs = torch.arange(-radius, radius + 1, device=dev, dtype=images.dtype)
    k = torch.exp(-(xs.view(1, -1) ** 2) / (2 * sig.view(-1, 1) ** 2))
    k = k / k.sum(dim=1, keepdim=True)                               # [B, K]
    x = images.reshape(1, b * c, hgt, wid)
    kk = k.repeat_interleave(c, 0)
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="reflect"), kk.view(b * c, 1, 1, -1), groups=b * c)
    x = F.conv2d(F.pad(x, (0, 0, radius, radius), mode="reflect"), kk.view(b * c, 1, -1, 1), groups=b * c)
    return torch.where(apply.view(b, 1, 1, 1), x.view(b, c, hgt, wid), images)


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
